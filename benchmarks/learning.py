"""Does training make the model better at repairing bugs it has never seen? The quickstart protocol, per seed.

For each seed, one pipeline run (``python -m selfdebug.pipeline +exp=quickstart seed=<s> name=learning``) with
the in-training repair evaluation switched on in SFT and PPO (``sft.repair_eval.every`` / ``rl.repair_eval.every``
appended to the pipeline's ``sft.overrides`` / ``rl.overrides``): greedy repairs of held-out MBPP-test mutants,
logged to each stage's ``repair_eval.jsonl``. Then the numbers the pipeline's evaluations give after one
refinement round, for the base, SFT and RL models on ``mbpp_mutants`` (the quickstart's first 100 MBPP-test
tasks), ``humanevalfix`` and, unless ``--no-all-mutants``, ``mbpp_mutants_all`` (every MBPP-test task's mutant,
an evaluation this script adds to the pipeline's), read from each ``evaluate/<label>/<benchmark>/results.json``;
and S_ex of round 1 on both mutant sets. A finished stage is
skipped by the pipeline itself, so a re-run only runs what a run dir lacks, then reads.

Targets (on the mean over seeds), judged on each mutant set: SFT >= base + 10 points and RL >= SFT + 2 points;
S_ex base < SFT < RL; and SFT > base on humanevalfix.

    python benchmarks/learning.py [--seeds 0,1,2] [--out benchmarks/learning.png] [--extra key=value ...]
        [--sft-every 50] [--rl-every 2] [--repair-limit 32] [--repair-tokens 256] [--no-all-mutants] [--dry-run]

Prints one JSON line (per seed and the mean, the targets, SFT - base and RL - SFT problem by problem with the
seeds pooled, the wall time, the commands) and writes a PNG with
the repair rate against SFT steps and against PPO steps (each seed thin, the mean thick).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("mbpp_mutants", "humanevalfix", "mbpp_mutants_all")
LABELS = ("base", "sft", "rl")
S_EX_KEYS = {"mbpp_mutants": "s_ex", "mbpp_mutants_all": "s_ex_all"}  # benchmark -> its S_ex key
# Every MBPP-test task's mutant (about 500), beside the quickstart's first 100: the same models, a fifth of the
# sampling error. Added to the pipeline's evaluations; a finished run evaluates only what it lacks.
ALL_MUTANTS = '+evaluate.benchmarks.mbpp_mutants_all=["benchmark=mbpp_mutants","limit=null"]'


def compose_pipeline(extra: list[str]):
    """The pipeline config the runs will see (quickstart + ``extra``), to read its override lists and model."""
    from hydra import compose, initialize_config_dir

    from selfdebug.core.cli import CONF_DIR

    with initialize_config_dir(str(Path(CONF_DIR).resolve()), version_base="1.3"):
        return compose("pipeline", overrides=["+exp=quickstart", "name=learning", *extra])


def _hydra_list(items: list[str]) -> str:
    """A Hydra list override value of quoted strings (they hold '=' and '+')."""
    return "[" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "]"


def commands(args) -> list[tuple[int, Path, list[str]]]:
    """``(seed, run dir, command)`` per seed."""
    cfg = compose_pipeline(args.extra)
    repair = lambda stage: [f"{stage}.repair_eval.limit={args.repair_limit}",  # noqa: E731
                            f"{stage}.repair_eval.max_new_tokens={args.repair_tokens}"]
    sft = [str(o) for o in cfg.sft.overrides or []] + [f"sft.repair_eval.every={args.sft_every}", *repair("sft")]
    rl = [str(o) for o in cfg.rl.overrides or []] + [f"rl.repair_eval.every={args.rl_every}", *repair("rl")]
    model = str(cfg.model.name) if hasattr(cfg.model, "name") else str(cfg.model)
    out = []
    for seed in args.seeds:
        root = Path("outputs/pipeline") / f"{cfg.name}-{model}-seed{seed}"
        cmd = [sys.executable, "-m", "selfdebug.pipeline", "+exp=quickstart", f"seed={seed}", "name=learning",
               *args.extra, f"sft.overrides={_hydra_list(sft)}", f"rl.overrides={_hydra_list(rl)}",
               *([ALL_MUTANTS] if args.all_mutants else []), f"hydra.run.dir={root}"]
        out.append((seed, REPO / root, cmd))
    return out


# ------------------------------------------------------------------------------------------------ reading

def _number(entry) -> float | None:
    if isinstance(entry, dict):
        entry = entry.get("value", entry.get("mean"))
    return None if entry is None else float(entry)


def from_results(root: Path, label: str, bench: str) -> tuple[float | None, float | None]:
    """``(pass@1 after round 1, S_ex round 1)`` from ``evaluate/<label>/<bench>/results.json``."""
    path = root / "evaluate" / label / bench / "results.json"
    if not path.is_file():
        return None, None
    res = json.loads(path.read_text())
    rounds = res.get("rounds") or []
    pass1 = _number(rounds[1].get("pass@1")) if len(rounds) > 1 else None
    s_ex = ((res.get("explanation_score") or {}).get("round_1") or {}).get("mean")
    return pass1, None if s_ex is None else float(s_ex)


def read_seed(root: Path) -> dict:
    """``{bench: {label: pass@1}}``, ``s_ex: {label: S_ex}`` (first 100 tasks) and ``s_ex_all`` (all tasks) of one
    pipeline run, from each ``evaluate/<label>/<bench>/results.json`` (the folder names the problem set, which
    the report's rows do not); None where a run lacks the evaluation."""
    out: dict = {key: {} for key in (*BENCHMARKS, *S_EX_KEYS.values())}
    for bench in BENCHMARKS:
        for label in LABELS:
            pass1, s_ex = from_results(root, label, bench)
            out[bench][label] = pass1
            if bench in S_EX_KEYS:
                out[S_EX_KEYS[bench]][label] = s_ex
    return out


PAIRS = (("base", "sft"), ("sft", "rl"))


def paired(roots: list[Path]) -> dict:
    """``{bench: {"sft-base": ..., "rl-sft": ...}}``: the two models problem by problem after round 1, each seed
    (``selfdebug.analysis.paired``) and the seeds pooled (gained and lost summed, one sign test)."""
    from selfdebug.analysis.paired import paired_difference, pooled, problem_pass_rates

    out: dict = {}
    for bench in BENCHMARKS:
        for first, second in PAIRS:
            runs = []
            for root in roots:
                paths = [root / "evaluate" / label / bench / "samples.jsonl" for label in (first, second)]
                comparison = (paired_difference(*(problem_pass_rates(p) for p in paths))
                              if all(p.is_file() for p in paths) else None)
                if comparison is not None:
                    runs.append(comparison)
            out.setdefault(bench, {})[f"{second}-{first}"] = {"pooled": pooled(runs), "per_seed": runs}
    return out


def mean(values) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def targets(m: dict) -> dict:
    """Each target: true / false, or null when a number it needs is missing."""
    def check(*need, test):
        return None if any(v is None for v in need) else bool(test(*need))

    hf = m["humanevalfix"]
    out = {}
    for bench, s_ex in S_EX_KEYS.items():
        mm, sx = m[bench], m[s_ex]
        out[f"{bench}: SFT >= base + 10"] = check(mm["base"], mm["sft"], test=lambda b, s: s >= b + 10)
        out[f"{bench}: RL >= SFT + 2"] = check(mm["sft"], mm["rl"], test=lambda s, r: r >= s + 2)
        out[f"{bench}: S_ex base < SFT < RL"] = check(sx["base"], sx["sft"], sx["rl"],
                                                      test=lambda b, s, r: b < s < r)
    out["humanevalfix: SFT > base"] = check(hf["base"], hf["sft"], test=lambda b, s: s > b)
    return out


def curve(path: Path) -> list[tuple[int, float]]:
    from selfdebug.train.repair_eval import read_rows

    return [(int(r["step"]), float(r["repair/pass@1"])) for r in read_rows(path)]


def plot(curves: dict[str, dict[int, list[tuple[int, float]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (stage, title) in zip(axes, (("sft", "SFT steps"), ("rl", "PPO steps"))):
        by_seed = curves[stage]
        steps: dict[int, list[float]] = {}
        for seed, points in sorted(by_seed.items()):
            if points:
                ax.plot(*zip(*points), lw=0.8, alpha=0.5, marker=".", label=f"seed {seed}")
            for step, value in points:
                steps.setdefault(step, []).append(value)
        if steps:
            xs = sorted(steps)
            ax.plot(xs, [sum(steps[x]) / len(steps[x]) for x in xs], lw=2.5, color="black", label="mean")
        top = max([v for vals in steps.values() for v in vals], default=0.0)
        ax.set_ylim(0, max(10.0, min(100.0, top * 1.15)))  # percent; an all-zero curve still reads as 0
        ax.set_xlabel(title)
        ax.set_title(f"held-out mbpp_mutants repair rate during {stage.upper()}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("repair pass@1 (%)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",") if x.strip()], default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/learning.png"))
    parser.add_argument("--extra", nargs="*", default=[], help="pipeline overrides, e.g. model=tiny")
    parser.add_argument("--sft-every", type=int, default=50, help="sft.repair_eval.every")
    parser.add_argument("--rl-every", type=int, default=2, help="rl.repair_eval.every")
    parser.add_argument("--repair-limit", type=int, default=32, help="MBPP-test tasks of the in-training curve")
    parser.add_argument("--repair-tokens", type=int, default=256, help="its max_new_tokens (as the evaluation)")
    parser.add_argument("--all-mutants", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate on every MBPP-test task's mutant (mbpp_mutants_all)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if not args.seeds or args.sft_every < 1 or args.rl_every < 1:
        parser.error("--seeds needs at least one seed; --sft-every and --rl-every must be >= 1")
    runs = commands(args)
    shown = [shlex.join(cmd[1:]) for _, _, cmd in runs]
    if args.dry_run:
        print(json.dumps({"benchmark": "learning", "dry_run": True, "commands": shown}), flush=True)
        return 0
    start = time.monotonic()
    failed = {}
    for seed, _, cmd in runs:  # the pipeline's own output goes to stderr: stdout is the one JSON line
        code = subprocess.run(cmd, cwd=REPO, stdout=sys.stderr, env=os.environ.copy(), check=False).returncode
        if code != 0:
            failed[seed] = code
    wall = time.monotonic() - start
    per_seed = {str(seed): {**read_seed(root), "run_dir": str(root)} for seed, root, _ in runs}
    means = {key: {label: mean(per_seed[str(s)][key][label] for s, _, _ in runs) for label in LABELS}
             for key in (*BENCHMARKS, *S_EX_KEYS.values())}
    curves = {stage: {seed: curve(root / stage / "repair_eval.jsonl") for seed, root, _ in runs}
              for stage in ("sft", "rl")}
    out = args.out if args.out.is_absolute() else REPO / args.out
    plot(curves, out)
    result = {"benchmark": "learning", "seeds": args.seeds, "per_seed": per_seed, "mean": means,
              "targets": targets(means), "paired": paired([root for _, root, _ in runs]),
              "units": {"pass@1": "percent, after one refinement round",
                        "s_ex": "round 1 on mbpp_mutants (s_ex_all: mbpp_mutants_all), in [0, 1]",
                        "paired": "second minus first on the same problems, in points; gained / lost: problems "
                                  "only the second / only the first repairs; p_sign: exact two-sided sign test"},
              "repair_curves": {stage: {str(k): v for k, v in c.items()} for stage, c in curves.items()},
              "plot": str(out), "wall_s": round(wall, 1), "commands": shown, "failed_seeds": failed}
    print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
