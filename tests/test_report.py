"""``python -m selfdebug.report`` on real evaluation runs, single and swept over seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from selfdebug.problems import load_humaneval
from tests.conftest import REPO
from tests.openai_server import FakeOpenAIServer
from tests.test_evaluate import scripted_responder


def report(runs, out, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m selfdebug.report runs=<runs> out=<out>``, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "selfdebug.report", f"runs={runs}", f"out={out}", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_report_from_single_runs_and_a_seed_sweep(tmp_path):
    problems = load_humaneval()[:3]
    with FakeOpenAIServer(scripted_responder(problems)) as server:
        base = ["-m", "selfdebug.evaluate", "--multirun", "model=openai", "model.model=x", f"model.base_url={server.base_url}",
                "limit=3", "n_samples=2", "rounds=1", "ks=[1,2]", "logger=none", "progress=false"]
        proc = subprocess.run([sys.executable, *base, "seed=1,2", "mode=refine,explain_refine",
                               f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "WANDB_MODE": "offline"}, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "report"
    proc = report(tmp_path / "sweep", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    # Table 2: initial 0, refined 100, per mode.
    assert "| openai-x | refine | humaneval | 0.00 | 100.00 |" in md
    assert "| openai-x | explain_refine | humaneval | 0.00 | 100.00 |" in md
    # The sweep: two cells (one per mode), each over 2 seeds.
    sweep_lines = [line for line in md.splitlines() if line.startswith("| evaluate |")]
    assert len(sweep_lines) == 2 and all("| 2 | 100.000 |" in line for line in sweep_lines)
    html = (out / "report.html").read_text()
    assert "<table>" in html and "pass_by_round_humaneval.png" in html
    png = (out / "pass_by_round_humaneval.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_training_curves(tmp_path):
    run = tmp_path / "rl_run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("stage: rl\nseed: 1\n")
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i, "reward/total": i / 10, "reward/r_code": i / 20, "objective/kl": 0.01 * i}) + "\n" for i in range(20)))
    out = tmp_path / "report"
    elsewhere = tmp_path / "cwd"  # a Hydra app that writes no .hydra/, log file or outputs/ where it runs
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "selfdebug.report", f"runs=[{run}]", f"out={out}"], check=True,
                   cwd=elsewhere, env=env, capture_output=True, timeout=300)
    assert list(elsewhere.iterdir()) == []
    assert (out / "training_rl.png").stat().st_size > 10_000
    assert "| rl | - | (defaults) | final reward/total | 1 | 1.900 |" in (out / "report.md").read_text()


def test_report_on_a_folder_without_runs_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selfdebug.report", f"runs={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "no run dirs" in proc.stderr


@pytest.mark.slow
def test_report_shows_repair_benchmarks_by_bug_type(tmp_path):
    from tests.test_evaluate import evaluate

    common = ("model=reference", "n_samples=1", "rounds=1", "ks=[1]", "logger=none")
    proc = evaluate(tmp_path / "runs" / "fix", "benchmark=humanevalfix", "task_ids=[Python/0,Python/2]", *common)
    assert proc.returncode == 0, proc.stderr
    proc = evaluate(tmp_path / "runs" / "mutants", "benchmark=mbpp_mutants", "limit=2",
                    f"benchmark.loader.cache_dir={tmp_path / 'cache'}", *common)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    proc = report(tmp_path / "runs", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "## Repair benchmarks by bug type" in md
    assert "| reference | explain_refine | humanevalfix | given | missing logic | 1 | 0.00 → 100.00 |" in md
    assert "| reference | explain_refine | humanevalfix | given | excess logic | 1 | 0.00 → 100.00 |" in md
    mutant_rows = [line for line in md.splitlines() if "| mbpp_mutants | given |" in line]
    assert mutant_rows and all(line.endswith("| 0.00 → 100.00 |") for line in mutant_rows)
    assert "| reference | explain_refine | humanevalfix | 0.00 | 100.00 |" in md  # Table 2 row
    assert (out / "pass_by_round_mbpp_mutants.png").is_file()


def test_tables_report_round_one_and_the_plot_all_rounds(tmp_path):
    """Tables 2 and 4 read round 1 (the paper's tables are one round); the by-round plot keeps all three."""
    from tests.test_evaluate import evaluate, late_fixer

    problems = load_humaneval()[:3]
    with FakeOpenAIServer(late_fixer(problems, fixed_in_round_1=1)) as server:
        proc = evaluate(tmp_path / "runs" / "late", "model=openai", "model.model=late",
                        f"model.base_url={server.base_url}", "limit=3", "n_samples=1", "rounds=3", "ks=[1]",
                        "logger=none", "label=late")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    proc = report(tmp_path / "runs", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "| late | explain_refine | humaneval | 0.00 | 33.33 | - | - | 3 |" in md  # Table 2: round 1, not 100
    assert "| late | explain_refine | humaneval | 3 | 33.33 |" in md  # Table 4: round 1's success rate
    assert "pass@1 refined (round 1)" in md and "success refinement rate, round 1 (%)" in md
    assert (out / "pass_by_round_humaneval.png").stat().st_size > 10_000


@pytest.mark.slow
def test_report_shows_figure3_for_a_collected_dataset(tmp_path):
    """A real collection (mutation teacher) among the inputs gives the paper's Figure 3: quantiles of S_cb, S_ut,
    S_ex, R_code and R_expl for correct and wrong refinements, computed with the reward's functions."""
    from selfdebug.rewards import code_reward, explanation_reward
    from tests.test_collect import collect, records

    run = tmp_path / "runs" / "collect"
    proc = collect(run, "+exp=collect_quickstart", "data.limit_per_source=6", "logger=none", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = records(run)
    assert any(r["verdict"] == "wrong" for r in rows) and any(r["verdict"] == "correct" for r in rows)
    out = tmp_path / "report"
    proc = report(tmp_path / "runs", out, "figure3.max_records=1000", timeout=600)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "## Reward terms over the training data (Figure 3): collect" in md
    lines = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in md.splitlines()
             if line.startswith(("| S_", "| R_"))}
    n_correct = sum(r["verdict"] == "correct" for r in rows)
    assert lines[("S_ut", "correct", str(n_correct))].split("|")[4].strip() == "1.000"  # verified: all tests pass
    assert lines[("S_ut", "wrong", str(len(rows) - n_correct))].split("|")[9].strip() < "1.000"
    # R_code and R_expl follow the reward's affine maps of the scores shown (means are linear in the scores).
    def mean(metric: str, group: str) -> float:
        return float(next(line for key, line in lines.items() if key[:2] == (metric, group)).split("|")[4])

    for group in ("correct", "wrong"):
        assert abs(mean("R_code", group) - float(code_reward(mean("S_cb", group), mean("S_ut", group)))) < 0.02
        assert abs(mean("R_expl", group) - float(explanation_reward(mean("S_ex", group)))) < 0.02
    assert 0.0 <= mean("S_cb", "correct") <= 1.0 and mean("S_cb", "wrong") < mean("S_cb", "correct")
    assert explanation_reward(0.7) == 0.0  # the anchor the note names
    assert "the range R_expl = (50 S_ex - 35)/3 was calibrated for" in md
    png = (out / "figure3_reward_terms.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "figure3_reward_terms.png" in (out / "report.html").read_text()


def _repair_run(root, label: str, benchmark: str, after: float, rate: float, s_ex) -> None:
    """An evaluation run dir as selfdebug.evaluate leaves it (only the keys the report reads)."""
    run = root / label / benchmark
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"label: {label}\nseed: 0\n")
    rounds = [{"round": 0, "pass@1": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}},
              {"round": 1, "pass@1": {"value": after, "ci_low": after - 5, "ci_high": after + 5},
               "refinement": {"cumulative_rate": rate}}]
    (run / "results.json").write_text(json.dumps({
        "benchmark": benchmark, "model": "tiny", "mode": "explain_refine", "start": "given", "n_problems": 10,
        "n_samples": 1, "rounds": rounds, "initial_wrong": 10, "pass@k_final": {"pass@1": after},
        "explanation_score": None if s_ex is None else {"round_1": {"mean": s_ex, "ci_low": s_ex - 0.1,
                                                                    "ci_high": s_ex + 0.1, "n": 10}}}))


@pytest.mark.slow
def test_report_puts_base_sft_rl_side_by_side_on_the_repair_benchmarks(tmp_path):
    from selfdebug.analysis.report import write_report

    runs = tmp_path / "runs"
    for i, label in enumerate(("rl", "base", "sft")):  # written out of order: the table orders them
        _repair_run(runs, label, "mbpp_mutants", after=10.0 * (i + 1), rate=10.0 * (i + 1), s_ex=0.5 + 0.1 * i)
        _repair_run(runs, label, "humanevalfix", after=5.0 * (i + 1), rate=5.0 * (i + 1), s_ex=None)
    out = tmp_path / "report"
    write_report([runs], out, figure3_max_records=0)
    md = (out / "report.md").read_text()
    assert md.index("## Repair benchmarks: base vs SFT vs RL") < md.index("## Self-debugging (Table 2 layout)")
    assert "| humanevalfix | base | 10 | 0.00 | 10.00 [5.00, 15.00] | 10.00 | - |" in md  # no S_ex: "-"
    assert "| mbpp_mutants | rl | 10 | 0.00 | 10.00 [5.00, 15.00] | 10.00 | 0.500 [0.400, 0.600] |" in md
    table = json.loads((out / "repair_table.json").read_text())
    assert [(r["benchmark"], r["model"]) for r in table["rows"]] == [
        (b, m) for b in ("humanevalfix", "mbpp_mutants") for m in ("base", "sft", "rl")]
    rl = table["rows"][5]
    assert rl["pass@1_given"] == 0.0 and rl["pass@1_round1"] == {"value": 10.0, "low": 5.0, "high": 15.0}
    assert rl["refinement_rate_round1"] == 10.0 and rl["problems"] == 10
    assert rl["s_ex_round1"]["value"] == 0.5 and rl["s_ex_round1"]["n"] == 10
    assert table["rows"][0]["s_ex_round1"] is None
    assert "Repair benchmarks: base vs SFT vs RL" in (out / "report.html").read_text()
