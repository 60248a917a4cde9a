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

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from selfdebug.core.cli import CONF_DIR, user_errors
from selfdebug.core.errors import ConfigError
from selfdebug.train.distributed import close_process_group
from selfdebug.train.pretrain import recipe as pretrain_recipe
from selfdebug.train.rl import recipe as rl_recipe
from selfdebug.train.sft import recipe as sft_recipe

# Each stage is one function of (cfg, run_dir) that returns its summary.
STAGES = {"sft": sft_recipe.run, "rl": rl_recipe.run, "pretrain": pretrain_recipe.run}


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    run_dir = Path(run_dir) if run_dir is not None else Path(HydraConfig.get().runtime.output_dir)
    stage = str(cfg.stage)
    if stage not in STAGES:
        raise ConfigError(f"stage = {stage!r}; expected one of {sorted(STAGES)}")
    return STAGES[stage](cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)
    close_process_group()  # only after a run that returned: see its docstring


if __name__ == "__main__":
    main()
