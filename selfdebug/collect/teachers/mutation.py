"""An offline teacher: plant one bug in a correct reference by an AST mutation, then explain that bug.

    rng = random.Random(0)
    for mutant in mutants(problem.reference, rng, k=3):   # one mutation each, distinct programs
        result = sandbox.run(mutant.code, problem.tests)    # the caller keeps the mutants that fail
        text = explain(mutant, result.feedback, rng)        # where, what is wrong, why the test fails

Every mutant is the canonical form of the mutated module (``ast.unparse``), and ``Mutant.reference`` is the
canonical form of the reference, so a line diff between the two shows the one mutated statement and nothing
else. Mutations never touch docstrings, type annotations or f-strings, and every mutant compiles.

``explain_diff`` covers wrong programs that did not come from a mutation (a student model's samples): it
describes a small line diff against the reference, or returns None when the programs are too far apart.
Nothing here runs code: judging mutants and refinements is the caller's business (``selfdebug.execution``).
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import io
import random
import re
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from selfdebug.collect.teachers.base import Teacher, TeacherSample, WrongSolution

__all__ = ["OPERATORS", "Mutant", "Mutation", "MutationTeacher", "canonical", "explain", "explain_diff",
           "mutants", "stable_seed"]


# ======================================================================================================
# Records
# ======================================================================================================

@dataclass(frozen=True)
class Mutation:
    """One injected bug.

    ``line``: 1-based line of the mutated node in the mutant (for a statement, its first line).
    ``before`` / ``after``: source of the original node in the canonical reference and of the mutated node
    in the mutant (``after`` occurs in the mutant starting on ``line``; a statement's source may span lines).
    ``function``: the innermost enclosing ``def``, or None at module level. ``detail``: operator-specific
    facts with plain JSON values, e.g. ``{"from": "<", "to": "<="}``.
    """

    operator: str
    line: int
    before: str
    after: str
    function: str | None
    detail: dict = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Mutation:
        return cls(**d)


@dataclass(frozen=True)
class Mutant:
    """A complete mutated program (canonical formatting), its mutation, and the canonical reference."""

    code: str
    mutation: Mutation
    reference: str = ""


# ======================================================================================================
# Canonical form and tree plumbing
# ======================================================================================================

def canonical(source: str | None) -> str | None:
    """``ast.unparse(ast.parse(source))``, or None if it does not parse. Comments and layout are dropped."""
    if not source:
        return None
    try:
        return ast.unparse(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from ``parts`` that is the same in every process (unlike ``hash()``)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


_Path = tuple  # ((field, index or None), ...) from the module down to a node


@dataclass
class _Site:
    node: ast.AST
    path: _Path
    parent: ast.AST | None
    func: ast.FunctionDef | ast.AsyncFunctionDef | None


@dataclass
class _Facts:
    """Module-wide facts operators consult: names the program binds (so shadowed builtins are left alone)."""

    bound: set[str]


_NOT_SITES = (ast.expr_context, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)
_SKIPPED_FIELDS = {"annotation", "returns", "type_comment", "type_ignores"}


def _is_string_expr(stmt: ast.AST) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _sites(tree: ast.Module) -> list[_Site]:
    """Every node that may be mutated, in a fixed order; docstrings, annotations and f-strings excluded."""
    out: list[_Site] = []

    def visit(node, path, parent, func):
        if isinstance(node, _NOT_SITES) or _is_string_expr(node):
            return
        out.append(_Site(node, path, parent, func))
        if isinstance(node, ast.JoinedStr):
            return
        inner = node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
        for name, value in ast.iter_fields(node):
            if name in _SKIPPED_FIELDS:
                continue
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        visit(item, path + ((name, i),), node, inner)
            elif isinstance(value, ast.AST):
                visit(value, path + ((name, None),), node, inner)

    visit(tree, (), None, None)
    return out


def _facts(tree: ast.Module) -> _Facts:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return _Facts(bound=bound)


def _locate(tree: ast.AST, path: _Path) -> ast.AST:
    node = tree
    for name, index in path:
        node = getattr(node, name)
        if index is not None:
            node = node[index]
    return node


def _replace(tree: ast.AST, path: _Path, new: ast.AST) -> None:
    parent = _locate(tree, path[:-1])
    name, index = path[-1]
    if index is None:
        setattr(parent, name, new)
    else:
        getattr(parent, name)[index] = new


def _src(node: ast.AST) -> str:
    return ast.unparse(node)


def _int_value(node: ast.AST) -> int | None:
    """The value of an int literal (``3``, ``-1``), else None. Booleans are not ints here."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int):
        return -node.operand.value
    return None


def _int_node(value: int) -> ast.expr:
    # Negative literals as the parser builds them, so the mutant's tree has the shape of the code it prints.
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


def _shift(expr: ast.expr, step: int) -> tuple[ast.expr, int]:
    """Move an integer expression by one: ``X + 1`` -> ``X``, ``X - 1`` -> ``X``, ``c`` -> ``c + step``,
    anything else -> ``X + 1`` / ``X - 1``. Returns the new expression and the direction it moved."""
    value = _int_value(expr)
    if value is not None:
        return _int_node(value + step), step
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)) and _int_value(expr.right) == 1:
        return copy.deepcopy(expr.left), (-1 if isinstance(expr.op, ast.Add) else 1)
    return ast.BinOp(copy.deepcopy(expr), ast.Add() if step > 0 else ast.Sub(), ast.Constant(1)), step


def _is_texty(node: ast.AST) -> bool:
    """A literal whose ``+``/``*``/``%`` means concatenation, repetition or formatting, not arithmetic."""
    return (isinstance(node, (ast.JoinedStr, ast.List, ast.Tuple, ast.ListComp))
            or (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))))


def _plain_call(node: ast.AST, name: str | None = None) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (name is None or node.func.id == name)
            and not any(isinstance(a, ast.Starred) for a in node.args))


# ======================================================================================================
# Operators: (site, facts) -> [(replacement node, detail)]; each replacement stands in for site.node
# ======================================================================================================

Edit = tuple[ast.AST, dict]
Operator = Callable[[_Site, _Facts], list[Edit]]

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


def op_comparison(site: _Site, facts: _Facts) -> list[Edit]:
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


def op_arithmetic(site: _Site, facts: _Facts) -> list[Edit]:
    """``+`` <-> ``-``, ``*`` <-> ``//``, ``/`` -> ``*``, ``%`` -> ``//``, ``**`` -> ``*``, shifts, bit ops."""
    node = site.node
    if not isinstance(node, ast.BinOp) or _is_texty(node.left) or _is_texty(node.right):
        return []
    swap = _ARITH_SWAP.get(type(node.op))
    if swap is None:
        return []
    new = copy.deepcopy(node)
    new.op = swap()
    return [(new, {"from": SYMBOLS[type(node.op)], "to": SYMBOLS[swap]})]


def op_boolean(site: _Site, facts: _Facts) -> list[Edit]:
    """``and`` <-> ``or``."""
    node = site.node
    if not isinstance(node, ast.BoolOp):
        return []
    new = copy.deepcopy(node)
    new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    return [(new, {"from": SYMBOLS[type(node.op)], "to": SYMBOLS[type(new.op)]})]


def op_negate_condition(site: _Site, facts: _Facts) -> list[Edit]:
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
                                               "condition": _src(node)})]
    return [(ast.UnaryOp(ast.Not(), copy.deepcopy(node)),
             {"construct": construct, "removed_not": False, "condition": _src(node)})]


def op_range_bound(site: _Site, facts: _Facts) -> list[Edit]:
    """Off by one in ``range``: the stop (``range(n)`` -> ``range(n - 1)``, ``range(a, b + 1)`` ->
    ``range(a, b)``) or the start (``range(1, n)`` -> ``range(0, n)``, ``range(0, n)`` -> ``range(1, n)``)."""
    node = site.node
    if not _plain_call(node, "range") or "range" in facts.bound or node.keywords or not 1 <= len(node.args) <= 3:
        return []
    args = node.args
    step = 1
    if len(args) == 3:
        value = _int_value(args[2])
        step = 0 if value is None else (1 if value > 0 else -1)  # 0: sign unknown
    edits = []
    stop = 0 if len(args) == 1 else 1
    new_stop, delta = _shift(args[stop], -1)
    new = copy.deepcopy(node)
    new.args[stop] = new_stop
    edits.append((new, {"bound": "stop", "delta": delta, "step": step, "from": _src(args[stop]),
                        "to": _src(new_stop)}))
    if len(args) >= 2:
        start = _int_value(args[0])
        new_start, delta = (_int_node(0), -1) if start == 1 else _shift(args[0], 1)
        new = copy.deepcopy(node)
        new.args[0] = new_start
        edits.append((new, {"bound": "start", "delta": delta, "step": step, "from": _src(args[0]),
                            "to": _src(new_start)}))
    return edits


def op_index_offset(site: _Site, facts: _Facts) -> list[Edit]:
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
            value = _int_value(expr)
            if value == 0 and bound == "upper":
                continue
            if value is not None:
                step = -1 if value < 0 else step
            new_bound, delta = _shift(expr, step)
            new = copy.deepcopy(node)
            setattr(new.slice, bound, new_bound)
            edits.append((new, {"kind": bound, "delta": delta, "access": access, "from": _src(expr),
                                "to": _src(new_bound)}))
        return edits
    if isinstance(sl, (ast.Tuple, ast.Slice)) or (isinstance(sl, ast.Constant) and type(sl.value) is not int):
        return []
    value = _int_value(sl)
    new_index, delta = _shift(sl, -1 if value is not None and value < 0 else 1)
    new = copy.deepcopy(node)
    new.slice = new_index
    return [(new, {"kind": "index", "delta": delta, "access": access, "from": _src(sl), "to": _src(new_index)})]


def _owned_elsewhere(site: _Site) -> bool:
    """Literals that a more specific operator mutates (with a better explanation): comparison operands,
    ``range`` arguments, subscript indices and slice bounds."""
    parent, field_name = site.parent, site.path[-1][0] if site.path else None
    return (isinstance(parent, ast.Compare) or (_plain_call(parent, "range") and field_name == "args")
            or (isinstance(parent, ast.Subscript) and field_name == "slice") or isinstance(parent, ast.Slice))


_SIMPLE_STRING = re.compile(r"[A-Za-z][A-Za-z0-9 _.,:;!?'-]{0,19}")


def op_constant(site: _Site, facts: _Facts) -> list[Edit]:
    """A wrong literal: ``0`` <-> ``1``, other ints ``c`` -> ``c + 1`` / ``c - 1``, ``True`` <-> ``False``,
    and a short plain word with the case of its first letter flipped (``'Yes'`` -> ``'yes'``)."""
    node, parent = site.node, site.parent
    if isinstance(node, ast.Constant) and isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub):
        return []  # the literal ``-c`` is mutated as a whole at the UnaryOp
    if _owned_elsewhere(site):
        return []
    value = _int_value(node)
    if value is not None:
        targets = [1] if value == 0 else [0] if value == 1 else [value + 1, value - 1]
        return [(_int_node(t), {"kind": "int", "from": _src(node), "to": str(t)}) for t in targets]
    if not isinstance(node, ast.Constant):
        return []
    if isinstance(node.value, bool):
        return [(ast.Constant(not node.value), {"kind": "bool", "from": repr(node.value), "to": repr(not node.value)})]
    if isinstance(node.value, str) and _SIMPLE_STRING.fullmatch(node.value):
        text = node.value
        changed = text[0].swapcase() + text[1:]
        return [(ast.Constant(changed), {"kind": "str", "from": repr(text), "to": repr(changed)})]
    return []


def op_swap_args(site: _Site, facts: _Facts) -> list[Edit]:
    """Two neighbouring positional arguments of a call swapped (``f(a, b)`` -> ``f(b, a)``)."""
    node = site.node
    if not isinstance(node, ast.Call) or len(node.args) < 2 or any(isinstance(a, ast.Starred) for a in node.args):
        return []
    callee = _src(node.func)
    if callee in _COMMUTATIVE_CALLS:
        return []
    edits = []
    for i in range(len(node.args) - 1):
        first, second = _src(node.args[i]), _src(node.args[i + 1])
        if first == second:
            continue
        new = copy.deepcopy(node)
        new.args[i], new.args[i + 1] = new.args[i + 1], new.args[i]
        edits.append((new, {"callee": callee, "first": first, "second": second, "position": i + 1}))
    return edits


def _first_line(statements: list[ast.stmt]) -> str:
    return _src(statements[0]).splitlines()[0] if statements else ""


def op_drop_branch(site: _Site, facts: _Facts) -> list[Edit]:
    """An ``else`` or ``elif`` branch removed, or the body of an ``if`` replaced by ``pass``."""
    node = site.node
    if not isinstance(node, ast.If):
        return []
    edits = []
    condition = _src(node.test)
    parent = site.parent
    header = ("elif" if isinstance(parent, ast.If) and site.path[-1][0] == "orelse" and len(parent.orelse) == 1
              else "if")
    if node.orelse:
        new = copy.deepcopy(node)
        branch = node.orelse
        if len(branch) == 1 and isinstance(branch[0], ast.If):  # printed as ``elif``
            new.orelse = copy.deepcopy(branch[0].orelse)
            edits.append((new, {"kind": "elif", "header": header, "condition": condition, "branch_condition": _src(branch[0].test),
                                "dropped": _first_line(branch[0].body)}))
        else:
            new.orelse = []
            edits.append((new, {"kind": "else", "header": header, "condition": condition, "dropped": _first_line(branch)}))
    if not (len(node.body) == 1 and isinstance(node.body[0], ast.Pass)):
        new = copy.deepcopy(node)
        new.body = [ast.Pass()]
        edits.append((new, {"kind": "body", "header": header, "condition": condition, "dropped": _first_line(node.body)}))
    return edits


def op_return_value(site: _Site, facts: _Facts) -> list[Edit]:
    """``return X`` -> ``return None``, or -> ``return <first parameter>`` (the input handed back)."""
    node = site.node
    if not isinstance(node, ast.Return) or node.value is None:
        return []
    if isinstance(node.value, ast.Constant) and node.value.value is None:
        return []
    value = _src(node.value)
    edits = [(ast.Return(ast.Constant(None)), {"to": "None", "value": value})]
    if site.func is not None:
        params = [a.arg for a in site.func.args.posonlyargs + site.func.args.args if a.arg not in ("self", "cls")]
        if params and value != params[0]:
            edits.append((ast.Return(ast.Name(params[0], ast.Load())),
                          {"to": "argument", "argument": params[0], "value": value}))
    return edits


def op_boundary(site: _Site, facts: _Facts) -> list[Edit]:
    """A comparison against an int literal with the wrong threshold, moved so that the boundary value
    flips: ``x > 0`` -> ``x > 1``, ``x <= n`` stays, ``x < 5`` -> ``x < 4``, ``x == 0`` -> ``x == 1``."""
    node = site.node
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return []
    op, left, right = type(node.ops[0]), node.left, node.comparators[0]
    lv, rv = _int_value(left), _int_value(right)
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
        new.comparators[0] = _int_node(value + delta)
    else:
        new.left = _int_node(value + delta)
    subject = _src(left if side == "right" else right)
    # A value of the subject that the original accepts and the mutant rejects (or, for ==/!=, the one
    # value whose verdict changes).
    witness = value + delta if op in (ast.Gt, ast.Lt) else value
    return [(new, {"op": SYMBOLS[op], "from": str(value), "to": str(value + delta), "subject": subject,
                   "witness": str(witness)})]


def op_builtin(site: _Site, facts: _Facts) -> list[Edit]:
    """``min`` <-> ``max``, ``any`` <-> ``all``, ``sum(x)`` -> ``len(x)``, ``len`` of a built list ->
    ``sum``, ``sorted(x)`` / ``reversed(x)`` -> ``x``. Builtins the program rebinds are left alone."""
    node = site.node
    if not _plain_call(node) or node.func.id not in _BUILTIN_SWAP or node.func.id in facts.bound:
        return []
    name, target = node.func.id, _BUILTIN_SWAP[node.func.id]
    if target is None:
        if len(node.args) != 1:
            return []
        return [(copy.deepcopy(node.args[0]), {"from": name, "to": None, "argument": _src(node.args[0])})]
    if target in facts.bound:
        return []
    if name in ("sum", "len", "any", "all") and (len(node.args) != 1 or node.keywords):
        return []
    if name == "len" and not isinstance(node.args[0], (ast.ListComp, ast.GeneratorExp, ast.List)):
        return []
    new = copy.deepcopy(node)
    new.func = ast.Name(target, ast.Load())
    return [(new, {"from": name, "to": target, "argument": _src(node.args[0]) if node.args else ""})]


def op_augassign(site: _Site, facts: _Facts) -> list[Edit]:
    """``+=`` <-> ``-=``, ``*=`` <-> ``//=`` and the other swaps of ``arithmetic`` on an augmented assignment."""
    node = site.node
    if not isinstance(node, ast.AugAssign) or _is_texty(node.value):
        return []
    swap = _ARITH_SWAP.get(type(node.op))
    if swap is None:
        return []
    new = copy.deepcopy(node)
    new.op = swap()
    return [(new, {"from": SYMBOLS[type(node.op)] + "=", "to": SYMBOLS[swap] + "=", "target": _src(node.target)})]


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


# Relative chance that an operator gets an early turn in each round of ``mutants``. Operators that apply to
# almost every program and plant blunt bugs (return None, swapped arguments) are drawn less often, so a
# small ``k`` favours the subtler bugs that models actually make.
WEIGHTS: dict[str, float] = {"return_value": 0.3, "swap_args": 0.5, "constant": 0.7}


def _select_operators(operators: Iterable[str] | None) -> dict[str, Operator]:
    if operators is None:
        return dict(OPERATORS)
    names = [operators] if isinstance(operators, str) else list(operators)
    unknown = [n for n in names if n not in OPERATORS]
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {unknown}: choose from {', '.join(OPERATORS)}")
    return {n: OPERATORS[n] for n in OPERATORS if n in names}


# ======================================================================================================
# Generating mutants
# ======================================================================================================

def _build(canon: str, tree: ast.Module, site: _Site, new: ast.AST, detail: dict, operator: str) -> Mutant | None:
    mutated = copy.deepcopy(tree)
    _replace(mutated, site.path, copy.deepcopy(new))
    try:
        code = ast.unparse(mutated)
        compile(code, "<mutant>", "exec")
        node = _locate(ast.parse(code), site.path)
    except (SyntaxError, ValueError, TypeError, AttributeError, IndexError, RecursionError):
        return None
    if code == canon:
        return None
    after = ast.get_source_segment(code, node) or _src(node)
    before = ast.get_source_segment(canon, site.node) or _src(site.node)
    function = site.func.name if site.func is not None else None
    mutation = Mutation(operator=operator, line=node.lineno, before=before, after=after, function=function,
                        detail=detail)
    return Mutant(code=code, mutation=mutation, reference=canon)


def mutants(reference: str, rng: random.Random, k: int, operators: Iterable[str] | None = None) -> list[Mutant]:
    """Up to ``k`` distinct one-mutation variants of ``reference``, none equal to its canonical form.

    Operators take turns in an order drawn each round (a weighted shuffle, see ``WEIGHTS``), and each turn
    applies its operator at a random site it has not used yet, so the mutants of one program spread over
    operators. Deterministic for a given ``rng`` state. Returns [] if the reference does not parse or offers
    no site.
    """
    if k <= 0:
        return []
    chosen = _select_operators(operators)
    canon = canonical(reference)
    if canon is None:
        return []
    tree = ast.parse(canon)
    facts = _facts(tree)
    sites = _sites(tree)
    pools: dict[str, list[tuple[_Site, ast.AST, dict]]] = {}
    for name, op in chosen.items():
        pool = [(site, new, detail) for site in sites for new, detail in op(site, facts)]
        if pool:
            pools[name] = pool
    out: list[Mutant] = []
    seen = {canon}
    while len(out) < k and pools:
        # Weighted random order without replacement: sort by u ** (1 / w).
        keys = {name: rng.random() ** (1.0 / WEIGHTS.get(name, 1.0)) for name in pools}
        order = sorted(pools, key=lambda name: -keys[name])
        for name in order:
            if len(out) >= k:
                break
            pool = pools[name]
            site, new, detail = pool.pop(rng.randrange(len(pool)))
            if not pool:
                del pools[name]
            mutant = _build(canon, tree, site, new, detail, name)
            if mutant is not None and mutant.code not in seen:
                seen.add(mutant.code)
                out.append(mutant)
    return out


# ======================================================================================================
# Reading feedback
# ======================================================================================================

_MAX_QUOTE = 160


def _q(text: str, limit: int = _MAX_QUOTE) -> str:
    """Inline code: one line, bounded length, in backticks."""
    text = " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return f"`{text}`"


@dataclass
class _Feedback:
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


def _parse_feedback(feedback: str | None) -> _Feedback:
    """Pull the first failing test, the expected and actual values, or the error out of judge feedback."""
    info = _Feedback()
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
                info.call = _src(node.test.left)
                info.expected = _src(node.test.comparators[0])
        return info
    if "Traceback (most recent call last):" in text or "Error" in text:
        info.error = _last_error_line(text)
    return info


def _why_sentences(fb: _Feedback, lead: bool) -> list[str]:
    """Ways to say how the failing test exposes the bug. ``lead``: phrased to open the explanation."""
    if fb.test:
        t = _q(fb.test, 240)
        if fb.actual is not None and fb.expected is not None:
            e, a = _q(fb.expected), _q(fb.actual)
            if lead:
                return [f"The test {t} fails: it expects {e}, but the code returns {a}.",
                        f"Running {t} gives {a} instead of the expected {e}.",
                        f"The failing test is {t}; the result is {a} where {e} was expected."]
            return [f"That is why {t} fails: the call returns {a} instead of {e}.",
                    f"The failing test {t} shows it: the expected result is {e}, but the code produces {a}.",
                    f"Because of this, {t} does not hold; the actual output is {a}, not {e}.",
                    f"This is exactly what {t} catches, since it gets {a} rather than {e}."]
        if fb.error:
            err = _q(fb.error)
            if lead:
                return [f"The test {t} crashes with {err}.", f"Running {t} raises {err}.",
                        f"The failing test is {t}, which stops with {err}."]
            return [f"As a result, {t} fails with {err}.", f"That makes {t} crash with {err}.",
                    f"This is why the test {t} raises {err} instead of passing."]
        if fb.actual is not None:
            a = _q(fb.actual)
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
        i = _q(fb.stdin, 120)
        if fb.stdout_expected is not None and fb.actual is not None:
            e, a = _q(fb.stdout_expected), _q(fb.actual)
            return [f"On the input {i} the program prints {a}, but {e} is expected.",
                    f"With input {i} the expected output is {e}, yet the program prints {a}."]
        if fb.error:
            return [f"On the input {i} the program crashes with {_q(fb.error)}.",
                    f"Given the input {i}, the program raises {_q(fb.error)}."]
        return [f"The test with input {i} fails."]
    if fb.timeout:
        if lead:
            return ["The program does not finish within the time limit.", "The run times out."]
        return ["As a result the program does not finish within the time limit.",
                "Because of this the program runs past the time limit and the tests never complete.",
                "That is why the run times out."]
    if fb.error:
        return [f"Running the program raises {_q(fb.error)}.", f"The program stops with {_q(fb.error)}."]
    if lead:
        return ["The program fails its tests.", "The tests do not pass."]
    return ["The tests that exercise this case fail as a result.",
            "That is why the tests do not pass."]


# ======================================================================================================
# Explaining a mutant
# ======================================================================================================

_VERB = {"+": ("adds", "add"), "-": ("subtracts", "subtract"), "*": ("multiplies", "multiply"),
         "//": ("floor-divides", "floor-divide"), "/": ("divides", "divide"),
         "%": ("takes a remainder", "take a remainder"), "**": ("raises to a power", "raise to a power"),
         "<<": ("shifts left", "shift left"), ">>": ("shifts right", "shift right"),
         "&": ("takes a bitwise and", "take a bitwise and"), "|": ("takes a bitwise or", "take a bitwise or"),
         "^": ("takes a bitwise xor", "take a bitwise xor")}


def _where_sentences(function: str | None, line: int, faulty: str) -> list[str]:
    f = _q(faulty)
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
    d, A, B = m.detail, _q(m.after), _q(m.before)
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
            target = _q(d["target"])
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
        construct, cond = d["construct"], _q(d["condition"])
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
        f, t = _q(d["from"]), _q(d["to"])
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
        f, t = _q(d["from"]), _q(d["to"])
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
        a, b, callee = _q(d["first"]), _q(d["second"]), f"`{d['callee']}`"
        return [f"The arguments of {callee} are in the wrong order: {a} and {b} are swapped in {A}.",
                f"{A} passes {b} before {a}; the call should be {B}.",
                f"{callee} receives {a} and {b} the wrong way round; it must be called as {B}."]
    if op == "drop_branch":
        cond, dropped = _q(d["condition"]), _q(d["dropped"]) if d["dropped"] else "its code"
        head = f"{d.get('header', 'if')} {d['condition']}:"
        if d["kind"] == "else":
            return [(f"The `else` branch of `{head}` is missing, so when {cond} is false, "
                     f"{dropped} never runs."),
                    (f"Nothing handles the case where {cond} is false: the `else` branch that should run "
                     f"{dropped} was dropped."),
                    f"The `{head}` has lost its `else` part, which should execute {dropped}."]
        if d["kind"] == "elif":
            other = _q(d["branch_condition"])
            return [f"The `elif` case for {other} is missing, so those inputs are no longer handled by {dropped}.",
                    f"The branch for {other} was dropped: when {other} holds, {dropped} should run but does not.",
                    (f"There is no `elif {d['branch_condition']}:` branch any more, so the case {other} "
                     f"falls through without running {dropped}.")]
        return [(f"The body of `{head}` is only `pass`, so when {cond} holds nothing happens, "
                 f"although {dropped} should run."),
                f"When {cond} is true the code does nothing: the statement {dropped} is missing from the branch.",
                f"The `{head}` branch was emptied; it should execute {dropped}."]
    if op == "return_value":
        value = _q(d["value"])
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
            return [f"{A} compares {_q(subject)} with {t}, but the value to test against is {f} ({B}).",
                    f"The constant in the comparison is wrong: {t} instead of {f}.",
                    f"{A} tests for the wrong value; it should be {B}."]
        case = _q(f"{subject} == {witness}")
        return [(f"{A} uses the threshold {t}, but it must be {f} as in {B}, so a case such as {case} is "
                 f"classified wrongly."),
                f"The boundary is off by one: the comparison should be against {f}, not {t}.",
                f"With {t} instead of {f}, the comparison {A} gets the boundary case {case} wrong."]
    if op == "builtin":
        f, t = d["from"], d["to"]
        if t is None:
            order = "sorted" if f == "sorted" else "reversed"
            arg = _q(d["argument"])
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
    out = [f"Changing {_q(m.after)} back to {_q(m.before)} fixes it.",
           f"The fix is to write {_q(m.before)} instead."]
    if original_line:
        out.append(f"Line {m.line} should read {_q(original_line)}.")
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
    fb = _parse_feedback(feedback)
    where = rng.choice(_where_sentences(m.function, m.line, faulty))
    what = rng.choice(_what_sentences(m))
    fix = rng.choice(_fix_sentences(m, original_line)) if rng.random() < 0.5 else None
    if rng.random() < 0.3:  # open with the symptom, then trace it to the line
        parts = [rng.choice(_why_sentences(fb, lead=True)), where, what]
    else:
        parts = [where, what, rng.choice(_why_sentences(fb, lead=False))]
    if fix:
        parts.append(fix)
    return " ".join(parts)


# ======================================================================================================
# Explaining an arbitrary small diff
# ======================================================================================================

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
                return [f"{in_loc}, {_q(w)} has {_q(bad)} where the correct code has {_q(good)}.",
                        f"The statement {_q(w)} ({loc}) uses {_q(bad)}, but it should use {_q(good)}: {_q(r)}.",
                        f"{in_loc}, {_q(bad)} must be {_q(good)}, turning {_q(w)} into {_q(r)}."]
            if good:
                return [f"{in_loc}, {_q(w)} is missing {_q(good)}; it should be {_q(r)}.",
                        f"The statement {_q(w)} ({loc}) lacks {_q(good)}: the correct line is {_q(r)}."]
            return [f"{in_loc}, {_q(w)} has an extra {_q(bad)}; it should be {_q(r)}.",
                    f"The statement {_q(w)} ({loc}) should not contain {_q(bad)}: the correct line is {_q(r)}."]
        return [f"{in_loc}, {_q(w)} is wrong; the correct line is {_q(r)}.",
                f"The statement {_q(w)} ({loc}) should instead read {_q(r)}.",
                f"{in_loc}, replacing {_q(w)} with {_q(r)} gives the right behaviour."]
    if tag == "replace":
        w, r = _q(_join_lines(wrong)), _q(_join_lines(right))
        return [f"{in_loc}, the statements {w} are wrong; they should be {r}.",
                f"The code {w} ({loc}) should instead be {r}."]
    if tag == "delete":
        w = _q(_join_lines(wrong))
        return [f"{in_loc}, {w} should not be there.", f"The statement {w} ({loc}) is superfluous and must go."]
    r = _q(_join_lines(right))
    after = f" after {_q(prev)}" if prev else ""
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
    fb = _parse_feedback(feedback)
    if len(sentences) == 1 and rng.random() < 0.4:
        sentences.insert(0, rng.choice(["The program differs from a correct solution in one place.",
                                        "There is a single faulty spot.",
                                        "Only one line needs to change."]))
    if rng.random() < 0.3:
        sentences.insert(0, rng.choice(_why_sentences(fb, lead=True)))
    else:
        sentences.append(rng.choice(_why_sentences(fb, lead=False)))
    return " ".join(sentences[:5])


# ======================================================================================================
# The teacher
# ======================================================================================================

class MutationTeacher(Teacher):
    """A teacher that needs no language model.

    ``propose`` plants bugs in a problem's reference (the caller judges them and keeps the failing ones);
    ``explain_and_refine`` explains a wrong program, from its mutation record when there is one and from its
    diff against the reference otherwise, and offers the reference as the refinement.
    """

    name = "mutation"

    model = "ast-mutation"

    def __init__(self, seed: int = 0, operators: Iterable[str] | None = None, max_changed_lines: int = 4,
                 wrong_fix_rate: float = 0.2):
        if not 0.0 <= wrong_fix_rate <= 1.0:
            raise ValueError(f"wrong_fix_rate must be in [0, 1], got {wrong_fix_rate}")
        self.seed = seed
        # A real teacher is sometimes wrong, and RL needs failed trajectories: this share of samples offers
        # another plausible-but-buggy variant of the reference as the "fix" (the judge labels it).
        self.wrong_fix_rate = wrong_fix_rate
        self.operators = None if operators is None else list(operators)
        _select_operators(self.operators)  # fail now on an unknown name
        self.max_changed_lines = max_changed_lines

    def propose(self, problem, k: int) -> list[Mutant]:
        """Up to ``k`` mutants of the problem's reference, the same for the same (seed, task id)."""
        if not problem.reference:
            return []
        rng = random.Random(stable_seed(self.seed, problem.task_id, "propose"))
        return mutants(problem.reference, rng, k, self.operators)

    def propose_wrong(self, problem, k: int) -> list[tuple[str, dict]]:
        return [(mutant.code, mutant.mutation.to_dict()) for mutant in self.propose(problem, k)]

    def explain_and_refine(self, wrongs: list[WrongSolution], m: int, seed: int) -> list[list[TeacherSample]]:
        """The Teacher interface. Deterministic per (teacher seed, program): ``seed`` is not needed."""
        out = []
        for w in wrongs:
            mutation = Mutation.from_dict(w.mutation) if w.mutation else None
            pairs = self.explain_one(w.problem, w.code, w.feedback, m, mutation)
            samples = []
            for j, (text, code) in enumerate(pairs):
                rng = random.Random(stable_seed(self.seed, w.solution_id, j, "fix"))
                if rng.random() < self.wrong_fix_rate:
                    wrong_code = canonical(w.code)
                    others = [x for x in mutants(w.problem.reference, rng, 3, self.operators) if x.code != wrong_code]
                    if others:
                        code = others[0].code
                samples.append(TeacherSample(explanation=text, code=code, raw=text,
                                             meta={"mutation": w.mutation} if w.mutation else {}))
            out.append(samples)
        return out

    def explain_one(self, problem, wrong_code: str, feedback: str, m: int,
                    mutation: Mutation | None = None) -> list[tuple[str, str]]:
        """Up to ``m`` (explanation, refinement) pairs with distinct explanations; [] if it cannot explain."""
        refinement = canonical(problem.reference) if problem.reference else None
        if refinement is None or m <= 0:
            return []
        rng = random.Random(stable_seed(self.seed, problem.task_id, "explain", wrong_code))
        # A mutation's line numbers refer to the canonical mutant, which is what ``propose`` handed out.
        mutant = None if mutation is None else Mutant(canonical(wrong_code) or wrong_code, mutation, refinement)
        texts: list[str] = []
        for _ in range(4 * m):
            if mutant is not None:
                text = explain(mutant, feedback, rng)
            else:
                text = explain_diff(wrong_code, refinement, feedback, rng, self.max_changed_lines)
                if text is None:
                    return []
            if text not in texts:
                texts.append(text)
                if len(texts) == m:
                    break
        return [(text, refinement) for text in texts]
