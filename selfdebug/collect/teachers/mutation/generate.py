"""Planting bugs: distinct one-mutation variants of a reference, operators taking turns."""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Iterable

from selfdebug.collect.teachers.mutation.operators import select_operators
from selfdebug.collect.teachers.mutation.records import Mutant, Mutation, canonical
from selfdebug.collect.teachers.mutation.tree import (
    Site,
    locate,
    mutation_sites,
    program_facts,
    replace_node,
    source_of,
)

# Relative chance that an operator gets an early turn in each round of ``mutants``. Operators that apply to
# almost every program and plant blunt bugs (return None, swapped arguments) are drawn less often, so a
# small ``k`` favours the subtler bugs that models actually make.
WEIGHTS: dict[str, float] = {"return_value": 0.3, "swap_args": 0.5, "constant": 0.7}


def _build(canon: str, tree: ast.Module, site: Site, new: ast.AST, detail: dict, operator: str) -> Mutant | None:
    mutated = copy.deepcopy(tree)
    replace_node(mutated, site.path, copy.deepcopy(new))
    try:
        code = ast.unparse(mutated)
        compile(code, "<mutant>", "exec")
        node = locate(ast.parse(code), site.path)
    except (SyntaxError, ValueError, TypeError, AttributeError, IndexError, RecursionError):
        return None
    if code == canon:
        return None
    after = ast.get_source_segment(code, node) or source_of(node)
    before = ast.get_source_segment(canon, site.node) or source_of(site.node)
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
    chosen = select_operators(operators)
    canon = canonical(reference)
    if canon is None:
        return []
    tree = ast.parse(canon)
    facts = program_facts(tree)
    sites = mutation_sites(tree)
    pools: dict[str, list[tuple[Site, ast.AST, dict]]] = {}
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
