"""Explaining a mutant: where the bug is, what is wrong (per operator) and how the failing test shows it."""

from __future__ import annotations

import random

from selfdebug.collect.teachers.mutation.feedback import parse_feedback, quote, why_sentences
from selfdebug.collect.teachers.mutation.records import Mutant, Mutation

_VERB = {"+": ("adds", "add"), "-": ("subtracts", "subtract"), "*": ("multiplies", "multiply"),
         "//": ("floor-divides", "floor-divide"), "/": ("divides", "divide"),
         "%": ("takes a remainder", "take a remainder"), "**": ("raises to a power", "raise to a power"),
         "<<": ("shifts left", "shift left"), ">>": ("shifts right", "shift right"),
         "&": ("takes a bitwise and", "take a bitwise and"), "|": ("takes a bitwise or", "take a bitwise or"),
         "^": ("takes a bitwise xor", "take a bitwise xor")}


def _where_sentences(function: str | None, line: int, faulty: str) -> list[str]:
    f = quote(faulty)
    if function:
        fn = f"`{function}`"
        return [f"The bug is on line {line} of {fn}: {f}.",
                f"In {fn}, line {line} ({f}) is wrong.",
                f"Look at line {line} inside {fn}, which reads {f}.",
                f"The faulty statement is {f} on line {line} of the function {fn}.",
                f"{fn} goes wrong at line {line}: {f}."]
    return [f"The bug is on line {line} at the top level of the program: {f}.",
            f"Line {line} of the top-level code ({f}) is wrong.",
            f"The faulty statement is {f} on line {line}, in the top-level code outside any function."]


def _what_sentences(m: Mutation) -> list[str]:
    d, A, B = m.detail, quote(m.after), quote(m.before)
    op = m.operator
    if op == "comparison":
        f, t = d["from"], d["to"]
        if {f, t} <= {"<", "<=", ">", ">="}:
            if t in ("<=", ">="):
                return [(f"{A} uses `{t}`, which also accepts the case where both sides are equal; it must be the "
                         f"strict `{f}`, as in {B}."),
                        (f"The comparison should be strict: `{f}`, not `{t}`, because with `{t}` the equal case is "
                         f"wrongly included."),
                        (f"Here `{t}` lets the boundary case (both sides equal) through, while the correct test "
                         f"{B} excludes it.")]
            return [(f"{A} uses the strict `{t}`, so the case where both sides are equal is left out; it needs "
                     f"`{f}` ({B})."),
                    f"The comparison must include equality: `{f}` rather than `{t}`.",
                    f"With `{t}` the boundary case (both sides equal) is wrongly excluded; the correct test is {B}."]
        kind = {"==": "equality test", "!=": "equality test", "in": "membership test",
                "not in": "membership test", "is": "identity test", "is not": "identity test"}[f]
        return [f"The {kind} is inverted: {A} checks `{t}` where the code must check `{f}` ({B}).",
                f"`{t}` should be `{f}` here: as written, {A} is true exactly when the intended condition is false.",
                f"The condition {A} has the opposite meaning of the intended {B}, because `{t}` replaced `{f}`."]
    if op in ("arithmetic", "augassign"):
        f, t = d["from"].rstrip("="), d["to"].rstrip("=")
        if op == "augassign":
            target = quote(d["target"])
            return [f"{A} updates {target} with `{d['to']}` where it should use `{d['from']}` ({B}).",
                    (f"The augmented assignment is wrong: {target} should be updated with `{d['from']}`, "
                     f"but {A} uses `{d['to']}`."),
                    (f"Instead of {B}, the code runs {A}, so {target} {_VERB[t][0]} where it should "
                     f"{_VERB[f][1]}.")]
        return [f"{A} {_VERB[t][0]} where it should {_VERB[f][1]}: the correct expression is {B}.",
                f"The operator is wrong: `{t}` appears where `{f}` belongs, so {A} should read {B}.",
                f"In {A} the `{t}` ought to be `{f}`; the computation needs {B}."]
    if op == "boolean":
        f, t = d["from"], d["to"]
        effect = ("accepts cases where only one of the conditions holds" if t == "or"
                  else "rejects cases where just one of the conditions holds")
        need = "all of them must hold" if f == "and" else "any one of them is enough"
        return [f"{A} combines its conditions with `{t}`, but {need}, so it needs `{f}`.",
                f"Using `{t}` instead of `{f}` makes the condition wrong: it {effect}.",
                f"The conditions must be joined with `{f}` ({B}); with `{t}` the code {effect}."]
    if op == "negate_condition":
        construct, cond = d["construct"], quote(d["condition"])
        consequence = {"if": "the branch runs in exactly the wrong cases",
                       "while": "the loop runs under the opposite condition",
                       "conditional expression": "the two alternatives are picked the wrong way round",
                       "comprehension filter": "the filter keeps exactly the items it should drop"}[construct]
        if d["removed_not"]:
            return [f"The `not` is missing: the {construct} tests {A} instead of {cond}, so {consequence}.",
                    f"The condition lost its negation: it should be {cond}; as written, {consequence}.",
                    f"{A} is the opposite of the intended {cond}, so {consequence}."]
        return [f"The condition is negated: {A} holds exactly when {cond} does not, so {consequence}.",
                f"The {construct} condition is inverted; it should be {cond}, and as written {consequence}.",
                f"Because of the extra `not`, {consequence}: the test must be {cond}."]
    if op == "range_bound":
        bound, delta, step = d["bound"], d["delta"], d["step"]
        f, t = quote(d["from"]), quote(d["to"])
        if step == 0:
            effect = f"the {'end' if bound == 'stop' else 'start'} of the range is off by one"
        elif bound == "stop":
            longer = (delta > 0) == (step > 0)
            effect = ("the loop runs one step too far, past the last intended value" if longer
                      else "the loop stops one step early, so the last intended value is never visited")
        else:
            later = (delta > 0) == (step > 0)
            effect = ("the loop starts one step late, so the first intended value is skipped" if later
                      else "the loop starts one step early and visits an extra value first")
        which = "stop" if bound == "stop" else "start"
        return [f"It iterates {A} instead of {B}: {effect}.",
                f"The {which} bound of the range is off by one ({t} instead of {f}), so {effect}.",
                f"{A} has the wrong {which} value; with {t} rather than {f}, {effect}."]
    if op == "index_offset":
        kind, delta, access = d["kind"], d["delta"], d["access"]
        f, t = quote(d["from"]), quote(d["to"])
        if kind == "index":
            verb = "writes" if access == "write" else "reads"
            side = "after" if delta > 0 else "before"
            return [f"{A} {verb} the element one position {side} the intended one; it should be {B}.",
                    f"The index is off by one: {t} is used where {f} is needed.",
                    f"{A} uses index {t}, one {side} the correct {f}."]
        if kind == "upper":
            effect = ("ends one element too early and drops the last element" if delta < 0
                      else "ends one element too late and takes one element too many")
        else:
            effect = ("starts one element late and misses the first element" if delta > 0
                      else "starts one element early and takes an extra element at the front")
        return [f"The slice {A} {effect}; it should be {B}.",
                f"The slice bound is off by one: {t} instead of {f}, so the slice {effect}.",
                f"Because it uses {t} rather than {f}, {A} {effect}."]
    if op == "constant":
        f, t = f"`{d['from']}`", f"`{d['to']}`"
        if d["kind"] == "bool":
            return [f"The flag is flipped: the line has {t} where {f} is needed.",
                    f"{t} should be {f} here, so the opposite truth value is used.",
                    f"The boolean literal is wrong: {t} instead of {f}."]
        if d["kind"] == "str":
            return [f"The string {t} has the wrong letter case; it must be exactly {f}.",
                    f"This line uses {t} where the text {f} is required.",
                    f"The literal {t} differs from the required {f} in the case of its first letter."]
        return [f"The literal {t} should be {f}.",
                f"The constant {t} on this line is wrong; the right value is {f}.",
                f"The number is wrong: {t} appears where {f} belongs."]
    if op == "swap_args":
        a, b, callee = quote(d["first"]), quote(d["second"]), f"`{d['callee']}`"
        return [f"The arguments of {callee} are in the wrong order: {a} and {b} are swapped in {A}.",
                f"{A} passes {b} before {a}; the call should be {B}.",
                f"{callee} receives {a} and {b} the wrong way round; it must be called as {B}."]
    if op == "drop_branch":
        cond, dropped = quote(d["condition"]), quote(d["dropped"]) if d["dropped"] else "its code"
        head = f"{d.get('header', 'if')} {d['condition']}:"
        if d["kind"] == "else":
            return [(f"The `else` branch of `{head}` is missing, so when {cond} is false, "
                     f"{dropped} never runs."),
                    (f"Nothing handles the case where {cond} is false: the `else` branch that should run "
                     f"{dropped} was dropped."),
                    f"The `{head}` has lost its `else` part, which should execute {dropped}."]
        if d["kind"] == "elif":
            other = quote(d["branch_condition"])
            return [f"The `elif` case for {other} is missing, so those inputs are no longer handled by {dropped}.",
                    f"The branch for {other} was dropped: when {other} holds, {dropped} should run but does not.",
                    (f"There is no `elif {d['branch_condition']}:` branch any more, so the case {other} "
                     f"falls through without running {dropped}.")]
        return [(f"The body of `{head}` is only `pass`, so when {cond} holds nothing happens, "
                 f"although {dropped} should run."),
                f"When {cond} is true the code does nothing: the statement {dropped} is missing from the branch.",
                f"The `{head}` branch was emptied; it should execute {dropped}."]
    if op == "return_value":
        value = quote(d["value"])
        if d["to"] == "None":
            return [f"{A} returns `None` instead of the computed result {value}.",
                    f"The function gives back `None`; the return statement should be {B}.",
                    f"The result {value} is never returned: the code returns `None`."]
        arg = f"`{d['argument']}`"
        return [f"{A} returns the parameter {arg} unchanged instead of {value}.",
                f"The function hands back its input {arg} rather than the result {value}.",
                f"It returns {arg}, but it should return {value} ({B})."]
    if op == "boundary":
        f, t, subject, witness, cmp = (f"`{d['from']}`", f"`{d['to']}`", d["subject"], d["witness"], d["op"])
        if cmp in ("==", "!="):
            return [f"{A} compares {quote(subject)} with {t}, but the value to test against is {f} ({B}).",
                    f"The constant in the comparison is wrong: {t} instead of {f}.",
                    f"{A} tests for the wrong value; it should be {B}."]
        case = quote(f"{subject} == {witness}")
        return [(f"{A} uses the threshold {t}, but it must be {f} as in {B}, so a case such as {case} is "
                 f"classified wrongly."),
                f"The boundary is off by one: the comparison should be against {f}, not {t}.",
                f"With {t} instead of {f}, the comparison {A} gets the boundary case {case} wrong."]
    if op == "builtin":
        f, t = d["from"], d["to"]
        if t is None:
            order = "sorted" if f == "sorted" else "reversed"
            arg = quote(d["argument"])
            return [(f"The `{f}(...)` call is missing: {A} uses the items in their original order instead of "
                     f"{order} order ({B})."),
                    f"The code forgets to call `{f}` on {arg}, so the order of the items is wrong.",
                    (f"{arg} must be passed through `{f}`, as in {B}; without it the items stay in their "
                     f"original order.")]
        meaning = {"min": "the smallest value", "max": "the largest value", "any": "whether any item is true",
                   "all": "whether every item is true", "sum": "the total of the items",
                   "len": "the number of items"}
        return [f"{A} calls `{t}` where `{f}` is needed: it computes {meaning[t]} instead of {meaning[f]}.",
                f"The wrong builtin is used: `{t}` instead of `{f}`.",
                f"The call should be {B}; `{t}` gives {meaning[t]}, not {meaning[f]}."]
    return [f"{A} should be {B}."]


def _fix_sentences(m: Mutation, original_line: str | None) -> list[str]:
    if m.operator == "drop_branch":
        part = {"else": "the `else` branch", "elif": "the `elif` branch",
                "body": f"the body of the `{m.detail.get('header', 'if')}`"}
        return [f"Restoring {part[m.detail['kind']]} fixes it.",
                f"Putting {part[m.detail['kind']]} back makes the tests pass."]
    out = [f"Changing {quote(m.after)} back to {quote(m.before)} fixes it.",
           f"The fix is to write {quote(m.before)} instead."]
    if original_line:
        out.append(f"Line {m.line} should read {quote(original_line)}.")
    return out


def explain(mutant: Mutant, feedback: str, rng: random.Random) -> str:
    """A 2-5 sentence explanation of ``mutant``'s bug: where it is (function, line, the faulty line quoted),
    what is wrong (operator-specific), and how the failing test in ``feedback`` exposes it. Templates,
    clause order and optional sentences are drawn from ``rng``; every variant states the same facts."""
    m = mutant.mutation
    lines = mutant.code.splitlines()
    faulty = lines[m.line - 1].strip() if 0 < m.line <= len(lines) else m.after
    original_line = None
    ref_lines = mutant.reference.splitlines() if mutant.reference else []
    if len(ref_lines) == len(lines) and 0 < m.line <= len(lines) and ref_lines[m.line - 1] != lines[m.line - 1]:
        original_line = ref_lines[m.line - 1].strip()
    fb = parse_feedback(feedback)
    where = rng.choice(_where_sentences(m.function, m.line, faulty))
    what = rng.choice(_what_sentences(m))
    fix = rng.choice(_fix_sentences(m, original_line)) if rng.random() < 0.5 else None
    if rng.random() < 0.3:  # open with the symptom, then trace it to the line
        parts = [rng.choice(why_sentences(fb, lead=True)), where, what]
    else:
        parts = [where, what, rng.choice(why_sentences(fb, lead=False))]
    if fix:
        parts.append(fix)
    return " ".join(parts)
