"""Pretraining as a LightningModule: one Lightning batch = one optimizer step of packed sequences.

The step math is SFT's (``selfdebug.train.sft.module``: ``accumulate`` over micro-batches with the token-mean
loss, AdamW on matrices with weight decay, warm-up then cosine); what differs is the data (``PackedSteps``)
and the model, built here from random weights. Callbacks: the held-out losses and greedy repairs
(``HeldOutEval``) and the wall-clock limit (``TimeLimit``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from selfdebug.core.answers import apply_answer
from selfdebug.train.checkpoints import rng_state, set_rng_state
from selfdebug.train.distributed import clip_grad_norm
from selfdebug.train.optim import make_optimizer, trainable_parameters
from selfdebug.train.pretrain.data import micro_batch
from selfdebug.train.pretrain.settings import PretrainSettings
from selfdebug.train.sft.module import accumulate, count_targets, make_scheduler, target_nll_sum


def build_model(settings: PretrainSettings, tokenizer, seed: int):
    """A random-init ``LlamaForCausalLM`` of the settings' size for ``tokenizer`` (seeded, without moving the
    caller's random stream)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=settings.hidden_size, intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers, num_attention_heads=settings.heads, num_key_value_heads=settings.heads,
        max_position_embeddings=4 * settings.seq_len, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    return model


class PretrainModule(pl.LightningModule):
    def __init__(self, model, settings: PretrainSettings, total_steps: int):
        super().__init__()
        self.model, self.settings, self.total_steps = model, settings, int(total_steps)
        self.automatic_optimization = False

    def configure_optimizers(self):
        s = self.settings
        opt = make_optimizer(self.model, s.lr, s.weight_decay, s.betas)
        sched = make_scheduler(opt, s.warmup_steps, self.total_steps, s.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: list[dict[str, torch.Tensor]], batch_idx: int) -> dict:
        opt, sched = self.optimizers(), self.lr_schedulers()
        start = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        loss, n_targets, tokens = accumulate(self.model, batch, self.manual_backward)
        grad_norm = clip_grad_norm(self, trainable_parameters(self.model), self.settings.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        seconds = time.perf_counter() - start
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=1)
        return {"loss": torch.tensor(loss), "lr": lr, "grad_norm": grad_norm, "target_tokens": n_targets,
                "tokens": tokens, "tokens_per_s": tokens / seconds if seconds > 0 else 0.0}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["selfdebug_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("selfdebug_rng"):
            set_rng_state(checkpoint["selfdebug_rng"])


class TimeLimit(pl.Callback):
    """``pretrain.max_minutes``: stop after this much training time, counted across resumed starts (the
    elapsed time is saved with each checkpoint). The model is saved as usual; recipe.json says it stopped
    early."""

    def __init__(self, max_minutes: float | None):
        self.limit = None if max_minutes is None else 60.0 * float(max_minutes)
        self.before = 0.0  # seconds trained by earlier starts of this run
        self.started = time.time()
        self.hit = False

    @property
    def elapsed(self) -> float:
        return self.before + time.time() - self.started

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.limit is not None and self.elapsed >= self.limit and trainer.global_step < trainer.max_steps:
            self.hit = True
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state: dict) -> None:
        self.before = float(state.get("elapsed", 0.0))


class HeldOutEval(pl.Callback):
    """Every ``eval_every`` steps (and at the last): the loss on held-out code and on the answers of held-out
    repair conversations, and greedy answers to ``eval_repairs`` held-out repair prompts, applied to their
    wrong program (``heldout/repair_exact``: the share that gives back the original exactly; these functions
    have no tests). Answers go to ``samples.jsonl``."""

    def __init__(self, tensors: dict, repairs: list[dict], tokenizer, settings: PretrainSettings, run_logger,
                 run_dir: Path):
        n = settings.eval_sequences
        self.code = tensors["code_heldout"][:n]
        self.chat = (tensors["chat_heldout_ids"][:n], tensors["chat_heldout_labels"][:n])
        self.repairs = repairs[: settings.eval_repairs]
        self.tokenizer, self.settings, self.run_logger = tokenizer, settings, run_logger
        self.path = Path(run_dir) / "samples.jsonl"
        self.last: dict = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, every = trainer.global_step, self.settings.eval_every
        if not every or not (step % every == 0 or step == trainer.max_steps or trainer.should_stop):
            return
        model = pl_module.model
        model.eval()
        try:
            with torch.no_grad():
                metrics = self._losses(model, pl_module.device)
                rows = [self._repair(model, pl_module.device, r, step) for r in self.repairs]
        finally:
            model.train()
        if rows:
            metrics["heldout/repair_exact"] = sum(r["exact"] for r in rows) / len(rows)
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        self.last = metrics
        if metrics:
            self.run_logger.log(metrics, step=step)

    def _loss(self, model, ids: torch.Tensor, labels: torch.Tensor, device) -> float | None:
        if not len(ids):
            return None
        total, n, mb = 0.0, 0, self.settings.micro_batch_size
        pad = self.tokenizer.pad_token_id
        for j in range(0, len(ids), mb):
            batch = {k: v.to(device) for k, v in micro_batch(ids[j:j + mb], labels[j:j + mb], pad).items()}
            total += float(target_nll_sum(model, batch))
            n += count_targets([batch])
        return total / max(1, n)

    def _losses(self, model, device) -> dict:
        out = {}
        code = self._loss(model, self.code, self.code, device)
        if code is not None:
            out["heldout/code_loss"] = code
        answer = self._loss(model, *self.chat, device)
        if answer is not None:
            out["heldout/answer_loss"] = answer
        return out

    def _repair(self, model, device, r: dict, step: int) -> dict:
        from selfdebug.train.model import stop_token_ids

        ids = torch.tensor([self.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]], device=device)
        stop = stop_token_ids(self.tokenizer, model)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=self.settings.eval_max_new_tokens, eos_token_id=stop or None,
                             pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, ids.size(1):].tolist()
        end = next((k for k, t in enumerate(new) if t in stop), len(new))
        text = self.tokenizer.decode(new[:end], skip_special_tokens=True)
        fixed = apply_answer(r["wrong"], text, self.settings.answer_form)
        return {"step": step, "unit": r["unit"], "operator": r["operator"], "answer": text,
                "exact": fixed is not None and fixed.strip() == r["fixed"].strip()}
