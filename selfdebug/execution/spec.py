"""What a program is judged against, and what the judge says about it.

Plain data shared by the sandbox, the problem loaders and everything that reads verdicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

TestKind = Literal["assert", "stdio"]

# Verdicts. Only PASSED means every test ran and held.
PASSED = "passed"
FAILED = "failed"  # ran to the end, at least one test did not hold
ERROR = "error"  # the program or a test raised, or the program exited before the tests finished
TIMEOUT = "timeout"  # wall-clock or CPU limit
MEMORY = "memory"  # address-space limit (MemoryError)
OUTPUT_LIMIT = "output_limit"  # printed more than the configured bound
SYNTAX_ERROR = "syntax_error"  # the program does not compile
NO_CODE = "no_code"  # the completion held no program to run
BLOCKED = "blocked"  # tried to forge its verdict (reach the judge, its records or its frames): failed
STATUSES = (PASSED, FAILED, ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, SYNTAX_ERROR, NO_CODE, BLOCKED)


@dataclass(frozen=True)
class TestSuite:
    """Tests for one problem.

    ``assert``: ``setup`` runs after the program (MBPP's ``test_setup_code``, imports, HumanEval's
    ``candidate = entry_point``), then each string of ``asserts`` runs as one test in the same namespace.
    ``stdio``: the program runs once per ``(input, expected_output)`` pair with that input on stdin.
    """

    __test__ = False  # not a pytest class, despite the name

    kind: TestKind
    asserts: tuple[str, ...] = ()
    setup: str = ""
    stdio: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("assert", "stdio"):
            raise ValueError(f"unknown test kind {self.kind!r}: expected 'assert' or 'stdio'")
        # Tuples, not lists: a suite is hashed into the cache key and shared between threads.
        object.__setattr__(self, "asserts", tuple(self.asserts))
        object.__setattr__(self, "stdio", tuple((str(i), str(o)) for i, o in self.stdio))

    @property
    def n_tests(self) -> int:
        return len(self.asserts) if self.kind == "assert" else len(self.stdio)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "asserts": list(self.asserts), "setup": self.setup,
                "stdio": [list(p) for p in self.stdio]}

    @classmethod
    def from_dict(cls, d: dict) -> "TestSuite":
        return cls(kind=d["kind"], asserts=tuple(d.get("asserts", ())), setup=d.get("setup", ""),
                   stdio=tuple(tuple(p) for p in d.get("stdio", ())))


@dataclass
class ExecResult:
    """The verdict on one program. ``feedback`` is the bounded text a model sees."""

    status: str
    n_passed: int
    n_tests: int
    feedback: str = ""
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    cached: bool = False
    test_results: list[bool] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def pass_fraction(self) -> float:
        return self.n_passed / self.n_tests if self.n_tests else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExecResult":
        d = {k: v for k, v in d.items() if k != "passed"}
        return cls(**d)
