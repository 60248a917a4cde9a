"""``python -m selfdebug.collect``: build an execution-verified dataset of explanations and refinements.

    python -m selfdebug.collect +exp=collect_quickstart                 # offline: tiny student, mutation teacher
    python -m selfdebug.collect data=mbpp_train teacher=openai teacher.model=gpt-3.5-turbo model=codellama_7b

The run dir (fixed by data, student, teacher and seed, so the same command finds it again) holds ``work/``
(finished chunks) and, once everything is done, ``dataset/`` with JSONL shards and ``stats.json``.
Kill it at any moment and run the same command again: it continues where it stopped. A finished
collection is not redone.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.cli import CONF_DIR, check_required, seed_everything, user_errors
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.models import local_model_path
from selfdebug.problems.registry import check_loaders, loader_paths

log = logging.getLogger("selfdebug.collect")


def settings_from_config(cfg: DictConfig):
    from selfdebug.collect.stages import CollectSettings
    from selfdebug.generation import SamplingParams

    return CollectSettings(
        n_initial=int(cfg.n_initial), m_refinements=int(cfg.m_refinements),
        initial_sampling=SamplingParams(**OmegaConf.to_container(cfg.initial_sampling, resolve=True)),
        mutants_per_problem=int(cfg.mutants_per_problem),
        max_wrong_per_problem=None if cfg.max_wrong_per_problem is None else int(cfg.max_wrong_per_problem),
        few_shot=int(cfg.few_shot or 0),
        chunk_problems=int(cfg.chunk_problems), chunk_wrong=int(cfg.chunk_wrong), mode=str(cfg.teacher.mode),
        seed=int(cfg.seed), shard_size=int(cfg.shard_size), timeout_factor=float(cfg.timeout_factor),
        min_timeout=float(cfg.min_timeout))


def source_limit(cfg: DictConfig, name: str) -> int | None:
    """The cap on source ``name``: ``data.limits.<name>`` if set, else ``data.limit_per_source`` (null: none);
    with both, the smaller."""
    caps = [cfg.data.get("limit_per_source"), (cfg.data.get("limits") or {}).get(name)]
    caps = [int(c) for c in caps if c is not None]
    return min(caps) if caps else None


def student_configs(cfg: DictConfig) -> dict:
    """``{name: model config}`` of the students: ``students`` (pooled, e.g. ``+model@students.codellama_7b=
    codellama_7b``) when set, else the ``model`` group alone."""
    students = cfg.get("students")
    if not students:
        return {str(cfg.model.name): cfg.model}
    bad = [name for name, c in students.items() if not isinstance(c, DictConfig) or c.get("generator") is None]
    if bad:
        raise ConfigError(f"students.{bad[0]}: not a model config with a generator; add a student with "
                          "+model@students.NAME=<model option>, e.g. +model@students.codellama_7b=codellama_7b")
    return dict(students.items())


CONFIG_NAME = "collect"  # conf/collect.yaml; the pipeline composes it too, to check the stage before running any


def check(cfg: DictConfig):
    """(settings, sandbox config) once every cheap check has passed: before any data, model or torch loads."""
    from selfdebug.execution import SandboxConfig

    check_required(cfg)
    settings = settings_from_config(cfg)
    if settings.n_initial == 0 and settings.mutants_per_problem == 0:
        raise ConfigError("n_initial = 0 and mutants_per_problem = 0: nothing would make wrong programs")
    if settings.n_initial > 0:
        student_configs(cfg)
    unknown = set((cfg.data.get("limits") or {}).keys()) - set(cfg.data.sources.keys())
    if unknown:
        raise ConfigError(f"data.limits: {sorted(unknown)} name no source in data.sources "
                          f"({sorted(cfg.data.sources.keys())})")
    check_loaders(loader_blocks(cfg))
    return settings, SandboxConfig(**OmegaConf.to_container(cfg.sandbox, resolve=True))


def loader_blocks(cfg: DictConfig) -> dict[str, DictConfig]:
    """The data loader blocks a collection instantiates, by config key: each data source, the few-shot examples
    when used, and the decontamination benchmarks when enabled."""
    blocks = {f"data.sources.{name}": loader for name, loader in cfg.data.sources.items()}
    if int(cfg.few_shot or 0) > 0:
        blocks["data.few_shot"] = cfg.data.few_shot
    if cfg.decontamination.enabled:
        blocks |= {f"decontamination.against.{name}": c for name, c in (cfg.decontamination.against or {}).items()}
    return blocks


def input_paths(cfg: DictConfig) -> dict[str, str]:
    """The local files and folders a collection reads, by config key: the file of each loader block that names
    one, and each student model that is a local folder (none when no initial programs are sampled). The
    pipeline checks they exist before it starts."""
    out = loader_paths(loader_blocks(cfg))
    if int(cfg.n_initial) > 0:
        students = cfg.get("students")
        for name, model in (students.items() if students else [(None, cfg.model)]):
            out |= local_model_path(model, "model.name_or_path" if name is None else f"students.{name}.name_or_path")
    return out


def load_sources(cfg: DictConfig) -> list:
    """The problems of every ``data.sources`` entry, capped; ``check(cfg)`` has vetted ``data.limits``."""
    problems, seen = [], set()
    for name, loader in cfg.data.sources.items():
        loaded = hydra.utils.instantiate(loader)
        limit = source_limit(cfg, name)
        if limit is not None:
            loaded = loaded[: int(limit)]
        for p in loaded:
            if p.task_id in seen:
                raise DataError(f"data.sources.{name}: task id {p.task_id} appears twice")
            seen.add(p.task_id)
        problems.extend(loaded)
        log.info("data source %s: %d problems", name, len(loaded))
    if not problems:
        raise DataError("data.sources yielded no problems")
    return problems


def decontaminate(cfg: DictConfig, problems: list) -> tuple[list, dict]:
    from selfdebug.collect.decontamination import find_contaminated

    dcfg = cfg.decontamination
    if not dcfg.enabled:
        return problems, {"enabled": False, "dropped": 0}
    benchmark = [p for loader in dcfg.against.values() for p in hydra.utils.instantiate(loader)]
    matches = find_contaminated(problems, benchmark, threshold=float(dcfg.threshold), n=int(dcfg.ngram))
    dropped = {m.task_id for m in matches}
    log.info("decontamination: dropped %d of %d training problems (near-duplicates of %s)", len(dropped),
             len(problems), ", ".join(dcfg.against.keys()))
    report = {"enabled": True, "dropped": len(dropped), "threshold": float(dcfg.threshold),
              "against": list(dcfg.against.keys()), "matches": [asdict(m) for m in matches]}
    return [p for p in problems if p.task_id not in dropped], report


def _checked_problems(problems, sandbox, settings, work_dir: Path, decontam: dict):
    """Reference checks and time limits, measured once and kept in work/problems.json so a resumed run
    judges with exactly the limits of the first."""
    from selfdebug.collect.stages import verify_references
    from selfdebug.core.tracking import write_json_atomic

    path = work_dir / "problems.json"
    if path.exists():
        saved = json.loads(path.read_text())
        by_id = {p.task_id: p for p in problems}
        missing = [t for t in saved["task_ids"] if t not in by_id]
        if missing:
            raise ConfigError(f"{path} lists problems the data config no longer yields ({missing[:3]}...); "
                              "use a new hydra.run.dir for a different collection")
        return [by_id[t] for t in saved["task_ids"]], saved["skipped"], saved["timeouts"]
    problems, skipped, timeouts = verify_references(problems, sandbox, settings)
    write_json_atomic(path, {"task_ids": [p.task_id for p in problems], "skipped": skipped,
                             "timeouts": timeouts, "decontamination": decontam})
    return problems, skipped, timeouts


def run(cfg: DictConfig) -> dict:
    from selfdebug.collect.stages import (
        finalize,
        load_solutions,
        solutions_stage,
        teacher_stage,
        wrong_solutions,
    )
    from selfdebug.core.tracking import logger_from_config
    from selfdebug.execution import Sandbox

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir = run_dir / "dataset"
    if (out_dir / "stats.json").exists():
        print(f"collection already complete: {out_dir}", flush=True)
        return json.loads((out_dir / "stats.json").read_text())
    settings, sandbox_config = check(cfg)
    seed_everything(int(cfg.seed))  # after the checks: it loads torch
    problems = load_sources(cfg)
    problems, decontam = decontaminate(cfg, problems)
    # The whole pool: each prompt takes few_shot of it that are not its own problem.
    examples = hydra.utils.instantiate(cfg.data.few_shot) if settings.few_shot else []
    teacher = hydra.utils.instantiate(cfg.teacher.teacher)
    student = ({name: hydra.utils.instantiate(c.generator) for name, c in student_configs(cfg).items()}
               if settings.n_initial > 0 else None)
    work_dir = run_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    logger = logger_from_config(cfg, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type="collect")
    exit_code = 1
    try:
        with Sandbox(sandbox_config) as sandbox:
            problems, skipped, timeouts = _checked_problems(problems, sandbox, settings, work_dir, decontam)
            solutions_stage(problems, student, teacher, sandbox, settings, work_dir, examples, timeouts)
            n_solution_chunks = -(-len(problems) // settings.chunk_problems)
            rows = load_solutions(work_dir, n_solution_chunks)
            wrongs = wrong_solutions(rows, {p.task_id: p for p in problems}, settings)
            logger.log({"problems": len(problems), "wrong_programs": len(wrongs)}, step=0)
            log.info("%d wrong programs go to the teacher (%s), %d samples each", len(wrongs), teacher.name,
                     settings.m_refinements)
            sampling = {"teacher_temperature": float(cfg.teacher.get("temperature", 0.0) or 0.0),
                        "m": settings.m_refinements, "student_temperature": settings.initial_sampling.temperature,
                        "n_initial": settings.n_initial, "students": sorted(student or {})}
            failed = teacher_stage(wrongs, teacher, sandbox, settings, work_dir, sampling, timeouts)
            sandbox_stats = sandbox.stats()
        if failed:
            print(f"error: {len(failed)} teacher chunk(s) could not be done (see the log); nothing is lost: run "
                  "the same command again to retry them", file=sys.stderr, flush=True)
            raise SystemExit(3)
        n_teacher_chunks = -(-len(wrongs) // settings.chunk_wrong)
        stats = finalize(rows, problems, wrongs, work_dir, n_teacher_chunks, out_dir, settings,
                         {"skipped_problems": skipped, "decontamination": {k: v for k, v in decontam.items()
                                                                          if k != "matches"},
                          "teacher": teacher.name, "teacher_model": teacher.model, "sandbox": sandbox_stats},
                         student_name="+".join(student) if student else "none")
        for source, s in stats["sources"].items():
            logger.log({f"{source}/{k}": v for k, v in s.items()}, step=1)
        logger.summary({"records": stats["records"], "records_correct": stats["records_correct"],
                        "sources": stats["sources"], "dataset": str(out_dir)})
        # Offline too: the artifact is staged in the offline run and uploaded by `wandb sync`.
        logger.artifact(out_dir, name=f"{cfg.data.name}-{cfg.model.name}-{cfg.teacher.name}", type="dataset",
                        metadata={"records": stats["records"], "records_correct": stats["records_correct"]})
        exit_code = 0
    finally:
        logger.finish(exit_code)
        teacher.close()
        for generator in (student or {}).values():
            generator.close()
    print(f"{stats['records']} trajectories ({stats['records_correct']} correct) -> {out_dir}", flush=True)
    return stats


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
