"""Two models compared problem by problem (``selfdebug.analysis.paired``): by hand, and in the report."""

from __future__ import annotations

import json
import math

import pytest

from selfdebug.analysis.paired import paired_difference, pooled, problem_pass_rates, sign_test_p
from selfdebug.core.errors import DataError


def _write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(task: str, index: int, at: int, passed: bool) -> dict:
    return {"task_id": task, "sample_index": index, "round": at, "passed": passed}


def test_pass_rates_take_each_samples_latest_round(tmp_path):
    samples = tmp_path / "samples.jsonl"
    _write(samples, [
        _row("A", 0, 0, True),                           # passed as given: no round-1 row, still counts
        _row("A", 1, 0, False), _row("A", 1, 1, False),
        _row("B", 0, 0, False), _row("B", 0, 1, True),
        _row("C", 0, 0, False), _row("C", 0, 1, False), _row("C", 0, 2, True),  # round 2 is after the cut
    ])
    assert problem_pass_rates(samples, 1) == {"A": 0.5, "B": 1.0, "C": 0.0}
    assert problem_pass_rates(samples, 0) == {"A": 0.5, "B": 0.0, "C": 0.0}
    assert problem_pass_rates(samples, 2)["C"] == 1.0


def test_a_bad_samples_row_names_its_line(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(_row("A", 0, 1, True)) + "\n" + json.dumps({"task_id": "B", "round": 1}) + "\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:2: .*task_id, sample_index, round and passed"):
        problem_pass_rates(samples)


def test_sign_test_by_hand():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)          # all 5 one way: 2 * (1/2)^5
    assert sign_test_p(1, 3) == pytest.approx(2 * (1 + 4) / 16)  # P(X <= 1) for Bin(4, 1/2), both tails
    assert sign_test_p(2, 2) == 1.0                            # capped at 1
    assert sign_test_p(7, 11) == sign_test_p(11, 7)
    tail = sum(math.comb(40, i) for i in range(9)) / 2 ** 40
    assert sign_test_p(32, 8) == pytest.approx(2 * tail)
    assert sign_test_p(32, 8) < 0.001
    assert sign_test_p(7, 11) > 0.4


def test_paired_difference_counts_only_shared_problems():
    first = {"a": 0.0, "b": 1.0, "c": 0.0, "d": 1.0, "x": 1.0}
    second = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0, "y": 0.0}
    got = paired_difference(first, second, n_resamples=200)
    assert got["problems"] == 4 and got["unmatched"] == 2
    assert (got["gained"], got["lost"]) == (2, 1)
    assert got["first_pass"] == 50.0 and got["second_pass"] == 75.0 and got["difference"] == 25.0
    assert -100.0 <= got["low"] <= got["difference"] <= got["high"] <= 100.0
    assert got["p_sign"] == sign_test_p(2, 1)
    assert paired_difference({"a": 1.0}, {"b": 1.0}) is None
    same = paired_difference(first, first)
    assert (same["gained"], same["lost"], same["difference"], same["low"], same["high"]) == (0, 0, 0.0, 0.0, 0.0)


def test_pooled_sums_the_seeds():
    one = paired_difference({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 0.0})
    two = paired_difference({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 1.0})
    three = paired_difference({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0})
    got = pooled([one, two, three])
    assert (got["runs"], got["problems"], got["gained"], got["lost"]) == (3, 6, 2, 1)
    assert got["difference"] == pytest.approx((50.0 + 50.0 - 50.0) / 3)
    assert got["p_sign"] == sign_test_p(2, 1)
    assert pooled([]) is None


def _eval_run(root, label: str, passed: list[bool]) -> None:
    """A repair evaluation run dir as selfdebug.evaluate leaves it: results.json and samples.jsonl."""
    run = root / label / "mbpp_mutants"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"label: {label}\nseed: 0\n")
    after = 100.0 * sum(passed) / len(passed)
    rounds = [{"round": 0, "pass@1": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}},
              {"round": 1, "pass@1": {"value": after, "ci_low": 0.0, "ci_high": 100.0},
               "refinement": {"cumulative_rate": after}}]
    (run / "results.json").write_text(json.dumps({
        "benchmark": "mbpp_mutants", "model": "tiny", "mode": "explain_refine", "start": "given",
        "n_problems": len(passed), "n_samples": 1, "rounds": rounds, "initial_wrong": len(passed),
        "pass@k_final": {"pass@1": after}, "explanation_score": None}))
    rows = [_row(f"MBPP/{i}/mutant-0", 0, at, at == 1 and ok) for i, ok in enumerate(passed) for at in (0, 1)]
    _write(run / "samples.jsonl", rows)


def test_report_shows_each_model_against_the_one_before_it(tmp_path):
    from selfdebug.analysis.report import PAIRED_TITLE, write_report

    runs = tmp_path / "runs"
    #              problems: 0      1      2      3      4      5      6      7      8      9
    _eval_run(runs, "base", [False, False, False, False, False, False, False, False, False, True])
    _eval_run(runs, "sft", [True, True, True, True, True, False, False, False, False, False])
    _eval_run(runs, "rl", [True, True, True, False, False, True, False, False, False, False])
    out = tmp_path / "report"
    write_report([runs], out, figure3_max_records=0)
    md = (out / "report.md").read_text()
    assert md.index("## Repair benchmarks: base vs SFT vs RL") < md.index(f"## {PAIRED_TITLE}")
    rows = [line for line in md.splitlines() if line.startswith("| mbpp_mutants | ")]
    assert any(r.startswith("| mbpp_mutants | sft - base | 10 | 10.00 | 50.00 | +40.00 [") and
               r.endswith(f"| 5 | 1 | {sign_test_p(5, 1):.3f} |") for r in rows)
    assert any(r.startswith("| mbpp_mutants | rl - sft | 10 | 50.00 | 40.00 | -10.00 [") and
               r.endswith(f"| 1 | 2 | {sign_test_p(1, 2):.3f} |") for r in rows)
    table = json.loads((out / "repair_table.json").read_text())
    assert [(p["first"], p["second"], p["gained"], p["lost"]) for p in table["paired"]] == [
        ("base", "sft", 5, 1), ("sft", "rl", 1, 2)]
    assert "paired" in table["units"]
    # The same benchmark on a second, larger problem set (limit=null beside limit=10) pairs within each set.
    wide = tmp_path / "wide"
    for label, passed in (("base", [False] * 20), ("sft", [True] * 20)):
        _eval_run(wide, label, passed)
    write_report([runs, wide], out, figure3_max_records=0)
    table = json.loads((out / "repair_table.json").read_text())
    assert [(r["model"], r["problems"]) for r in table["rows"]] == [
        ("base", 10), ("sft", 10), ("rl", 10), ("base", 20), ("sft", 20)]
    assert [(p["second"], p["problems"], p["gained"]) for p in table["paired"]] == [
        ("sft", 10, 5), ("rl", 10, 1), ("sft", 20, 20)]
    assert f"| mbpp_mutants | sft - base | 20 | 0.00 | 100.00 | +100.00 [+100.00, +100.00] | 20 | 0 | " \
           f"{sign_test_p(20, 0):.1e} |" in (out / "report.md").read_text()
    # A run without samples.jsonl (written before it existed) leaves its pairs out, not the report.
    (runs / "rl" / "mbpp_mutants" / "samples.jsonl").unlink()
    write_report([runs], out, figure3_max_records=0)
    table = json.loads((out / "repair_table.json").read_text())
    assert [(p["first"], p["second"]) for p in table["paired"]] == [("base", "sft")]
