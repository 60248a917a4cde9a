"""Shared test fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The repository root: tests run the entry points from here and read conf/ from it.
# Test modules import it (``from tests.conftest import REPO``).
REPO = Path(__file__).resolve().parent.parent

# Tests never reach the network.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_MODE", "offline")

# Under `pytest -n N` (pytest-xdist), N workers share the cores: each worker, and every entry point a test
# starts, gets one torch thread, so two busy OpenMP pools never spin against each other on two cores.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


# What a command line must not load before it has checked its config: a mistyped value should cost a second,
# not the 5-10 s these take to import.
HEAVY_MODULES = frozenset({"torch", "pytorch_lightning", "transformers"})


def run_profiled(module: str, *args: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -X importtime -m module args`` from the repository root: the finished process, with the import
    profile taken out of its stderr, and the set of every module it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    lines = proc.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:") and "|" in line}
    messages = "\n".join(line for line in lines if not line.startswith("import time:"))
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, messages), imported


# --- CPU threads -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the rest of the module: on a small shared CPU, one thread is several times faster
    than oversubscribed ones. Use it as an argument, or module-wide with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- tiny model (selfdebug.core.models) ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory):
    """A session-wide cache dir for ``load_causal_lm("tiny", tiny_cache_dir=...)``; built on first use."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cache_dir):
    """The saved tiny checkpoint (built once per session), loadable with ``from_pretrained``."""
    from selfdebug.core.models import ensure_tiny

    return ensure_tiny(tiny_cache_dir)


@pytest.fixture(scope="session")
def tiny_lm(tiny_cache_dir, tiny_model_dir):
    """``(model, tokenizer)`` of the tiny model, loaded once per session. Do not train it in place."""
    from selfdebug.core.models import load_causal_lm

    return load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)


# --- bundled benchmark data (selfdebug.problems) ------------------------------------------------------
@pytest.fixture(scope="session")
def data_dir_path():
    """The folder benchmark files are read from: the packaged one, or ``$SELFDEBUG_DATA_DIR``."""
    from selfdebug.problems import data_dir

    return data_dir()
