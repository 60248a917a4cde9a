"""Mutation operators: ``(site, facts) -> [(replacement node, detail)]``, each replacement standing in for
``site.node``; ``detail`` holds the plain facts the explanation templates quote."""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable, Iterable

from selfdebug.collect.teachers.mutation.tree import (
    Facts,
    Site,
    int_node,
    int_value,
    is_plain_call,
    is_texty,
    shift_by_one,
    source_of,
)

Edit = tuple[ast.AST, dict]
Operator = Callable[[Site, Facts], list[Edit]]

SYMBOLS: dict[type, str] = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
    ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
    ast.FloorDiv: "//", ast.Div: "/", ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.And: "and", ast.Or: "or",
}
_COMPARE_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_ARITH_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
               ast.Div: ast.Mult, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.LShift: ast.RShift,
               ast.RShift: ast.LShift, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitAnd}
# Builtins swapped for a sibling; None: the call is dropped and its argument used as is.
_BUILTIN_SWAP = {"min": "max", "max": "min", "any": "all", "all": "any", "sum": "len", "len": "sum",
                 "sorted": None, "reversed": None}
# Calls whose first two positional arguments commute: swapping them is no bug.
_COMMUTATIVE_CALLS = {"max", "min", "print", "gcd", "math.gcd", "lcm", "math.lcm", "math.hypot", "operator.add",
                      "operator.mul", "set", "zip_longest"}


def _swap_arithmetic(node: ast.BinOp | ast.AugAssign) -> tuple[ast.AST, str, str] | None:
    """A copy of ``node`` with its operator swapped as ``_ARITH_SWAP`` says, and the two symbols."""
    swap = _ARITH_SWAP.get(type(node.op))
    if swap is None:
        return None
    new = copy.deepcopy(node)
    new.op = swap()
    return new, SYMBOLS[type(node.op)], SYMBOLS[swap]


def op_comparison(site: Site, facts: Facts) -> list[Edit]:
    """``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``, ``in`` <-> ``not in``, ``is`` <-> ``is not``."""
    node = site.node
    if not isinstance(node, ast.Compare):
        return []
    edits = []
    for i, op in enumerate(node.ops):
        swap = _COMPARE_SWAP.get(type(op))
        if swap is not None:
            new = copy.deepcopy(node)
            new.ops[i] = swap()
            edits.append((new, {"from": SYMBOLS[type(op)], "to": SYMBOLS[swap]}))
    return edits


def op_arithmetic(site: Site, facts: Facts) -> list[Edit]:
    """``+`` <-> ``-``, ``*`` <-> ``//``, ``/`` -> ``*``, ``%`` -> ``//``, ``**`` -> ``*``, shifts, bit ops."""
    node = site.node
    if not isinstance(node, ast.BinOp) or is_texty(node.left) or is_texty(node.right):
        return []
    swapped = _swap_arithmetic(node)
    if swapped is None:
        return []
    new, before, after = swapped
    return [(new, {"from": before, "to": after})]


def op_boolean(site: Site, facts: Facts) -> list[Edit]:
    """``and`` <-> ``or``."""
    node = site.node
    if not isinstance(node, ast.BoolOp):
        return []
    new = copy.deepcopy(node)
    new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    return [(new, {"from": SYMBOLS[type(node.op)], "to": SYMBOLS[type(new.op)]})]


def op_negate_condition(site: Site, facts: Facts) -> list[Edit]:
    """The test of an ``if``/``while``/conditional expression/comprehension filter -> ``not (test)``
    (or its ``not`` removed)."""
    node, parent = site.node, site.parent
    field_name = site.path[-1][0] if site.path else None
    if isinstance(parent, ast.If) and field_name == "test":
        construct = "if"
    elif isinstance(parent, ast.While) and field_name == "test":
        construct = "while"
    elif isinstance(parent, ast.IfExp) and field_name == "test":
        construct = "conditional expression"
    elif isinstance(parent, ast.comprehension) and field_name == "ifs":
        construct = "comprehension filter"
    else:
        return []
    if isinstance(node, ast.Constant):  # ``while True``: negating it is a dead loop, not a plausible bug
        return []
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return [(copy.deepcopy(node.operand), {"construct": construct, "removed_not": True,
                                               "condition": source_of(node)})]
    return [(ast.UnaryOp(ast.Not(), copy.deepcopy(node)),
             {"construct": construct, "removed_not": False, "condition": source_of(node)})]


def op_range_bound(site: Site, facts: Facts) -> list[Edit]:
    """Off by one in ``range``: the stop (``range(n)`` -> ``range(n - 1)``, ``range(a, b + 1)`` ->
    ``range(a, b)``) or the start (``range(1, n)`` -> ``range(0, n)``, ``range(0, n)`` -> ``range(1, n)``)."""
    node = site.node
    if not is_plain_call(node, "range") or "range" in facts.bound or node.keywords or not 1 <= len(node.args) <= 3:
        return []
    args = node.args
    step = 1
    if len(args) == 3:
        value = int_value(args[2])
        step = 0 if value is None else (1 if value > 0 else -1)  # 0: sign unknown
    edits = []
    stop = 0 if len(args) == 1 else 1
    new_stop, delta = shift_by_one(args[stop], -1)
    new = copy.deepcopy(node)
    new.args[stop] = new_stop
    edits.append((new, {"bound": "stop", "delta": delta, "step": step, "from": source_of(args[stop]),
                        "to": source_of(new_stop)}))
    if len(args) >= 2:
        start = int_value(args[0])
        new_start, delta = (int_node(0), -1) if start == 1 else shift_by_one(args[0], 1)
        new = copy.deepcopy(node)
        new.args[0] = new_start
        edits.append((new, {"bound": "start", "delta": delta, "step": step, "from": source_of(args[0]),
                            "to": source_of(new_start)}))
    return edits


def op_index_offset(site: Site, facts: Facts) -> list[Edit]:
    """Off by one in a subscript: ``x[i]`` -> ``x[i + 1]``, ``x[i - 1]`` -> ``x[i]``, ``x[:k]`` ->
    ``x[:k - 1]``, ``x[k:]`` -> ``x[k + 1:]``; negative literal indices move further from the end."""
    node = site.node
    if not isinstance(node, ast.Subscript) or isinstance(node.ctx, ast.Del):
        return []
    sl = node.slice
    access = "write" if isinstance(node.ctx, ast.Store) else "read"
    edits = []
    if isinstance(sl, ast.Slice):
        if sl.step is not None:
            return []
        for bound, step in (("lower", 1), ("upper", -1)):
            expr = getattr(sl, bound)
            if expr is None:
                continue
            value = int_value(expr)
            if value == 0 and bound == "upper":
                continue
            if value is not None:
                step = -1 if value < 0 else step
            new_bound, delta = shift_by_one(expr, step)
            new = copy.deepcopy(node)
            setattr(new.slice, bound, new_bound)
            edits.append((new, {"kind": bound, "delta": delta, "access": access, "from": source_of(expr),
                                "to": source_of(new_bound)}))
        return edits
    if isinstance(sl, (ast.Tuple, ast.Slice)) or (isinstance(sl, ast.Constant) and type(sl.value) is not int):
        return []
    value = int_value(sl)
    new_index, delta = shift_by_one(sl, -1 if value is not None and value < 0 else 1)
    new = copy.deepcopy(node)
    new.slice = new_index
    return [(new, {"kind": "index", "delta": delta, "access": access, "from": source_of(sl), "to": source_of(new_index)})]


def _owned_elsewhere(site: Site) -> bool:
    """Literals that a more specific operator mutates (with a better explanation): comparison operands,
    ``range`` arguments, subscript indices and slice bounds."""
    parent, field_name = site.parent, site.path[-1][0] if site.path else None
    return (isinstance(parent, ast.Compare) or (is_plain_call(parent, "range") and field_name == "args")
            or (isinstance(parent, ast.Subscript) and field_name == "slice") or isinstance(parent, ast.Slice))


_SIMPLE_STRING = re.compile(r"[A-Za-z][A-Za-z0-9 _.,:;!?'-]{0,19}")


def op_constant(site: Site, facts: Facts) -> list[Edit]:
    """A wrong literal: ``0`` <-> ``1``, other ints ``c`` -> ``c + 1`` / ``c - 1``, ``True`` <-> ``False``,
    and a short plain word with the case of its first letter flipped (``'Yes'`` -> ``'yes'``)."""
    node, parent = site.node, site.parent
    if isinstance(node, ast.Constant) and isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub):
        return []  # the literal ``-c`` is mutated as a whole at the UnaryOp
    if _owned_elsewhere(site):
        return []
    value = int_value(node)
    if value is not None:
        targets = [1] if value == 0 else [0] if value == 1 else [value + 1, value - 1]
        return [(int_node(t), {"kind": "int", "from": source_of(node), "to": str(t)}) for t in targets]
    if not isinstance(node, ast.Constant):
        return []
    if isinstance(node.value, bool):
        return [(ast.Constant(not node.value), {"kind": "bool", "from": repr(node.value), "to": repr(not node.value)})]
    if isinstance(node.value, str) and _SIMPLE_STRING.fullmatch(node.value):
        text = node.value
        changed = text[0].swapcase() + text[1:]
        return [(ast.Constant(changed), {"kind": "str", "from": repr(text), "to": repr(changed)})]
    return []


def op_swap_args(site: Site, facts: Facts) -> list[Edit]:
    """Two neighbouring positional arguments of a call swapped (``f(a, b)`` -> ``f(b, a)``)."""
    node = site.node
    if not isinstance(node, ast.Call) or len(node.args) < 2 or any(isinstance(a, ast.Starred) for a in node.args):
        return []
    callee = source_of(node.func)
    if callee in _COMMUTATIVE_CALLS:
        return []
    edits = []
    for i in range(len(node.args) - 1):
        first, second = source_of(node.args[i]), source_of(node.args[i + 1])
        if first == second:
            continue
        new = copy.deepcopy(node)
        new.args[i], new.args[i + 1] = new.args[i + 1], new.args[i]
        edits.append((new, {"callee": callee, "first": first, "second": second, "position": i + 1}))
    return edits


def _first_line(statements: list[ast.stmt]) -> str:
    return source_of(statements[0]).splitlines()[0] if statements else ""


def op_drop_branch(site: Site, facts: Facts) -> list[Edit]:
    """An ``else`` or ``elif`` branch removed, or the body of an ``if`` replaced by ``pass``."""
    node = site.node
    if not isinstance(node, ast.If):
        return []
    edits = []
    condition = source_of(node.test)
    parent = site.parent
    header = ("elif" if isinstance(parent, ast.If) and site.path[-1][0] == "orelse" and len(parent.orelse) == 1
              else "if")
    if node.orelse:
        new = copy.deepcopy(node)
        branch = node.orelse
        if len(branch) == 1 and isinstance(branch[0], ast.If):  # printed as ``elif``
            new.orelse = copy.deepcopy(branch[0].orelse)
            edits.append((new, {"kind": "elif", "header": header, "condition": condition, "branch_condition": source_of(branch[0].test),
                                "dropped": _first_line(branch[0].body)}))
        else:
            new.orelse = []
            edits.append((new, {"kind": "else", "header": header, "condition": condition, "dropped": _first_line(branch)}))
    if not (len(node.body) == 1 and isinstance(node.body[0], ast.Pass)):
        new = copy.deepcopy(node)
        new.body = [ast.Pass()]
        edits.append((new, {"kind": "body", "header": header, "condition": condition, "dropped": _first_line(node.body)}))
    return edits


def op_return_value(site: Site, facts: Facts) -> list[Edit]:
    """``return X`` -> ``return None``, or -> ``return <first parameter>`` (the input handed back)."""
    node = site.node
    if not isinstance(node, ast.Return) or node.value is None:
        return []
    if isinstance(node.value, ast.Constant) and node.value.value is None:
        return []
    value = source_of(node.value)
    edits = [(ast.Return(ast.Constant(None)), {"to": "None", "value": value})]
    if site.func is not None:
        params = [a.arg for a in site.func.args.posonlyargs + site.func.args.args if a.arg not in ("self", "cls")]
        if params and value != params[0]:
            edits.append((ast.Return(ast.Name(params[0], ast.Load())),
                          {"to": "argument", "argument": params[0], "value": value}))
    return edits


def op_boundary(site: Site, facts: Facts) -> list[Edit]:
    """A comparison against an int literal with the wrong threshold, moved so that the boundary value
    flips: ``x > 0`` -> ``x > 1``, ``x <= n`` stays, ``x < 5`` -> ``x < 4``, ``x == 0`` -> ``x == 1``."""
    node = site.node
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return []
    op, left, right = type(node.ops[0]), node.left, node.comparators[0]
    lv, rv = int_value(left), int_value(right)
    if rv is not None and lv is None:
        side, value = "right", rv
        delta = {ast.Gt: 1, ast.GtE: 1, ast.Eq: 1, ast.NotEq: 1, ast.Lt: -1, ast.LtE: -1}.get(op)
    elif lv is not None and rv is None:
        side, value = "left", lv
        delta = {ast.Lt: 1, ast.LtE: 1, ast.Eq: 1, ast.NotEq: 1, ast.Gt: -1, ast.GtE: -1}.get(op)
    else:
        return []
    if delta is None:
        return []
    new = copy.deepcopy(node)
    if side == "right":
        new.comparators[0] = int_node(value + delta)
    else:
        new.left = int_node(value + delta)
    subject = source_of(left if side == "right" else right)
    # A value of the subject that the original accepts and the mutant rejects (or, for ==/!=, the one
    # value whose verdict changes).
    witness = value + delta if op in (ast.Gt, ast.Lt) else value
    return [(new, {"op": SYMBOLS[op], "from": str(value), "to": str(value + delta), "subject": subject,
                   "witness": str(witness)})]


def op_builtin(site: Site, facts: Facts) -> list[Edit]:
    """``min`` <-> ``max``, ``any`` <-> ``all``, ``sum(x)`` -> ``len(x)``, ``len`` of a built list ->
    ``sum``, ``sorted(x)`` / ``reversed(x)`` -> ``x``. Builtins the program rebinds are left alone."""
    node = site.node
    if not is_plain_call(node) or node.func.id not in _BUILTIN_SWAP or node.func.id in facts.bound:
        return []
    name, target = node.func.id, _BUILTIN_SWAP[node.func.id]
    if target is None:
        if len(node.args) != 1:
            return []
        return [(copy.deepcopy(node.args[0]), {"from": name, "to": None, "argument": source_of(node.args[0])})]
    if target in facts.bound:
        return []
    if name in ("sum", "len", "any", "all") and (len(node.args) != 1 or node.keywords):
        return []
    if name == "len" and not isinstance(node.args[0], (ast.ListComp, ast.GeneratorExp, ast.List)):
        return []
    new = copy.deepcopy(node)
    new.func = ast.Name(target, ast.Load())
    return [(new, {"from": name, "to": target, "argument": source_of(node.args[0]) if node.args else ""})]


def op_augassign(site: Site, facts: Facts) -> list[Edit]:
    """``+=`` <-> ``-=``, ``*=`` <-> ``//=`` and the other swaps of ``arithmetic`` on an augmented assignment."""
    node = site.node
    if not isinstance(node, ast.AugAssign) or is_texty(node.value):
        return []
    swapped = _swap_arithmetic(node)
    if swapped is None:
        return []
    new, before, after = swapped
    return [(new, {"from": before + "=", "to": after + "=", "target": source_of(node.target)})]


OPERATORS: dict[str, Operator] = {
    "comparison": op_comparison,
    "arithmetic": op_arithmetic,
    "boolean": op_boolean,
    "negate_condition": op_negate_condition,
    "range_bound": op_range_bound,
    "index_offset": op_index_offset,
    "constant": op_constant,
    "swap_args": op_swap_args,
    "drop_branch": op_drop_branch,
    "return_value": op_return_value,
    "boundary": op_boundary,
    "builtin": op_builtin,
    "augassign": op_augassign,
}


def select_operators(operators: Iterable[str] | None) -> dict[str, Operator]:
    if operators is None:
        return dict(OPERATORS)
    names = [operators] if isinstance(operators, str) else list(operators)
    unknown = [n for n in names if n not in OPERATORS]
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {unknown}: choose from {', '.join(OPERATORS)}")
    return {n: OPERATORS[n] for n in OPERATORS if n in names}
