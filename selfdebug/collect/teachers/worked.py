"""Worked examples for a few-shot teacher prompt: a base model (the paper's CodeLlama-34B teacher, §4.3.1) is
shown wrong programs with their execution feedback, an explanation of the bug and the fix, before the real one.

The problems are MBPP's prompt split (task ids 1-10, in neither MBPP train nor test); each fix is the problem's
reference solution. The feedback is the sandbox's own text for the wrong program (tests/test_collect.py checks
that it still is), so the examples show exactly the feedback format the teacher sees afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfdebug.core.errors import ConfigError
from selfdebug.problems import Problem


@dataclass(frozen=True)
class WorkedExample:
    task_id: str
    wrong_code: str
    feedback: str
    explanation: str


WORKED_EXAMPLES = (
    WorkedExample(
        "MBPP/2",
        "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) | set(test_tup2))\n  return (res) \n",
        "Failed test: assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\nActual output: (3, 4, 5, 6, 7, 10)",
        "The code joins the two sets with `|`, which is their union: it returns every element that appears in "
        "either tuple. The task asks for the elements the tuples have in common, which is the intersection, "
        "`set(test_tup1) & set(test_tup2)`."),
    WorkedExample(
        "MBPP/3",
        "import math\ndef is_not_prime(n):\n    result = False\n    for i in range(2,int(math.sqrt(n))):\n"
        "        if n % i == 0:\n            result = True\n    return result",
        "Failed test: assert is_not_prime(35) == True\nActual output: False",
        "`range(2, int(math.sqrt(n)))` stops one short of the integer square root, so that divisor is never "
        "tried: for 35 the loop checks 2, 3 and 4 but not 5, and 35 = 5 * 7 is reported as prime. The range "
        "must go up to `int(math.sqrt(n)) + 1`."),
    WorkedExample(
        "MBPP/4",
        "import heapq as hq\ndef heap_queue_largest(nums,n):\n  largest_nums = hq.nsmallest(n, nums)\n"
        "  return largest_nums",
        "Failed test: assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65]\n"
        "Actual output: [14, 22, 22]",
        "`hq.nsmallest` returns the n smallest numbers in ascending order, but the function should return the n "
        "largest ones, largest first. `hq.nlargest(n, nums)` does exactly that."),
)


def worked_examples(problems: list[Problem], k: int, exclude: str | None = None
                    ) -> list[tuple[Problem, str, str, str, str]]:
    """The first ``k`` worked examples as ``(problem, wrong code, feedback, explanation, fix)``, skipping the
    problem ``exclude`` (a request never sees its own problem solved). ``problems``: MBPP's prompt split."""
    by_id = {p.task_id: p for p in problems}
    usable = [ex for ex in WORKED_EXAMPLES if ex.task_id != exclude]
    if k > len(WORKED_EXAMPLES):
        raise ConfigError(f"teacher.few_shot = {k}; there are {len(WORKED_EXAMPLES)} worked examples")
    missing = [ex.task_id for ex in usable[:k] if ex.task_id not in by_id or not by_id[ex.task_id].reference]
    if missing:
        raise ConfigError(f"teacher.few_shot: the worked examples' problems {missing} are not in MBPP's prompt split "
                          "as loaded (with a reference solution)")
    return [(by_id[ex.task_id], ex.wrong_code, ex.feedback, ex.explanation, by_id[ex.task_id].reference)
            for ex in usable[:k]]
