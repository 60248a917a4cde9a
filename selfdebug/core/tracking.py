"""Run records that outlive W&B: metrics.jsonl and summary.json in the run dir, mirrored to W&B.

W&B runs offline unless the user configures otherwise (``logger.mode=online`` or ``WANDB_MODE``); without
W&B at all (``logger=none``) the files alone tell the whole story.

W&B conventions (see ``logger_from_config``): one project; runs grouped by experiment, by --multirun sweep or
by pipeline; tags ``<config group>:<choice>`` read from Hydra's choices (``model:tiny``, ``reward:ledex``,
``stage:sft``); ``job_type`` = the entry point's stage. A run dir keeps its W&B run id in ``wandb_run_id.txt``,
so a run that is resumed (by hand or by a SLURM requeue) continues the same W&B run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import string
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id.txt"
ARTIFACT_POLICIES = ("upload", "reference", "none")
# Config groups that say nothing about the experiment: left out of the tags.
_UNTAGGED_GROUPS = {"logger"}


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


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run dir: ``WANDB_RUN_ID`` (a W&B sweep agent sets it), else the id saved in
    ``wandb_run_id.txt`` by an earlier start of the same run, else a new one. Saved before W&B starts, so a
    job killed at any moment comes back to the same W&B run."""
    path = Path(run_dir) / RUN_ID_FILE
    run_id = os.environ.get("WANDB_RUN_ID", "").strip()
    if not run_id and path.is_file():
        run_id = path.read_text(encoding="utf-8").strip()
    if not run_id:
        alphabet = string.ascii_lowercase + string.digits
        run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    if not path.is_file() or path.read_text(encoding="utf-8").strip() != run_id:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(run_id + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return run_id


def artifact_name(*parts: Any) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'; anything else becomes '_'."""
    return re.sub(r"[^\w.-]+", "_", "-".join(str(p) for p in parts if p not in (None, ""))).strip("_")[:128]


class RunLogger:
    """One per run. ``log`` appends to metrics.jsonl (and W&B), ``summary`` writes summary.json at the end."""

    def __init__(self, run_dir: str | Path, config: dict, *, wandb_enabled: bool = True, project: str = "selfdebug",
                 mode: str = "offline", group: str | None = None, tags: list[str] | None = None,
                 name: str | None = None, job_type: str | None = None, entity: str | None = None,
                 artifacts: dict[str, str] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._start = time.time()
        self.artifact_policies = dict(artifacts or {})
        self.wandb_run = None
        if wandb_enabled:
            import wandb

            mode = os.environ.get("WANDB_MODE", mode)
            # resume="allow": the first start creates the run, a restart in the same run dir continues it.
            self.wandb_run = wandb.init(project=project, entity=entity, group=group, tags=tags or None, name=name,
                                        job_type=job_type, config=config, dir=str(self.run_dir), mode=mode,
                                        id=wandb_run_id(self.run_dir), resume="allow", reinit="finish_previous")

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

    def artifact(self, path: Path, name: str, type: str, policy: str | None = None,
                 metadata: dict | None = None) -> bool:
        """Log a finished folder (a dataset, a model) as a W&B artifact; True if logged.

        ``policy`` (default: ``logger.artifacts.<type>``, else upload): ``upload`` stores the files in W&B
        (offline: at ``wandb sync``; the folder must still be there then), ``reference`` records a
        ``file://`` link with checksums (no multi-GB upload; readable where that path is), ``none`` skips.
        A failure here is logged, not raised: the run's own outputs are already complete when this runs."""
        policy = policy or self.artifact_policies.get(type, "upload")
        if self.wandb_run is None or policy == "none":
            return False
        import wandb

        try:
            art = wandb.Artifact(name=artifact_name(name), type=type, metadata=metadata)
            if policy == "reference":
                art.add_reference(Path(path).resolve().as_uri())
            else:
                # immutable: the folder was renamed into place complete and is never changed, so no staging copy
                art.add_dir(str(path), policy="immutable")
            self.wandb_run.log_artifact(art)
            return True
        except Exception as exc:  # noqa: BLE001 - the artifact is a mirror; the files in the run dir are the record
            log.warning("could not log %s as a W&B %s artifact (%s): %s", path, type, policy, exc)
            return False

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


# ------------------------------------------------------------------------------------------------ conventions

def _hydra():
    """The running Hydra job's config, or None outside a Hydra app (a notebook, a unit test)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def hydra_choices(hc=None) -> dict[str, str]:
    """``{config group: chosen option}`` of the running job (``+exp=...`` included), Hydra's own groups left out."""
    hc = hc if hc is not None else _hydra()
    if hc is None:
        return {}
    return {str(k): str(v) for k, v in hc.runtime.choices.items()
            if v is not None and not str(k).startswith("hydra/")}


def run_tags(choices: dict[str, str], stage: str, extra=()) -> list[str]:
    """``group:choice`` for every config group (``model:tiny``, ``reward:ledex``, ``exp:rl_quickstart``), then
    ``stage:<stage>`` and the user's ``logger.tags``; W&B caps a tag at 64 characters."""
    tags = [f"{k}:{v}" for k, v in sorted(choices.items()) if k not in _UNTAGGED_GROUPS]
    tags += [f"stage:{stage}", *(str(t) for t in extra)]
    return list(dict.fromkeys(t[:64] for t in tags))


def _is_multirun(hc) -> bool:
    from hydra.types import RunMode

    return hc.mode == RunMode.MULTIRUN


def run_group(explicit: str | None, hc=None) -> str | None:
    """``logger.group`` if set; else in a --multirun the sweep folder's name (every job of a sweep shares it,
    also after a requeue); else the experiment (``+exp=...``); else none."""
    if explicit:
        return str(explicit)
    hc = hc if hc is not None else _hydra()
    if hc is None:
        return None
    if _is_multirun(hc):
        return f"sweep-{Path(str(hc.sweep.dir)).name}"
    return hydra_choices(hc).get("exp")


def swept_overrides(hc) -> list[str]:
    """This job's values of the keys its --multirun sweeps (``seed=2``, ``reward.weights.explanation=0.5``),
    read against the sweep's command line in ``<sweep dir>/multirun.yaml``; [] if that is not there."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        master = OmegaConf.load(Path(str(hc.sweep.dir)) / "multirun.yaml").hydra.overrides.task
        parser = OverridesParser.create()
        swept = {o.key_or_group for o in parser.parse_overrides(list(master)) if o.is_sweep_override()}
        return [str(o.input_line) for o in parser.parse_overrides(list(hc.overrides.task))
                if o.key_or_group in swept]
    except Exception:  # noqa: BLE001 - a name is a convenience: never fail a run over it
        return []


def run_name(explicit: str | None, job_type: str, hc=None) -> str | None:
    """``logger.name`` if set; in a --multirun ``<job_type>:<this job's swept values>`` (``rl:seed=2``), so the
    runs of a group tell their sweep values apart; else W&B's own name."""
    if explicit:
        return str(explicit)
    hc = hc if hc is not None else _hydra()
    if hc is not None and _is_multirun(hc):
        return f"{job_type}:{','.join(swept_overrides(hc)) or hc.job.num}"[:128]
    return None


def logger_from_config(cfg, run_dir: Path, config_dict: dict, job_type: str) -> RunLogger:
    """Builds the RunLogger from the ``logger`` config group (wandb or none), with the W&B conventions above."""
    from omegaconf import OmegaConf

    from selfdebug.core.errors import ConfigError

    lcfg = cfg.get("logger") or {}
    policies = OmegaConf.to_container(lcfg.artifacts, resolve=True) if lcfg.get("artifacts") is not None else {}
    for kind, policy in policies.items():
        if policy not in ARTIFACT_POLICIES:
            raise ConfigError(f"logger.artifacts.{kind} = {policy!r}; expected one of {list(ARTIFACT_POLICIES)}")
    enabled = bool(lcfg.get("wandb", False))
    hc = _hydra()
    choices = hydra_choices(hc)
    # evaluate's label (base / sft / rl) names the model when model=hf says only "a saved folder"
    extra = ([f"label:{cfg.label}"] if cfg.get("label") else []) + list(lcfg.get("tags") or [])
    if enabled:
        # The choices ride along in the W&B config: runs can be filtered and grouped by them in the UI.
        config_dict = {**config_dict, "hydra_choices": choices}
    return RunLogger(run_dir, config_dict, wandb_enabled=enabled,
                     project=lcfg.get("project") or "selfdebug", mode=lcfg.get("mode", "offline"),
                     group=run_group(lcfg.get("group"), hc), tags=run_tags(choices, job_type, extra),
                     name=run_name(lcfg.get("name"), job_type, hc), entity=lcfg.get("entity"), job_type=job_type,
                     artifacts=policies)
