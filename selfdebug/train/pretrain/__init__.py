"""The pretraining stage (``stage=pretrain``): a small code model made from scratch on Python source.

Importing the package registers its settings as the structured config ``pretrain/default`` (as
``selfdebug.train`` does for ``sft``, ``rl`` and ``peft``); ``selfdebug.train.app`` imports it."""

from selfdebug.train.pretrain.settings import register_configs

register_configs()
