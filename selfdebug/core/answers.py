"""Answer forms of a repair: how the fix of a wrong program is written, and how to apply it back.

A model's answer form is a property of how it was trained: ``model.answer_form`` in the configs, recorded in
each trained model's ``selfdebug_sft.json`` (``model_answer_form`` reads it back), and used alike by SFT
targets, PPO rollouts and evaluation, with the refinement instruction naming it
(``selfdebug.core.prompts.refine_instruction``).

- ``full``: the whole corrected program in one ```python block (the paper's form; SFT and evaluation read it).
- ``line``: only the changed lines, one ``old => new`` per line (whitespace-stripped; the new line takes the
  old line's indentation). About ten tokens to copy instead of a function: the form the issue measured as
  learnable on a CPU-sized model.
- ``search_replace``: ``<<<<<<< SEARCH`` / ``=======`` / ``>>>>>>> REPLACE`` blocks quoting exact lines of
  the wrong program (with context lines until the quote is unique) and their replacement.

``edit_answer(wrong, fixed, form)`` writes the answer (None when the form cannot say it: ``line`` needs each
changed line replaced by one line, and each old line unique); ``apply_answer(wrong, answer, form)`` gives the
program the answer stands for (None when it does not apply), which the tests then judge as a full program.
Plain functions of text: no model, no Lightning.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import ANSWER_FORMS, ParsedCompletion, assemble_program, parse_completion

ARROW = " => "
SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_BLOCK = re.compile(rf"^{SEARCH}\n(.*?)^{DIVIDER}\n(.*?)^{REPLACE}$", re.MULTILINE | re.DOTALL)
_MAX_CONTEXT = 3


def _hunks(wrong: list[str], fixed: list[str]) -> list[tuple[int, int, int, int]]:
    matcher = difflib.SequenceMatcher(a=wrong, b=fixed, autojunk=False)
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def line_answer(wrong: str, fixed: str) -> str | None:
    a, b = wrong.splitlines(), fixed.splitlines()
    hunks = _hunks(a, b)
    if not hunks or any(i2 - i1 != j2 - j1 for i1, i2, j1, j2 in hunks):
        return None
    stripped = [line.strip() for line in a]
    out = []
    for i1, i2, j1, _ in hunks:
        for k in range(i2 - i1):
            old, new = a[i1 + k].strip(), b[j1 + k].strip()
            if not old or stripped.count(old) != 1 or ARROW in old or ARROW in new:
                return None
            out.append(f"{old}{ARROW}{new}")
    return "\n".join(out)


def apply_line(wrong: str, answer: str) -> str | None:
    lines = wrong.splitlines()
    stripped = [line.strip() for line in lines]
    edits = [row for row in answer.strip().splitlines() if row.strip()]
    if not edits:
        return None
    for row in edits:
        if ARROW not in row:
            return None
        old, new = (part.strip() for part in row.split(ARROW, 1))
        if stripped.count(old) != 1:
            return None
        i = stripped.index(old)
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = indent + new if new else ""
        stripped[i] = new
    return "\n".join(lines) + "\n"


def _unique_span(a: list[str], i1: int, i2: int) -> tuple[int, int] | None:
    """The smallest span around lines ``[i1, i2)`` (context added alternately before and after) whose text
    occurs once in ``a``."""
    text = "\n".join(a)
    lo, hi = i1, i2
    for grow in range(2 * _MAX_CONTEXT + 1):
        quoted = "\n".join(a[lo:hi])
        if hi > lo and quoted.strip() and text.count(quoted) == 1:
            return lo, hi
        if grow % 2 == 0 and lo > 0:
            lo -= 1
        elif hi < len(a):
            hi += 1
        elif lo > 0:
            lo -= 1
    return None


def _lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def search_replace_answer(wrong: str, fixed: str) -> str | None:
    a, b = wrong.splitlines(), fixed.splitlines()
    hunks = _hunks(a, b)
    if not hunks:
        return None
    blocks = []
    for i1, i2, j1, j2 in hunks:
        span = _unique_span(a, i1, i2)
        if span is None:
            return None
        lo, hi = span
        search = a[lo:hi]
        replace = a[lo:i1] + b[j1:j2] + a[i2:hi]
        blocks.append(f"{SEARCH}\n{_lines(search)}{DIVIDER}\n{_lines(replace)}{REPLACE}")
    return "\n".join(blocks)


def apply_search_replace(wrong: str, answer: str) -> str | None:
    blocks = _BLOCK.findall(answer)
    if not blocks:
        return None
    # Matched at line starts only: a leading newline on both sides.
    program = "\n" + (wrong if wrong.endswith("\n") else wrong + "\n")
    for search, replace in blocks:
        if not search.strip() or program.count("\n" + search) != 1:
            return None
        program = program.replace("\n" + search, "\n" + replace, 1)
    return program[1:]


def edit_answer(wrong: str, fixed: str, form: str) -> str | None:
    """The answer that turns ``wrong`` into ``fixed`` in ``form`` (None: not expressible in it)."""
    if form == "full":
        return f"```python\n{fixed.rstrip()}\n```"
    if form == "line":
        return line_answer(wrong, fixed)
    if form == "search_replace":
        return search_replace_answer(wrong, fixed)
    raise ValueError(f"unknown answer form {form!r}")


def apply_answer(wrong: str, answer: str, form: str) -> str | None:
    """The program ``answer`` (a model's whole reply: an explanation may come first) stands for."""
    if form == "full":
        return parse_completion(answer).code
    text = answer.replace("<|end|>", "")
    if form == "search_replace":
        return apply_search_replace(wrong, text)
    if form == "line":
        rows = [row for row in text.splitlines() if ARROW in row]  # an explanation's sentences carry no arrow
        return apply_line(wrong, "\n".join(rows)) if rows else None
    raise ValueError(f"unknown answer form {form!r}")


def shown_program(problem, code: str) -> str:
    """The program a refinement prompt shows for ``code`` (``assemble_program``), ending in one newline: what an
    edit answer is applied to, and the form ``apply_answer`` returns programs in."""
    return assemble_program(problem, code).rstrip() + "\n"


def fix_start(text: str, form: str) -> int | None:
    """Character index where the fix begins in an edit-form answer (the explanation is what comes before it):
    the first ``old => new`` row, or the first SEARCH marker; None when there is none."""
    if form == "line":
        at = 0
        for row in text.splitlines(keepends=True):
            if ARROW in row:
                return at
            at += len(row)
        return None
    if form == "search_replace":
        at = text.find(SEARCH)
        return at if at >= 0 else None
    raise ValueError(f"fix_start is for the edit forms, not {form!r}")


def parse_answer(text: str, form: str, wrong: str) -> ParsedCompletion:
    """What a refinement says in ``form``: the explanation before the fix, and the full program the answer
    stands for (``code`` None when no fix is written or the edit does not apply to ``wrong``). ``wrong`` is
    the program as the prompt showed it (``prompts.assemble_program``)."""
    if form == "full":
        return parse_completion(text)
    start = fix_start(text, form)
    explanation = (text if start is None else text[:start]).strip()
    return ParsedCompletion(explanation=explanation, code=None if start is None else apply_answer(wrong, text, form))


def check_answer_form(form, key: str = "model.answer_form") -> str:
    if form not in ANSWER_FORMS:
        raise ConfigError(f"{key} = {form!r}; choose one of {list(ANSWER_FORMS)}")
    return str(form)


def model_answer_form(name_or_path: str | None, configured: str | None = None,
                      key: str = "model.answer_form") -> str:
    """The answer form to prompt and read a model with: ``configured`` when set, else what the model folder's
    ``selfdebug_sft.json`` records (a model trained here), else ``full`` (the paper's form)."""
    if configured is not None:
        return check_answer_form(configured, key)
    if name_or_path:
        if name_or_path == "mini":
            from selfdebug.core.models import mini_dir

            folder = mini_dir()
        else:
            folder = Path(str(name_or_path)).expanduser()
        meta = folder / "selfdebug_sft.json"
        if meta.is_file():
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
                # A pretrained checkpoint records it among its pretrain settings.
                recorded = info.get("answer_form") or (info.get("pretrain") or {}).get("answer_form") or "full"
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{meta}: unreadable ({exc}); set {key} explicitly") from None
            return check_answer_form(recorded, f"answer_form in {meta}")
    return "full"


def answer_form_of(cfg, name_or_path) -> str:
    """A run config's answer form for the model at ``name_or_path``: ``model.answer_form``, or (null/absent)
    what that model records."""
    configured = cfg.get("model", {}).get("answer_form") if hasattr(cfg, "get") else None
    return model_answer_form(None if name_or_path is None else str(name_or_path), configured)
