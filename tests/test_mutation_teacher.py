"""The mutation teacher: every operator on hand-written programs, mutants of all MBPP train references,
explanations, diff explanations, and (in the sandbox) how many mutants their tests catch."""

from __future__ import annotations

import collections
import difflib
import random
import re

import pytest

from selfdebug.problems import load_mbpp
from selfdebug.collect.teachers.mutation import (
    OPERATORS,
    Mutant,
    Mutation,
    MutationTeacher,
    canonical,
    explain,
    explain_diff,
    mutants,
    stable_seed,
)


@pytest.fixture(scope="module")
def mbpp_train():
    return load_mbpp(split="train")


def codes(reference: str, operator: str) -> dict[str, Mutation]:
    """Every mutant one operator makes of ``reference``: code -> mutation."""
    found = mutants(reference, random.Random(0), 100, operators=[operator])
    return {m.code: m.mutation for m in found}


def sentences(text: str) -> int:
    """Sentences outside inline code spans."""
    prose = re.sub(r"`[^`]*`", "X", text)
    return len(re.findall(r"[.!?](?:\s|$)", prose))


# ------------------------------------------------------------------------------------------- operators

def test_comparison():
    got = codes("def f(a, b):\n    return a < b\n", "comparison")
    assert got == {"def f(a, b):\n    return a <= b": Mutation("comparison", 2, "a < b", "a <= b", "f",
                                                              {"from": "<", "to": "<="})}
    assert list(codes("def f(a, b):\n    return a != b", "comparison")) == ["def f(a, b):\n    return a == b"]
    assert list(codes("def f(a, b):\n    return a not in b", "comparison")) == ["def f(a, b):\n    return a in b"]


def test_arithmetic():
    got = codes("def f(a, b):\n    return a + b\n", "arithmetic")
    assert got == {"def f(a, b):\n    return a - b": Mutation("arithmetic", 2, "a + b", "a - b", "f",
                                                             {"from": "+", "to": "-"})}
    assert list(codes("def f(a, b):\n    return a * b", "arithmetic")) == ["def f(a, b):\n    return a // b"]
    # String concatenation and list repetition are not arithmetic.
    assert codes("def f(s):\n    return s + 'x'", "arithmetic") == {}
    assert codes("def f(n):\n    return [0] * n", "arithmetic") == {}


def test_boolean():
    got = codes("def f(a, b):\n    return a and b\n", "boolean")
    assert got == {"def f(a, b):\n    return a or b": Mutation("boolean", 2, "a and b", "a or b", "f",
                                                              {"from": "and", "to": "or"})}


def test_negate_condition():
    got = codes("def f(x):\n    if x:\n        return 1\n    return 0\n", "negate_condition")
    assert got == {"def f(x):\n    if not x:\n        return 1\n    return 0": Mutation(
        "negate_condition", 2, "x", "not x", "f", {"construct": "if", "removed_not": False, "condition": "x"})}
    assert list(codes("def f(x):\n    while not x:\n        x = g(x)", "negate_condition")) == [
        "def f(x):\n    while x:\n        x = g(x)"]
    assert list(codes("def f(xs):\n    return [x for x in xs if x > 0]", "negate_condition")) == [
        "def f(xs):\n    return [x for x in xs if not x > 0]"]
    assert codes("def f():\n    while True:\n        break", "negate_condition") == {}


def test_range_bound():
    got = codes("def f(n):\n    return list(range(1, n + 1))\n", "range_bound")
    assert got == {
        "def f(n):\n    return list(range(1, n))": Mutation(
            "range_bound", 2, "range(1, n + 1)", "range(1, n)", "f",
            {"bound": "stop", "delta": -1, "step": 1, "from": "n + 1", "to": "n"}),
        "def f(n):\n    return list(range(0, n + 1))": Mutation(
            "range_bound", 2, "range(1, n + 1)", "range(0, n + 1)", "f",
            {"bound": "start", "delta": -1, "step": 1, "from": "1", "to": "0"}),
    }
    assert list(codes("for i in range(n):\n    print(i)", "range_bound")) == [
        "for i in range(n - 1):\n    print(i)"]
    # A program that rebinds ``range`` is left alone.
    assert codes("range = lambda n: [n]\nx = range(3)", "range_bound") == {}


def test_index_offset():
    got = codes("def f(xs, k):\n    return xs[:k]\n", "index_offset")
    assert got == {"def f(xs, k):\n    return xs[:k - 1]": Mutation(
        "index_offset", 2, "xs[:k]", "xs[:k - 1]", "f",
        {"kind": "upper", "delta": -1, "access": "read", "from": "k", "to": "k - 1"})}
    assert list(codes("def f(xs, i):\n    return xs[i]", "index_offset")) == ["def f(xs, i):\n    return xs[i + 1]"]
    assert list(codes("def f(xs):\n    return xs[-1]", "index_offset")) == ["def f(xs):\n    return xs[-2]"]
    assert list(codes("def f(xs, i):\n    return xs[i - 1]", "index_offset")) == ["def f(xs, i):\n    return xs[i]"]
    assert list(codes("def f(xs, k):\n    return xs[k:]", "index_offset")) == ["def f(xs, k):\n    return xs[k + 1:]"]
    assert codes("def f(d):\n    return d['key']", "index_offset") == {}


def test_constant():
    # The docstring is not a site; the boolean is.
    got = codes('def f():\n    """Return 7."""\n    return True\n', "constant")
    assert got == {'def f():\n    """Return 7."""\n    return False': Mutation(
        "constant", 3, "True", "False", "f", {"kind": "bool", "from": "True", "to": "False"})}
    assert set(codes("x = 5", "constant")) == {"x = 6", "x = 4"}
    assert set(codes("x = 0", "constant")) == {"x = 1"}
    assert set(codes("x = -3", "constant")) == {"x = -2", "x = -4"}
    assert set(codes("def f():\n    return 'Yes'", "constant")) == {"def f():\n    return 'yes'"}
    # Literals in comparisons, range() and subscripts belong to the more specific operators.
    assert codes("def f(x, xs):\n    return x > 0 and xs[1] in range(3)", "constant") == {}


def test_swap_args():
    got = codes("def f(a, b):\n    return pow(a, b)\n", "swap_args")
    assert got == {"def f(a, b):\n    return pow(b, a)": Mutation(
        "swap_args", 2, "pow(a, b)", "pow(b, a)", "f", {"callee": "pow", "first": "a", "second": "b", "position": 1})}
    assert codes("def f(a, b):\n    return max(a, b)", "swap_args") == {}  # commutative
    assert codes("def f(a):\n    return g(a, a)", "swap_args") == {}  # no change


def test_drop_branch():
    ref = "def f(x):\n    if x > 0:\n        return 1\n    else:\n        return 2\n"
    original = "if x > 0:\n        return 1\n    else:\n        return 2"
    assert codes(ref, "drop_branch") == {
        "def f(x):\n    if x > 0:\n        return 1": Mutation(
            "drop_branch", 2, original, "if x > 0:\n        return 1", "f",
            {"kind": "else", "header": "if", "condition": "x > 0", "dropped": "return 2"}),
        "def f(x):\n    if x > 0:\n        pass\n    else:\n        return 2": Mutation(
            "drop_branch", 2, original, "if x > 0:\n        pass\n    else:\n        return 2", "f",
            {"kind": "body", "header": "if", "condition": "x > 0", "dropped": "return 1"}),
    }
    elif_ref = "def f(x):\n    if x > 0:\n        return 1\n    elif x < 0:\n        return -1\n    else:\n        return 0"
    dropped_elif = [m for m in codes(elif_ref, "drop_branch").values() if m.detail["kind"] == "elif"]
    assert [m.detail for m in dropped_elif] == [
        {"kind": "elif", "header": "if", "condition": "x > 0", "branch_condition": "x < 0", "dropped": "return -1"}]
    assert ("def f(x):\n    if x > 0:\n        return 1\n    else:\n        return 0"
            in codes(elif_ref, "drop_branch"))
    emptied_elif = [m for m in codes(elif_ref, "drop_branch").values() if m.line == 4]
    assert {(m.detail["kind"], m.detail["header"]) for m in emptied_elif} == {("else", "elif"), ("body", "elif")}
    assert all(m.after.startswith("elif x < 0:") for m in emptied_elif)


def test_return_value():
    assert codes("def f(x):\n    return x * 2\n", "return_value") == {
        "def f(x):\n    return None": Mutation("return_value", 2, "return x * 2", "return None", "f",
                                               {"to": "None", "value": "x * 2"}),
        "def f(x):\n    return x": Mutation("return_value", 2, "return x * 2", "return x", "f",
                                            {"to": "argument", "argument": "x", "value": "x * 2"}),
    }
    assert codes("def f(x):\n    return None", "return_value") == {}


def test_boundary():
    assert codes("def f(x):\n    return x > 0\n", "boundary") == {
        "def f(x):\n    return x > 1": Mutation("boundary", 2, "x > 0", "x > 1", "f",
                                                {"op": ">", "from": "0", "to": "1", "subject": "x", "witness": "1"})}
    assert list(codes("def f(x):\n    return x < 5", "boundary")) == ["def f(x):\n    return x < 4"]
    assert list(codes("def f(x):\n    return 0 <= x", "boundary")) == ["def f(x):\n    return 1 <= x"]
    assert codes("def f(x, y):\n    return x < y", "boundary") == {}


def test_builtin():
    assert codes("def f(xs):\n    return sorted(xs)\n", "builtin") == {
        "def f(xs):\n    return xs": Mutation("builtin", 2, "sorted(xs)", "xs", "f",
                                             {"from": "sorted", "to": None, "argument": "xs"})}
    assert list(codes("def f(xs):\n    return min(xs)", "builtin")) == ["def f(xs):\n    return max(xs)"]
    assert list(codes("def f(xs):\n    return sum(xs)", "builtin")) == ["def f(xs):\n    return len(xs)"]
    assert list(codes("def f(xs):\n    return any(xs)", "builtin")) == ["def f(xs):\n    return all(xs)"]
    assert codes("def f(xs):\n    return len(xs)", "builtin") == {}  # len -> sum only on a built list
    assert codes("def f(xs):\n    max = 3\n    return min(xs, max)", "builtin") == {}  # ``max`` rebound


def test_augassign():
    ref = "def f(xs):\n    t = 0\n    for x in xs:\n        t += x\n    return t\n"
    assert codes(ref, "augassign") == {
        "def f(xs):\n    t = 0\n    for x in xs:\n        t -= x\n    return t": Mutation(
            "augassign", 4, "t += x", "t -= x", "f", {"from": "+=", "to": "-=", "target": "t"})}
    assert codes("def f(s):\n    s += 'x'\n    return s", "augassign") == {}


def test_every_operator_has_a_hand_written_case():
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    assert set(OPERATORS) <= tested


def test_unknown_operator_and_unparsable_reference():
    with pytest.raises(ValueError, match="unknown mutation operator"):
        mutants("x = 1", random.Random(0), 1, operators=["nope"])
    assert mutants("def f(:\n", random.Random(0), 3) == []
    assert mutants("x = 1", random.Random(0), 0) == []


# ------------------------------------------------------------------------------------ on MBPP references

def test_mutants_of_every_mbpp_train_reference(mbpp_train):
    assert len(mbpp_train) == 374
    counts = collections.Counter()
    for problem in mbpp_train:
        found = mutants(problem.reference, random.Random(stable_seed(0, problem.task_id)), 4)
        assert found, problem.task_id
        canon = canonical(problem.reference)
        assert len({m.code for m in found}) == len(found)
        for m in found:
            where = f"{problem.task_id} {m.mutation}"
            assert m.reference == canon
            assert m.code != canon, where
            compile(m.code, "<mutant>", "exec")
            lines = m.code.splitlines()
            mut = m.mutation
            assert mut.after in m.code, where
            assert mut.after.splitlines()[0] in lines[mut.line - 1], where
            assert mut.before in canon, where
            if mut.operator != "drop_branch":
                # One statement changed: exactly the mutation's line differs from the reference.
                hunks = [op for op in difflib.SequenceMatcher(None, canon.splitlines(), lines).get_opcodes()
                         if op[0] != "equal"]
                assert [(tag, j1, j2) for tag, _, _, j1, j2 in hunks] == [("replace", mut.line - 1, mut.line)], where
            counts[mut.operator] += 1
    assert set(counts) == set(OPERATORS), counts


def test_mutants_are_deterministic_for_a_seed(mbpp_train):
    ref = mbpp_train[0].reference
    first = mutants(ref, random.Random(7), 5)
    assert first == mutants(ref, random.Random(7), 5)
    assert len(first) == 5
    others = [mutants(ref, random.Random(seed), 5) for seed in range(8, 12)]
    assert any([m.code for m in o] != [m.code for m in first] for o in others)
    teacher_a, teacher_b = MutationTeacher(seed=3), MutationTeacher(seed=3)
    assert teacher_a.propose(mbpp_train[5], 3) == teacher_b.propose(mbpp_train[5], 3)
    assert stable_seed(3, "MBPP/601") == stable_seed(3, "MBPP/601") != stable_seed(4, "MBPP/601")


# ------------------------------------------------------------------------------------------ explanations

SUM_REF = "def total(xs):\n    t = 0\n    for i in range(len(xs)):\n        t += xs[i]\n    return t\n"
FEEDBACK = "Failed test: assert total([1, 2, 3]) == 6\nActual output: 3"


def sum_mutant() -> Mutant:
    (m,) = [m for m in mutants(SUM_REF, random.Random(0), 100, operators=["range_bound"])
            if m.mutation.detail["bound"] == "stop"]
    return m


def test_explanations_vary_and_stay_specific():
    mutant = sum_mutant()
    assert mutant.code.splitlines()[2] == "    for i in range(len(xs) - 1):"
    rng = random.Random(1)
    texts = [explain(mutant, FEEDBACK, rng) for _ in range(6)]
    assert len(set(texts)) >= 4
    for text in texts:
        assert "`total`" in text and "line 3" in text
        assert "`for i in range(len(xs) - 1):`" in text or "`range(len(xs) - 1)`" in text
        assert "`assert total([1, 2, 3]) == 6`" in text
        assert "stops one step early" in text
        assert "```" not in text
        assert 2 <= sentences(text) <= 5, text


def test_explanations_of_mbpp_mutants_name_function_and_failing_test(mbpp_train):
    rng = random.Random(0)
    for problem in mbpp_train[:100]:
        test = problem.tests.asserts[0]
        feedback = f"Failed test: {test}\nActual output: 0"
        for m in mutants(problem.reference, rng, 3):
            text = explain(m, feedback, rng)
            if m.mutation.function:
                assert f"`{m.mutation.function}`" in text, text
            else:
                assert re.search(r"top[ -]level", text), text
            if len(test) <= 200:
                assert f"`{test.strip()}`" in text, (problem.task_id, text)
            assert "```" not in text and 2 <= sentences(text) <= 5, text


def test_explanation_reads_errors_and_timeouts():
    mutant = sum_mutant()
    error = ("Failed test: assert total([1, 2, 3]) == 6\nTraceback (most recent call last):\n"
             '  File "<solution>", line 4, in total\nIndexError: list index out of range')
    text = explain(mutant, error, random.Random(0))
    assert "`IndexError: list index out of range`" in text and "`assert total([1, 2, 3]) == 6`" in text
    assert "time limit" in explain(mutant, "Timed out after 5 seconds.", random.Random(0)) or \
        "times out" in explain(mutant, "Timed out after 5 seconds.", random.Random(0))
    assert 2 <= sentences(explain(mutant, "", random.Random(0))) <= 5


def test_explain_diff():
    wrong = "def total(xs):\n    t = 0\n    for i in range(len(xs) - 1):\n        t += xs[i]\n    return t\n"
    rng = random.Random(0)
    texts = {explain_diff(wrong, SUM_REF, FEEDBACK, rng) for _ in range(8)}
    assert None not in texts and len(texts) >= 3
    for text in texts:
        assert "`assert total([1, 2, 3]) == 6`" in text
        assert "`total`" in text
        assert "for i in range(len(xs) - 1):" in text or "`- 1`" in text
    unrelated = "import math\n\ndef total(xs):\n    return math.fsum(x for x in xs if x)\n\nprint(total([1]))\n"
    assert explain_diff(unrelated, SUM_REF, FEEDBACK, rng) is None
    assert explain_diff(SUM_REF.replace("    ", "\t"), SUM_REF, FEEDBACK, rng) is None  # same program
    assert explain_diff("def total(:", SUM_REF, FEEDBACK, rng) is None
    missing = "def total(xs):\n    t = 0\n    for i in range(len(xs)):\n        pass\n    return t\n"
    assert "t += xs[i]" in explain_diff(missing, SUM_REF, FEEDBACK, rng)


# ----------------------------------------------------------------------------------------------- teacher

def test_teacher_explain_and_refine(mbpp_train):
    problem = mbpp_train[0]
    teacher = MutationTeacher(seed=0)
    assert teacher.name == "mutation"
    mutant = teacher.propose(problem, 3)[0]
    feedback = f"Failed test: {problem.tests.asserts[0]}\nActual output: 0"
    pairs = teacher.explain_one(problem, mutant.code, feedback, 5, mutant.mutation)
    assert len(pairs) == 5 and len({e for e, _ in pairs}) == 5
    assert all(r == canonical(problem.reference) for _, r in pairs)
    assert pairs == teacher.explain_one(problem, mutant.code, feedback, 5, mutant.mutation)
    by_diff = teacher.explain_one(problem, mutant.code, feedback, 3, None)
    assert 1 <= len(by_diff) <= 3 and len({e for e, _ in by_diff}) == len(by_diff)
    assert teacher.explain_one(problem, "print('hello')\n", feedback, 3, None) == []
    with pytest.raises(ValueError):
        MutationTeacher(operators=["nope"])


# ----------------------------------------------------------------------------------- judged in a sandbox

@pytest.fixture(scope="module")
def sandbox():
    from selfdebug.execution import Sandbox

    with Sandbox(workers=2, timeout=5) as box:
        yield box


@pytest.mark.slow
def test_most_mutants_fail_their_tests(sandbox, mbpp_train):
    problems = mbpp_train[:60]
    references = sandbox.run_batch([(p.reference, p.tests) for p in problems])
    assert all(r.passed for r in references), [p.task_id for p, r in zip(problems, references) if not r.passed]
    teacher = MutationTeacher(seed=0)
    proposed = [(p, m) for p in problems for m in teacher.propose(p, 3)]
    results = sandbox.run_batch([(m.code, p.tests) for p, m in proposed])
    total, killed = collections.Counter(), collections.Counter()
    for (_, m), r in zip(proposed, results):
        total[m.mutation.operator] += 1
        killed[m.mutation.operator] += not r.passed
    rate = sum(killed.values()) / len(proposed)
    print(f"\nkill rate {rate:.2f} over {len(proposed)} mutants of {len(problems)} MBPP train problems")
    for op in sorted(total, key=lambda o: -total[o]):
        print(f"  {op:18s} {killed[op]:3d}/{total[op]:3d} = {killed[op] / total[op]:.2f}")
    assert rate >= 0.5
