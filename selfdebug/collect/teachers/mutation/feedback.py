"""Reading judge feedback (the failing test, expected and actual values, the error) and saying how the
failing test exposes a bug."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from selfdebug.collect.teachers.mutation.tree import source_of

_MAX_QUOTE = 160


def quote(text: str, limit: int = _MAX_QUOTE) -> str:
    """Inline code: one line, bounded length, in backticks."""
    text = " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return f"`{text}`"


@dataclass
class Feedback:
    test: str | None = None  # the first failing assert
    expected: str | None = None  # right-hand side of ``assert call == expected``
    call: str | None = None  # left-hand side of it
    actual: str | None = None
    error: str | None = None  # ``IndexError: list index out of range``
    timeout: bool = False
    stdin: str | None = None  # stdin/stdout tests
    stdout_expected: str | None = None


_FEEDBACK_CUTS = ("\nActual output: ", "\nTraceback (most recent call last):", "\n... (truncated)")


def _last_error_line(text: str) -> str | None:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "\t", "Traceback"))]
    lines = [ln for ln in lines if ln.strip() != "... (truncated)"]
    return lines[-1].strip() if lines else None


def _section(text: str, header: str, stops: tuple[str, ...]) -> str | None:
    start = text.find(header)
    if start < 0:
        return None
    body = text[start + len(header):]
    ends = [body.find(s) for s in stops if body.find(s) >= 0]
    return body[: min(ends)] if ends else body


def parse_feedback(feedback: str | None) -> Feedback:
    """Pull the first failing test, the expected and actual values, or the error out of judge feedback."""
    info = Feedback()
    if not feedback or not feedback.strip():
        return info
    text = feedback.replace("\r\n", "\n")
    if text.startswith("Timed out") or "\nTimed out" in text:
        info.timeout = True
    if "Failed test:\nInput:\n" in text or text.startswith("Input:\n"):
        info.stdin = _section(text, "Input:\n", ("\nExpected output:\n", "\nActual output:\n", "\nTraceback"))
        info.stdout_expected = _section(text, "Expected output:\n", ("\nActual output:\n",))
        info.actual = _section(text, "Actual output:\n", ("\n... (truncated)",))
        if "Traceback (most recent call last):" in text:
            info.error = _last_error_line(text.split("Traceback (most recent call last):", 1)[1])
        return info
    marker = text.find("Failed test: ")
    if marker >= 0:
        rest = text[marker + len("Failed test: "):]
        cuts = [rest.find(c) for c in _FEEDBACK_CUTS if rest.find(c) >= 0]
        info.test = (rest[: min(cuts)] if cuts else rest).strip() or None
        if "\nActual output: " in rest:
            actual = rest.split("\nActual output: ", 1)[1].split("\n... (truncated)", 1)[0]
            info.actual = actual.strip()
        if "\nTraceback (most recent call last):" in rest:
            info.error = _last_error_line(rest.split("\nTraceback (most recent call last):", 1)[1])
        if info.test:
            try:
                node = ast.parse(info.test).body[-1]
            except (SyntaxError, IndexError, ValueError):
                node = None
            if (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
                    and isinstance(node.test.ops[0], ast.Eq)):
                info.call = source_of(node.test.left)
                info.expected = source_of(node.test.comparators[0])
        return info
    if "Traceback (most recent call last):" in text or "Error" in text:
        info.error = _last_error_line(text)
    return info


def why_sentences(fb: Feedback, lead: bool) -> list[str]:
    """Ways to say how the failing test exposes the bug. ``lead``: phrased to open the explanation."""
    if fb.test:
        t = quote(fb.test, 240)
        if fb.actual is not None and fb.expected is not None:
            e, a = quote(fb.expected), quote(fb.actual)
            if lead:
                return [f"The test {t} fails: it expects {e}, but the code returns {a}.",
                        f"Running {t} gives {a} instead of the expected {e}.",
                        f"The failing test is {t}; the result is {a} where {e} was expected."]
            return [f"That is why {t} fails: the call returns {a} instead of {e}.",
                    f"The failing test {t} shows it: the expected result is {e}, but the code produces {a}.",
                    f"Because of this, {t} does not hold; the actual output is {a}, not {e}.",
                    f"This is exactly what {t} catches, since it gets {a} rather than {e}."]
        if fb.error:
            err = quote(fb.error)
            if lead:
                return [f"The test {t} crashes with {err}.", f"Running {t} raises {err}.",
                        f"The failing test is {t}, which stops with {err}."]
            return [f"As a result, {t} fails with {err}.", f"That makes {t} crash with {err}.",
                    f"This is why the test {t} raises {err} instead of passing."]
        if fb.actual is not None:
            a = quote(fb.actual)
            if lead:
                return [f"The test {t} fails because the call returns {a}.",
                        f"Running {t} yields {a}, which does not satisfy the assertion."]
            return [f"So {t} fails: the call returns {a}.",
                    f"That is why {t} does not hold; the call gives {a}."]
        if lead:
            return [f"The test {t} fails.", f"The assertion {t} does not hold."]
        return [f"That is why the test {t} fails.", f"This makes the assertion {t} fail.",
                f"As a consequence, {t} does not hold."]
    if fb.stdin is not None:
        i = quote(fb.stdin, 120)
        if fb.stdout_expected is not None and fb.actual is not None:
            e, a = quote(fb.stdout_expected), quote(fb.actual)
            return [f"On the input {i} the program prints {a}, but {e} is expected.",
                    f"With input {i} the expected output is {e}, yet the program prints {a}."]
        if fb.error:
            return [f"On the input {i} the program crashes with {quote(fb.error)}.",
                    f"Given the input {i}, the program raises {quote(fb.error)}."]
        return [f"The test with input {i} fails."]
    if fb.timeout:
        if lead:
            return ["The program does not finish within the time limit.", "The run times out."]
        return ["As a result the program does not finish within the time limit.",
                "Because of this the program runs past the time limit and the tests never complete.",
                "That is why the run times out."]
    if fb.error:
        return [f"Running the program raises {quote(fb.error)}.", f"The program stops with {quote(fb.error)}."]
    if lead:
        return ["The program fails its tests.", "The tests do not pass."]
    return ["The tests that exercise this case fail as a result.",
            "That is why the tests do not pass."]
