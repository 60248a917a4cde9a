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

Modules, in the order a bug travels: ``records`` (Mutation, Mutant, canonical form), ``tree`` (sites and
node plumbing), ``operators`` (the mutation operators), ``generate`` (``mutants``), ``feedback`` (reading
the judge's feedback), ``explain`` (a mutant's explanation), ``diff`` (``explain_diff``), ``teacher``
(``MutationTeacher``).
"""

from selfdebug.collect.teachers.mutation.diff import explain_diff
from selfdebug.collect.teachers.mutation.explain import explain
from selfdebug.collect.teachers.mutation.generate import mutants
from selfdebug.collect.teachers.mutation.operators import OPERATORS
from selfdebug.collect.teachers.mutation.records import Mutant, Mutation, canonical, stable_seed
from selfdebug.collect.teachers.mutation.teacher import MutationTeacher

__all__ = ["OPERATORS", "Mutant", "Mutation", "MutationTeacher", "canonical", "explain", "explain_diff", "mutants",
           "stable_seed"]
