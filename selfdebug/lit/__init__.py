"""Training: datasets, collators and masks (``data``) and the LightningModules (``sft``; ``ppo`` comes next).

Lightning is imported only by the modules here and by the entry points; ``selfdebug.lit.data`` needs torch
and a tokenizer but no Trainer, so a notebook can build and inspect training examples on its own.
"""
