"""SFT step time against ``sft.micro_batch_size``, on a collected dataset, all sizes in one run.

An SFT step takes ``sft.batch_size`` examples; the micro-batch size only decides how they are cut for
gradient accumulation. The loss is the mean over the step's target tokens whatever the cut, so every size
takes the same optimizer step (up to the order of float sums). What the cut changes is the work: a
micro-batch pads every example to its longest, and attention grows with the square of that width. On the
CPU, small micro-batches waste less of it; on a GPU, large ones keep the device busy.

The script composes the quickstart's SFT run (``+exp=quickstart``: its model, dataset settings, answer form,
batch size and step count, as ``selfdebug.pipeline`` passes them to ``selfdebug.train``) on ``--dataset``,
builds the training stream exactly as the SFT stage does, and times forward + backward of ``--steps`` of
its steps, evenly spaced over the run, at each size. The optimizer step is left out: it does not depend on
the cut. Each step counts with its best time over ``--repeats`` (sizes rotate), so another job on a shared
machine does not decide the result. The step losses must agree across sizes; the line says whether they do.

``--attn sdpa,eager`` also crosses the sizes with transformers' attention kernels (``model.attn_implementation``),
switched on the one model between timings; the rows are then ``kernel/size``.

    python benchmarks/sft_micro_batch.py [--dataset outputs/pipeline/quickstart-mini-seed0/collect/dataset]
        [--sizes 8,4,2,1] [--attn sdpa,eager] [--steps 10] [--threads 2] [--repeats 3]
        [--precision 32-true|bf16-mixed]

Prints one JSON line: per size (or kernel/size) the summed step time, non-pad tokens/s, the share of padded
positions, and the speed-up over the first one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT / "outputs" / "pipeline" / "quickstart-mini-seed0" / "collect" / "dataset"


def sft_config(dataset: Path, extra: list[str]):
    """The train config the quickstart's SFT stage runs with, on ``dataset``."""
    from hydra import compose, initialize_config_dir

    import selfdebug.train  # noqa: F401  (registers the sft/rl/peft groups the train config's defaults name)
    from selfdebug.core.cli import CONF_DIR

    with initialize_config_dir(str(Path(CONF_DIR).resolve()), version_base="1.3"):
        pipeline = compose("pipeline", overrides=["+exp=quickstart", *extra], return_hydra_config=True)
        model = pipeline.hydra.runtime.choices["model"]
        overrides = [f"model={model}", f"seed={pipeline.seed}", "logger=none", f"dataset.path={dataset}",
                     *[str(o) for o in pipeline.sft.overrides or []]]
        return compose("train", overrides=overrides)


def training_stream(cfg):
    """``(model, tokenizer, tokenized train examples, SFT settings)`` as the SFT stage builds them."""
    from selfdebug.core.answers import answer_form_of
    from selfdebug.core.models import load_causal_lm
    from selfdebug.core.prompts import apply_chat_format
    from selfdebug.train.data import tokenize_examples
    from selfdebug.train.settings import settings_from
    from selfdebug.train.sft.recipe import load_examples
    from selfdebug.train.sft.settings import SFTSettings

    settings = settings_from(SFTSettings, cfg.get("sft"), "sft")
    name = cfg.model.name_or_path
    train_ex, _, _ = load_examples(cfg, int(cfg.seed), answer_form_of(cfg, name))
    model, tokenizer = load_causal_lm(name, device="cpu")
    apply_chat_format(tokenizer, cfg.model.get("chat_format", "template") or "template")
    tokens, _ = tokenize_examples(train_ex, tokenizer, cfg.dataset.max_length)
    return model, tokenizer, tokens, settings


def padded_share(micro_batches: list[dict]) -> tuple[int, int]:
    """``(pad positions, all positions)`` of one step's micro-batches."""
    mask = [mb["attention_mask"] for mb in micro_batches]
    total = sum(m.numel() for m in mask)
    return total - int(sum(m.sum() for m in mask)), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET,
                    help="a collection's dataset folder (the quickstart writes one)")
    ap.add_argument("--sizes", default="8,4,2,1", help="micro-batch sizes, comma-separated; each divides the batch")
    ap.add_argument("--steps", type=int, default=10, help="timed steps, evenly spaced over the run's plan")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    ap.add_argument("--attn", default=None,
                    help="attention implementations to cross with the sizes, comma-separated (e.g. sdpa,eager); "
                         "default: the model's own")
    ap.add_argument("extra", nargs="*", help="more pipeline overrides, e.g. sft.batch_size=32")
    args = ap.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sys.exit(f"--sizes {args.sizes!r}: expected comma-separated integers, e.g. 8,4,2,1")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    from selfdebug.core.errors import ConfigError, DataError
    from selfdebug.train.data import StepBatches, plan_batches
    from selfdebug.train.sft.module import accumulate

    cfg = sft_config(args.dataset.resolve(), args.extra)
    try:
        model, tokenizer, tokens, settings = training_stream(cfg)
    except (ConfigError, DataError) as err:  # a missing or empty dataset: say so, and how to make one
        sys.exit(f"{err}\n(--dataset: the quickstart writes one: python -m selfdebug.pipeline +exp=quickstart)")
    bad = [s for s in sizes if s < 1 or settings.batch_size % s]
    if bad:
        sys.exit(f"--sizes: {bad} do not divide sft.batch_size = {settings.batch_size}")
    total_steps = plan_batches(len(tokens), settings.batch_size, sizes[0], settings.epochs,
                               settings.max_steps).total_steps
    steps = sorted({round(k * (total_steps - 1) / max(1, args.steps - 1)) for k in range(args.steps)})
    streams = {s: StepBatches(tokens, plan_batches(len(tokens), settings.batch_size, s, settings.epochs,
                                                   settings.max_steps), tokenizer.pad_token_id, seed=int(cfg.seed))
               for s in sizes}
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16-mixed" \
        else contextlib.nullcontext
    attns = args.attn.split(",") if args.attn else [None]
    variants = [(a, s) for a in attns for s in sizes]  # (attention implementation, micro-batch size)

    def key(variant) -> str:
        return str(variant[1]) if variant[0] is None else f"{variant[0]}/{variant[1]}"

    model.train()
    best = {v: [float("inf")] * len(steps) for v in variants}
    losses, pads, tokens_done = {}, {}, {}
    for _ in range(args.repeats):
        for v in variants:
            if v[0] is not None:
                try:
                    model.set_attn_implementation(v[0])
                except (ValueError, ImportError) as err:
                    sys.exit(f"--attn {v[0]}: {err}")
            for j, step in enumerate(steps):
                batch = streams[v[1]].batch(step)
                started = time.perf_counter()
                with autocast():
                    loss, _, n_tokens = accumulate(model, batch, lambda x: x.backward())
                best[v][j] = min(best[v][j], time.perf_counter() - started)
                model.zero_grad(set_to_none=True)
                losses[(v, step)], tokens_done[(v, step)] = loss, n_tokens
                pads[(v, step)] = padded_share(batch)
    rows = {}
    for v in variants:
        seconds = sum(best[v])
        pad, positions = (sum(pads[(v, t)][i] for t in steps) for i in (0, 1))
        rows[key(v)] = {"seconds": round(seconds, 2), "tokens_per_s": round(sum(tokens_done[(v, t)]
                                                                                 for t in steps) / seconds),
                        "padded_share": round(pad / positions, 3),
                        "speedup": round(sum(best[variants[0]]) / seconds, 2)}
    drift = max(abs(losses[(v, t)] - losses[(variants[0], t)]) for v in variants for t in steps)
    print(json.dumps({"benchmark": "sft_micro_batch", "dataset": str(args.dataset), "model":
                      Path(str(model.config.name_or_path or "")).name, "precision": args.precision, "threads": args.threads,
                      "batch_size": settings.batch_size, "examples": len(tokens), "timed_steps": steps,
                      "attn": args.attn, "sizes": rows, "max_loss_difference": float(f"{drift:.2e}"),
                      "same_losses": drift < 1e-4}))


if __name__ == "__main__":
    main()
