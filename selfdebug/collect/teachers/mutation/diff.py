"""Explaining a wrong program that did not come from a mutation, by its small line diff against the reference."""

from __future__ import annotations

import ast
import difflib
import io
import random
import re
import tokenize

from selfdebug.collect.teachers.mutation.feedback import parse_feedback, quote, why_sentences
from selfdebug.collect.teachers.mutation.records import canonical


def _tokens(line: str) -> list[tuple[str, int, int]]:
    """Python tokens of one (stripped) line with their column spans."""
    try:
        return [(t.string, t.start[1], t.end[1]) for t in tokenize.generate_tokens(io.StringIO(line).readline)
                if t.string and t.start[0] == 1 and t.type not in (tokenize.NEWLINE, tokenize.NL,
                                                                   tokenize.ENDMARKER, tokenize.COMMENT)]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]+", line)]


def _token_change(wrong: str, right: str) -> tuple[str, str] | None:
    """The one run of tokens in which two stripped lines differ, as (wrong text, right text), quoted from
    the lines themselves; None if they differ in several places or the run is (nearly) the whole line."""
    a, b = _tokens(wrong), _tokens(right)
    matcher = difflib.SequenceMatcher(None, [t[0] for t in a], [t[0] for t in b], autojunk=False)
    ops = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if len(ops) != 1:
        return None
    _, i1, i2, j1, j2 = ops[0]
    if (i2 - i1) * 2 > max(len(a), 1) or (j2 - j1) * 2 > max(len(b), 1):
        return None
    bad = wrong[a[i1][1]:a[i2 - 1][2]] if i2 > i1 else ""
    good = right[b[j1][1]:b[j2 - 1][2]] if j2 > j1 else ""
    return bad, good


def _enclosing_function(tree: ast.Module, line: int) -> str | None:
    best = None
    for node in ast.walk(tree):
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.lineno <= line <= (node.end_lineno or 0) and (best is None or node.lineno >= best.lineno)):
            best = node
    return best.name if best is not None else None


def _join_lines(lines: list[str]) -> str:
    """Several statements on one line for quoting: ``else: return x``, ``a = 1; b = 2``."""
    out = ""
    for line in (x.strip() for x in lines):
        out += line if not out else (" " if out.endswith(":") else "; ") + line
    return out


def _hunk_sentences(tag: str, wrong: list[str], right: list[str], fn: str | None, line_no: int | None,
                    prev: str | None) -> list[str]:
    loc_parts = []
    if line_no is not None:
        loc_parts.append(f"line {line_no}")
    if fn:
        loc_parts.append(f"`{fn}`")
    loc = " of ".join(loc_parts) if loc_parts else "the program"
    in_loc = f"In {loc}" if loc_parts else "In the program"
    if tag == "replace" and len(wrong) == 1 and len(right) == 1:
        w, r = wrong[0].strip(), right[0].strip()
        change = _token_change(w, r)
        if change is not None:
            bad, good = change
            if bad and good:
                return [f"{in_loc}, {quote(w)} has {quote(bad)} where the correct code has {quote(good)}.",
                        f"The statement {quote(w)} ({loc}) uses {quote(bad)}, but it should use {quote(good)}: {quote(r)}.",
                        f"{in_loc}, {quote(bad)} must be {quote(good)}, turning {quote(w)} into {quote(r)}."]
            if good:
                return [f"{in_loc}, {quote(w)} is missing {quote(good)}; it should be {quote(r)}.",
                        f"The statement {quote(w)} ({loc}) lacks {quote(good)}: the correct line is {quote(r)}."]
            return [f"{in_loc}, {quote(w)} has an extra {quote(bad)}; it should be {quote(r)}.",
                    f"The statement {quote(w)} ({loc}) should not contain {quote(bad)}: the correct line is {quote(r)}."]
        return [f"{in_loc}, {quote(w)} is wrong; the correct line is {quote(r)}.",
                f"The statement {quote(w)} ({loc}) should instead read {quote(r)}.",
                f"{in_loc}, replacing {quote(w)} with {quote(r)} gives the right behaviour."]
    if tag == "replace":
        w, r = quote(_join_lines(wrong)), quote(_join_lines(right))
        return [f"{in_loc}, the statements {w} are wrong; they should be {r}.",
                f"The code {w} ({loc}) should instead be {r}."]
    if tag == "delete":
        w = quote(_join_lines(wrong))
        return [f"{in_loc}, {w} should not be there.", f"The statement {w} ({loc}) is superfluous and must go."]
    r = quote(_join_lines(right))
    after = f" after {quote(prev)}" if prev else ""
    return [f"{in_loc}, the statement {r} is missing{after}.",
            f"The code needs {r}{after}" + (f" in `{fn}`." if fn else "."),
            f"Something is left out{after}: {r}" + (f" belongs in `{fn}`." if fn else " is needed.")]


def explain_diff(wrong_code: str, reference: str, feedback: str, rng: random.Random,
                 max_changed_lines: int = 4) -> str | None:
    """Explain a wrong program by its line diff against the reference (both in canonical form).

    Returns None when either does not parse, when they are canonically identical, or when more than
    ``max_changed_lines`` lines differ (the caller counts "teacher cannot explain"). Line numbers are given
    only where the canonical line also appears verbatim in ``wrong_code`` (so they point at its own text).
    """
    wrong_canon, ref_canon = canonical(wrong_code), canonical(reference)
    if wrong_canon is None or ref_canon is None or wrong_canon == ref_canon:
        return None
    wl, rl = wrong_canon.splitlines(), ref_canon.splitlines()
    hunks = [op for op in difflib.SequenceMatcher(None, wl, rl, autojunk=False).get_opcodes() if op[0] != "equal"]
    changed = sum(max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in hunks)
    if changed == 0 or changed > max_changed_lines:
        return None
    tree = ast.parse(wrong_canon)
    original = [ln.rstrip() for ln in wrong_code.splitlines()]
    stripped = [ln.strip() for ln in original]

    def original_line_no(canon_line: str) -> int | None:
        text = canon_line.strip()
        hits = [i for i, s in enumerate(stripped) if s == text]
        return hits[0] + 1 if len(hits) == 1 else None

    sentences = []
    for tag, i1, i2, j1, j2 in hunks:
        anchor = i1 if i2 > i1 else max(i1 - 1, 0)
        fn = _enclosing_function(tree, anchor + 1)
        line_no = original_line_no(wl[i1]) if i2 > i1 else None
        prev = wl[i1 - 1].strip() if tag == "insert" and i1 > 0 else None
        sentences.append(rng.choice(_hunk_sentences(tag, wl[i1:i2], rl[j1:j2], fn, line_no, prev)))
    fb = parse_feedback(feedback)
    if len(sentences) == 1 and rng.random() < 0.4:
        sentences.insert(0, rng.choice(["The program differs from a correct solution in one place.",
                                        "There is a single faulty spot.",
                                        "Only one line needs to change."]))
    if rng.random() < 0.3:
        sentences.insert(0, rng.choice(why_sentences(fb, lead=True)))
    else:
        sentences.append(rng.choice(why_sentences(fb, lead=False)))
    return " ".join(sentences[:5])
