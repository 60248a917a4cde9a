"""LLM-as-judge scoring of bug explanations (the paper's RQ4), as plain functions (no Hydra, no Trainer).

A judge model reads the problem, the wrong program, its execution feedback and one explanation, and
answers with a JSON object ``{"correctness": n, "helpfulness": n}`` (integers 1..5) following the rubric in
``conf/judge/rubric/``. The reply is parsed strictly: anything else (prose around it, a missing key, 4.5, 7)
is sent back once with the reason; a second bad reply is recorded as ``unparsed`` and counted, never dropped.

Verdicts are appended to a checkpoint file as they come in, so a killed run asks the judge only about the
explanations it has not scored yet. The human rating sheets (``selfdebug.analysis.rate``) show the same rubric.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.generation import GenerationRequest, Generator, SamplingParams
from selfdebug.problems import Problem
from selfdebug.core.prompts import assemble_program

log = logging.getLogger(__name__)

AXES = ("correctness", "helpfulness")
SCORES = (1, 2, 3, 4, 5)
ANCHORS = (1, 3, 5)
PLACEHOLDERS = ("problem", "code", "feedback", "explanation", "rubric")
_FIELD = re.compile(r"\{(problem|code|feedback|explanation|rubric|reason)\}")


# ------------------------------------------------------------------------------------------------ rubric

@dataclass(frozen=True)
class Rubric:
    """The judge's instructions: two axes with their 1/3/5 anchors, a system turn, a user template and the
    message that sends a bad reply back. Templates use ``{problem}``, ``{code}``, ``{feedback}``,
    ``{explanation}``, ``{rubric}`` (the axes and anchors) and, in ``retry``, ``{reason}``."""

    name: str
    axes: dict  # axis -> {"question": str, "anchors": {1: str, 3: str, 5: str}}
    system: str
    user: str
    retry: str

    @classmethod
    def from_dict(cls, d: dict, where: str = "judge.rubric") -> Rubric:
        missing = [k for k in ("name", "axes", "system", "user", "retry") if not d.get(k)]
        if missing:
            raise ConfigError(f"{where}: missing {missing}; a rubric needs name, axes, system, user and retry")
        axes = d["axes"]
        if set(axes) != set(AXES):
            raise ConfigError(f"{where}.axes: expected exactly {list(AXES)}, got {sorted(axes)}")
        clean = {}
        for axis in AXES:
            spec = axes[axis] or {}
            anchors = {int(k): str(v) for k, v in (spec.get("anchors") or {}).items()}
            if sorted(anchors) != list(ANCHORS) or not all(v.strip() for v in anchors.values()):
                raise ConfigError(f"{where}.axes.{axis}.anchors: give the text of scores 1, 3 and 5, "
                                  f"got scores {sorted(anchors)}")
            if not str(spec.get("question") or "").strip():
                raise ConfigError(f"{where}.axes.{axis}.question: say what the axis asks")
            clean[axis] = {"question": str(spec["question"]).strip(), "anchors": anchors}
        absent = [p for p in PLACEHOLDERS if "{" + p + "}" not in d["user"]]
        if absent:
            raise ConfigError(f"{where}.user: the template lacks {['{' + p + '}' for p in absent]}")
        if "{reason}" not in d["retry"]:
            raise ConfigError(f"{where}.retry: the template lacks {{reason}} (why the reply was refused)")
        return cls(name=str(d["name"]), axes=clean, system=str(d["system"]).strip(), user=str(d["user"]),
                   retry=str(d["retry"]).strip())

    def rubric_text(self) -> str:
        parts = []
        for axis in AXES:
            spec = self.axes[axis]
            lines = [f"{axis.capitalize()} (1-5): {spec['question']}"]
            lines += [f"  {k} = {spec['anchors'][k]}" for k in ANCHORS]
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n\n2 and 4 lie between their neighbouring anchors."

    def fingerprint(self) -> str:
        blob = json.dumps([self.name, self.axes, self.system, self.user, self.retry], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def messages(self, item: dict) -> list[dict]:
        values = {k: item[k] for k in ("problem", "code", "feedback", "explanation")}
        values["rubric"] = self.rubric_text()
        # One pass: text inside an explanation that looks like a placeholder is left alone.
        user = _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), self.user).strip()
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def retry_messages(self, item: dict, reply: str, reason: str) -> list[dict]:
        note = _FIELD.sub(lambda m: reason if m.group(1) == "reason" else m.group(0), self.retry)
        return self.messages(item) + [{"role": "assistant", "content": reply}, {"role": "user", "content": note}]


def parse_scores(text: str) -> tuple[dict | None, str | None]:
    """``({"correctness": c, "helpfulness": h}, None)`` for a valid reply, else ``(None, reason)``.

    Valid: a JSON object with exactly those two keys, each an integer 1..5, alone in the reply (one
    surrounding ```json fence is tolerated, as chat models add it unasked)."""
    s = text.strip()
    fenced = re.fullmatch(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```", s, re.DOTALL | re.IGNORECASE)
    if fenced:
        s = fenced.group(1).strip()
    if not s:
        return None, "the reply is empty"
    try:
        obj = json.loads(s)
    except ValueError:
        return None, "the reply is not a JSON object alone"
    if not isinstance(obj, dict):
        return None, "the reply is JSON but not an object"
    if set(obj) != set(AXES):
        return None, f"the object must have exactly the keys {list(AXES)}, it has {sorted(obj)}"
    scores = {}
    for axis in AXES:
        v = obj[axis]
        if isinstance(v, bool) or not isinstance(v, int):
            return None, f"{axis} = {json.dumps(v)} is not an integer"
        if v not in SCORES:
            return None, f"{axis} = {v} is outside 1..5"
        scores[axis] = v
    return scores, None


# ------------------------------------------------------------------------------------------------ items

def problem_statement(problem: Problem) -> str:
    """The task as a reader needs it: the statement (HumanEval: signature and docstring) and shown tests."""
    parts = [problem.prompt.strip() or problem.starter_code.strip()]
    if problem.tests_shown:
        parts.append("Tests:\n" + "\n".join(t.strip() for t in problem.tests_shown))
    return "\n\n".join(p for p in parts if p)


def wrong_program(problem: Problem, row: dict) -> str:
    """The wrong program exactly as the refinement prompt showed it (``prompts.refine_messages``)."""
    return assemble_program(problem, row["code"] or row["completion"]).rstrip()


def item_key(row: dict) -> str:
    return f"{row['task_id']}|{row['round']}|{row['sample_index']}"


def explanation_items(rows: list[dict], problems_by_id: dict[str, Problem], rounds=None) -> tuple[list[dict], int]:
    """(items, explanations that are empty): one item per refinement row with an explanation, holding what
    the refining model saw (problem, the previous round's wrong program and its feedback) and what it said."""
    previous = {(r["task_id"], r["round"], r["sample_index"]): r for r in rows}
    items, empty = [], 0
    for row in rows:
        if row["round"] < 1 or (rounds is not None and row["round"] not in rounds):
            continue
        if not (row.get("explanation") or "").strip():
            empty += 1
            continue
        prev = previous.get((row["task_id"], row["round"] - 1, row["sample_index"]))
        if prev is None:
            raise DataError(f"sample {item_key(row)} (task|round|sample): no row of round {row['round'] - 1} "
                            "holds the wrong program it explains")
        problem = problems_by_id[row["task_id"]]
        items.append({"key": item_key(row), "task_id": row["task_id"], "round": row["round"],
                      "sample_index": row["sample_index"], "problem": problem_statement(problem),
                      "code": wrong_program(problem, prev), "feedback": prev["feedback"].strip() or "(no feedback)",
                      "explanation": row["explanation"].strip()})
    return items, empty


# ------------------------------------------------------------------------------------------------ scoring

@dataclass
class JudgeSettings:
    sampling: SamplingParams  # the paper's judge ran greedy; temperature 0 keeps scores repeatable
    rounds: tuple[int, ...] | None = None  # None: explanations of every round; (1,): of the initial code only
    max_items: int | None = None  # None: all; else a seeded sample of this many
    chunk_size: int = 64  # verdicts reach the checkpoint after each chunk
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling.n != 1:
            raise ConfigError(f"judge.sampling.n = {self.sampling.n}; the judge gives one verdict per explanation")
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError(f"judge.max_items = {self.max_items}; a positive number, or null for all")
        if self.chunk_size < 1:
            raise ConfigError(f"judge.chunk_size = {self.chunk_size}; it must be at least 1")
        if self.rounds is not None and any(r < 1 for r in self.rounds):
            raise ConfigError(f"judge.rounds = {list(self.rounds)}; explanations start at round 1")


def _read_checkpoint(path: Path) -> dict[str, dict]:
    """Verdicts already given; a last line cut short by a kill is ignored (its item is asked again)."""
    done = {}
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            try:
                v = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:
                    continue
                raise ConfigError(f"{path}:{i + 1}: not a JSON line; delete the file to score again") from None
            done[v["key"]] = v
    return done


def score_explanations(items: list[dict], generator: Generator, rubric: Rubric, settings: JudgeSettings,
                       checkpoint: Path | None = None, progress: bool = True) -> dict[str, dict]:
    """key -> verdict ``{"status": "ok", "correctness", "helpfulness", "attempts"}`` or
    ``{"status": "unparsed", "reason", "reply", "attempts": 2}``."""
    done = _read_checkpoint(checkpoint) if checkpoint is not None else {}
    todo = [it for it in items if it["key"] not in done]
    if done:
        log.info("judge: %d verdicts resumed from %s, %d to ask", len(items) - len(todo), checkpoint, len(todo))
    params = replace(settings.sampling, n=1, seed=settings.seed)
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), settings.chunk_size):
        chunk = todo[start:start + settings.chunk_size]
        replies = _ask(generator, [rubric.messages(it) for it in chunk], params)
        verdicts, retry = {}, []
        for it, reply in zip(chunk, replies):
            scores, reason = parse_scores(reply)
            if scores is not None:
                verdicts[it["key"]] = {"key": it["key"], "status": "ok", **scores, "attempts": 1}
            else:
                retry.append((it, reply, reason))
        if retry:
            again = _ask(generator, [rubric.retry_messages(it, reply, reason) for it, reply, reason in retry], params)
            for (it, _, _), reply in zip(retry, again):
                scores, reason = parse_scores(reply)
                verdicts[it["key"]] = ({"key": it["key"], "status": "ok", **scores, "attempts": 2} if scores else
                                       {"key": it["key"], "status": "unparsed", "reason": reason,
                                        "reply": reply[:2000], "attempts": 2})
        if checkpoint is not None:
            with open(checkpoint, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(verdicts[it["key"]]) + "\n" for it in chunk)
        done.update(verdicts)
        if progress:
            log.info("judge: %d / %d explanations scored", len(items) - len(todo) + start + len(chunk), len(items))
    return {it["key"]: done[it["key"]] for it in items}


def _ask(generator: Generator, conversations: list[list[dict]], params: SamplingParams) -> list[str]:
    out = generator.generate([GenerationRequest(m) for m in conversations], params)
    if len(out) != len(conversations) or any(len(texts) != 1 for texts in out):
        raise RuntimeError(f"judge {generator.name} returned {len(out)} answers for {len(conversations)} requests")
    return [texts[0] for texts in out]


def select_items(items: list[dict], settings: JudgeSettings) -> list[dict]:
    if settings.max_items is None or settings.max_items >= len(items):
        return items
    chosen = set(random.Random(settings.seed).sample(range(len(items)), settings.max_items))
    return [it for i, it in enumerate(items) if i in chosen]


def judge_rows(rows: list[dict], problems: list[Problem], generator: Generator, rubric: Rubric,
               settings: JudgeSettings, checkpoint_dir: Path | None = None, progress: bool = True) -> dict:
    """Scores the explanations among an evaluation's ``rows`` and stores each verdict in its row as
    ``row["judge"]``; returns the counts the summary needs."""
    by_id = {p.task_id: p for p in problems}
    items, empty = explanation_items(rows, by_id, settings.rounds)
    chosen = select_items(items, settings)
    fingerprint = hashlib.sha256(json.dumps([generator.name, rubric.fingerprint(), repr(settings.sampling)])
                                 .encode()).hexdigest()[:12]
    # One file per judge set-up: another judge or rubric on the same run dir starts its own.
    checkpoint = checkpoint_dir / f"judge-{fingerprint}.jsonl" if checkpoint_dir is not None else None
    verdicts = score_explanations(chosen, generator, rubric, settings, checkpoint, progress)
    for row in rows:
        v = verdicts.get(item_key(row))
        if v is not None:
            row["judge"] = {k: v[k] for k in v if k != "key"}
    return {"judge": generator.name, "rubric": rubric.name, "explanations": len(items),
            "empty_explanations": empty, "asked": len(chosen)}


# ------------------------------------------------------------------------------------------------ summary

def mean_ci(values, groups=None, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean with a percentile bootstrap interval; with ``groups``, whole groups are resampled (explanations
    of one problem are not independent of each other)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    keys = list(groups) if groups is not None else list(range(values.size))
    index = {g: i for i, g in enumerate(dict.fromkeys(keys))}
    g = np.array([index[k] for k in keys])
    sums, counts = np.bincount(g, weights=values), np.bincount(g).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(index), size=(n_resamples, len(index)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    tail = (1.0 - confidence) / 2
    return {"mean": float(values.mean()), "ci_low": float(np.quantile(means, tail)),
            "ci_high": float(np.quantile(means, 1 - tail)), "n": int(values.size)}


def summarize_judge(rows: list[dict], info: dict, n_resamples: int = 1000, confidence: float = 0.95,
                    seed: int = 0) -> dict:
    """Means with bootstrap intervals (over problems), per axis, overall and per round; unparsed counted."""
    judged = [r for r in rows if r.get("judge")]
    ok = [r for r in judged if r["judge"]["status"] == "ok"]

    def axes(subset):
        return {axis: mean_ci([r["judge"][axis] for r in subset], [r["task_id"] for r in subset], n_resamples,
                              confidence, seed) for axis in AXES}

    by_round = []
    for rnd in sorted({r["round"] for r in judged}):
        these = [r for r in judged if r["round"] == rnd]
        good = [r for r in these if r["judge"]["status"] == "ok"]
        by_round.append({"round": rnd, "scored": len(good), "judge_unparsed": len(these) - len(good), **axes(good)})
    return {**info, "scored": len(ok), "judge_unparsed": len(judged) - len(ok),
            "retried": sum(1 for r in judged if r["judge"]["attempts"] > 1), **axes(ok), "by_round": by_round}
