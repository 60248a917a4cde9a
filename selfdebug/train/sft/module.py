"""Supervised fine-tuning as a LightningModule: one optimizer step per batch of the ``StepBatches`` stream.

A "batch" here is a whole optimizer step: a list of micro-batches (``sft.batch_size / sft.micro_batch_size``
of them). ``training_step`` runs forward/backward on each, with the loss of every micro-batch divided by the
number of target tokens in the whole step, so the gradient is that of the token-mean loss over the step no
matter how it was split. Then: gradient clipping, AdamW, the warm-up + cosine schedule. With one optimizer
step per Lightning batch, ``global_step`` counts both, and a checkpoint never falls inside an accumulation.

Under data parallelism (``trainer=ddp`` / ``fsdp`` / ``deepspeed``) each rank runs its share of the step's
micro-batches (``StepBatches`` hands them out); the target-token count is summed over the ranks first, so the
gradients the backend averages are those of the same token-mean as on one process.

The math is in small functions (``warmup_cosine``, ``target_nll_sum``, ``accumulate``) that the throughput
benchmark also drives from a plain PyTorch loop. Callbacks here write metrics.jsonl / W&B, evaluate the
held-out problems (loss and greedy samples), and save resumable checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from selfdebug.core.errors import ConfigError
from selfdebug.train.data import IGNORE_INDEX, TokenizedExample, collate
from selfdebug.train.distributed import (
    backward_sync,
    clip_grad_norm,
    gather_objects,
    generate_kwargs,
    rank_world,
    shard_modules,
    sum_across_ranks,
)
from selfdebug.core.prompts import END, parse_completion

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ settings

@dataclass
class SFTSettings:
    """The ``sft`` config block, checked before anything is loaded."""

    batch_size: int = 128  # examples per optimizer step (paper: 128)
    micro_batch_size: int = 4  # examples per forward/backward; batch_size / micro_batch_size accumulation steps
    epochs: float = 2.0  # passes over the training examples (paper: 2)
    max_steps: int | None = None  # if set, exactly this many optimizer steps (the schedule's length)
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps; the schedule is unchanged
    lr: float = 2e-5  # AdamW peak learning rate (paper: 2e-5)
    warmup_steps: int = 500  # linear warm-up steps (paper: 500), then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0  # applied to matrices only (not to norms and biases)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; null: measure it, do not clip
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    dtype: str = "auto"  # weights: "auto" = fp32 for full fine-tuning; bf16 base weights under LoRA on a GPU
    checkpoint_every: int = 100  # Lightning checkpoint every N steps (and at the last step); 0: last only
    keep_checkpoints: int = 2  # newest checkpoints kept
    eval_every: int = 50  # held-out loss and sample generations every N steps; 0: never
    eval_max_examples: int = 64  # held-out examples scored for the loss
    samples: int = 4  # held-out prompts answered greedily at each evaluation (a W&B table)
    sample_max_new_tokens: int = 256
    save_dtype: str | None = None  # cast the final weights before save_pretrained (e.g. bfloat16); null: keep

    def __post_init__(self) -> None:
        positive = ("batch_size", "micro_batch_size", "keep_checkpoints", "sample_max_new_tokens")
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"sft.{key} = {getattr(self, key)}; it must be >= 1")
        for key in ("warmup_steps", "checkpoint_every", "eval_every", "eval_max_examples", "samples"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"sft.{key} = {getattr(self, key)}; it must be >= 0")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"sft.batch_size = {self.batch_size} is not divisible by sft.micro_batch_size = "
                              f"{self.micro_batch_size}; the step accumulates batch_size / micro_batch_size "
                              "micro-batches, so pick a micro_batch_size that divides it")
        for key in ("max_steps", "stop_after"):
            if getattr(self, key) is not None and int(getattr(self, key)) < 1:
                raise ConfigError(f"sft.{key} = {getattr(self, key)}; it must be >= 1 or null")
        if self.epochs <= 0 and self.max_steps is None:
            raise ConfigError(f"sft.epochs = {self.epochs}; it must be > 0 (or set sft.max_steps)")
        if not self.lr > 0:
            raise ConfigError(f"sft.lr = {self.lr}; it must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"sft.min_lr_ratio = {self.min_lr_ratio}; it must be in [0, 1]")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"sft.max_grad_norm = {self.max_grad_norm}; it must be > 0 or null")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"sft.betas = {list(self.betas)}; expected two numbers in [0, 1)")


@dataclass
class LoraSettings:
    """The ``peft`` config group: ``peft=none`` (full fine-tuning) or ``peft=lora``."""

    enabled: bool = False
    r: int = 16
    alpha: float = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"  # module name suffixes, a regex, or "all-linear"
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


# ------------------------------------------------------------------------------------------------ model

def check_target_modules(model, target_modules: list[str] | str) -> None:
    """Every LoRA target must name a module of ``model`` (PEFT's rule: a name equal to the target or ending
    in ``.target``; a string is a regex over full names; "all-linear" always works)."""
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(target_modules, str):
        if target_modules == "all-linear" or any(re.fullmatch(target_modules, n) for n in names):
            return
        missing = [target_modules]
    else:
        missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
        if not missing:
            return
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    raise ConfigError(f"peft.target_modules: {missing} match no module of {type(model).__name__}; its linear "
                      f"layers are named {linear} (or use peft.target_modules=all-linear)")


def apply_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, lora.target_modules)
    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    config = LoraConfig(r=int(lora.r), lora_alpha=float(lora.alpha), lora_dropout=float(lora.dropout),
                        target_modules=targets, task_type="CAUSAL_LM", **dict(lora.extra))
    return get_peft_model(model, config)


def enable_gradient_checkpointing(model) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs (LoRA) without tricks
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.config.use_cache = False


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------------------ math

def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warm-up to 1 over ``warmup_steps`` (the
    first step already moves), then half a cosine down to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW on the trainable parameters; weight decay on matrices only (nanoGPT's rule)."""
    params = trainable_parameters(model)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas), eps=eps)


def make_scheduler(optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_ratio))


def target_nll_sum(model, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over target tokens of -log p(token | prefix); prompt and pad positions (label -100) add nothing."""
    logits = model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False).logits
    logits = logits[:, :-1].float()
    targets = mb["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")


def count_targets(micro_batches: list[dict[str, torch.Tensor]]) -> int:
    return int(sum((mb["labels"][:, 1:] != IGNORE_INDEX).sum() for mb in micro_batches))


def accumulate(model, micro_batches: list[dict[str, torch.Tensor]], backward: Callable[[torch.Tensor], None],
               n_targets: int | None = None, scale: float = 1.0, sync: Callable[[bool], object] | None = None
               ) -> tuple[float, int, int]:
    """Forward + backward over one optimizer step's micro-batches; gradients of the token-mean loss.

    Data parallelism: ``n_targets`` is the step's target-token count over all ranks, ``scale`` the world size
    (the backend averages the ranks' gradients, so each rank's share is scaled back up), and ``sync(last)`` a
    context for each micro-batch (DDP skips the all-reduce for all but the last).

    Returns ``(this rank's share of the mean loss per target token, target tokens, this rank's non-pad tokens)``.
    """
    n_targets = max(1, n_targets if n_targets is not None else count_targets(micro_batches))
    total = 0.0
    for k, mb in enumerate(micro_batches):
        with sync(k == len(micro_batches) - 1) if sync is not None else nullcontext():
            nll = target_nll_sum(model, mb)
            backward(nll * scale / n_targets)
        total += float(nll.detach())
    tokens = int(sum(mb["attention_mask"].sum() for mb in micro_batches))
    return total / n_targets, n_targets, tokens


# ------------------------------------------------------------------------------------------------ module

class SFTModule(pl.LightningModule):
    """Manual optimization: one Lightning batch = one optimizer step (see the module docstring)."""

    def __init__(self, model, settings: SFTSettings, total_steps: int, steps_per_epoch: int,
                 trainable_only_checkpoints: bool = False):
        super().__init__()
        self.model = model
        self.settings = settings
        self.total_steps = int(total_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.automatic_optimization = False
        # LoRA: checkpoints hold only the trainable weights (the frozen base is reloaded from its source).
        self.trainable_only_checkpoints = trainable_only_checkpoints
        self.strict_loading = not trainable_only_checkpoints

    def configure_model(self) -> None:
        shard_modules(self, [self.model])  # trainer=fsdp: FSDP2 units; other strategies: nothing to do

    def configure_optimizers(self):
        s = self.settings
        opt = make_optimizer(self.model, s.lr, s.weight_decay, s.betas, s.eps)
        sched = make_scheduler(opt, s.warmup_steps, self.total_steps, s.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: list[dict[str, torch.Tensor]], batch_idx: int) -> dict:
        opt, sched = self.optimizers(), self.lr_schedulers()
        start = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        _, world = rank_world(self)
        if world == 1:
            loss, n_targets, tokens = accumulate(self.model, batch, self.manual_backward)
        else:
            n_targets = int(sum_across_ranks(torch.tensor(count_targets(batch), device=self.device)))
            share, _, tokens = accumulate(self.model, batch, self.manual_backward, n_targets=n_targets, scale=world,
                                          sync=lambda last: backward_sync(self, last))
            loss, tokens = sum_across_ranks(torch.tensor([share, float(tokens)], dtype=torch.float64,
                                                         device=self.device)).tolist()
            tokens = int(tokens)
        grad_norm = clip_grad_norm(self, trainable_parameters(self.model), self.settings.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        seconds = time.perf_counter() - start
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=1)
        return {"loss": torch.tensor(loss), "lr": lr, "grad_norm": grad_norm, "target_tokens": n_targets,
                "tokens": tokens, "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
                "epoch": (self.global_step - 1) / self.steps_per_epoch}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every random stream (LoRA dropout, ...) continues where it was, so a resumed run matches.
        # Stored as tensors and plain ints so the checkpoint loads with torch.load(weights_only=True).
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["selfdebug_rng"] = {
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        if rank_world(self)[1] > 1:  # rank 0 writes the file: it carries every rank's streams
            checkpoint["selfdebug_rng_ranks"] = gather_objects(checkpoint["selfdebug_rng"])
        if self.trainable_only_checkpoints:
            keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("selfdebug_rng")
        ranks = checkpoint.get("selfdebug_rng_ranks")
        rank, world = rank_world(self)
        if ranks and len(ranks) == world:
            rng = ranks[rank]
        if rng:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            name, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])


# ------------------------------------------------------------------------------------------------ callbacks

class MetricsLog(pl.Callback):
    """Each step's figures to metrics.jsonl and W&B (``RunLogger``), every ``every`` steps."""

    def __init__(self, run_logger, every: int = 1):
        self.run_logger, self.every = run_logger, max(1, int(every))
        self.last: dict = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self.last = {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in (outputs or {}).items()
                     if isinstance(v, (int, float, torch.Tensor))}
        if trainer.is_global_zero and (step % self.every == 0 or step == trainer.max_steps):
            self.run_logger.log({f"train/{k}": v for k, v in self.last.items()}, step=step)


def stop_token_ids(tokenizer, model) -> list[int]:
    ids = []
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    end = tokenizer.encode(END, add_special_tokens=False)
    if len(end) == 1:
        ids.append(int(end[0]))
    return sorted(set(ids))


class HeldOutEval(pl.Callback):
    """Every ``every`` steps: the token-mean loss on held-out problems, and greedy answers to ``samples`` of
    their prompts, logged as a W&B table and appended to ``samples.jsonl`` in the run dir."""

    def __init__(self, examples: list[TokenizedExample], tokenizer, run_logger, run_dir: Path, every: int,
                 max_examples: int, samples: int, max_new_tokens: int, micro_batch_size: int):
        self.examples = examples[:max_examples] if max_examples else []
        # Answer refinement prompts first (the behaviour being trained), then code generation.
        ordered = sorted(examples, key=lambda x: (x.kind == "codegen", x.kind))
        self.prompts = ordered[:samples]
        self.tokenizer, self.run_logger, self.path = tokenizer, run_logger, Path(run_dir) / "samples.jsonl"
        self.every, self.max_new_tokens, self.micro_batch_size = int(every), int(max_new_tokens), micro_batch_size

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every or not (step % self.every == 0 or step == trainer.max_steps):
            return
        if not self.examples and not self.prompts:
            return
        model = pl_module.model
        model.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                metrics = self._loss(model, pl_module.device)
                rows = self._samples(model, pl_module.device, step, pl_module)
        finally:
            model.train()
        if trainer.is_global_zero:
            if metrics:
                self.run_logger.log(metrics, step=step)
            if rows:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
                cols = ["step", "problem_id", "kind", "explanation", "code", "completion"]
                self.run_logger.table("heldout/samples", cols, [[r[c] for c in cols] for r in rows])

    def _loss(self, model, device) -> dict:
        if not self.examples:
            return {}
        total, n = 0.0, 0
        for i in range(0, len(self.examples), self.micro_batch_size):
            mb = collate(self.examples[i:i + self.micro_batch_size], self.tokenizer.pad_token_id)
            mb = {k: v.to(device) for k, v in mb.items()}
            total += float(target_nll_sum(model, mb))
            n += count_targets([mb])
        return {"heldout/loss": total / max(1, n), "heldout/examples": len(self.examples)}

    def _samples(self, model, device, step: int, pl_module=None) -> list[dict]:
        rows = []
        stop = stop_token_ids(self.tokenizer, model)
        for x in self.prompts:
            ids = x.input_ids[: x.n_prompt].unsqueeze(0).to(device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=self.max_new_tokens, eos_token_id=stop or None,
                                 pad_token_id=self.tokenizer.pad_token_id, use_cache=True,
                                 **generate_kwargs(pl_module))
            new = out[0, ids.size(1):].tolist()
            end = next((k for k, t in enumerate(new) if t in stop), len(new))
            text = self.tokenizer.decode(new[:end], skip_special_tokens=True)
            parsed = parse_completion(text)
            rows.append({"step": step, "problem_id": x.problem_id, "kind": x.kind, "explanation": parsed.explanation,
                         "code": parsed.code or "", "completion": text})
        return rows


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


# ------------------------------------------------------------------------------------------------ saving

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
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
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

