"""A sweep's summary table: per cell (the sweep's settings other than the seed), the mean of each headline figure
across seeds with a t-based confidence interval.

    python -m selfdebug.sweep_summary sweep_dir=multirun/train/2026-01-01_12-00-00
    python -m selfdebug.sweep_summary sweep_dir=<sweep dir> 'metrics=[final/reward/total,final/rollout/pass_rate]'

Each run dir of a Hydra multirun holds ``.hydra/overrides.yaml`` (what the sweep set) and ``summary.json`` (written
last by the RL stage). Runs without a finished summary are listed as missing, never averaged. Writes
``sweep_summary.md``, ``sweep_summary.csv`` and ``sweep_summary.json`` into the sweep dir (each appears whole).
The RL experiments also run this at the end of every ``--multirun`` (``SweepSummaryCallback``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from selfdebug.analysis import options
from selfdebug.core.cli import CONF_DIR
from selfdebug.core.errors import ConfigError
from selfdebug.core.tracking import write_json_atomic

DEFAULT_METRICS = ("final/reward/total", "final/rollout/pass_rate", "final/reward/r_code", "final/reward/r_expl",
                   "final/objective/kl")
SEED_KEYS = ("seed",)


def _read_overrides(run_dir: Path) -> list[str]:
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.is_file() else []


def _lookup(summary: dict, dotted: str):
    """``final/reward/total`` -> summary["final"]["reward/total"]; a plain key reads the top level."""
    if dotted in summary:
        return summary[dotted]
    head, _, rest = dotted.partition("/")
    if head in summary and isinstance(summary[head], dict):
        return summary[head].get(rest)
    return None


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval over seeds; one value gives an interval of NaN width."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def collect_runs(sweep_dir: Path) -> list[dict]:
    """Every run dir below ``sweep_dir``: its overrides, seed and summary (None when unfinished)."""
    runs = []
    for overrides_file in sorted(Path(sweep_dir).glob("**/.hydra/overrides.yaml")):
        run_dir = overrides_file.parent.parent
        overrides = _read_overrides(run_dir)
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        if summary is not None and summary.get("finished") is False:
            summary = None
        seed = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") in SEED_KEYS), None)
        cell = tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+") not in SEED_KEYS)
        runs.append({"run_dir": str(run_dir), "cell": cell, "seed": seed, "summary": summary})
    return runs


def summarize(sweep_dir: str | Path, metrics: tuple[str, ...] = DEFAULT_METRICS, confidence: float = 0.95) -> dict:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such sweep folder (a --multirun writes multirun/<stage>/<time>/)")
    runs = collect_runs(sweep_dir)
    if not runs:
        raise ConfigError(f"{sweep_dir}: holds no run dirs (no */.hydra/overrides.yaml); is it a --multirun folder?")
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        cells.setdefault(run["cell"], []).append(run)
    # The columns that name a cell: the override keys whose values differ between cells.
    by_key: dict[str, set] = {}
    for cell in cells:
        for o in cell:
            key, _, value = o.partition("=")
            by_key.setdefault(key, set()).add(value)
    varying = [k for k, v in by_key.items() if len(v) > 1] or list(by_key)[:1]
    rows = []
    for cell, members in cells.items():
        settings = dict(o.partition("=")[::2] for o in cell)
        done = [m for m in members if m["summary"] is not None]
        row = {"cell": {k: settings.get(k) for k in varying}, "overrides": list(cell), "seeds": [m["seed"] for m in done],
               "n": len(done), "missing": [m["run_dir"] for m in members if m["summary"] is None], "metrics": {}}
        for metric in metrics:
            values = [float(v) for m in done if isinstance(v := _lookup(m["summary"], metric), (int, float))
                      and math.isfinite(float(v))]
            mean, low, high = mean_ci(values, confidence)
            row["metrics"][metric] = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values),
                                      "values": values}
        rows.append(row)
    return {"sweep_dir": str(sweep_dir), "confidence": confidence, "metrics": list(metrics), "columns": varying,
            "runs": len(runs), "rows": rows}


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3f}"


def render_markdown(table: dict) -> str:
    cols, metrics = table["columns"], table["metrics"]
    pct = round(100 * table["confidence"])
    head = [*cols, "seeds", *[f"{m} (mean [{pct}% CI])" for m in metrics]]
    lines = [f"Sweep {table['sweep_dir']}: {table['runs']} runs; mean over seeds with a Student-t {pct}% interval.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        cells = [str(row["cell"].get(c)) for c in cols] + [str(row["n"])]
        for m in metrics:
            s = row["metrics"][m]
            cells.append(f"{_fmt(s['mean'])} [{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]")
        lines.append("| " + " | ".join(cells) + " |")
    missing = [d for row in table["rows"] for d in row["missing"]]
    if missing:
        lines += ["", f"Unfinished or failed runs left out ({len(missing)}): " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def render_csv(table: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*table["columns"], "n", *[f"{m}:{part}" for m in table["metrics"]
                                                for part in ("mean", "ci_low", "ci_high")]])
    for row in table["rows"]:
        writer.writerow([row["cell"].get(c) for c in table["columns"]] + [row["n"]] +
                        [row["metrics"][m][part] for m in table["metrics"] for part in ("mean", "ci_low", "ci_high")])
    return out.getvalue()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_summary(sweep_dir: str | Path, metrics: tuple[str, ...] = DEFAULT_METRICS,
                  confidence: float = 0.95) -> dict:
    """Compute the table and write sweep_summary.{md,csv,json} into ``sweep_dir``; returns the table."""
    table = summarize(sweep_dir, metrics, confidence)
    sweep_dir = Path(sweep_dir)
    _write_text_atomic(sweep_dir / "sweep_summary.md", render_markdown(table))
    _write_text_atomic(sweep_dir / "sweep_summary.csv", render_csv(table))
    write_json_atomic(sweep_dir / "sweep_summary.json", table)
    return table


try:  # a Hydra callback, so a --multirun writes its table when the last job ends
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class SweepSummaryCallback(_HydraCallback):
    """``hydra.callbacks.sweep_summary._target_: selfdebug.analysis.sweep_summary.SweepSummaryCallback``."""

    def __init__(self, metrics: list[str] | None = None, confidence: float = 0.95):
        self.metrics = tuple(metrics) if metrics else DEFAULT_METRICS
        self.confidence = float(confidence)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            write_summary(sweep_dir, self.metrics, self.confidence)
            print(f"sweep summary: {sweep_dir / 'sweep_summary.md'}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a summary problem must not turn a finished sweep into a failure
            print(f"sweep summary not written: {exc}", file=sys.stderr, flush=True)


def run(cfg: DictConfig) -> dict:
    sweep_dir = options.text(cfg, "sweep_dir", "sweep_dir=multirun/train/2026-01-01_12-00-00")
    metrics = tuple(options.text_list(cfg, "metrics")) or DEFAULT_METRICS
    table = write_summary(sweep_dir, metrics, options.fraction(cfg, "confidence"))
    print(render_markdown(table), end="")
    return table


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sweep_summary")
def main(cfg: DictConfig) -> None:
    options.run_command(run, cfg)


if __name__ == "__main__":
    main()
