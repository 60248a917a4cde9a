"""Generation on the CPU: the static KV cache that ``cache_implementation: auto`` picks there, against
transformers' default dynamic cache, in one run on the same inputs.

Both sides are ``selfdebug.generation.HFGenerator`` on the same model (mini by default, the quickstart's student)
with the same prompts: the held-out MBPP-test mutants as the evaluation shows them (explain + refine, the
mutant's failing test as feedback, in the model's answer form), greedy, ``--max-new-tokens`` new tokens, batches
of ``--batch-size``. Each side generates once to warm up, then ``--repeats`` times, timed; the answers of the two
sides must be identical. Prints one JSON line: seconds per pass of each side, the speedup, generated tokens per
second, and whether the answers match.

    python benchmarks/generation_cache.py
    python benchmarks/generation_cache.py --model outputs/pipeline/<run>/sft/model --prompts 100
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def mutant_requests(n: int, form: str) -> list:
    from selfdebug.core.prompts import refine_messages
    from selfdebug.evaluate.mutants import load_mbpp_mutants
    from selfdebug.generation import GenerationRequest

    problems = load_mbpp_mutants(limit=n)[:n]
    requests = []
    for p in problems:
        failing = next(iter(p.tests.asserts), "")
        messages = refine_messages(p, p.given_program, f"Failed test: {failing}", "explain_refine", form)
        requests.append(GenerationRequest(messages, p))
    return requests


def timed(generator, requests, params, repeats: int) -> tuple[float, list]:
    generator.generate(requests[: generator.batch_size], params)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = generator.generate(requests, params)
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mini")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--chat-format", default="starchat", help="starchat (mini and models trained from it) | template")
    args = ap.parse_args()

    import torch

    from selfdebug.core.answers import model_answer_form
    from selfdebug.generation import HFGenerator, SamplingParams

    form = model_answer_form(args.model)
    requests = mutant_requests(args.prompts, form)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens)
    result = {"model": args.model, "answer_form": form, "prompts": len(requests), "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads()}
    answers = {}
    for side in ("dynamic", "static"):
        gen = HFGenerator(args.model, batch_size=args.batch_size, device="cpu", show_progress=False,
                          chat_format=args.chat_format, cache_implementation=side)
        seconds, answers[side] = timed(gen, requests, params, args.repeats)
        tokens = sum(len(gen.tokenizer.encode(c[0], add_special_tokens=False)) for c in answers[side])
        result[f"{side}_s"] = round(seconds, 2)
        result[f"{side}_tokens_per_s"] = round(tokens / seconds, 1)
        gen.close()
    result["speedup"] = round(result["dynamic_s"] / result["static_s"], 2)
    result["same_answers"] = answers["dynamic"] == answers["static"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
