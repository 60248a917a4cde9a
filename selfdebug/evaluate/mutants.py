"""``benchmark=mbpp_mutants``: a held-out repair benchmark of bugs planted in MBPP test-split references.

For each MBPP task of the split (test: task ids 11-510; training data comes from train, 601-974), the mutation
teacher (``MutationTeacher.propose``, the same operators and seeding as collection) draws up to ``candidates``
one-mutation variants of the reference, in a fixed order for ``seed``. Each is judged in the sandbox on the
task's tests, in that order, until ``per_problem`` of them fail; those are kept (a mutant that still passes is
an equivalent program or slips through weak tests, and is dropped). Tasks whose own reference fails are
skipped. Each kept mutant is a ``Problem`` whose ``given_program`` is the mutant and whose ``bug_type`` is the
operator that planted it; the model sees MBPP's asserts and their feedback, as in collection.

Building judges about 1,000 programs (~45 s on 2 cores), so the result is cached as one JSON file under
``cache_dir`` (default ``~/.cache/selfdebug/mbpp_mutants``), named by a hash of everything that decides it:
the source tasks' content, the settings above, the sandbox's timeout and memory limit, and ``BUILD_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from selfdebug.collect.teachers.mutation import MutationTeacher
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.tracking import write_json_atomic
from selfdebug.execution import Sandbox, SandboxConfig
from selfdebug.problems import HELD_OUT_SPLITS, MBPP_SPLITS, Problem, load_mbpp

log = logging.getLogger(__name__)

BUILD_VERSION = 1  # bump when the build changes what it keeps; it is part of the cache key
DEFAULT_CACHE_DIR = "~/.cache/selfdebug/mbpp_mutants"


@dataclass(frozen=True)
class MutantSettings:
    """What decides the benchmark's content (each field is a key under ``benchmark.loader.``)."""

    split: str = "test"
    seed: int = 0
    per_problem: int = 1
    candidates: int = 8
    operators: tuple[str, ...] | None = None
    limit: int | None = None
    # True lets split=train through: a diagnostic of bugs like the training data's (does a model keep the repairs
    # it was trained towards?), never a held-out score. It only unlocks the split, so it is not in the cache key.
    in_distribution: bool = False

    @classmethod
    def from_args(cls, split: str = "test", seed: int = 0, per_problem: int = 1, candidates: int = 8,
                  operators=None, limit: int | None = None, in_distribution: bool = False, **_) -> MutantSettings:
        """From the loader's arguments (``benchmark.loader.*``); the others (path, cache_dir, ...) are ignored."""
        return cls(split=split, seed=int(seed), per_problem=int(per_problem), candidates=int(candidates),
                   operators=None if operators is None else tuple(operators),
                   limit=None if limit is None else int(limit), in_distribution=bool(in_distribution))

    def __post_init__(self) -> None:
        if self.split not in HELD_OUT_SPLITS + (("train",) if self.in_distribution else ()):
            why = ("training data comes from it (benchmark.loader.in_distribution=true measures repairs of "
                   "training-like bugs, as a diagnostic)" if self.split == "train" else "it is not a held-out split")
            raise ConfigError(f"benchmark.loader.split = {self.split!r}: {why}; choose one of {HELD_OUT_SPLITS}"
                              if self.split in MBPP_SPLITS else
                              f"benchmark.loader.split = {self.split!r}; choose one of {HELD_OUT_SPLITS}")
        if self.per_problem < 1:
            raise ConfigError(f"benchmark.loader.per_problem = {self.per_problem}; it must be at least 1")
        if self.candidates < self.per_problem:
            raise ConfigError(f"benchmark.loader.candidates = {self.candidates}; it must be at least per_problem "
                              f"({self.per_problem})")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"benchmark.loader.limit = {self.limit}; a positive number of tasks, or null for all")
        try:
            MutationTeacher(operators=self.operators)
        except ValueError as exc:
            raise ConfigError(f"benchmark.loader.operators: {exc}") from None


def load_mbpp_mutants(path: str | None = None, hub_id: str | None = None, hub_config: str | None = None,
                      split: str = "test", seed: int = 0, per_problem: int = 1, candidates: int = 8,
                      operators: list[str] | None = None, limit: int | None = None, cache_dir: str | None = None,
                      sandbox: dict | None = None, in_distribution: bool = False) -> list[Problem]:
    """The mutant benchmark: read from the cache, or built (and cached) if these settings were never built."""
    settings = MutantSettings.from_args(split=split, seed=seed, per_problem=per_problem, candidates=candidates,
                                        operators=operators, limit=limit, in_distribution=in_distribution)
    if split == "train":
        log.warning("mbpp_mutants: split=train is an in-distribution diagnostic (the tasks training data comes "
                    "from), not a held-out benchmark")
    sandbox_config = SandboxConfig(**(sandbox or {}))
    sources = load_mbpp(path=path, split=split, sanitized=False, hub_id=hub_id, hub_config=hub_config)
    if settings.limit is not None:
        sources = sources[:settings.limit]
    if not sources:
        raise DataError(f"mbpp_mutants: no MBPP tasks in split {split!r} of the source data")
    key = cache_key(settings, sources, sandbox_config)
    cache_file = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / f"mbpp_mutants-{key}.json"
    if cache_file.exists():
        payload = _read_cache(cache_file)
        log.info("mbpp_mutants: %d mutants from the cache %s", len(payload["mutants"]), cache_file)
    else:
        payload = build_mutants(sources, settings, sandbox_config)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_file, payload)
        log.info("mbpp_mutants: built %d mutants of %d tasks in %.0f s; cached at %s", len(payload["mutants"]),
                 len(sources), payload["build_seconds"], cache_file)
    return problems_from(payload, sources, cache_file)


# The settings' checks without building or reading anything: the stage checks (selfdebug.problems.registry.check_loader)
# run them before a pipeline's first stage.
load_mbpp_mutants.check_args = MutantSettings.from_args


def cache_key(settings: MutantSettings, sources: list[Problem], sandbox_config: SandboxConfig) -> str:
    tasks = [[p.task_id, p.reference, p.tests.to_dict()] for p in sources]
    decides = {k: v for k, v in asdict(settings).items() if k != "in_distribution"}  # the split decides, not this
    blob = json.dumps({"version": BUILD_VERSION, "settings": decides, "tasks": tasks,
                       "timeout": sandbox_config.timeout, "memory_mb": sandbox_config.memory_mb}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_mutants(sources: list[Problem], settings: MutantSettings, sandbox_config: SandboxConfig) -> dict:
    """Judge references, then mutants in draw order until each task has ``per_problem`` failing ones."""
    start = time.monotonic()
    teacher = MutationTeacher(seed=settings.seed, operators=settings.operators)
    with Sandbox(sandbox_config) as sandbox:
        with_ref = [p for p in sources if p.reference]
        verdicts = sandbox.run_batch([(p.reference, p.tests) for p in with_ref])
        usable = [p for p, v in zip(with_ref, verdicts) if v.passed]
        usable_ids = {p.task_id for p in usable}
        broken = [p.task_id for p in sources if p.task_id not in usable_ids]
        drawn = {p.task_id: teacher.propose(p, settings.candidates) for p in usable}
        kept: dict[str, list[dict]] = {p.task_id: [] for p in usable}
        tried = {p.task_id: 0 for p in usable}
        judged = 0
        while True:  # waves: each task judges as many of its next candidates as it still needs
            jobs = []
            for p in usable:
                need = settings.per_problem - len(kept[p.task_id])
                nxt = drawn[p.task_id][tried[p.task_id]:tried[p.task_id] + need]
                tried[p.task_id] += len(nxt)
                jobs += [(p, m) for m in nxt]
            if not jobs:
                break
            judged += len(jobs)
            for (p, m), res in zip(jobs, sandbox.run_batch([(m.code, p.tests) for p, m in jobs])):
                if not res.passed:
                    kept[p.task_id].append({"source_task_id": p.task_id, "program": m.code,
                                            "operator": m.mutation.operator, "mutation": m.mutation.to_dict(),
                                            "status": res.status})
    mutants = []
    for p in usable:
        for k, entry in enumerate(kept[p.task_id]):
            mutants.append({"task_id": f"{p.task_id}/mutant-{k}", **entry})
    counts = {"tasks": len(sources), "reference_fails": broken,
              "no_failing_mutant": [p.task_id for p in usable if not kept[p.task_id]],
              "mutants_judged": judged, "kept": len(mutants),
              "by_operator": dict(Counter(m["operator"] for m in mutants).most_common()),
              "by_status": dict(Counter(m["status"] for m in mutants).most_common())}
    return {"version": BUILD_VERSION, "settings": asdict(settings), "sandbox_timeout": sandbox_config.timeout,
            "build_seconds": round(time.monotonic() - start, 1), "counts": counts, "mutants": mutants}


def _read_cache(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("version") != BUILD_VERSION or not isinstance(payload.get("mutants"), list):
            raise ValueError("not a mutant benchmark of this version")
        return payload
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable mutant benchmark cache ({exc}); delete the file to rebuild it") from None


def problems_from(payload: dict, sources: list[Problem], where: Path) -> list[Problem]:
    by_id = {p.task_id: p for p in sources}
    problems = []
    for m in payload["mutants"]:
        src = by_id.get(m.get("source_task_id"))
        if src is None:
            raise DataError(f"{where}: mutant {m.get('task_id')!r} names an unknown task; delete the file to rebuild it")
        problems.append(Problem(
            task_id=m["task_id"], source="mbpp_mutants", prompt=src.prompt, tests=src.tests,
            entry_point=src.entry_point, starter_code=src.starter_code, reference=src.reference,
            tests_shown=src.tests_shown, given_program=m["program"],
            metadata={**src.metadata, "source_task_id": src.task_id, "bug_type": m["operator"],
                      "mutation": m["mutation"], "given_status": m["status"]}))
    return problems
