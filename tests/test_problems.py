"""Problem loaders: counts, fields, generated tests and error messages.

Generated test code is checked here with a plain in-process ``exec`` of trusted reference code only; the
sandbox-backed checks live with the judge.
"""

# ruff: noqa: S102 - these tests exec trusted reference code and generated test code on purpose

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import os
import sys

import pytest

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.problems import (
    BENCHMARKS,
    Problem,
    load_apps,
    load_benchmark,
    load_codecontests,
    load_evalplus,
    load_humaneval,
    load_humanevalpack,
    load_mbpp,
    select_problems,
    split_humaneval_check,
)
from selfdebug.problems.datafiles import PACKAGED_DIR, data_dir, data_file, expected_digests, sha256_of


def run_plain(program: str, problem: Problem) -> list[bool]:
    """Which tests of an assert suite hold for ``program`` (trusted code only: no sandbox)."""
    namespace: dict = {"__name__": "__solution__"}
    exec(program, namespace)
    exec(problem.tests.setup, namespace)
    results = []
    for test in problem.tests.asserts:
        try:
            exec(test, namespace)
            results.append(True)
        except Exception:  # noqa: BLE001 - a failed or erroring test
            results.append(False)
    return results


def write_jsonl(path, records, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------
# HumanEval
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def humaneval():
    return {p.task_id: p for p in load_humaneval()}


def test_humaneval_count_and_fields(humaneval):
    assert len(humaneval) == 164
    p = humaneval["HumanEval/0"]
    assert p.source == "humaneval" and p.entry_point == "has_close_elements"
    assert p.starter_code == p.prompt and p.reference.startswith(p.prompt)
    assert p.tests.kind == "assert" and p.tests_shown == ()
    assert p.tests.setup.rstrip().endswith("candidate = has_close_elements")
    assert all(q.metadata["check_split"] for q in humaneval.values())


def test_humaneval_check_is_split_per_assert(humaneval):
    p = humaneval["HumanEval/0"]
    assert p.tests.n_tests == 7
    assert p.tests.asserts[0] == "assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True"
    # A loop with an assert inside, after setup statements: one test.
    assert humaneval["HumanEval/32"].tests.n_tests == 1
    # `assert True, "..."` lines are dropped; trailing statements join the last chunk.
    assert not any("assert True" in t for q in humaneval.values() for t in q.tests.asserts)
    assert sum(q.tests.n_tests for q in humaneval.values()) > 164 * 4


def test_humaneval_check_locals_do_not_leak_into_program_globals(humaneval):
    # HumanEval/38's check assigns `str = ...`; in the program's namespace that would hide the builtin.
    (test,) = humaneval["HumanEval/38"].tests.asserts
    assert "_sd_str = " in test and "\nstr = " not in test and "_sd_string.ascii_lowercase" in test


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/32", "HumanEval/38", "HumanEval/53",
                                     "HumanEval/151"])
def test_humaneval_reference_passes_every_chunk(humaneval, task_id):
    p = humaneval[task_id]
    assert all(run_plain(p.reference, p))


def test_humaneval_wrong_program_gets_partial_credit(humaneval):
    p = humaneval["HumanEval/0"]
    wrong = p.prompt + "    return True\n"
    results = run_plain(wrong, p)
    assert any(results) and not all(results)


def test_split_check_shapes():
    test = (
        "import math\n\ndef check(candidate):\n"
        "    x = 3\n    assert candidate(x) == 4\n    assert True, 'always'\n"
        "    for i in range(2):\n        assert candidate(i) == i + 1\n    y = 1\n"
    )
    setup, tests = split_humaneval_check(test, "inc")
    assert setup == "import math\ncandidate = inc\n"
    assert tests == ("_sd_x = 3\nassert candidate(_sd_x) == 4",
                     "for _sd_i in range(2):\n    assert candidate(_sd_i) == _sd_i + 1\n_sd_y = 1")
    ns: dict = {}
    exec("def inc(v):\n    return v + 1\n", ns)
    exec(setup, ns)
    for t in tests:
        exec(t, ns)


@pytest.mark.parametrize("test", [
    "def check(candidate):\n    if candidate(1) == 2:\n        return\n    assert False\n",  # return in body
    "def check(candidate):\n    print(candidate(1))\n",  # no assert
    "def verify(candidate):\n    assert candidate(1) == 2\n",  # no check
    "def check(candidate):\n    assert candidate(1) ==\n",  # parse error
    "def check(candidate):\n    assert candidate(1) == 2\n\ncheck(inc)\n",  # module calls check itself
])
def test_split_check_falls_back(tmp_path, test):
    assert split_humaneval_check(test, "inc") is None
    path = write_jsonl(tmp_path / "he.jsonl", [{"task_id": "T/0", "prompt": "def inc(v):\n",
                                                "canonical_solution": "    return v + 1\n",
                                                "test": test, "entry_point": "inc"}])
    (p,) = load_humaneval(path)
    assert p.tests.setup == test and p.tests.asserts == ("check(inc)",)
    assert p.metadata["check_split"] is False


# ------------------------------------------------------------------------------------------------------
# MBPP
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split, full, sanitized", [
    ("test", 500, 257), ("train", 374, 120), ("validation", 90, 43), ("prompt", 10, 7), ("all", 974, 427),
])
def test_mbpp_split_counts(data_dir_path, split, full, sanitized):
    assert len(load_mbpp(data_dir_path / "mbpp.jsonl", split=split)) == full
    assert len(load_mbpp(data_dir_path / "sanitized-mbpp.json", split=split)) == sanitized


def test_mbpp_fields(data_dir_path):
    problems = {p.task_id: p for p in load_mbpp(data_dir_path / "mbpp.jsonl", split="all")}
    p = problems["MBPP/11"]
    assert p.source == "mbpp" and p.entry_point == "remove_Occ" and p.metadata["split"] == "test"
    assert p.prompt.startswith("Write a python function to remove first and last occurrence")
    assert p.tests.asserts == p.tests_shown and p.tests.n_tests == 3 and p.tests.setup == ""
    assert "\r" not in p.reference and "def remove_Occ" in p.reference
    assert all(q.entry_point for q in problems.values())
    assert "root = Node(1)" in problems["MBPP/367"].tests.setup
    assert all(run_plain(problems["MBPP/367"].reference, problems["MBPP/367"]))


def test_mbpp_challenge_tests(data_dir_path):
    plain = {p.task_id: p for p in load_mbpp(data_dir_path / "mbpp.jsonl", split="all")}
    extra = {p.task_id: p for p in load_mbpp(data_dir_path / "mbpp.jsonl", split="all", include_challenge_tests=True)}
    grown = [t for t in plain if extra[t].tests.n_tests > plain[t].tests.n_tests]
    assert grown and all(extra[t].tests_shown == plain[t].tests_shown for t in grown)


def test_mbpp_sanitized_fields(data_dir_path):
    problems = {p.task_id: p for p in load_mbpp(data_dir_path / "sanitized-mbpp.json", split="all")}
    p = problems["MBPP-sanitized/2"]
    assert p.source == "mbpp_sanitized"
    assert p.entry_point == "similar_elements"  # not `set`, which wraps the call in its tests
    assert any(q.tests.setup == "import math" for q in problems.values())
    assert all(q.entry_point for q in problems.values())
    forced = load_mbpp(data_dir_path / "sanitized-mbpp.json", split="prompt", sanitized=True)
    assert [q.task_id for q in forced] == [t for t in problems if problems[t].metadata["split"] == "prompt"]


def test_mbpp_unknown_split():
    with pytest.raises(ConfigError, match="unknown MBPP split 'dev'"):
        load_mbpp("unused.jsonl", split="dev")


# ------------------------------------------------------------------------------------------------------
# EvalPlus
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mbpp_plus(data_dir_path):
    return {p.task_id: p for p in load_evalplus(data_dir_path / "MbppPlus-dev-2023-11.jsonl.gz",
                                                name="mbpp_plus")}


def test_mbpp_plus_count_and_fields(data_dir_path, mbpp_plus):
    assert len(mbpp_plus) == 399
    p = mbpp_plus["Mbpp/2"]
    assert p.source == "mbpp_plus" and p.entry_point == "similar_elements"
    assert p.prompt == "Write a function to find the shared elements from the given two lists."
    assert p.tests_shown == ("assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",)
    assert p.reference.lstrip().startswith("def similar_elements") and p.starter_code == ""
    # The example's tuple arguments come back as tuples, written out in the assert.
    assert p.tests.asserts[0] == "assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == _sd_want(0)"
    assert p.tests.n_tests > p.metadata["n_base_tests"] == 3
    base_only = load_evalplus(data_dir_path / "MbppPlus-dev-2023-11.jsonl.gz", use_plus_inputs=False)
    assert sum(q.tests.n_tests for q in base_only) == sum(q.metadata["n_base_tests"] for q in base_only)
    assert mbpp_plus["Mbpp/793"].tests.n_tests == mbpp_plus["Mbpp/793"].metadata["n_base_tests"]  # plus {}
    assert {t for t, q in mbpp_plus.items() if q.metadata["unordered_output"]} == {
        "Mbpp/7", "Mbpp/111", "Mbpp/232", "Mbpp/249"}


@pytest.mark.parametrize("task_id", ["Mbpp/2", "Mbpp/63", "Mbpp/82", "Mbpp/404", "Mbpp/580", "Mbpp/722"])
def test_mbpp_plus_reference_passes(mbpp_plus, task_id):
    p = mbpp_plus[task_id]
    assert all(run_plain(p.reference, p))


def test_mbpp_plus_wrong_program_fails(mbpp_plus):
    p = mbpp_plus["Mbpp/2"]
    results = run_plain("def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))[:1]\n", p)
    assert any(results) and not all(results)


HE_PLUS = {
    "task_id": "HumanEval/900",
    "prompt": 'def mean(xs: list) -> float:\n    """Mean of xs."""\n',
    "entry_point": "mean",
    "canonical_solution": "    return sum(xs) / len(xs)\n",
    "base_input": [[[1, 2, 3]], [[0.1, 0.2]]],
    "plus_input": [[[1e-9, 3.0, 7.5]], [[10**20, 1]]],
    "atol": 0,
    "contract": "",
    "assertion": "",
}


def test_humaneval_plus_fixture(tmp_path):
    path = write_jsonl(tmp_path / "HumanEvalPlus.jsonl.gz", [HE_PLUS], gz=True)
    (p,) = load_benchmark("humaneval_plus", path=path)
    assert p.source == "humaneval_plus" and p.task_id == "HumanEval/900"
    assert p.starter_code == p.prompt == HE_PLUS["prompt"]
    assert p.reference == HE_PLUS["prompt"] + HE_PLUS["canonical_solution"]
    assert p.tests.n_tests == 4 and p.metadata["n_base_tests"] == 2
    assert p.tests.asserts[0] == "assert mean([1, 2, 3]) == _sd_want(0)"
    assert all(run_plain(p.reference, p))
    # Float outputs compare within tolerance; a program that rounds differently still passes.
    assert all(run_plain("def mean(xs):\n    return sum(x / len(xs) for x in xs)\n", p))
    assert run_plain("def mean(xs):\n    return sum(xs) // len(xs)\n", p) == [True, False, False, True]
    assert len(load_evalplus(path, name="humaneval_plus", use_plus_inputs=False)[0].tests.asserts) == 2


def test_evalplus_comparison_semantics(tmp_path):
    rec = dict(HE_PLUS, canonical_solution="    return xs\n", base_input=[[[1]]], plus_input=[], atol=0.01)
    (p,) = load_evalplus(write_jsonl(tmp_path / "e.jsonl", [rec]), name="humaneval_plus")
    ns: dict = {}
    exec(p.reference, ns)
    exec(p.tests.setup, ns)
    same = ns["_sd_same"]
    assert same(1.0, 1.005) and not same(1.0, 1.02)
    assert same(float("nan"), float("nan")) and same([1, (2.0, 3)], (1, [2.001, 3])) and not same([1, 2], [1, 2, 3])
    assert same({"a": [1.0]}, {"a": (1.001,)}) and not same({"a": 1}, {"b": 1})
    assert same({1, 2}, {2, 1}) and not same("ab", ["a", "b"]) and not same(None, 0)
    # A program that mutates its arguments does not change what the reference is given.
    exec("def mean(xs):\n    out = list(xs)\n    xs.append(9)\n    return out\n", ns)
    exec(p.tests.asserts[0], ns)
    exec(p.tests.asserts[0].replace("mean([1])", "mean(*_sd_arg(0))"), ns)


def test_evalplus_needs_inputs(tmp_path):
    rec = dict(HE_PLUS, base_input=[], plus_input=[])
    with pytest.raises(DataError, match=r"e\.jsonl:1: task HumanEval/900 has no tests"):
        load_evalplus(write_jsonl(tmp_path / "e.jsonl", [rec]), name="humaneval_plus")
    with pytest.raises(ConfigError, match="pass path="):
        load_evalplus(name="humaneval_plus")


# ------------------------------------------------------------------------------------------------------
# APPS
# ------------------------------------------------------------------------------------------------------

APPS_ROWS = [
    {"problem_id": 0, "difficulty": "interview", "url": "u0", "starter_code": "",
     "question": "Read two numbers and print their sum.",
     "solutions": json.dumps(["a, b = map(int, input().split())\nprint(a + b)\n"]),
     "input_output": json.dumps({"inputs": ["1 2\n", ["3 4"]], "outputs": ["3\n", ["7"]]})},
    {"problem_id": 1, "difficulty": "introductory", "url": "u1", "starter_code": "def add(a, b):\n\t",
     "question": "Return a + b.", "solutions": json.dumps(["def add(a, b):\n    return a + b\n"]),
     "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [[1], [2]]], "outputs": [[3], [[1, 2]]]})},
    {"problem_id": 2, "difficulty": "interview", "url": "u2",
     "starter_code": "class Solution:\n    def pair(self, xs: List[int]) -> List[int]:\n        ",
     "question": "Return the first two numbers.", "solutions": "",
     "input_output": json.dumps({"fn_name": "pair", "inputs": [[[5, 6, 7]]], "outputs": [[5, 6]]})},
    {"problem_id": 3, "difficulty": "competition", "url": "u3", "starter_code": "", "question": "No tests.",
     "solutions": "[]", "input_output": ""},
]


def test_apps_fixture(tmp_path, caplog):
    path = write_jsonl(tmp_path / "apps.jsonl", APPS_ROWS)
    with caplog.at_level(logging.WARNING, logger="selfdebug.problems"):
        problems = {p.task_id: p for p in load_apps(path, split="test")}
    assert list(problems) == ["APPS/test/0", "APPS/test/1", "APPS/test/2"]
    assert "skipped 1 of 4 rows" in caplog.text

    stdio = problems["APPS/test/0"]
    assert stdio.source == "apps" and stdio.tests.kind == "stdio" and stdio.entry_point is None
    assert stdio.tests.stdio == (("1 2\n", "3\n"), ("3 4\n", "7\n"))
    assert stdio.reference.startswith("a, b = map") and stdio.metadata["difficulty"] == "interview"

    fn = problems["APPS/test/1"]
    assert fn.tests.kind == "assert" and fn.entry_point == "add" and fn.starter_code.startswith("def add")
    assert fn.tests.asserts == ("assert add(1, 2) == _sd_expect([3])", "assert add([1], [2]) == _sd_expect([[1, 2]])")
    assert all(run_plain(fn.reference, fn))
    assert run_plain("def add(a, b):\n    return (a, b)\n", fn) == [False, False]
    assert all(run_plain("def add(a, b):\n    return tuple(a + b) if isinstance(a, list) else a + b\n", fn))

    cls = problems["APPS/test/2"]
    assert cls.reference is None
    assert cls.tests.asserts == ("assert Solution().pair([5, 6, 7]) == _sd_expect([5, 6])",)
    assert all(run_plain("class Solution:\n    def pair(self, xs):\n        return xs[:2]\n", cls))


def test_apps_difficulties(tmp_path):
    path = write_jsonl(tmp_path / "apps.jsonl", APPS_ROWS)
    assert [p.task_id for p in load_apps(path, difficulties=["introductory"])] == ["APPS/train/1"]
    assert len(load_apps(path, difficulties="interview")) == 2
    with pytest.raises(ConfigError, match="unknown APPS difficulty 'hard'"):
        load_apps(path, difficulties=["hard"])


def test_apps_large_arguments_go_to_a_table(tmp_path):
    big = list(range(2000))
    row = dict(APPS_ROWS[1], input_output=json.dumps({"fn_name": "add", "inputs": [[big, [1]]],
                                                      "outputs": [[big + [1]]]}))
    (p,) = load_apps(write_jsonl(tmp_path / "apps.jsonl", [row]))
    assert p.tests.asserts == ("assert add(*_sd_arg(0)) == _sd_expect_at(0)",)
    assert all(run_plain("def add(a, b):\n    return a + b\n", p))


# ------------------------------------------------------------------------------------------------------
# CodeContests
# ------------------------------------------------------------------------------------------------------

CC_ROWS = [
    {"name": "1_A. Sum", "description": "Print a + b.", "difficulty": 7, "source": 2,
     "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
     "private_tests": {"input": ["5 5\n", "1 2\n"], "output": ["10\n", "3\n"]},
     "generated_tests": {"input": ["0 0\n", "9 1\n"], "output": ["0\n", "10\n"]},
     "solutions": {"language": [2, 1, 3, 3], "solution": ["int main(){}", "print 1", "print(sum(map(int, input().split())))",
                                                         "other"]}},
    {"name": "2_B. Empty", "description": "Nothing.", "public_tests": {"input": [], "output": []},
     "private_tests": {"input": [], "output": []}, "generated_tests": {"input": [], "output": []},
     "solutions": {"language": [], "solution": []}},
]


def test_codecontests_fixture(tmp_path, caplog):
    path = write_jsonl(tmp_path / "cc.jsonl.gz", CC_ROWS, gz=True)
    with caplog.at_level(logging.WARNING, logger="selfdebug.problems"):
        (p,) = load_codecontests(path, split="valid")
    assert "skipped 1 of 2 rows" in caplog.text
    assert p.task_id == "CodeContests/valid/1_A. Sum" and p.source == "codecontests"
    assert p.prompt == "Print a + b." and p.tests.kind == "stdio"
    assert p.reference == "print(sum(map(int, input().split())))"
    # public, private, generated; the private copy of the public test is dropped.
    assert [i for i, _ in p.tests.stdio] == ["1 2\n", "5 5\n", "0 0\n", "9 1\n"]
    assert p.metadata["n_private_tests"] == 2
    assert load_codecontests(path, max_tests=2)[0].tests.n_tests == 2
    assert load_codecontests(path, include_generated=False)[0].tests.n_tests == 2


def test_codecontests_bad_tests(tmp_path):
    row = dict(CC_ROWS[0], public_tests={"input": ["1"], "output": []})
    with pytest.raises(DataError, match=r"cc\.jsonl:1: field 'public_tests' of task CodeContests/train/1_A\. Sum"):
        load_codecontests(write_jsonl(tmp_path / "cc.jsonl", [row]))


def test_hub_loading_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(DataError, match=r"pip install datasets"):
        load_apps()
    with pytest.raises(DataError, match=r"pip install datasets"):
        load_codecontests(split="test")


# ------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------

MBPP_REC = {"text": "Add.", "code": "def add(a, b):\n    return a + b", "task_id": 11, "test_setup_code": "",
            "test_list": ["assert add(1, 2) == 3"], "challenge_test_list": []}


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    lines = [json.dumps(dict(MBPP_REC, task_id=11 + i)) for i in range(16)] + ['{"text": "broken",']
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"mbpp\.jsonl:17: invalid JSON: "):
        load_mbpp(path)


def test_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n" + json.dumps(MBPP_REC) + "\n\n[1, 2]\n")
    with pytest.raises(DataError, match=r"mbpp\.jsonl:4: expected a JSON object"):
        load_mbpp(path)


def test_missing_field_is_named(tmp_path):
    rec = {k: v for k, v in MBPP_REC.items() if k != "test_list"}
    path = write_jsonl(tmp_path / "mbpp.jsonl", [MBPP_REC, rec])
    with pytest.raises(DataError, match=r"mbpp\.jsonl:2: missing field 'test_list' \(task MBPP/11\)"):
        load_mbpp(path)
    he = write_jsonl(tmp_path / "he.jsonl", [{"task_id": "HumanEval/0", "prompt": "x", "test": "y"}])
    with pytest.raises(DataError, match=r"he\.jsonl:1: missing field 'entry_point' \(task HumanEval/0\)"):
        load_humaneval(he)


def test_problem_without_tests(tmp_path):
    path = write_jsonl(tmp_path / "mbpp.jsonl", [dict(MBPP_REC, test_list=[])])
    with pytest.raises(DataError, match=r"mbpp\.jsonl:1: task MBPP/11 has no tests"):
        load_mbpp(path)


def test_json_array_errors(tmp_path):
    path = tmp_path / "sanitized.json"
    path.write_text('[\n  {"task_id": 11, "prompt": "p", "test_list": []}\n]\n')
    with pytest.raises(DataError, match=r"sanitized\.json: record 1: task MBPP-sanitized/11 has no tests"):
        load_mbpp(path)
    path.write_text('[\n  {"task_id": 11,\n  "prompt": }\n]\n')
    with pytest.raises(DataError, match=r"sanitized\.json:3: invalid JSON"):
        load_mbpp(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_mbpp(tmp_path / "nope.jsonl")


def test_gzip_and_plain_read_alike(tmp_path):
    plain = load_mbpp(write_jsonl(tmp_path / "a.jsonl", [MBPP_REC]))
    gz = load_mbpp(write_jsonl(tmp_path / "a.jsonl.gz", [MBPP_REC], gz=True))
    assert plain == gz and plain[0].entry_point == "add"


# ------------------------------------------------------------------------------------------------------
# Registry and selection
# ------------------------------------------------------------------------------------------------------

def test_unknown_benchmark_lists_names():
    with pytest.raises(ConfigError) as info:
        load_benchmark("nosuch")
    assert all(name in str(info.value) for name in BENCHMARKS)
    assert set(BENCHMARKS) == {"humaneval", "humanevalfix", "mbpp", "mbpp_sanitized", "mbpp_plus", "humaneval_plus",
                               "apps", "codecontests"}


def test_unknown_option():
    with pytest.raises(ConfigError, match="has no option 'splt'"):
        load_benchmark("mbpp", splt="test")


def test_load_benchmark_selection(data_dir_path):
    assert [p.task_id for p in load_benchmark("mbpp", limit=2)] == ["MBPP/11", "MBPP/12"]
    picked = load_benchmark("MBPP-sanitized", task_ids=["MBPP-sanitized/12", "MBPP-sanitized/11"])
    assert [p.task_id for p in picked] == ["MBPP-sanitized/12", "MBPP-sanitized/11"]
    assert len(load_benchmark("humaneval", limit=5)) == 5
    with pytest.raises(ConfigError, match=r"no problem 'MBPP/1' in this benchmark \(its ids look like 'MBPP/11'\)"):
        load_benchmark("mbpp", task_ids=["MBPP/1"])
    # Repeated ids count once; ids given as numbers (a config list) are compared as text.
    assert [p.task_id for p in load_benchmark("mbpp", task_ids=["MBPP/12", "MBPP/12", "MBPP/11"])] == [
        "MBPP/12", "MBPP/11"]
    numbered = [dataclasses.replace(load_benchmark("mbpp", limit=1)[0], task_id="7")]
    assert select_problems(numbered, task_ids=[7]) == numbered
    with pytest.raises(ConfigError, match="limit"):
        select_problems([], limit=-1)


def test_a_loader_block_is_checked_without_reading_data(tmp_path):
    from omegaconf import OmegaConf

    from selfdebug.problems.registry import check_loader

    def block(**args):
        return OmegaConf.create(args)

    missing = str(tmp_path / "none.jsonl")  # never opened: the check reads no data
    check_loader(block(_target_="selfdebug.problems.load_mbpp", path=missing, split="train"), "data.sources.mbpp")
    with pytest.raises(ConfigError, match=r"^data\.sources\.mbpp: selfdebug\.problems\.load_mbpp has no option "
                                          r"'spilt'; its options are path, split, "):
        check_loader(block(_target_="selfdebug.problems.load_mbpp", spilt="train"), "data.sources.mbpp")
    with pytest.raises(ConfigError, match=r"^benchmark\.loader\._target_ = 'selfdebug\.problems\.nothing' cannot be"):
        check_loader(block(_target_="selfdebug.problems.nothing"), "benchmark.loader")
    # The mutant benchmark's own checks run too, and a value of the wrong type is one error, not a traceback.
    mutants = "selfdebug.evaluate.mutants.load_mbpp_mutants"
    check_loader(block(_target_=mutants, split="validation", per_problem=2, candidates=4, cache_dir=missing),
                 "benchmark.loader")
    with pytest.raises(ConfigError, match=r"benchmark\.loader\.candidates = 1; it must be at least per_problem"):
        check_loader(block(_target_=mutants, per_problem=2, candidates=1), "benchmark.loader")
    with pytest.raises(ConfigError, match=r"^benchmark\.loader: invalid literal for int\(\)"):
        check_loader(block(_target_=mutants, per_problem="abc"), "benchmark.loader")
    # The other loaders' value checks that need no data: MBPP's split, APPS' difficulties, CodeContests' max_tests.
    for target, args, pattern in [
        ("selfdebug.problems.load_mbpp", {"split": "tset"}, r"unknown MBPP split 'tset'"),
        ("selfdebug.problems.load_apps", {"difficulties": ["easy"]}, r"unknown APPS difficulty 'easy'"),
        ("selfdebug.problems.load_codecontests", {"max_tests": 0}, r"max_tests must be a positive integer"),
    ]:
        with pytest.raises(ConfigError, match=rf"^data\.sources\.x: {pattern}"):
            check_loader(block(_target_=target, path=missing, **args), "data.sources.x")
    check_loader(block(_target_="selfdebug.problems.load_apps", path=missing, difficulties=["introductory"]), "x")
    assert not (tmp_path / "none.jsonl").exists()


def test_data_dir(monkeypatch, tmp_path, data_dir_path):
    assert (data_dir_path / "mbpp.jsonl").is_file()
    monkeypatch.setenv("SELFDEBUG_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(DataError, match=r"mbpp\.jsonl: no such file"):
        load_mbpp()
    monkeypatch.setenv("SELFDEBUG_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="SELFDEBUG_DATA_DIR"):
        data_dir()


def test_float_literal_fallback(tmp_path):
    rec = dict(HE_PLUS, base_input=[[[math.inf, 1.0]]], plus_input=[])
    (p,) = load_evalplus(write_jsonl(tmp_path / "e.jsonl", [rec]), name="humaneval_plus")
    assert p.tests.asserts == ("assert mean(*_sd_arg(0)) == _sd_want(0)",)
    assert all(run_plain(p.reference, p))


# ------------------------------------------------------------------------------------------------------
# Packaged data: sha256-checked files, $SELFDEBUG_DATA_DIR, the hub path, a copy with no shared/ above it
# ------------------------------------------------------------------------------------------------------

PACKAGED = ("mbpp.jsonl", "sanitized-mbpp.json", "MbppPlus-dev-2023-11.jsonl.gz", "humanevalpack-python.jsonl")


def test_packaged_files_match_their_sha256():
    digests = expected_digests()
    assert sorted(digests) == sorted(PACKAGED)
    for name in PACKAGED:
        path = data_file(name)
        assert path.parent == PACKAGED_DIR and sha256_of(path) == digests[name]
    for licence in ("README.md", "LICENSE-Apache-2.0.txt", "LICENSE-MIT-HumanEvalPack.txt"):
        assert (PACKAGED_DIR / licence).is_file()


def test_data_dir_override_is_checked_like_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFDEBUG_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(DataError, match=r"mbpp\.jsonl: no such file in \$SELFDEBUG_DATA_DIR"):
        load_mbpp()
    (tmp_path / "mbpp.jsonl").write_bytes((PACKAGED_DIR / "mbpp.jsonl").read_bytes())
    assert len(load_mbpp(split="train")) == 374
    # One changed byte: refused, naming the file and both digests; nothing is loaded.
    damaged = (PACKAGED_DIR / "mbpp.jsonl").read_bytes().replace(b"Write a", b"Write A", 1)
    (tmp_path / "mbpp.jsonl").write_bytes(damaged)
    with pytest.raises(DataError, match=rf"mbpp\.jsonl: sha256 is [0-9a-f]{{64}}, expected {expected_digests()['mbpp.jsonl']}"):
        load_mbpp()
    # The user's own file, passed by path, is read as it is.
    assert len(load_mbpp(tmp_path / "mbpp.jsonl", split="train")) == 374
    monkeypatch.setenv("SELFDEBUG_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="SELFDEBUG_DATA_DIR"):
        data_dir()


def test_unknown_packaged_name_is_refused():
    with pytest.raises(DataError, match="no packaged benchmark file named 'HumanEval.jsonl.gz'"):
        data_file("HumanEval.jsonl.gz")


def test_path_and_hub_id_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="path= or hub_id="):
        load_mbpp(tmp_path / "x.jsonl", hub_id="google-research-datasets/mbpp")


def _dataset_folder(folder, split: str, records: list[dict]):
    """A local Hugging Face dataset folder: ``datasets`` reads it as it reads a hub repository's files."""
    folder.mkdir()
    write_jsonl(folder / f"{split}.jsonl", records)
    return str(folder)


def test_mbpp_from_a_hub_dataset_equals_the_packaged_file(tmp_path):
    rows = [json.loads(line) for line in (PACKAGED_DIR / "mbpp.jsonl").read_text().splitlines()]
    wanted = [r for r in rows if r["task_id"] in (2, 11, 12, 601, 602)]
    folder = _dataset_folder(tmp_path / "mbpp", "test", wanted)
    from_hub = load_mbpp(hub_id=folder, split="test")
    packaged = {p.task_id: p for p in load_mbpp(split="test")}
    assert [p.task_id for p in from_hub] == ["MBPP/11", "MBPP/12"]
    assert [p.tests for p in from_hub] == [packaged["MBPP/11"].tests, packaged["MBPP/12"].tests]
    assert [p.task_id for p in load_mbpp(hub_id=folder, split="train")] == ["MBPP/601", "MBPP/602"]


def test_mbpp_plus_and_humanevalpack_from_hub_datasets(tmp_path):
    plus = [json.loads(line) for line in gzip.open(PACKAGED_DIR / "MbppPlus-dev-2023-11.jsonl.gz", "rt")][:3]
    got = load_evalplus(hub_id=_dataset_folder(tmp_path / "plus", "test", plus))
    assert [p.task_id for p in got] == [r["task_id"] for r in plus]
    # `datasets` reads JSON files with mixed-type lists through pandas, which rounds floats to 10 digits: the
    # same tests, a few inputs shorter (expected values come from the reference on the inputs it is given).
    packaged = load_evalplus()[0].tests.asserts
    assert len(got[0].tests.asserts) == len(packaged) and got[0].tests.asserts[:19] == packaged[:19]
    pack = [json.loads(line) for line in (PACKAGED_DIR / "humanevalpack-python.jsonl").read_text().splitlines()][:2]
    got = load_humanevalpack(hub_id=_dataset_folder(tmp_path / "pack", "test", pack), hub_config=None)
    assert [p.task_id for p in got] == ["Python/0", "Python/1"]
    with pytest.raises(DataError, match="could not load .*nowhere"):
        load_mbpp(hub_id=str(tmp_path / "nowhere"))


def test_humanevalpack_fields():
    pack = {p.task_id: p for p in load_humanevalpack()}
    assert len(pack) == 164 and all(p.metadata["check_split"] for p in pack.values())
    p = pack["Python/0"]
    assert p.source == "humanevalfix" and p.entry_point == "has_close_elements"
    assert "distance = elem - elem2" in p.metadata["buggy_program"] and p.metadata["bug_type"] == "missing logic"
    assert p.tests_shown == ("assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False",
                             "assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True")
    assert not any("check(" in t for t in p.tests.asserts)
    assert all(run_plain(p.reference, p)) and not all(run_plain(p.metadata["buggy_program"], p))
    kinds = {}
    for q in pack.values():
        kinds[q.metadata["bug_type"]] = kinds.get(q.metadata["bug_type"], 0) + 1
    assert kinds == {"value misuse": 44, "missing logic": 33, "excess logic": 31, "operator misuse": 25,
                     "variable misuse": 23, "function misuse": 8}


def test_humanevalfix_gives_the_buggy_program_and_only_the_example_tests_for_feedback():
    pack = load_benchmark("humanevalfix")
    assert [p.task_id for p in pack] == [p.task_id for p in load_benchmark("humanevalpack")]
    p = pack[0]
    assert p.given_program == p.metadata["buggy_program"] and "distance = elem - elem2" in p.given_program
    assert p.feedback_tests.asserts == p.tests_shown and p.feedback_tests.setup.strip()
    assert len(p.feedback_tests.asserts) < len(p.tests.asserts)
    assert not set(p.feedback_tests.asserts) & set(p.tests.asserts) - set(p.tests_shown)
    assert all(p.given_program and p.feedback_tests is not None for p in pack)
    # Seven tasks show no example tests: their feedback suite is empty, never the hidden test.
    assert sorted(int(p.task_id.split("/")[1]) for p in pack if p.feedback_tests.n_tests == 0) == [
        38, 41, 50, 83, 84, 119, 160]
    assert all(p.given_program is None and p.feedback_tests is None for p in load_humaneval()[:5])


@pytest.mark.slow
def test_humanevalfix_example_tests_run_in_the_sandbox():
    from selfdebug.execution import Sandbox

    pack = [p for p in load_humanevalpack()[:12] if p.feedback_tests.n_tests]
    with Sandbox(timeout=5.0) as sandbox:
        fixed = sandbox.run_batch([(p.reference, p.feedback_tests) for p in pack])
        buggy = sandbox.run_batch([(p.given_program, p.feedback_tests) for p in pack])
    assert all(v.passed for v in fixed), [v.feedback for v in fixed if not v.passed]
    assert not buggy[0].passed and "has_close_elements([1.0, 2.0, 3.0], 0.5)" in buggy[0].feedback


QUICKSTART_DATA = r"""
import json, sys
from pathlib import Path
import hydra
from hydra import compose, initialize_config_dir
import selfdebug, selfdebug.core.cli
root = Path(sys.argv[1])
assert Path(selfdebug.__file__).resolve().is_relative_to(root), selfdebug.__file__
counts = {}
with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
    cfg = compose("collect", overrides=["+exp=collect_quickstart"])
    for name, loader in cfg.data.sources.items():
        counts["data." + name] = len(hydra.utils.instantiate(loader))
    counts["few_shot"] = len(hydra.utils.instantiate(cfg.data.few_shot))
    for name, loader in cfg.decontamination.against.items():
        counts["against." + name] = len(hydra.utils.instantiate(loader))
    for bench in ("humaneval", "mbpp", "mbpp_plus", "mbpp_sanitized", "humanevalfix"):
        cfg = compose("evaluate", overrides=["+exp=eval_quickstart", f"benchmark={bench}"])
        counts["benchmark." + bench] = len(hydra.utils.instantiate(cfg.benchmark.loader))
print(json.dumps(counts))
"""


def test_quickstart_data_resolves_from_a_copy_with_no_shared_folder(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    import selfdebug

    repo = Path(selfdebug.__file__).resolve().parent.parent
    clone = tmp_path / "clone"
    shutil.copytree(repo / "selfdebug", clone / "selfdebug", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "conf", clone / "conf")
    assert not any((parent / "shared").exists() for parent in clone.parents)
    env = {k: v for k, v in os.environ.items() if k != "SELFDEBUG_DATA_DIR"}
    env["PYTHONPATH"] = str(clone)
    out = subprocess.run([sys.executable, "-c", QUICKSTART_DATA, str(clone)], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts == {"data.mbpp": 374, "few_shot": 10, "against.humaneval": 164, "against.mbpp_test": 500,
                      "benchmark.humaneval": 164, "benchmark.mbpp": 500, "benchmark.mbpp_plus": 399,
                      "benchmark.mbpp_sanitized": 257, "benchmark.humanevalfix": 164}


def test_sandbox_helpers_are_python_files_inserted_without_their_header():
    """The sandbox-side helpers are real modules (a linter reads them); test setups hold their code only."""
    from importlib import resources

    from selfdebug.problems.testcode import sandbox_helpers

    folder = resources.files("selfdebug.problems.sandbox_helpers")
    for name in ("data", "apps", "evalplus"):
        source = folder.joinpath(f"{name}.py").read_text(encoding="utf-8")
        compile(source, f"{name}.py", "exec")
        assert source.startswith("# Sandbox side")
    text = sandbox_helpers("evalplus")
    assert not text.lstrip().startswith("#") and "ruff:" not in text
    assert text.index("class _SdExpected") < text.index("def _sd_matches") < text.index("def _sd_want")
    assert load_evalplus()[0].tests.setup.startswith(text)
    assert "def _sd_expect_at" in sandbox_helpers("apps") and "_sd_want" not in sandbox_helpers("apps")
