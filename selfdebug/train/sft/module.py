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
held-out problems (loss and greedy samples); checkpoints are ``selfdebug.train.checkpoints``'.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from selfdebug.core.prompts import parse_completion
from selfdebug.train.checkpoints import rng_state, set_rng_state
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
from selfdebug.train.model import generation_context, stop_token_ids
from selfdebug.train.optim import make_optimizer, trainable_parameters
from selfdebug.train.sft.settings import SFTSettings

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ math

def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warm-up to 1 over ``warmup_steps`` (the
    first step already moves), then half a cosine down to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


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
        checkpoint["selfdebug_rng"] = rng_state()
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
            set_rng_state(rng)


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
            with torch.no_grad():
                with trainer.precision_plugin.forward_context():
                    metrics = self._loss(model, pl_module.device)
                with generation_context(trainer):
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
                                 **generate_kwargs(pl_module, model))
            new = out[0, ids.size(1):].tolist()
            end = next((k for k, t in enumerate(new) if t in stop), len(new))
            text = self.tokenizer.decode(new[:end], skip_special_tokens=True)
            parsed = parse_completion(text)
            rows.append({"step": step, "problem_id": x.problem_id, "kind": x.kind, "explanation": parsed.explanation,
                         "code": parsed.code or "", "completion": text})
        return rows
