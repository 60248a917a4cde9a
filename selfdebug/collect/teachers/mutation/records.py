"""The records of one planted bug (``Mutation``, ``Mutant``) and the canonical form they refer to."""

from __future__ import annotations

import ast
import hashlib
from dataclasses import asdict, dataclass, field


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
