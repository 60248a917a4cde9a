"""``python -m selfdebug.report``: run dirs -> one Markdown + HTML report with tables and PNG plots.

    python -m selfdebug.report 'runs=[outputs/,multirun/2026-11-26_10-00-00]' out=reports/latest

It reads every evaluation (``results.json``) and training run (``metrics.jsonl`` with a ``stage`` in its
``.hydra/config.yaml``) under the given folders and writes:

- repair benchmarks, base vs SFT vs RL (runs with ``start: given``, e.g. ``benchmark=mbpp_mutants|humanevalfix``):
  per benchmark and model, pass@1 of the given code and after round 1 with its bootstrap interval, the success
  refinement rate and S_ex of round 1 with its interval; then each model against the one before it (sft - base,
  rl - sft) problem by problem: the difference with its interval, the programs gained and lost, a sign test;
  the same numbers in ``repair_table.json`` beside it;
- Table 2 of the paper: label x mode x benchmark -> pass@1 / pass@10 of the initial code and after one round
  of refinement (the paper's tables are one round; later rounds are in the by-round plot, its Fig. 4);
- Table 4: success refinement rate of round 1;
- repair benchmarks (``benchmark=humanevalfix|mbpp_mutants``): pass@1 by round per bug type;
- explanation quality scored by the LLM judge (``judge=openai|hf``), correctness and helpfulness 1-5;
- pass@k by refinement round per model (PNG), and reward terms and KL over training steps (PNG);
- sweep summaries: runs that differ only in ``seed`` form a cell; mean and 95% confidence interval per cell;
- for each collected dataset among the inputs (``dataset/stats.json``): the paper's Figure 3, the distributions
  of S_cb, S_ut, S_ex, R_code and R_expl over its records, correct vs wrong refinements (PNG + quantile table;
  ``figure3.max_records`` caps the records scored, ``figure3.explanation_model`` picks the embedder).

A user without W&B gets the same picture from the files alone.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig

from selfdebug.analysis import options
from selfdebug.analysis.paired import paired_difference, problem_pass_rates
from selfdebug.core.cli import CONF_DIR
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.tracking import write_json_atomic

SEED_KEYS = ("seed",)


# ------------------------------------------------------------------------------------------------ reading

def _config(run_dir: Path) -> dict:
    path = run_dir / ".hydra" / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.exists() else []


def find_runs(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """(evaluation runs, training runs) under ``paths``."""
    evals, trains = [], []
    for root in paths:
        for results in sorted(root.rglob("results.json")):
            run_dir = results.parent
            cfg = _config(run_dir)
            res = json.loads(results.read_text())
            evals.append({"dir": run_dir, "config": cfg, "overrides": _overrides(run_dir), "results": res,
                          "label": cfg.get("label") or res.get("model", "?"),
                          "benchmark": res.get("benchmark", "?"), "mode": res.get("mode", "?")})
        for metrics in sorted(root.rglob("metrics.jsonl")):
            run_dir = metrics.parent
            cfg = _config(run_dir)
            if cfg.get("stage") not in ("sft", "rl"):
                continue
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            trains.append({"dir": run_dir, "config": cfg, "overrides": _overrides(run_dir), "metrics": rows,
                           "stage": cfg["stage"], "label": cfg.get("label") or f"{cfg['stage']}:{run_dir.name}"})
    return evals, trains


# ------------------------------------------------------------------------------------------------ numbers

def _value(entry: dict, key: str) -> float | None:
    v = entry.get(key)
    return None if v is None else v["value"]


REPORTED_ROUND = 1  # the paper's Tables 2-4 are one round of refinement


def _round(results: dict, index: int) -> dict | None:
    return next((r for r in results["rounds"] if r["round"] == index), None)


MODEL_ORDER = {"base": 0, "sft": 1, "rl": 2}  # the pipeline's labels, in training order; any other label follows


def _model_key(label: str) -> tuple:
    return (MODEL_ORDER.get(label, len(MODEL_ORDER)), label)


def _problems(e: dict) -> int:
    return int(e["results"].get("n_problems") or 0)


def repair_evals(evals: list[dict]) -> list[dict]:
    """Evaluations that start from a given wrong program (the repair benchmarks), by benchmark and its number of
    problems (one benchmark evaluated on two problem sets, e.g. ``limit=100`` and all, gives two groups), then
    base, sft, rl (then other labels), then mode."""
    return sorted((e for e in evals if e["results"].get("start") == "given"),
                  key=lambda e: (e["benchmark"], _problems(e), _model_key(e["label"]), e["mode"], str(e["dir"])))


def _interval(entry: dict | None, value_key: str) -> dict | None:
    """``{"value", "low", "high"}`` of a results.json entry (pass@k: value/ci_low/ci_high; S_ex: mean/ci_low/
    ci_high, or low/high), or None when the entry or its value is absent."""
    if not entry or entry.get(value_key) is None:
        return None
    low = entry.get("ci_low", entry.get("low"))
    high = entry.get("ci_high", entry.get("high"))
    return {"value": float(entry[value_key]), "low": None if low is None else float(low),
            "high": None if high is None else float(high)}


def repair_records(evals: list[dict]) -> list[dict]:
    """One record per repair evaluation: the numbers of the "base vs SFT vs RL" table, machine-readable
    (``repair_table.json``). pass@1 and the refinement rate are in percent, as in results.json; S_ex in [0, 1]."""
    runs = repair_evals(evals)
    modes = {e["mode"] for e in runs}
    records = []
    for e in runs:
        res = e["results"]
        given, refined = _round(res, 0) or {}, _round(res, REPORTED_ROUND)
        rate = (refined or {}).get("refinement", {}).get("cumulative_rate")
        s_ex = _interval((res.get("explanation_score") or {}).get("round_1"), "mean")
        if s_ex is not None:
            s_ex["n"] = (res["explanation_score"]["round_1"]).get("n")
        records.append({
            "benchmark": e["benchmark"], "model": e["label"], "mode": e["mode"],
            "label": e["label"] if len(modes) == 1 else f"{e['label']} ({e['mode']})",
            "problems": res.get("n_problems"), "n_samples": res.get("n_samples"),
            "pass@1_given": _value(given, "pass@1"),
            "pass@1_round1": _interval(refined and refined.get("pass@1"), "value"),
            "refinement_rate_round1": rate, "s_ex_round1": s_ex, "run_dir": str(e["dir"])})
    return records


def repair_rows(records: list[dict]) -> list[list]:
    """The table's cells: pass@1 with its interval as ``value [low, high]``, "-" where a number is absent."""
    def fmt(v, digits=2):
        return "-" if v is None else f"{v:.{digits}f}"

    def ci(entry, digits):
        if entry is None:
            return "-"
        return f"{fmt(entry['value'], digits)} [{fmt(entry['low'], digits)}, {fmt(entry['high'], digits)}]"

    return [[r["benchmark"], r["label"], "-" if r["problems"] is None else r["problems"], fmt(r["pass@1_given"]),
             ci(r["pass@1_round1"], 2), fmt(r["refinement_rate_round1"]), ci(r["s_ex_round1"], 3)]
            for r in records]


def paired_records(evals: list[dict]) -> list[dict]:
    """Each repair benchmark's models compared problem by problem, each with the one before it in training
    order (sft - base, rl - sft; ``selfdebug.analysis.paired``), after round 1. Only where each label has one
    evaluation of that benchmark, number of problems and mode (a seed sweep is summarised by its cells instead)
    and both runs kept their ``samples.jsonl``."""
    groups: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for e in repair_evals(evals):
        groups[(e["benchmark"], _problems(e), e["mode"])].append(e)
    records = []
    for (benchmark, _, mode), runs in groups.items():
        labels = [e["label"] for e in runs]
        if len(set(labels)) != len(labels):
            continue
        for first, second in itertools.pairwise(runs):
            paths = [e["dir"] / "samples.jsonl" for e in (first, second)]
            if not all(p.is_file() for p in paths):
                continue
            comparison = paired_difference(*(problem_pass_rates(p, REPORTED_ROUND) for p in paths))
            if comparison is not None:
                records.append({"benchmark": benchmark, "mode": mode, "first": first["label"],
                                "second": second["label"], **comparison})
    return records


def paired_rows(records: list[dict]) -> list[list]:
    """The paired table's cells; the comparison names its mode when the runs have more than one."""
    several_modes = len({r["mode"] for r in records}) > 1
    return [[r["benchmark"], f"{r['second']} - {r['first']}" + (f" ({r['mode']})" if several_modes else ""),
             r["problems"], f"{r['first_pass']:.2f}",
             f"{r['second_pass']:.2f}", f"{r['difference']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]", r["gained"],
             r["lost"], f"{r['p_sign']:.3f}" if r["p_sign"] >= 0.001 else f"{r['p_sign']:.1e}"] for r in records]


def table2_rows(evals: list[dict]) -> list[list]:
    """pass@1 / pass@10 of the initial code and after round 1 (read from ``rounds``, so results.json files
    written before round 1 was the reported one read the same way)."""
    rows = []
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for e in sorted(evals, key=lambda e: (e["label"], e["mode"], e["benchmark"])):
        rounds = e["results"]["rounds"]
        first, refined = rounds[0], _round(e["results"], REPORTED_ROUND) or {}
        rows.append([e["label"], e["mode"], e["benchmark"], fmt(_value(first, "pass@1")),
                     fmt(_value(refined, "pass@1")), fmt(_value(first, "pass@10")), fmt(_value(refined, "pass@10")),
                     len(rounds) - 1])
    return rows


def table4_rows(evals: list[dict]) -> list[list]:
    """The success refinement rate of round 1: the share of wrong initial programs fixed by one refinement."""
    rows = []
    for e in sorted(evals, key=lambda e: (e["label"], e["mode"], e["benchmark"])):
        res = e["results"]
        refined = _round(res, REPORTED_ROUND)
        rate = refined.get("refinement", {}).get("cumulative_rate") if refined else None
        rows.append([e["label"], e["mode"], e["benchmark"], res.get("initial_wrong", "-"),
                     "-" if rate is None else f"{rate:.2f}"])
    return rows


def bug_type_rows(evals: list[dict]) -> list[list]:
    """Runs whose problems carry a bug type (the repair benchmarks): pass@1 at each round, per bug type."""
    rows = []
    for e in sorted(evals, key=lambda e: (e["benchmark"], e["label"], e["mode"])):
        for bug_type, entry in sorted(e["results"].get("by_bug_type", {}).items()):
            trail = " → ".join("-" if r.get("pass@1") is None else f"{r['pass@1']['value']:.2f}" for r in entry["rounds"])
            rows.append([e["label"], e["mode"], e["benchmark"], e["results"].get("start", "sample"), bug_type,
                         entry["n_problems"], trail])
    return rows


def judge_rows(evals: list[dict]) -> list[list]:
    """Explanation quality by the LLM judge (runs evaluated with judge=openai|hf): mean [95% CI] per axis."""
    def cell(entry: dict) -> str:
        if entry.get("mean") is None:
            return "-"
        return f"{entry['mean']:.2f} [{entry['ci_low']:.2f}, {entry['ci_high']:.2f}]"

    rows = []
    for e in sorted(evals, key=lambda e: (e["label"], e["mode"], e["benchmark"])):
        j = e["results"].get("judge")
        if j:
            rows.append([e["label"], e["mode"], e["benchmark"], j["judge"], j["scored"], j["judge_unparsed"],
                         cell(j["correctness"]), cell(j["helpfulness"])])
    return rows


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t interval (0 half-width for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy import stats as st

    return mean, float(st.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def cell_key(overrides: list[str]) -> str:
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in SEED_KEYS and not o.startswith("hydra.")]
    return " ".join(sorted(kept)) or "(defaults)"


def final_training_metric(run: dict, key: str) -> float | None:
    values = [r[key] for r in run["metrics"] if isinstance(r.get(key), (int, float))]
    return float(values[-1]) if values else None


def sweep_rows(evals: list[dict], trains: list[dict]) -> list[list]:
    """One row per cell (runs differing only in seed): n seeds, mean +- CI of the headline figure."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for e in evals:
        v = e["results"].get("pass@k_final", {}).get("pass@1")
        if v is not None:
            cells[("evaluate", e["benchmark"], cell_key(e["overrides"]), "final pass@1")].append(v)
    for t in trains:
        key = "reward/total" if t["stage"] == "rl" else "train/loss"
        v = final_training_metric(t, key)
        if v is not None:
            cells[(t["stage"], "-", cell_key(t["overrides"]), f"final {key}")].append(v)
    rows = []
    for (kind, bench, cell, metric), values in sorted(cells.items()):
        mean, half = mean_ci(values)
        rows.append([kind, bench, cell, metric, len(values), f"{mean:.3f}", f"± {half:.3f}"])
    return rows


# ------------------------------------------------------------------------------------------------ plots

def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG and close (a report draws many figures: each one's memory is freed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pass_by_round(evals: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for bench in sorted({e["benchmark"] for e in evals}):
        runs = [e for e in evals if e["benchmark"] == bench]
        ks = sorted({k for e in runs for k in e["results"]["rounds"][0] if k.startswith("pass@")},
                    key=lambda k: int(k.split("@")[1]))
        fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 3.6), squeeze=False)
        # Models with equal scores would hide one another: each line is shifted a little along x and gets its
        # own marker and dash, so every model stays visible (the ticks still mark whole rounds).
        width = 0.12 if len(runs) > 1 else 0.0
        for ax, k in zip(axes[0], ks):
            for i, e in enumerate(runs):
                rounds = e["results"]["rounds"]
                shift = (i / (len(runs) - 1) - 0.5) * width if len(runs) > 1 else 0.0
                xs = [r["round"] + shift for r in rounds if k in r]
                ys = [r[k]["value"] for r in rounds if k in r]
                lo = [r[k]["ci_low"] for r in rounds if k in r]
                hi = [r[k]["ci_high"] for r in rounds if k in r]
                ax.plot(xs, ys, marker="osD^vP*X"[i % 8], linestyle=("-", "--", ":", "-.")[i % 4],
                        label=f"{e['label']} ({e['mode']})")
                ax.fill_between(xs, lo, hi, alpha=0.15)
            ax.set_xlabel("refinement round (0 = initial code)")
            ax.set_ylabel(f"{k} (%)")
            ax.set_title(f"{bench}: {k} by round")
            ax.set_xticks(sorted({r["round"] for e in runs for r in e["results"]["rounds"]}))
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        written.append(save_figure(fig, out / f"pass_by_round_{bench}.png"))
    return written


def plot_training(trains: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for stage, prefixes in (("rl", ("reward/total", "reward/r_", "reward/s_", "objective/kl")),
                            ("sft", ("train/loss", "train/lr", "heldout/loss"))):
        runs = [t for t in trains if t["stage"] == stage]
        keys = sorted({k for t in runs for r in t["metrics"] for k, v in r.items()
                       if k.startswith(prefixes) and isinstance(v, (int, float))})
        if not runs or not keys:
            continue
        cols = min(3, len(keys))
        n_rows = -(-len(keys) // cols)
        fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols, 3.2 * n_rows), squeeze=False)
        for ax, key in zip([a for row in axes for a in row], keys):
            for t in runs:
                pts = [(r.get("step", i), r[key]) for i, r in enumerate(t["metrics"]) if isinstance(r.get(key), (int, float))]
                if pts:
                    ax.plot(*zip(*pts), label=t["label"])
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in [a for row in axes for a in row][len(keys):]:
            ax.axis("off")
        axes[0][0].legend(fontsize=7)
        written.append(save_figure(fig, out / f"training_{stage}.png"))
    return written


# ------------------------------------------------------------------------------------------------ writing

def _markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


TR = ["benchmark", "model", "problems", "pass@1 given", "pass@1 after round 1 [low, high]",
      "refinement rate, round 1 (%)", "S_ex round 1 [low, high]"]
TP = ["benchmark", "comparison", "problems", "pass@1 first", "pass@1 second", "difference [low, high]",
      "gained", "lost", "sign test p"]
T2 = ["model", "mode", "benchmark", "pass@1 initial", "pass@1 refined (round 1)", "pass@10 initial",
      "pass@10 refined (round 1)", "rounds run"]
T4 = ["model", "mode", "benchmark", "wrong initial programs", "success refinement rate, round 1 (%)"]
TB = ["model", "mode", "benchmark", "start", "bug type", "problems", "pass@1 by round (0 → R)"]
TJ = ["model", "mode", "benchmark", "judge", "explanations scored", "unparsed", "correctness (1-5)",
      "helpfulness (1-5)"]
SW = ["kind", "benchmark", "cell (overrides, seed excluded)", "metric", "seeds", "mean", "95% CI"]


def figure3_sections(collections: list[Path], out: Path, max_records: int, explanation_model: str | None,
                     seed: int) -> tuple[list[tuple], list[Path], list[str]]:
    """(table sections, PNGs, notes) of the paper's Figure 3, one per collected dataset."""
    from selfdebug.analysis import figure3
    from selfdebug.rewards import ExplanationScorer

    scorer = ExplanationScorer(explanation_model)
    sections, plots, notes = [], [], []
    for i, dataset in enumerate(collections):
        result = figure3.score_dataset(dataset, scorer, max_records=max_records, seed=seed)
        name = dataset.parent.name or f"collection{i}"
        suffix = f"_{i}" if len(collections) > 1 else ""
        title = (f"Reward terms over the training data (Figure 3): {name}, {result.scored} of {result.eligible} "
                 f"records with another verified refinement of the same wrong program ({result.records} in all)")
        sections.append((title, figure3.QUANTILE_HEADER, figure3.quantile_rows(result)))
        notes.append(figure3.scale_note(result))
        if result.scored:
            plots.append(figure3.plot(result, out / f"figure3_reward_terms{suffix}.png"))
    return sections, plots, notes


REPAIR_TITLE = "Repair benchmarks: base vs SFT vs RL"
REPAIR_UNITS = {"pass@1": "percent of problems", "refinement_rate_round1": "percent of wrong given programs fixed",
                "s_ex_round1": "mean cosine similarity to the reference explanations, in [0, 1]",
                "intervals": "bootstrap over problems (results.json bootstrap.confidence)",
                "paired": "second model minus first on the same problems after round 1: difference in points with "
                          "a 95% bootstrap interval over problems, problems gained and lost, exact two-sided "
                          "sign test on the problems where they differ"}
PAIRED_TITLE = "Repair benchmarks: paired differences (the same problems)"


def write_report(paths: list[Path], out: Path, figure3_max_records: int = 200,
                 explanation_model: str | None = None, seed: int = 0) -> dict:
    from selfdebug.analysis.figure3 import find_collections

    evals, trains = find_runs(paths)
    collections = find_collections(paths) if figure3_max_records > 0 else []
    if not evals and not trains and not collections:
        raise DataError(f"no run dirs (results.json, training metrics.jsonl or a collected dataset) under "
                        f"{', '.join(map(str, paths))}")
    out.mkdir(parents=True, exist_ok=True)
    plots = (plot_pass_by_round(evals, out) if evals else []) + plot_training(trains, out)
    fig3_sections, fig3_plots, fig3_notes = (figure3_sections(collections, out, figure3_max_records,
                                                              explanation_model, seed)
                                             if collections else ([], [], []))
    plots += fig3_plots
    sections = []
    repair = repair_records(evals)
    paired = paired_records(evals)
    if repair:
        sections.append((REPAIR_TITLE, TR, repair_rows(repair)))
    if paired:
        sections.append((PAIRED_TITLE, TP, paired_rows(paired)))
    write_json_atomic(out / "repair_table.json", {"columns": TR, "units": REPAIR_UNITS, "rows": repair,
                                                  "paired": paired})
    if evals:
        sections.append(("Self-debugging (Table 2 layout)", T2, table2_rows(evals)))
        sections.append(("Success refinement rate (Table 4 layout)", T4, table4_rows(evals)))
        by_bug = bug_type_rows(evals)
        if by_bug:
            sections.append(("Repair benchmarks by bug type", TB, by_bug))
        judged = judge_rows(evals)
        if judged:
            sections.append(("Explanation quality (LLM judge, mean [95% CI])", TJ, judged))
    sweeps = sweep_rows(evals, trains)
    if sweeps:
        sections.append(("Sweep cells (mean over seeds)", SW, sweeps))
    sections += fig3_sections
    notes = dict(zip([t for t, _, _ in fig3_sections], fig3_notes))
    counts = (f"Runs: {len(evals)} evaluations, {len(trains)} training runs, "
              f"{len(collections)} collected datasets.")
    md = ["# selfdebug report", "", counts, ""]
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>selfdebug report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}</style></head><body>",
            "<h1>selfdebug report</h1>", f"<p>{counts}</p>"]
    for title, header, rows in sections:
        md += [f"## {title}", "", _markdown_table(header, rows), ""]
        page += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
        if title in notes:
            md += [notes[title], ""]
            page.append(f"<p>{html.escape(notes[title])}</p>")
    if plots:
        md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
        page += ["<h2>Plots</h2>"] + [f"<p><img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'></p>" for p in plots]
    md += ["## Runs", ""] + [f"- `{r['dir']}`" for r in evals + trains] + [f"- `{c}`" for c in collections]
    page.append("</body></html>")
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.html").write_text("\n".join(page) + "\n")
    return {"markdown": out / "report.md", "html": out / "report.html", "plots": plots,
            "evaluations": len(evals), "training_runs": len(trains), "collections": len(collections)}


def run(cfg: DictConfig) -> dict:
    runs = options.paths(cfg, "runs")
    if not runs:
        raise ConfigError("runs: required, the run dirs or folders holding them, e.g. 'runs=[outputs/,multirun/]'")
    missing = [str(p) for p in runs if not p.exists()]
    if missing:
        raise ConfigError(f"runs: no such folder: {', '.join(missing)}")
    fig3 = cfg.get("figure3") or {}
    max_records, seed, model = fig3.get("max_records", 200), fig3.get("seed", 0), fig3.get("explanation_model")
    for key, value in (("max_records", max_records), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"figure3.{key} = {value!r}; it must be a whole number >= 0")
    info = write_report(runs, Path(options.text(cfg, "out", "out=outputs/report")), figure3_max_records=max_records,
                        explanation_model=None if model is None else str(model), seed=seed)
    print(f"report: {info['markdown']} and {info['html']} ({info['evaluations']} evaluations, "
          f"{info['training_runs']} training runs, {info['collections']} collected datasets, "
          f"{len(info['plots'])} plots)")
    return info


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    options.run_command(run, cfg)


if __name__ == "__main__":
    main()
