"""Tree plumbing for mutations: the sites a mutation may touch, where they are, and small node builders."""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

NodePath = tuple  # ((field, index or None), ...) from the module down to a node


@dataclass
class Site:
    node: ast.AST
    path: NodePath
    parent: ast.AST | None
    func: ast.FunctionDef | ast.AsyncFunctionDef | None


@dataclass
class Facts:
    """Module-wide facts operators consult: names the program binds (so shadowed builtins are left alone)."""

    bound: set[str]


_NOT_SITES = (ast.expr_context, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)
_SKIPPED_FIELDS = {"annotation", "returns", "type_comment", "type_ignores"}


def _is_string_expr(stmt: ast.AST) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def mutation_sites(tree: ast.Module) -> list[Site]:
    """Every node that may be mutated, in a fixed order; docstrings, annotations and f-strings excluded."""
    out: list[Site] = []

    def visit(node, path, parent, func):
        if isinstance(node, _NOT_SITES) or _is_string_expr(node):
            return
        out.append(Site(node, path, parent, func))
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


def program_facts(tree: ast.Module) -> Facts:
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
    return Facts(bound=bound)


def locate(tree: ast.AST, path: NodePath) -> ast.AST:
    node = tree
    for name, index in path:
        node = getattr(node, name)
        if index is not None:
            node = node[index]
    return node


def replace_node(tree: ast.AST, path: NodePath, new: ast.AST) -> None:
    parent = locate(tree, path[:-1])
    name, index = path[-1]
    if index is None:
        setattr(parent, name, new)
    else:
        getattr(parent, name)[index] = new


def source_of(node: ast.AST) -> str:
    return ast.unparse(node)


def int_value(node: ast.AST) -> int | None:
    """The value of an int literal (``3``, ``-1``), else None. Booleans are not ints here."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int):
        return -node.operand.value
    return None


def int_node(value: int) -> ast.expr:
    # Negative literals as the parser builds them, so the mutant's tree has the shape of the code it prints.
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


def shift_by_one(expr: ast.expr, step: int) -> tuple[ast.expr, int]:
    """Move an integer expression by one: ``X + 1`` -> ``X``, ``X - 1`` -> ``X``, ``c`` -> ``c + step``,
    anything else -> ``X + 1`` / ``X - 1``. Returns the new expression and the direction it moved."""
    value = int_value(expr)
    if value is not None:
        return int_node(value + step), step
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)) and int_value(expr.right) == 1:
        return copy.deepcopy(expr.left), (-1 if isinstance(expr.op, ast.Add) else 1)
    return ast.BinOp(copy.deepcopy(expr), ast.Add() if step > 0 else ast.Sub(), ast.Constant(1)), step


def is_texty(node: ast.AST) -> bool:
    """A literal whose ``+``/``*``/``%`` means concatenation, repetition or formatting, not arithmetic."""
    return (isinstance(node, (ast.JoinedStr, ast.List, ast.Tuple, ast.ListComp))
            or (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))))


def is_plain_call(node: ast.AST, name: str | None = None) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (name is None or node.func.id == name)
            and not any(isinstance(a, ast.Starred) for a in node.args))
