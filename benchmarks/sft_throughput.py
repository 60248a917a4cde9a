"""SFT training throughput: our LightningModule step vs a plain PyTorch loop vs TRL's SFTTrainer, one run.

Workload: explain-and-refine examples built from MBPP train problems (the problem, a wrong program, its
feedback, an explanation and the reference as the fix), tokenized by ``selfdebug.train.data`` exactly as the
SFT stage does. All three peers start from the same weights and take the same optimizer steps on the same
micro-batches, in the same order:

- ``ours``: ``SFTModule`` under the Lightning Trainer (manual optimization, metrics.jsonl logging on);
- ``plain``: a ``for`` loop over the same batches calling the same loss, AdamW, clipping and schedule;
- ``trl``: ``trl.SFTTrainer`` on the same pre-tokenized examples (completion-only loss), in our order
  (``train_sampling_strategy="sequential"``, micro-batches of the same examples, so the same padding): the
  comparison measures the training step, not the batching.

Tokens/s counts the non-pad tokens of the timed steps (all but the first ``--warmup``) over their time; a
step's time runs from the end of the previous step to its own end, so loop overhead counts. Each peer runs
``--repeats`` times (default 3) in rotating order, and each step counts with its fastest time over the
repeats: every peer does the very same steps, and a step slowed by another process on a shared machine
does not decide the result.
``--precision`` takes one Lightning precision or several, comma-separated (``32-true,bf16-mixed``): every peer
then runs at each, in the same rotation (``plain`` under ``torch.autocast``, TRL with ``bf16=True``), and the
line adds each precision's tokens/s and its speed-up over the first, side by side.
Needs ``pip install -e ".[bench]"`` (TRL).

    python benchmarks/sft_throughput.py [--model tiny|mini|small] [--steps 10] [--batch-size 16]
        [--micro-batch-size 4] [--threads 1] [--repeats 3] [--device cpu|cuda] [--precision 32-true]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import torch

from selfdebug.train.data import BatchPlan, Example, StepBatches, answer_text, tokenize_examples
from selfdebug.train.optim import make_optimizer, trainable_parameters
from selfdebug.train.sft.module import SFTModule, accumulate, make_scheduler
from selfdebug.train.sft.settings import SFTSettings
from selfdebug.problems import data_file, load_mbpp
from selfdebug.core.prompts import refine_messages

LR, WARMUP_STEPS, MAX_GRAD_NORM = 1e-4, 2, 1.0


def examples(n: int) -> list[Example]:
    """``n`` explain+refine examples from MBPP train: the wrong program returns early with None."""
    problems = [p for p in load_mbpp(data_file("mbpp.jsonl"), split="all") if p.reference]
    out = []
    for i in range(n):
        p = problems[i % len(problems)]
        wrong = p.reference.replace("return ", "return None or ", 1) if "return " in p.reference else "pass\n"
        feedback = f"Failed test: {p.tests.asserts[0]}\nActual output: None"
        expl = (f"The function returns None before computing the result, so `{p.tests.asserts[0]}` fails. "
                "Remove the early return so the computed value comes back.")
        out.append(Example("explain_refine", p.task_id, refine_messages(p, wrong, feedback, "explain_refine"),
                           answer_text(p.reference, expl)))
    return out


def build_model(kind: str, tokenizer_source):
    """``tiny``: the project's 3.8M-parameter test Llama; ``mini``: the committed pretrained model (3.7M, its own
    tokenizer); ``small``: a random 8-layer, 512-wide Llama (~30M)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfdebug.core.models import load_causal_lm

    if kind == "mini":
        return load_causal_lm("mini")
    tiny, tok = load_causal_lm("tiny")
    if kind == "tiny":
        return tiny, tok
    cfg = LlamaConfig(vocab_size=tiny.config.vocab_size, hidden_size=512, intermediate_size=2048,
                      num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg), tok


def batch_tokens(micro: list[dict]) -> int:
    return int(sum(mb["attention_mask"].sum() for mb in micro))


# ------------------------------------------------------------------------------------------------ peers
#
# Each peer returns the clock time at the end of every optimizer step and the step losses. A step's time is
# the gap between its end and the previous step's end, so everything the loop does between steps counts.

def run_ours(model, stream: StepBatches, plan: BatchPlan, device: str, precision: str
             ) -> tuple[list[float], list[float]]:
    import pytorch_lightning as pl

    from selfdebug.train.sft.module import MetricsLog
    from selfdebug.core.tracking import RunLogger

    class Clock(pl.Callback):
        def __init__(self):
            self.ends, self.losses = [], []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))
            self.ends.append(time.perf_counter())

    settings = SFTSettings(batch_size=plan.batch_size, micro_batch_size=plan.micro_batch_size, lr=LR,
                           warmup_steps=WARMUP_STEPS, max_grad_norm=MAX_GRAD_NORM)
    module = SFTModule(model, settings, plan.total_steps, plan.steps_per_epoch)
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        run_logger = RunLogger(tmp, {}, wandb_enabled=False)  # metrics.jsonl every step, as in a real run
        trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=plan.total_steps,
                             precision=precision, max_epochs=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                             callbacks=[MetricsLog(run_logger), clock])
        trainer.fit(module, train_dataloaders=stream)
        run_logger.finish()
    return clock.ends, clock.losses


def run_plain(model, stream: StepBatches, plan: BatchPlan, device: str, precision: str
              ) -> tuple[list[float], list[float]]:
    model.to(device).train()
    bf16 = precision.startswith("bf16")
    opt = make_optimizer(model, LR)
    sched = make_scheduler(opt, WARMUP_STEPS, plan.total_steps)
    ends, losses = [], []
    for micro in stream:
        micro = [{k: v.to(device) for k, v in mb.items()} for mb in micro]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss, _, _ = accumulate(model, micro, lambda x: x.backward())
        torch.nn.utils.clip_grad_norm_(trainable_parameters(model), MAX_GRAD_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        losses.append(loss)
        ends.append(time.perf_counter())
    return ends, losses


def run_trl(model, tokenizer, stream: StepBatches, plan: BatchPlan, device: str, precision: str
            ) -> tuple[list[float], list[float]]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    # Our stream's exact order: step by step, longest first within a step (so the same micro-batches).
    order = [i for s in range(plan.total_steps) for i in stream.step_indices(s)]
    rows = {"input_ids": [], "completion_mask": []}
    for i in order:
        x = stream.examples[i]
        rows["input_ids"].append(x.input_ids.tolist())
        rows["completion_mask"].append([0] * x.n_prompt + [1] * (len(x) - x.n_prompt))

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, per_device_train_batch_size=plan.micro_batch_size,
                         gradient_accumulation_steps=plan.accumulation, learning_rate=LR, lr_scheduler_type="cosine",
                         warmup_steps=WARMUP_STEPS, max_steps=plan.total_steps, max_grad_norm=MAX_GRAD_NORM,
                         weight_decay=0.0, optim="adamw_torch", logging_steps=1, save_strategy="no", report_to="none",
                         use_cpu=device == "cpu", dataloader_num_workers=0, dataloader_pin_memory=False,
                         disable_tqdm=True, train_sampling_strategy="sequential", completion_only_loss=True,
                         max_length=None, packing=False, seed=0, bf16=precision.startswith("bf16"))
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                             processing_class=tokenizer, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return clock.ends, losses


def run_peer(name: str, model, tokenizer, stream: StepBatches, plan: BatchPlan, args, precision: str):
    if name == "ours":
        return run_ours(model, stream, plan, args.device, precision)
    if name == "plain":
        return run_plain(model, stream, plan, args.device, precision)
    try:
        return run_trl(model, tokenizer, stream, plan, args.device, precision)
    except ImportError as exc:  # TRL is the optional `bench` extra
        print(f"  trl: not installed ({exc}); pip install -e '.[bench]'", file=sys.stderr)
        return None, None


# ------------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("tiny", "mini", "small"), default="tiny")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run, warm-up included")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps (at least 1)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every peer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peers", default="ours,plain,trl")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", default="32-true",
                    help="Lightning precision(s), comma-separated: 32-true, bf16-mixed, or both to compare")
    args = ap.parse_args()
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or any(p not in ("32-true", "bf16-mixed") for p in precisions):
        ap.error(f"--precision {args.precision!r}: give 32-true, bf16-mixed or both, comma-separated")
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    model, tokenizer = build_model(args.model, None)
    init = copy.deepcopy(model.state_dict())
    plan = BatchPlan(args.batch_size, args.micro_batch_size, steps_per_epoch=args.steps, total_steps=args.steps)
    toks, _ = tokenize_examples(examples(args.steps * args.batch_size), tokenizer, max_length=2048)
    stream = StepBatches(toks, plan, tokenizer.pad_token_id, seed=0)
    peers = args.peers.split(",")
    runs = [(name, precision) for precision in precisions for name in peers]
    step_tokens = [batch_tokens(stream.batch(s)) for s in range(args.steps)]
    timed = range(max(1, args.warmup), args.steps)
    fastest: dict[tuple[str, str], list[float]] = {}  # per run, per timed step: the shortest time over the repeats
    losses: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for name, precision in runs[r % len(runs):] + runs[: r % len(runs)]:
            model.load_state_dict(init)
            model.train()
            fresh = StepBatches(toks, plan, tokenizer.pad_token_id, seed=0)
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON line only
                ends, ls = run_peer(name, model, tokenizer, fresh, plan, args, precision)
            if ends is None:
                continue
            times = [ends[s] - ends[s - 1] for s in timed]
            key = (name, precision)
            fastest[key] = [min(a, b) for a, b in zip(fastest.get(key, times), times)]
            print(f"  {name} ({precision}): {sum(step_tokens[s] for s in timed) / sum(times):,.0f} tokens/s "
                  "(this run)", file=sys.stderr, flush=True)
            losses[key] = ls
    rates = {key: sum(step_tokens[s] for s in timed) / sum(t) for key, t in fastest.items()}
    at = lambda table, precision: {n: v for (n, p), v in table.items() if p == precision}
    first = precisions[0]
    best, first_losses = at(rates, first), at(losses, first)
    out = {"benchmark": "sft_throughput", "model": args.model, "parameters": sum(p.numel() for p in model.parameters()),
           "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "threads": args.threads,
           "precision": first, "steps_timed": len(timed), "repeats": args.repeats,
           "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size,
           "tokens_per_step": round(sum(step_tokens) / args.steps),
           "tokens_per_s": {k: round(v, 1) for k, v in best.items()}}
    if "ours" in best and "plain" in best:
        out["ratio_vs_plain"] = round(best["ours"] / best["plain"], 3)
        # Same batches, same start: the losses agree to float rounding.
        out["max_loss_diff_vs_plain"] = max(abs(a - b) for a, b in zip(first_losses["ours"], first_losses["plain"]))
    if "ours" in best and "trl" in best:
        out["ratio_vs_trl"] = round(best["ours"] / best["trl"], 3)
        out["first_loss"] = {k: round(v[0], 4) for k, v in first_losses.items() if v}
    for precision in precisions[1:]:  # each precision beside the first: tokens/s, speed-up, how far losses move
        these, these_losses = at(rates, precision), at(losses, precision)
        out.setdefault("by_precision", {})[precision] = {
            "tokens_per_s": {n: round(v, 1) for n, v in these.items()},
            "speedup_vs_" + first: {n: round(v / best[n], 3) for n, v in these.items() if n in best},
            "max_loss_diff_vs_" + first: {n: max(abs(a - b) for a, b in zip(v, first_losses[n]))
                                          for n, v in these_losses.items() if n in first_losses}}
    out["targets"] = {"ratio_vs_plain": 0.95, "ratio_vs_trl": 1.0}
    out["met"] = out.get("ratio_vs_plain", 1) >= 0.95 and out.get("ratio_vs_trl", 1) >= 1.0
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
