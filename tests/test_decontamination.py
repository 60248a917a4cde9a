from selfdebug.collect.decontamination import find_contaminated, ngrams
from selfdebug.execution import TestSuite
from selfdebug.problems import Problem, data_dir, load_humaneval, load_mbpp

TESTS = TestSuite("assert", asserts=("assert True",))


def problem(task_id, text, code=None):
    return Problem(task_id=task_id, source="t", prompt=text, tests=TESTS, reference=code)


def test_ngrams_are_case_and_space_insensitive():
    assert ngrams("Write a  FUNCTION to add", 3) == ngrams("write a function to add", 3)


def test_near_duplicate_text_and_code_are_found():
    bench = [problem("B/1", "Write a function to find the sum of the squares of a list of numbers.",
                     "def f(xs):\n    return sum(x * x for x in xs)\n")]
    train = [
        problem("T/1", "Write a function to find the sum of the squares of a list of numbers!"),   # text
        problem("T/2", "Totally different words here about strings and parsing.",
                "def f(xs):\n    return sum(x*x  for x in xs)"),                                  # code, reformatted
        problem("T/3", "Reverse the words in a sentence.", "def g(s):\n    return ' '.join(s.split()[::-1])\n"),
    ]
    matches = {m.task_id: m for m in find_contaminated(train, bench, threshold=0.7)}
    assert set(matches) == {"T/1", "T/2"}
    assert matches["T/1"].field == "text" and matches["T/2"].field == "code"
    assert matches["T/2"].similarity == 1.0


def test_real_benchmarks_are_caught_and_mbpp_train_mostly_survives():
    data = data_dir() / "mbpp.jsonl"
    test_split = load_mbpp(data, split="test")
    # A benchmark problem is contaminated with itself...
    assert len(find_contaminated(test_split[:50], test_split)) == 50
    # ...while the disjoint train split mostly is not.
    train = load_mbpp(data, split="train")
    dropped = find_contaminated(train, test_split + load_humaneval())
    assert len(dropped) < 0.1 * len(train)
