"""``python -m selfdebug.evaluate``: pass@k of the initial code and after each round of self-debugging.

    python -m selfdebug.evaluate +exp=eval_quickstart                    # offline: HumanEval, tiny model
    python -m selfdebug.evaluate benchmark=mbpp model=reference       # sanity check: pass@1 = 100
    python -m selfdebug.evaluate model=hf model.name_or_path=outputs/sft/... benchmark=mbpp_plus

The run dir gets samples.jsonl (one line per judged program), results.json (pass@k per round with bootstrap
intervals, refinement rates), metrics.jsonl, summary.json and the W&B run. Re-running with the same
``hydra.run.dir`` resumes after the last finished round.

With ``judge=openai`` (or ``judge=hf``) an LLM judge then scores every explanation on the rubric in
``conf/judge/rubric/`` (correctness and helpfulness, 1-5): each row of samples.jsonl gets its verdict, results.json
its means with bootstrap intervals (``judge``). Re-running on a finished run dir with a judge only adds the scores.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from selfdebug.core.cli import CONF_DIR, check_required, seed_everything, user_errors
from selfdebug.core.errors import ConfigError
from selfdebug.core.models import local_model_path
from selfdebug.problems.registry import check_loaders, loader_paths, select_problems

log = logging.getLogger("selfdebug.evaluate")


def settings_from_config(cfg: DictConfig):
    from selfdebug.core.answers import answer_form_of
    from selfdebug.evaluate.protocol import EvalSettings
    from selfdebug.generation import SamplingParams

    return EvalSettings(n_samples=int(cfg.n_samples), rounds=int(cfg.rounds), mode=str(cfg.mode),
                        sampling=SamplingParams(**OmegaConf.to_container(cfg.sampling, resolve=True)),
                        refine_sampling=SamplingParams(**OmegaConf.to_container(cfg.refine_sampling, resolve=True)),
                        ks=tuple(int(k) for k in cfg.ks), n_resamples=int(cfg.bootstrap.n_resamples),
                        confidence=float(cfg.bootstrap.confidence), seed=int(cfg.seed), start=str(cfg.start),
                        few_shot=int(cfg.get("few_shot") or 0),
                        timeout_factor=cfg.get("timeout_factor"), min_timeout=cfg.get("min_timeout", 2.0),
                        answer_form=answer_form_of(cfg, OmegaConf.select(cfg, "model.name_or_path")))


def judge_from_config(cfg: DictConfig):
    """(rubric, settings) of the ``judge`` group; checked before any model loads. None for judge=none, and for
    a mode without explanations to score."""
    if cfg.judge.get("generator") is None:
        return None
    if str(cfg.mode) != "explain_refine":
        return None  # not an error: run() says so (a sweep over both modes with one judge runs its refine jobs)
    from selfdebug.evaluate.judge import JudgeSettings, Rubric
    from selfdebug.generation import SamplingParams

    rubric = Rubric.from_dict(OmegaConf.to_container(cfg.judge.rubric, resolve=True))
    rounds = cfg.judge.get("rounds")
    max_items = cfg.judge.get("max_items")
    settings = JudgeSettings(sampling=SamplingParams(**OmegaConf.to_container(cfg.judge.sampling, resolve=True)),
                             rounds=None if rounds is None else tuple(int(r) for r in rounds),
                             max_items=None if max_items is None else int(max_items),
                             chunk_size=int(cfg.judge.chunk_size), seed=int(cfg.seed))
    return rubric, settings


def explanation_score_setup(cfg: DictConfig, problems: list, settings):
    """(S_ex settings, loaded reward) or (None, why not); the keys are checked before any model loads."""
    from selfdebug.evaluate import explanation_score as s_ex

    s_ex.check_keys(cfg.explanation_score, cfg.explanation_model)  # again, for callers other than run()
    skipped = s_ex.applicable(cfg.explanation_score, problems, settings.mode, settings.start, settings.rounds)
    if skipped is not None:
        return None, skipped
    s = s_ex.ExplanationScoreSettings(
        model=cfg.explanation_model, teacher_seed=int(OmegaConf.select(cfg, "benchmark.loader.seed", default=0) or 0),
        n_resamples=settings.n_resamples, confidence=settings.confidence, seed=settings.seed)
    return (s, s_ex.load_reward(s)), None


def run_judge(cfg: DictConfig, setup, rows: list[dict], problems: list, run_dir: Path) -> dict:
    """Scores the run's explanations (verdicts land in ``rows``) and returns results.json's ``judge`` entry."""
    from selfdebug.evaluate.judge import judge_rows, summarize_judge

    rubric, settings = setup
    judge = hydra.utils.instantiate(cfg.judge.generator)
    try:
        info = judge_rows(rows, problems, judge, rubric, settings, checkpoint_dir=run_dir / "checkpoints",
                          progress=bool(cfg.progress))
    finally:
        judge.close()
    return summarize_judge(rows, info, int(cfg.bootstrap.n_resamples), float(cfg.bootstrap.confidence),
                           int(cfg.seed))


CONFIG_NAME = "evaluate"  # conf/evaluate.yaml; the pipeline composes it too, to check the stage before running any


def check(cfg: DictConfig):
    """(settings, judge setup, sandbox config) once every check that needs no data, model or torch has passed."""
    from selfdebug.evaluate.explanation_score import check_keys
    from selfdebug.execution import SandboxConfig

    check_required(cfg)
    settings = settings_from_config(cfg)
    judge_setup = judge_from_config(cfg)
    check_keys(cfg.explanation_score, cfg.explanation_model)
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"limit = {cfg.limit}; it must be a positive number of problems, or null for all")
    check_loaders(loader_blocks(cfg))
    return settings, judge_setup, SandboxConfig(**OmegaConf.to_container(cfg.sandbox, resolve=True))


def loader_blocks(cfg: DictConfig) -> dict[str, DictConfig]:
    """The data loader blocks an evaluation instantiates, by config key: the benchmark's, and the few-shot
    examples' when used."""
    blocks = {"benchmark.loader": cfg.benchmark.loader}
    if int(cfg.get("few_shot") or 0) > 0:
        blocks["few_shot_examples"] = cfg.few_shot_examples
    return blocks


def input_paths(cfg: DictConfig) -> dict[str, str]:
    """The local files and folders an evaluation reads, by config key: the file of each loader block that names
    one, and the evaluated model when it is a local folder. The pipeline checks they exist, or that an earlier
    stage of it writes them, before it starts."""
    return loader_paths(loader_blocks(cfg)) | local_model_path(cfg.get("model"), "model.name_or_path")


def run(cfg: DictConfig) -> dict:
    from selfdebug.core.tracking import logger_from_config, write_json_atomic, write_jsonl_atomic
    from selfdebug.evaluate.protocol import check_examples, check_start, run_self_debug, summarize
    from selfdebug.execution import Sandbox

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    settings, judge_setup, sandbox_config = check(cfg)
    if judge_setup is None and cfg.judge.get("generator") is not None:
        log.warning("judge=%s skipped: mode=%s asks for code only, so there are no explanations to score",
                    cfg.judge.name, cfg.mode)
    seed_everything(int(cfg.seed))  # after the checks: it loads torch
    problems = select_problems(hydra.utils.instantiate(cfg.benchmark.loader), limit=cfg.limit,
                               task_ids=cfg.task_ids)  # check(cfg) has refused a limit below 1
    check_start(problems, settings)
    examples = hydra.utils.instantiate(cfg.few_shot_examples) if settings.few_shot else []
    check_examples(examples, settings)
    s_ex_setup, s_ex_skipped = explanation_score_setup(cfg, problems, settings)  # its model loads first: small
    log.info("%s: %d problems, %d samples each, %d rounds (%s)", cfg.benchmark.name, len(problems),
             settings.n_samples, settings.rounds, settings.mode)
    generator = hydra.utils.instantiate(cfg.model.generator)
    logger = logger_from_config(cfg, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type="evaluate")
    exit_code = 1
    try:
        with Sandbox(sandbox_config) as sandbox:
            def on_round(round_index: int, rows: list[dict]) -> None:
                logger.log({"round": round_index, "programs": len(rows),
                            "passed": sum(r["passed"] for r in rows)}, step=round_index)

            rows = run_self_debug(problems, generator, sandbox, settings, checkpoint_dir=run_dir / "checkpoints",
                                  progress=bool(cfg.progress), on_round=on_round, examples=examples)
            results = summarize(rows, problems, settings)
            results.update(benchmark=cfg.benchmark.name, model=cfg.model.name, sandbox=sandbox.stats())
        if s_ex_setup is not None:
            from selfdebug.evaluate.explanation_score import score_rows

            results["explanation_score"] = score_rows(rows, problems, s_ex_setup[0], n_rounds=settings.rounds,
                                                      reward=s_ex_setup[1])
        else:
            results.update(explanation_score=None, explanation_score_skipped=s_ex_skipped)
        if judge_setup is not None:
            generator.close()  # a local judge model may need the memory the evaluated model holds
            results["judge"] = run_judge(cfg, judge_setup, rows, problems, run_dir)
        write_jsonl_atomic(run_dir / "samples.jsonl", rows)
        for entry in results["rounds"]:
            logger.log({f"round_{entry['round']}/{k}": v["value"] for k, v in entry.items() if k.startswith("pass@")})
        refined = [r for r in rows if r["round"] > 0][:500]
        logger.table("refinements", ["task_id", "round", "sample_index", "explanation", "solution", "status"],
                     [[r["task_id"], r["round"], r["sample_index"], r["explanation"], r["solution"], r["status"]]
                      for r in refined])
        s_ex_1 = (results["explanation_score"] or {}).get("round_1") or {}
        if s_ex_1.get("mean") is not None:
            logger.log({"explanation_score/round_1": s_ex_1["mean"]})
        if "judge" in results:
            judged = [r for r in rows if r.get("judge")][:500]
            logger.log({f"judge/{axis}": results["judge"][axis]["mean"] for axis in ("correctness", "helpfulness")
                        if results["judge"][axis]["mean"] is not None}
                       | {"judge/scored": results["judge"]["scored"],
                          "judge/judge_unparsed": results["judge"]["judge_unparsed"]})
            logger.table("judge", ["task_id", "round", "sample_index", "explanation", "correctness", "helpfulness",
                                   "status"],
                         [[r["task_id"], r["round"], r["sample_index"], r["explanation"], r["judge"].get("correctness"),
                           r["judge"].get("helpfulness"), r["judge"]["status"]] for r in judged])
        write_json_atomic(run_dir / "results.json", results)  # last: its presence means the run is complete
        logger.summary({"benchmark": results["benchmark"], "model": results["model"],
                        "pass@k_initial": results["pass@k_initial"], "pass@k_final": results["pass@k_final"],
                        "pass@k_round1": results["pass@k_round1"],
                        "success_refinement_rate": results["success_refinement_rate"],
                        "explanation_score_round1": s_ex_1.get("mean"),
                        **({"judge": {k: results["judge"][k] for k in ("judge", "scored", "judge_unparsed",
                                                                        "correctness", "helpfulness")}}
                           if "judge" in results else {})})
        exit_code = 0
    finally:
        logger.finish(exit_code)
        generator.close()
    after = results["pass@k_round1"] or results["pass@k_final"]
    line = ", ".join(f"{k} {v:.2f} -> {after[k]:.2f}" for k, v in results["pass@k_initial"].items())
    print(f"{results['benchmark']} / {results['model']}: {line} (round 1); refinement rate "
          f"{results['success_refinement_rate']:.2f}% (round 1)\nresults: {run_dir / 'results.json'}", flush=True)
    if s_ex_1.get("mean") is not None:
        print(f"S_ex ({results['explanation_score']['model']}): round 1 {s_ex_1['mean']:.3f} "
              f"[{s_ex_1['ci_low']:.3f}, {s_ex_1['ci_high']:.3f}] over {s_ex_1['n']} explanations", flush=True)
    if "judge" in results:
        j = results["judge"]
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"judge {j['judge']}: correctness {fmt(j['correctness']['mean'])}, helpfulness "
              f"{fmt(j['helpfulness']['mean'])} over {j['scored']} explanations ({j['judge_unparsed']} unparsed)",
              flush=True)
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
