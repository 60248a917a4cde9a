"""One source for every training setting: the dataclasses, registered as Hydra structured configs.

Each settings block is a dataclass whose fields are the config keys, with their defaults and a one-line comment:
``sft`` (``selfdebug.train.sft.settings.SFTSettings``), ``rl`` (``selfdebug.train.rl.settings.PPOSettings``)
and ``peft`` (``LoraSettings`` below). ``register_configs`` puts them in Hydra's ConfigStore (groups ``sft``,
``rl``, ``peft``), so ``conf/train.yaml`` and the experiment files name them like any YAML config
(``- sft: default``, ``- /rl: default``, ``peft=lora``) and Hydra checks the types of every override.
``settings_from`` is the one way a stage turns a config block into its dataclass; the dataclass's
``__post_init__`` then checks the ranges. A bad value is a ConfigError that names its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.errors import ConfigError
from selfdebug.train.rl.settings import PPOSettings
from selfdebug.train.sft.settings import SFTSettings


@dataclass
class LoraSettings:
    """The ``peft`` config group: ``peft=none`` (full fine-tuning) or ``peft=lora`` (adapters through PEFT; the
    run saves the adapter, which transformers loads by path onto the base model it names)."""

    enabled: bool = False
    r: int = 16
    alpha: float = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # module name suffixes (a list), a regex, or "all-linear"
    merge: bool = False  # save merged full weights instead of the adapter
    extra: dict = field(default_factory=dict)  # any other peft.LoraConfig argument

    def __post_init__(self) -> None:
        if self.enabled:
            if int(self.r) < 1:
                raise ConfigError(f"peft.r = {self.r}; it must be >= 1")
            if not 0 <= float(self.dropout) < 1:
                raise ConfigError(f"peft.dropout = {self.dropout}; it must be in [0, 1)")
            if not self.target_modules:
                raise ConfigError("peft.target_modules is empty; name the modules LoRA adapts (or 'all-linear')")


def settings_from(cls: type, node: DictConfig | dict | None, key: str, missing_hint: str = ""):
    """``cls`` built from the config block ``key`` (a composed DictConfig or a plain mapping).

    A block that is absent, a value left ``???``, or a key ``cls`` has no field for is a ConfigError naming
    ``key``; the range checks are ``cls.__post_init__``'s."""
    if node is None:
        raise ConfigError(f"{key}: the config has no `{key}` block; add `- /{key}: default` to the experiment's "
                          "defaults")
    if isinstance(node, DictConfig):
        missing = [k for k in node if OmegaConf.is_missing(node, k)]
        if missing:
            raise ConfigError(f"{key}.{missing[0]} must be set (the experiment leaves it to you){missing_hint}")
        node = OmegaConf.to_container(node, resolve=True)
    unknown = sorted(set(node) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: no such setting (see {cls.__module__}.{cls.__qualname__})")
    return cls(**node)


def register_configs() -> None:
    """The settings dataclasses as Hydra config groups (safe to call again: the store is overwritten)."""
    store = ConfigStore.instance()
    store.store(group="sft", name="default", node=SFTSettings)
    store.store(group="rl", name="default", node=PPOSettings)
    store.store(group="peft", name="none", node=LoraSettings)
    store.store(group="peft", name="lora", node=LoraSettings(enabled=True))
