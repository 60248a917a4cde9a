"""What every Hydra entry point shares: config resolvers, seeding, and the one way bad input ends a run."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import sys
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from selfdebug.core.errors import ConfigError, SelfDebugError

log = logging.getLogger("selfdebug")

# The Hydra config tree: conf/ at the repository root, beside the package.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# Offline by default: a hub lookup without network retries for about a minute before it fails.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_SILENT", "true")
# conf/hydra/launcher/{joblib,submitit_*}.yaml share their names with the plugins' schemas on purpose (Hydra 1.3
# still validates them against those schemas); the warning that says so on every run is noise.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")


def _data_dir() -> str:
    from selfdebug.problems.datafiles import data_dir

    return str(data_dir())


def _sanitize(value) -> str:
    """A model id or path as a folder name: 'codellama/CodeLlama-7b' -> 'codellama_CodeLlama-7b'."""
    return re.sub(r"[^\w.-]+", "_", str(value).strip("/")) or "model"


for _name, _fn in (("data_dir", _data_dir), ("sanitize", _sanitize)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def check_required(cfg) -> None:
    """Every mandatory value (``???`` in conf/, e.g. ``benchmark=humaneval_plus``'s ``benchmark.loader.path``) is
    set. Unchecked, the first one surfaced as an OmegaConf traceback when the stage reached it, after loading the
    models, or in a pipeline after the stages before it. Interpolations are not resolved: a ``${hydra:...}`` value
    is only known inside a run."""
    missing = []

    def walk(node, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif node == "???":
            missing.append(key)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    if missing:
        shown = ", ".join(missing)
        raise ConfigError(f"{shown}: required and not set (??? in the config); give "
                          f"{'it' if len(missing) == 1 else 'each'} on the command line, e.g. {missing[0]}=<value>")


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


@contextlib.contextmanager
def user_errors():
    """Bad input ends the run with its message on stderr and exit status 2; no traceback to wade through."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised below unless it is (or wraps) a user error
        cause = user_error_in(exc)
        if cause is None:
            raise
        log.error("%s", cause)
        print(f"error: {cause}", file=sys.stderr, flush=True)
        sys.exit(2)


def user_error_in(exc: BaseException | None) -> SelfDebugError | None:
    """The SelfDebugError behind ``exc``, also when Hydra's instantiate wrapped it in its own exception."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SelfDebugError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
