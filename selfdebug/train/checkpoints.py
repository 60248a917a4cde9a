"""Checkpoints both stages write and resume from: ``checkpoints/step-NNNNNNN.ckpt`` (Lightning's, written
under a temporary name, then renamed; the newest few kept), every random stream's state, and the final
``model/`` folder that ``load_causal_lm`` (and so ``selfdebug.evaluate model=hf``) loads by path."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from selfdebug.core.errors import ConfigError
from selfdebug.core.models import peft_base

_CKPT = re.compile(r"^step-(\d+)\.ckpt$")


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the highest step in ``folder`` (``step-NNNNNNN.ckpt``), or None."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("step-*.ckpt") if (m := _CKPT.match(p.name))]
    return max(found)[1] if found else None


def resume_checkpoint(resume, ckpt_dir: Path) -> Path | None:
    """The checkpoint a run continues from: ``resume`` is "auto" (the newest in ``ckpt_dir``, if any), a false
    value (start fresh) or a path that must exist (config key ``resume``)."""
    if resume == "auto":
        return latest_checkpoint(ckpt_dir)
    if not resume:
        return None
    path = Path(str(resume)).expanduser()
    if not path.exists():
        raise ConfigError(f"resume: checkpoint {str(path)!r} does not exist")
    return path


def save_step_checkpoint(trainer, dirpath: Path, step: int, keep: int) -> None:
    """A Lightning checkpoint for ``step``, written under a temporary name and renamed; the newest ``keep`` stay."""
    dirpath.mkdir(parents=True, exist_ok=True)
    final = dirpath / f"step-{step:07d}.ckpt"
    tmp = dirpath / f".step-{step:07d}.ckpt.tmp"
    trainer.save_checkpoint(tmp)  # every rank takes part (sharded strategies); it ends with a barrier
    if trainer.is_global_zero:
        _remove(final)
        os.replace(tmp, final)
        found = sorted(dirpath.glob("step-*.ckpt"))
        for old in found[: max(0, len(found) - keep)]:
            _remove(old)


def _remove(path: Path) -> None:
    """A checkpoint is a file, or a folder of shards (DeepSpeed, trainer.strategy.save_distributed_checkpoint)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class StepCheckpoint(pl.Callback):
    """A Lightning checkpoint every ``every`` steps and at the last step (``trainer.max_steps``, which is
    ``sft.stop_after`` when set)."""

    def __init__(self, dirpath: Path, every: int, keep: int):
        self.dirpath, self.every, self.keep = Path(dirpath), int(every), int(keep)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (self.every and step % self.every == 0) or step == trainer.max_steps:
            save_step_checkpoint(trainer, self.dirpath, step, self.keep)


def rng_state() -> dict:
    """Every random stream of this process (Python, NumPy, torch CPU and CUDA), stored as tensors and plain
    values so a checkpoint loads with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Put back what ``rng_state`` stored: a resumed run draws the numbers an uninterrupted one would."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_final(model, tokenizer, out_dir: Path, merge_lora: bool = False, save_dtype=None,
               info: dict | None = None, state_dict: dict | None = None) -> Path:
    """``save_pretrained`` output that ``load_causal_lm`` (and so ``selfdebug.evaluate model=hf``) loads by
    path: full weights, or the LoRA adapter (transformers loads the base it names and applies it), or the
    LoRA merged into full weights. Written under a temporary name, then renamed: a folder that exists is
    complete. ``state_dict``: the full weights when ``model`` holds only this rank's shards (FSDP2)."""
    from selfdebug.core.models import resolve_dtype

    out_dir = Path(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        is_peft = hasattr(model, "peft_config")
        extra = {}
        if state_dict is not None:  # sharded weights: write the gathered copy (merging is refused at setup)
            dtype = resolve_dtype(save_dtype, "cpu") if save_dtype else None
            extra["state_dict"] = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
                                   for k, v in state_dict.items()}
        else:
            if is_peft and merge_lora:
                model = model.merge_and_unload()
            if save_dtype:
                model = model.to(resolve_dtype(save_dtype, "cpu"))
        base = peft_base(model)
        base.config.use_cache = True
        model.save_pretrained(tmp, **extra)
        tokenizer.save_pretrained(tmp)
        (tmp / "selfdebug_sft.json").write_text(json.dumps(
            {"format": "lora_adapter" if is_peft and not merge_lora else "full", **(info or {})}, indent=1,
            default=str) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the saved model is an ordinary folder
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
