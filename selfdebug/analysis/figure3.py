"""The paper's Figure 3 over a collected dataset: S_cb, S_ut, S_ex, R_code and R_expl, correct vs wrong refinements.

Every score is computed with the reward's own public functions (``selfdebug.rewards``), each record against the
OTHER verified records of the same wrong program, as a PPO rollout is scored against the verified references:

    S_cb   CodeBLEU of the refinement to the other verified refinements        R_code = 5 (S_cb + S_ut) - 5
    S_ut   the pass fraction the record carries (n_passed / n_tests)
    S_ex   mean cosine similarity of the explanation to the other verified     R_expl = (50 S_ex - 35) / 3
           explanations (the embedder of reward.explanation_model)

R_expl's affine map was calibrated for all-roberta-large-v1, whose S_ex lie mostly in [0.4, 1.0]; the histograms
and quantiles show at a glance whether another embedder's scale fits it (R_expl = -5, 0, 5 at 0.4, 0.7, 1.0).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfdebug.core.errors import DataError

METRICS = ("S_cb", "S_ut", "S_ex", "R_code", "R_expl")
GROUPS = ("correct", "wrong")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
FIXED_RANGES = {"S_cb": (0.0, 1.0), "S_ut": (0.0, 1.0), "S_ex": (0.0, 1.0), "R_code": (-5.0, 5.0)}
S_EX_CALIBRATED = (0.4, 1.0)  # the paper's observed S_ex range for all-roberta-large-v1 (its Fig. 3c)


@dataclass
class Figure3Scores:
    """Scores per verdict group and metric, and how many records were read, eligible and scored."""

    dataset: Path
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    records: int = 0
    eligible: int = 0  # records whose wrong program has at least one other verified record
    scored: int = 0
    embedder: str = ""


def find_collections(paths: list[Path]) -> list[Path]:
    """The collected ``dataset/`` folders under ``paths`` (``stats.json`` beside ``trajectories/``)."""
    found = []
    for root in paths:
        for stats in sorted(root.rglob("stats.json")):
            if (stats.parent / "trajectories").is_dir():
                found.append(stats.parent)
    return found


def read_trajectories(dataset: Path) -> list[dict]:
    rows = []
    for shard in sorted((dataset / "trajectories").glob("part-*.jsonl")):
        for i, line in enumerate(shard.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{shard}:{i}: not a JSON line ({exc.msg})") from None
    return rows


def score_dataset(dataset: Path, scorer, max_records: int = 200, seed: int = 0) -> Figure3Scores:
    """Score up to ``max_records`` records (a seeded sample of the eligible ones) of a collected dataset."""
    from selfdebug.rewards import code_reward, codebleu_score, explanation_reward

    records = read_trajectories(dataset)
    verified: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("verdict") == "correct":
            verified[str(r["wrong_id"])].append(r)

    def others(r: dict) -> list[dict]:
        return [v for v in verified[str(r["wrong_id"])] if v["id"] != r["id"]]

    eligible = [r for r in records if others(r)]
    picked = eligible if len(eligible) <= max_records else \
        [eligible[i] for i in sorted(random.Random(seed).sample(range(len(eligible)), max_records))]
    s_cb = np.array([codebleu_score(r["refinement"], [o["refinement"] for o in others(r)]) for r in picked])
    s_ut = np.array([r["n_passed"] / r["n_tests"] if r.get("n_tests") else 0.0 for r in picked])
    s_ex = scorer.similarities([r.get("explanation") or "" for r in picked],
                               [[o["explanation"] for o in others(r) if (o.get("explanation") or "").strip()]
                                for r in picked]) if picked else np.zeros(0)
    values = {"S_cb": s_cb, "S_ut": s_ut, "S_ex": s_ex, "R_code": np.asarray(code_reward(s_cb, s_ut)),
              "R_expl": np.asarray(explanation_reward(s_ex))}
    out = Figure3Scores(dataset, records=len(records), eligible=len(eligible), scored=len(picked),
                        embedder=str(getattr(scorer, "model_name_or_path", "")))
    for group in GROUPS:
        mask = np.array([(r["verdict"] == "correct") == (group == "correct") for r in picked], dtype=bool)
        out.scores[group] = {m: np.atleast_1d(v)[mask] if len(picked) else np.zeros(0) for m, v in values.items()}
    return out


def quantile_rows(result: Figure3Scores) -> list[list]:
    """One row per metric and verdict group: n, mean and the quantiles."""
    rows = []
    for metric in METRICS:
        for group in GROUPS:
            v = result.scores[group][metric]
            cells = [f"{x:.3f}" for x in (v.mean(), *np.quantile(v, QUANTILES))] if len(v) else ["-"] * 6
            rows.append([metric, group, len(v), *cells])
    return rows


QUANTILE_HEADER = ["score", "refinements", "n", "mean", *(f"q{int(q * 100):02d}" for q in QUANTILES)]


def scale_note(result: Figure3Scores) -> str:
    """One sentence: where this embedder's S_ex of verified explanations lie against the calibrated range."""
    v = result.scores["correct"]["S_ex"]
    if not len(v):
        return "No correct refinement with another verified explanation of the same wrong program: no S_ex to show."
    lo, hi = S_EX_CALIBRATED
    inside = 100 * float(np.mean((v >= lo) & (v <= hi)))
    return (f"Embedder {result.embedder or '?'}: {inside:.0f}% of the correct refinements' S_ex lie in [{lo}, {hi}], "
            f"the range R_expl = (50 S_ex - 35)/3 was calibrated for (R_expl -5 at {lo}, 0 at 0.7, 5 at {hi}); "
            f"median S_ex {np.median(v):.3f}.")


def plot(result: Figure3Scores, path: Path) -> Path:
    """Histograms of each score, correct vs wrong refinements, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.0 * len(METRICS), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], METRICS):
        both = np.concatenate([result.scores[g][metric] for g in GROUPS])
        # Scores on their whole range (the S_ex anchors stay in view); R_expl on what it reaches.
        lo, hi = FIXED_RANGES.get(metric) or ((both.min(), both.max()) if len(both) else (0.0, 1.0))
        lo = min(lo, both.min()) if len(both) else lo
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 26)
        for group, color in zip(GROUPS, ("tab:green", "tab:red")):
            v = result.scores[group][metric]
            if len(v):
                ax.hist(v, bins=bins, alpha=0.55, color=color, label=f"{group} (n={len(v)})")
        if metric == "S_ex":
            for x in S_EX_CALIBRATED:
                ax.axvline(x, color="k", linestyle=":", linewidth=1)
        ax.set_title(metric)
        ax.set_ylabel("refinements")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Figure 3: reward terms over {result.dataset.parent.name} ({result.scored} of {result.records} "
                 "records)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
