"""``python -m selfdebug.train``: train a code LLM to self-debug. ``stage=sft`` (default) fine-tunes on the
collected trajectories (``selfdebug.train.sft.recipe``); ``stage=rl`` runs PPO (``selfdebug.train.rl.recipe``).
Both follow one lifecycle (``selfdebug.train.lifecycle``) and share this entry point, its run dir layout and its
config (``conf/train.yaml``; the settings blocks are the structured configs of ``selfdebug.train.settings``).

    python -m selfdebug.train +exp=sft_quickstart                    # offline: tiny model, quickstart dataset
    python -m selfdebug.train +exp=rl_quickstart                     # PPO on the same data
    python -m selfdebug.train +exp=sft_13b peft.r=64                 # every setting is a config key

The run dir gets metrics.jsonl, summary.json, the W&B run, ``checkpoints/`` (resumable: run the same command
with the same ``hydra.run.dir``) and, once training is done, ``model/``: the ``save_pretrained`` folder that
``python -m selfdebug.evaluate model=hf model.name_or_path=<run>/model`` loads.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.cli import CONF_DIR, check_required, user_errors
from selfdebug.core.errors import ConfigError
from selfdebug.core.models import local_model_path
from selfdebug.train.pretrain.settings import PretrainSettings  # its package registers pretrain/default
from selfdebug.train.rl.settings import SFT_CHECKPOINT_HINT, PPOSettings
from selfdebug.train.settings import settings_from
from selfdebug.train.sft.settings import SFTSettings

# Each stage is a module whose run(cfg, run_dir) returns the stage's summary, and the settings block it reads.
# The module is imported only once its settings have passed their checks: the recipes load torch, Lightning
# and transformers (5-10 s), and a mistyped value should fail before that, in about a second.
STAGES = {
    "sft": ("selfdebug.train.sft.recipe", SFTSettings, ""),
    "rl": ("selfdebug.train.rl.recipe", PPOSettings, SFT_CHECKPOINT_HINT),
    "pretrain": ("selfdebug.train.pretrain.recipe", PretrainSettings, ""),
}


CONFIG_NAME = "train"  # conf/train.yaml; the pipeline composes it too, to check a stage before running any


def check(cfg: DictConfig) -> str:
    """The recipe module of ``cfg.stage``, once the stage's settings block has passed its checks (no torch)."""
    stage = str(cfg.stage)
    if stage not in STAGES:
        raise ConfigError(f"stage = {stage!r}; expected one of {sorted(STAGES)}")
    module, settings_class, missing_hint = STAGES[stage]
    settings_from(settings_class, cfg.get(stage), stage, missing_hint=missing_hint)  # the recipe builds it again
    check_required(cfg)  # after the settings block, whose own message for a missing rl.sft_checkpoint says more
    return module


def input_paths(cfg: DictConfig) -> dict[str, str]:
    """The local folders a training run reads, by config key: the base model when it is a local folder, and for
    SFT and PPO the dataset and PPO's starting SFT model (when set). The pipeline checks they exist, or that an
    earlier stage of it writes them, before it starts."""
    stage = str(cfg.stage)
    out = local_model_path(cfg.get("model"), "model.name_or_path")
    if stage in ("sft", "rl") and OmegaConf.select(cfg, "dataset.path") is not None:
        out["dataset.path"] = str(cfg.dataset.path)
    if stage == "rl" and OmegaConf.select(cfg, "rl.sft_checkpoint") is not None:
        out["rl.sft_checkpoint"] = str(cfg.rl.sft_checkpoint)
    return out


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    run_dir = Path(run_dir) if run_dir is not None else Path(HydraConfig.get().runtime.output_dir)
    return importlib.import_module(check(cfg)).run(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)
    from selfdebug.train.distributed import close_process_group  # loaded by the run already

    close_process_group()  # only after a run that returned: see its docstring


if __name__ == "__main__":
    main()
