"""Run records that outlive W&B: metrics.jsonl and summary.json in the run dir, mirrored to W&B.

W&B runs offline unless the user configures otherwise (``logger.mode=online`` or ``WANDB_MODE``); without
W&B at all (``logger=none``) the files alone tell the whole story.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary name in the same folder, then rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    os.replace(tmp, path)


class RunLogger:
    """One per run. ``log`` appends to metrics.jsonl (and W&B), ``summary`` writes summary.json at the end."""

    def __init__(self, run_dir: str | Path, config: dict, *, wandb_enabled: bool = True, project: str = "selfdebug",
                 mode: str = "offline", group: str | None = None, tags: list[str] | None = None,
                 name: str | None = None, job_type: str | None = None, entity: str | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._start = time.time()
        self.wandb_run = None
        if wandb_enabled:
            import wandb

            mode = os.environ.get("WANDB_MODE", mode)
            self.wandb_run = wandb.init(project=project, entity=entity, group=group, tags=tags or None, name=name,
                                        job_type=job_type, config=config, dir=str(self.run_dir), mode=mode,
                                        reinit="finish_previous")

    def log(self, metrics: dict, step: int | None = None) -> None:
        row = {"time": round(time.time() - self._start, 3), **({"step": step} if step is not None else {}), **metrics}
        self._metrics.write(json.dumps(row, default=str) + "\n")
        self._metrics.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Table(columns=columns, data=rows)})

    def artifact(self, path: Path, name: str, type: str) -> None:
        """Log a folder (a dataset, a checkpoint) as a W&B artifact."""
        if self.wandb_run is not None:
            import wandb

            art = wandb.Artifact(name=name, type=type)
            art.add_dir(str(path))
            self.wandb_run.log_artifact(art)

    def summary(self, values: dict) -> None:
        write_json_atomic(self.run_dir / "summary.json", values)
        if self.wandb_run is not None:
            flat = {k: v for k, v in _flatten(values).items() if isinstance(v, (int, float, str, bool))}
            self.wandb_run.summary.update(flat)

    def finish(self, exit_code: int = 0) -> None:
        self._metrics.close()
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
            self.wandb_run = None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def logger_from_config(cfg, run_dir: Path, config_dict: dict, job_type: str) -> RunLogger:
    """Builds the RunLogger from the ``logger`` config group (wandb or none)."""
    lcfg = cfg.get("logger") or {}
    return RunLogger(run_dir, config_dict, wandb_enabled=bool(lcfg.get("wandb", False)),
                     project=lcfg.get("project", "selfdebug"), mode=lcfg.get("mode", "offline"),
                     group=lcfg.get("group"), tags=list(lcfg.get("tags") or []), name=lcfg.get("name"),
                     entity=lcfg.get("entity"), job_type=job_type)
