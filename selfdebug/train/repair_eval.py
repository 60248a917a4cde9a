"""Repair rate during training: how well the model being trained fixes bugs it has never seen.

Every ``repair_eval.every`` steps (optimizer steps in SFT, PPO steps in RL), at step 0 before training and
at the run's last step, ``RepairEval`` answers a fixed held-out set of wrong programs greedily and judges the
answers in the sandbox. The set is the first ``repair_eval.limit`` MBPP tasks of ``benchmark=mbpp_mutants``
(``selfdebug.evaluate.mutants``) from ``repair_eval.split``: test, or validation to tune settings without
looking at test (training data is MBPP train, so nothing leaks either way), each shown as one refinement
prompt built exactly as evaluation builds round 1 (``refine_messages`` with the given program's execution
feedback, ``parse_answer`` to read the fix back in the stage's answer form), each program under its problem's
time limit as evaluation sets it (``selfdebug/execution/time_limits.py``, measured when the set is built). It
logs ``repair/pass@1`` (percent of programs repaired) and ``repair/applied`` (share of answers that give a
program) through the stage's ``RunLogger`` and rewrites ``repair_eval.jsonl`` in the run dir atomically, one
row per evaluated step (a resumed run keeps the rows it has and never writes a step twice).

Rank 0 evaluates; the other ranks skip, except under sharded weights (FSDP, ZeRO-3), where every forward is a
collective, so all ranks generate and rank 0 alone judges and logs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from selfdebug.core.answers import parse_answer, shown_program
from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import END, assemble_program, refine_messages, render_chat
from selfdebug.core.tracking import write_jsonl_atomic
from selfdebug.execution.time_limits import reference_time_limits
from selfdebug.train.model import generation_context
from selfdebug.train.repair_settings import RepairEvalSettings

log = logging.getLogger(__name__)

FILE = "repair_eval.jsonl"


# ------------------------------------------------------------------------------------------------ the set

@dataclass
class RepairItem:
    """One held-out wrong program: its problem, the program as the prompt shows it, and the prompt tokens."""

    problem: object
    wrong_program: str  # shown_program(problem, given_program): what edits apply to
    feedback: str
    prompt_ids: list[int]
    time_limit: float | None = None  # seconds its answers may run; None: the sandbox's timeout


def build_repair_set(settings: RepairEvalSettings, tokenizer, answer_form: str, sandbox) -> tuple[list[RepairItem], int]:
    """``(items, left out as too long)``: the mutants, judged once for their feedback, rendered as prompts."""
    from selfdebug.evaluate.mutants import load_mbpp_mutants  # the benchmark builder: only when switched on

    problems = load_mbpp_mutants(split=settings.split, limit=settings.limit, seed=0)
    limits = ({} if settings.timeout_factor is None else
              reference_time_limits(problems, sandbox, settings.timeout_factor, settings.min_timeout))
    verdicts = sandbox.run_batch([(assemble_program(p, p.given_program), p.tests, limits.get(p.task_id))
                                  for p in problems])
    wrong = [(p, v) for p, v in zip(problems, verdicts) if not v.passed]  # a mutant that passes is no repair task
    texts = [render_chat(refine_messages(p, p.given_program, v.feedback, settings.mode, answer_form), tokenizer,
                         add_generation_prompt=True) for p, v in wrong]
    add_special = not getattr(tokenizer, "chat_template", None)  # as selfdebug.train.data renders prompts
    ids = tokenizer(texts, add_special_tokens=add_special)["input_ids"] if texts else []
    items, too_long = [], 0
    for (p, v), prompt in zip(wrong, ids):
        if len(prompt) > settings.max_prompt_length:
            too_long += 1
            continue
        items.append(RepairItem(p, shown_program(p, p.given_program), v.feedback, list(prompt),
                                limits.get(p.task_id)))
    return items, too_long


def judge_answers(items: list[RepairItem], texts: list[str], answer_form: str, sandbox) -> dict:
    """Score answer ``texts`` (one per item): ``pass@1`` (percent repaired), ``applied`` (share giving a
    program) and one row per item. A plain function of text: the unit tests call it without a model."""
    parsed = [parse_answer(text, answer_form, it.wrong_program) for it, text in zip(items, texts, strict=True)]
    programs = [assemble_program(it.problem, p.code) if p.code is not None else None for it, p in zip(items, parsed)]
    verdicts = sandbox.run_batch([(prog, it.problem.tests, it.time_limit) for it, prog in zip(items, programs)])
    n = max(1, len(items))
    return {"pass@1": 100.0 * sum(v.passed for v in verdicts) / n,
            "applied": sum(prog is not None for prog in programs) / n,
            "rows": [{"task_id": it.problem.task_id, "passed": v.passed, "status": v.status, "completion": text}
                     for it, v, text in zip(items, verdicts, texts)]}


def read_rows(path: Path) -> list[dict]:
    """The rows of ``repair_eval.jsonl``, one per step (the last wins), in step order."""
    by_step: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                by_step[int(row["step"])] = row
            except (ValueError, KeyError, TypeError):
                continue
    return [by_step[s] for s in sorted(by_step)]


# ------------------------------------------------------------------------------------------------ callback

class RepairEval(pl.Callback):
    """Greedy repairs of the held-out set at step 0, every ``settings.every`` steps and at ``last_step``.

    ``items`` is the set on the ranks that generate (``None`` on the others); ``sandbox`` judges on rank 0.
    The step is the module's ``ppo_step`` when it has one (RL), else Lightning's ``global_step`` (SFT)."""

    def __init__(self, items: list[RepairItem] | None, tokenizer, run_logger, run_dir: Path,
                 settings: RepairEvalSettings, answer_form: str, last_step: int, sandbox=None, stage: str = "sft",
                 own_sandbox: bool = False):
        self.items, self.tokenizer, self.run_logger = items, tokenizer, run_logger
        self.settings, self.answer_form, self.last_step = settings, answer_form, int(last_step)
        self.sandbox, self.stage, self.own_sandbox = sandbox, stage, own_sandbox
        self.path = Path(run_dir) / FILE
        self.done = {row["step"] for row in read_rows(self.path)}  # resumed: steps already written stay

    @staticmethod
    def step_of(trainer, pl_module) -> int:
        return int(getattr(pl_module, "ppo_step", trainer.global_step))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.own_sandbox and self.sandbox is not None:
            self.sandbox.close()

    def on_train_start(self, trainer, pl_module) -> None:
        if self.step_of(trainer, pl_module) == 0:
            self.evaluate(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = self.step_of(trainer, pl_module)
        if step % self.settings.every == 0 or step == self.last_step:
            self.evaluate(trainer, pl_module, step)

    def evaluate(self, trainer, pl_module, step: int) -> None:
        if self.items is None or step in self.done:
            return
        start = time.perf_counter()
        model = pl_module.policy if hasattr(pl_module, "policy") else pl_module.model  # RL: the policy
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), generation_context(trainer):
                texts = self.generate(model, pl_module)
        finally:
            model.train(was_training)
        self.done.add(step)
        if not trainer.is_global_zero:
            return
        scored = judge_answers(self.items, texts, self.answer_form, self.sandbox)
        metrics = {"repair/pass@1": scored["pass@1"], "repair/applied": scored["applied"],
                   "repair/problems": len(self.items)}
        self.run_logger.log(metrics, step=step)
        row = {"step": step, "stage": self.stage, **metrics, "answer_form": self.answer_form,
               "mode": self.settings.mode, "split": self.settings.split,
               "seconds": round(time.perf_counter() - start, 2),
               "repaired": [r["task_id"] for r in scored["rows"] if r["passed"]],
               "examples": scored["rows"][:3]}
        # The whole file rewritten under a temporary name: a kill never leaves half a row, and a step is
        # written once however often the run resumes.
        rows = [r for r in read_rows(self.path) if r["step"] != step] + [row]
        write_jsonl_atomic(self.path, sorted(rows, key=lambda r: r["step"]))
        log.info("repair eval at step %d: pass@1 %.1f%%, applied %.2f (%d programs, %.0f s)", step,
                 scored["pass@1"], scored["applied"], len(self.items), row["seconds"])

    def generate(self, model, pl_module) -> list[str]:
        from selfdebug.train.distributed import generate_kwargs
        from selfdebug.train.model import stop_token_ids

        tok = self.tokenizer
        stop = stop_token_ids(tok, model)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        order = sorted(range(len(self.items)), key=lambda i: len(self.items[i].prompt_ids))  # less padding
        texts: list[str] = [""] * len(self.items)
        for k in range(0, len(order), self.settings.batch_size):
            rows = order[k:k + self.settings.batch_size]
            prompts = [self.items[i].prompt_ids for i in rows]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=pl_module.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=pl_module.device)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=self.settings.max_new_tokens, eos_token_id=stop or None,
                                 pad_token_id=pad, use_cache=True, **generate_kwargs(pl_module, model))
            for row, i in enumerate(rows):
                new = out[row, width:].tolist()
                end = next((j for j, t in enumerate(new) if t in stop), len(new))
                texts[i] = tok.decode(new[:end], skip_special_tokens=True).split(END)[0]
        return texts


def make_repair_eval(settings: RepairEvalSettings, *, tokenizer, answer_form: str, trainer, strategy: str,
                     run_logger, run_dir: Path, last_step: int, sandbox_config, sandbox=None,
                     stage: str = "sft") -> RepairEval | None:
    """The callback for a stage (None when ``every`` is 0); builds the held-out set on the ranks that generate.
    ``sandbox``: the stage's own (RL), else one is opened here and closed with the callback's teardown."""
    if not settings.every:
        return None
    sharded = strategy in ("fsdp", "deepspeed") and trainer.world_size > 1  # every rank must join each forward
    if not (trainer.is_global_zero or sharded):
        return RepairEval(None, tokenizer, None, run_dir, settings, answer_form, last_step, stage=stage)
    own = sandbox is None
    if own:
        from selfdebug.execution import Sandbox

        sandbox = Sandbox(sandbox_config)
    try:
        items, too_long = build_repair_set(settings, tokenizer, answer_form, sandbox)
    except BaseException:
        if own:
            sandbox.close()
        raise
    if not items:
        if own:
            sandbox.close()
        raise ConfigError(f"{stage}.repair_eval: no held-out wrong program is left ({too_long} prompts over "
                          f"{stage}.repair_eval.max_prompt_length = {settings.max_prompt_length}); raise "
                          f"{stage}.repair_eval.limit or max_prompt_length, or set {stage}.repair_eval.every=0")
    log.info("repair eval: %d held-out wrong programs (mbpp_mutants, %d over max_prompt_length left out), "
             "every %d steps", len(items), too_long, settings.every)
    return RepairEval(items, tokenizer, run_logger, run_dir, settings, answer_form, last_step, sandbox, stage,
                      own_sandbox=own)
