"""RL throughput: rollouts per second of whole RL iterations (generate + judge + reward + update), our PPO
(``selfdebug.train.rl.module.PPOModule`` in a Lightning Trainer) against TRL's ``GRPOTrainer`` (TRL 1.x has no
PPOTrainer), in one run, on the same inputs:

- the same model (the tiny model, a fresh copy per side), the same prompts (MBPP train problems rendered as the
  refinement turn), the same sampling (temperature 1, top_p 1, top_k 0) and generation length cap;
- the same execution reward: the share of the problem's unit tests that the completion passes, judged by the
  same sandbox (ours: ``R_code = 5 * S_ut - 5``, the composite reward with only the unit-test term; TRL: ``S_ut``).
  ``--judge raw`` (default) runs every whole completion as the program (``rl.code_from=raw``), so each sample
  really goes through the sandbox: the random-weight tiny model writes no fenced code block, and with
  ``--judge fenced`` nothing would be executed;
- the same work per iteration: ``--batch`` completions (``--generations`` per prompt), one optimizer step over
  them, the same KL penalty coefficient to a reference copy of the model (``--kl``; 0 drops the reference on both).

Ours also runs its value head and, by default, a separate old-log-prob pass (PPO's exact recompute); TRL's GRPO
with one update per generation skips that pass and has no critic. "ours_generation" is the same PPO with
``rl.rollout_logprobs=generation`` (old log-probs and values kept from sampling, one forward pass fewer). Each
side runs ``--iterations`` iterations; the first is warm-up and left out. Prints one JSON line: samples/s of each, the
ratio, and our time split (generate / judge / reward / evaluate / update; judge counts only the wait after
generation, because each chunk is judged while the next one generates).

    python benchmarks/rl_throughput.py                       # CPU, tiny model
    python benchmarks/rl_throughput.py --device cuda --batch 64 --max-new-tokens 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def build_prompts(n: int, mode: str) -> list[tuple]:
    """``(problem, prompt text)`` for the first ``n`` MBPP train problems, as the self-debugging turn."""
    from selfdebug.problems import data_file, load_mbpp
    from selfdebug.core.prompts import refine_messages, render_chat

    problems = load_mbpp(data_file("mbpp.jsonl"), split="train")[:n]
    out = []
    for p in problems:
        feedback = f"Failed test: {p.tests.asserts[0]}" if p.tests.asserts else "Failed test"
        out.append((p, render_chat(refine_messages(p, p.reference, feedback, mode))))
    return out


def judge_completions(sandbox, problems, texts: list[str], raw: bool) -> list[float]:
    from selfdebug.core.prompts import assemble_program, parse_completion

    programs = []
    for problem, text in zip(problems, texts):
        code = (text.rstrip() + "\n" if text.strip() else None) if raw else parse_completion(text).code
        programs.append((assemble_program(problem, code) if code is not None else None, problem.tests))
    return [r.pass_fraction for r in sandbox.run_batch(programs)]


# ------------------------------------------------------------------------------------------------ ours

def run_ours(args, prompts, sandbox, rollout_logprobs: str = "recompute") -> dict:
    import pytorch_lightning as pl
    import torch

    from selfdebug.train.rl.data import PromptStream, RLItem
    from selfdebug.train.rl.module import PPOModule
    from selfdebug.train.rl.settings import PPOSettings
    from selfdebug.core.models import load_causal_lm
    from selfdebug.rewards import CompositeReward, ReferenceIndex

    model, tokenizer = load_causal_lm("tiny", dtype="float32")
    ids = tokenizer([text for _, text in prompts], add_special_tokens=True)["input_ids"]
    items = [RLItem(f"w{i}", problem, list(prompt_ids), "bench") for i, ((problem, _), prompt_ids)
             in enumerate(zip(prompts, ids))]
    reward = CompositeReward(weights={"codebleu": 0.0, "unit_tests": 1.0, "explanation": 0.0}, kl_coef=args.kl,
                             references=ReferenceIndex(), name="unit_tests_only")
    settings = PPOSettings(mode="refine" if args.judge == "raw" else "explain_refine", code_from=args.judge
                           if args.judge == "raw" else "fenced", rollout_logprobs=rollout_logprobs, batch_size=args.batch, samples_per_prompt=args.generations,
                           generation_batch_size=args.generation_batch or args.batch,
                           max_new_tokens=args.max_new_tokens, total_steps=args.iterations, lr=args.lr, ppo_epochs=1,
                           mini_batch_size=args.batch, micro_batch_size=args.micro_batch or args.batch,
                           kl_control="fixed", max_prompt_length=4096, table_every=0, checkpoint_every=0)
    module = PPOModule(model, tokenizer, reward, sandbox, items, settings, seed=0)
    stream = PromptStream(len(items), settings.prompts_per_step, settings.total_steps, seed=0)
    stamps: list[float] = []

    class Timer(pl.Callback):
        def on_train_batch_end(self, *a, **k):
            if args.device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer = pl.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_epochs=1,
                         precision=args.precision, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=stream)
    timed = module.history[1:]
    span = stamps[-1] - stamps[0]
    split = {k: sum(h[f"time/{k}"] for h in timed) for k in ("generate", "judge", "reward", "evaluate", "update")}
    step_total = sum(h["time/step"] for h in timed)
    return {"samples_per_s": args.batch * (len(stamps) - 1) / span, "seconds_per_iteration": span / (len(stamps) - 1),
            "time_split": {k: round(v / step_total, 4) for k, v in split.items()},
            "judge_reward_share": round((split["judge"] + split["reward"]) / step_total, 4),
            "response_length_mean": sum(h["rollout/response_length_mean"] for h in timed) / len(timed),
            "reference_pass": module.use_reference}


# ------------------------------------------------------------------------------------------------ TRL

def run_trl(args, prompts, sandbox) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from selfdebug.core.models import load_causal_lm

    model, tokenizer = load_causal_lm("tiny", dtype="float32")
    problems = [p for p, _ in prompts]
    dataset = Dataset.from_list([{"prompt": text, "task_index": i} for i, (_, text) in enumerate(prompts)])

    def unit_test_reward(prompts, completions, task_index, **kwargs):
        return judge_completions(sandbox, [problems[i] for i in task_index], completions, args.judge == "raw")

    stamps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            if args.device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    out_dir = tempfile.mkdtemp(prefix="trl-grpo-")
    config = GRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=args.batch, num_generations=args.generations,
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, max_completion_length=args.max_new_tokens,
        max_steps=args.iterations, learning_rate=args.lr, beta=args.kl, temperature=1.0, top_p=1.0, top_k=0,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=0, use_cpu=args.device == "cpu",
        bf16=args.precision.startswith("bf16"), dataloader_num_workers=0, log_completions=False, lr_scheduler_type="constant",
        warmup_steps=0)
    trainer = GRPOTrainer(model=model, reward_funcs=unit_test_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Timer()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    span = stamps[-1] - stamps[0]
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history[1:] if "completions/mean_length" in h]
    return {"samples_per_s": args.batch * (len(stamps) - 1) / span, "seconds_per_iteration": span / (len(stamps) - 1),
            "response_length_mean": sum(lengths) / len(lengths) if lengths else None,
            "trl_version": __import__("trl").__version__, "reference_pass": args.kl > 0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=6, help="iterations per side; the first is warm-up")
    parser.add_argument("--batch", type=int, default=16, help="completions per iteration")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt")
    parser.add_argument("--generation-batch", type=int, default=None, help="ours: completions generated at once "
                        "(default: --batch; smaller chunks let judging overlap generation)")
    parser.add_argument("--micro-batch", type=int, default=None, help="ours: rows per forward (default: --batch)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=64, help="MBPP train problems to draw prompts from")
    parser.add_argument("--kl", type=float, default=0.04, help="KL coefficient (ours fixed kl_coef, TRL beta)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default="32-true", help="ours: Lightning precision; bf16-mixed also sets TRL bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--judge", choices=("raw", "fenced"), default="raw",
                        help="raw: the whole completion is the program; fenced: its last ```python block")
    parser.add_argument("--only", choices=("ours", "ours_generation", "trl"), default=None)
    parser.add_argument("--allow-unisolated", action="store_true", help="run the sandbox without namespaces "
                        "where they are unavailable (limits only)")
    args = parser.parse_args(argv)

    import torch

    from selfdebug.execution import Sandbox

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = build_prompts(args.prompts, "refine" if args.judge == "raw" else "explain_refine")
    result = {"benchmark": "rl_throughput", "device": args.device, "threads": torch.get_num_threads(),
              "batch": args.batch, "generations_per_prompt": args.generations, "max_new_tokens": args.max_new_tokens,
              "kl": args.kl, "judge": args.judge, "iterations_timed": args.iterations - 1, "model": "tiny",
              "prompts": len(prompts)}
    # Each side gets a fresh sandbox (its verdict cache starts empty), so no side judges from another's cache.
    sides = {"ours": lambda sb: run_ours(args, prompts, sb),
             "ours_generation": lambda sb: run_ours(args, prompts, sb, rollout_logprobs="generation"),
             "trl": lambda sb: run_trl(args, prompts, sb)}
    for name, side in sides.items():
        if args.only not in (None, name):
            continue
        torch.manual_seed(0)
        with Sandbox(timeout=5.0, allow_unisolated=args.allow_unisolated) as sandbox:
            try:
                result[name] = side(sandbox)
            except Exception as exc:
                if name != "trl":
                    raise
                result[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            result[name]["sandbox"] = sandbox.stats()
    trl = result.get("trl") or {}
    for key in ("ours", "ours_generation"):
        if result.get(key) and "samples_per_s" in trl:
            result[f"ratio_{key}_over_trl"] = round(result[key]["samples_per_s"] / trl["samples_per_s"], 3)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
