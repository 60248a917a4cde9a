"""Training stages as Lightning modules: SFT and PPO, and the lifecycle they share (``python -m selfdebug.train``).

Importing the package registers the settings dataclasses as Hydra structured configs (``sft/default``,
``rl/default``, ``peft/none``, ``peft/lora``), which ``conf/train.yaml`` and the experiment files compose."""

from selfdebug.train.settings import register_configs

register_configs()
