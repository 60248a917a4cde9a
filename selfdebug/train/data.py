"""Collected records -> chat examples -> token ids with a label mask -> length-bucketed optimizer steps.

The collection stage (``selfdebug.collect``) writes ``<run>/dataset/trajectories/part-*.jsonl`` (a wrong
program, its feedback, a teacher's explanation and refinement, and the judge's verdict on the refinement) and
``<run>/dataset/codegen/part-*.jsonl`` (correct initial programs). Here they become the paper's SFT examples:

- ``refine``: the self-debugging conversation, target = the corrected code only;
- ``explain_refine``: the same conversation, target = the explanation, then the corrected code;
- ``codegen``: the initial prompt, target = a correct program.

Prompts are built with ``selfdebug.core.prompts`` (``initial_messages``, ``refine_messages``, ``render_chat``) and
tokenized the way ``HFGenerator`` tokenizes at evaluation, so training sees exactly the evaluation prompt.
Only the assistant's final turn carries loss: every prompt token -- the user turns and the wrong program in
the chat history -- gets label -100.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from selfdebug.core.answers import edit_answer, shown_program
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.prompts import initial_messages, refine_messages, render_chat
from selfdebug.execution import TestSuite
from selfdebug.problems import Problem, iter_records

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
COMPONENTS = ("explain_refine", "refine", "codegen")

# Fields an SFT record must have, with the JSON types each may take.
_OPTIONAL_STR = (str, type(None))
TRAJECTORY_FIELDS = {"problem_id": str, "source": str, "problem": str, "entry_point": _OPTIONAL_STR,
                     "tests": dict, "wrong_code": str, "feedback": str, "explanation": str, "refinement": str,
                     "verdict": str}
CODEGEN_FIELDS = {"problem_id": str, "source": str, "problem": str, "entry_point": _OPTIONAL_STR, "tests": dict,
                  "code": str}


# ------------------------------------------------------------------------------------------------ records

def find_dataset(path: str | Path) -> Path:
    """The folder holding ``trajectories/`` and ``codegen/``: ``path`` itself or ``path/dataset`` (a run dir)."""
    root = Path(path).expanduser()
    for candidate in (root, root / "dataset"):
        if (candidate / "trajectories").is_dir() or (candidate / "codegen").is_dir():
            return candidate
    hint = ("point dataset.path at a collection's dataset folder; `python -m selfdebug.collect "
            "+exp=collect_quickstart` writes outputs/collect/mbpp_train/tiny-mutation-seed0/dataset")
    if not root.exists():
        raise DataError(f"dataset.path: {str(root)!r} does not exist; {hint}")
    raise DataError(f"dataset.path: {str(root)!r} holds no trajectories/ or codegen/ folder of shards; {hint}")


def read_shards(folder: Path, fields: dict[str, type | tuple], kind: str) -> list[tuple[str, dict]]:
    """``(where, record)`` for every line of ``folder/part-*.jsonl``; ``where`` is ``shard:line``.

    A line that is not a JSON object, a missing field or a field of the wrong type is a ``DataError`` naming
    the shard and the 1-based line.
    """
    rows: list[tuple[str, dict]] = []
    for shard in sorted(folder.glob("part-*.jsonl")):
        for where, rec in iter_records(shard):  # the one JSON-lines reader: bad JSON names shard and line
            for name, types in fields.items():
                if name not in rec:
                    raise DataError(f"{where}: {kind} record is missing field {name!r} (a {kind} record needs "
                                    f"{', '.join(fields)})")
                if not isinstance(rec[name], types):
                    raise DataError(f"{where}: field {name!r} of the {kind} record has type "
                                    f"{type(rec[name]).__name__}")
            if kind == "trajectory" and rec["verdict"] not in ("correct", "wrong"):
                raise DataError(f"{where}: field 'verdict' is {rec['verdict']!r}; expected 'correct' or 'wrong'")
            rows.append((where, rec))
    return rows


def load_records(path: str | Path) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """``(trajectories, codegen)`` records of a collected dataset, each as ``(shard:line, record)``."""
    root = find_dataset(path)
    return (read_shards(root / "trajectories", TRAJECTORY_FIELDS, "trajectory"),
            read_shards(root / "codegen", CODEGEN_FIELDS, "codegen"))


def record_problem(rec: dict, where: str = "") -> Problem:
    """The ``Problem`` a record was collected on, as far as the record tells it.

    Records carry the task text, entry point and tests. ``starter_code`` and ``tests_shown`` are read when a
    record has them; otherwise MBPP problems show their asserts (as ``load_mbpp`` does) and others show none.
    """
    try:
        tests = TestSuite.from_dict(rec["tests"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: field 'tests' is not a test suite ({type(exc).__name__}: {exc})") from None
    shown = rec.get("tests_shown")
    if shown is None:
        shown = tests.asserts if rec["source"] in ("mbpp", "mbpp_sanitized") else ()
    return Problem(task_id=rec["problem_id"], source=rec["source"], prompt=rec["problem"], tests=tests,
                   entry_point=rec.get("entry_point"), starter_code=rec.get("starter_code") or "",
                   tests_shown=tuple(shown))


# ------------------------------------------------------------------------------------------------ examples

def answer_text(code: str, explanation: str | None = None) -> str:
    """An assistant answer in the form ``parse_completion`` reads: optional explanation, then one fenced block."""
    block = f"```python\n{code.rstrip()}\n```"
    return f"{explanation.strip()}\n\n{block}" if explanation and explanation.strip() else block


@dataclass(frozen=True)
class Example:
    """One chat example: the prompt turns (``messages``) and the assistant's final turn (``target``)."""

    kind: str  # one of COMPONENTS
    problem_id: str
    messages: list
    target: str
    where: str = ""


def refinement_target(problem: Problem, rec: dict, form: str, explanation: str | None) -> str | None:
    """The answer a trajectory teaches in answer ``form``: the fix as a whole program (``full``) or as the edit
    from the wrong program the prompt shows to the refinement (None: the form cannot express that edit)."""
    if form == "full":
        return answer_text(rec["refinement"], explanation)
    edit = edit_answer(shown_program(problem, rec["wrong_code"]), shown_program(problem, rec["refinement"]), form)
    if edit is None:
        return None
    return f"{explanation.strip()}\n\n{edit}" if explanation and explanation.strip() else edit


def trajectory_example(where: str, rec: dict, kind: str, form: str = "full") -> Example | None:
    """A trajectory in format ``kind`` ("refine" or "explain_refine") with its fix in answer ``form``; None if
    it lacks an explanation or the form cannot express its fix."""
    if kind == "explain_refine" and not rec["explanation"].strip():
        return None
    problem = record_problem(rec, where)
    target = refinement_target(problem, rec, form, rec["explanation"] if kind == "explain_refine" else None)
    if target is None:
        return None
    messages = refine_messages(problem, rec["wrong_code"], rec["feedback"], kind, form)
    return Example(kind, rec["problem_id"], messages, target, where)


def codegen_example(where: str, rec: dict) -> Example:
    """A correct initial program as a code-generation example (the zero-shot prompt evaluation uses)."""
    return Example("codegen", rec["problem_id"], initial_messages(record_problem(rec, where)),
                   answer_text(rec["code"]), where)


def _weighted(items: list, weight: float, rng: random.Random) -> list:
    """Each item ``floor(weight)`` times plus a random ``frac(weight)`` share of them once more."""
    whole = int(weight)
    extra = round((weight - whole) * len(items))
    return items * whole + (rng.sample(items, extra) if extra else [])


def build_examples(trajectories: list[tuple[str, dict]], codegen: list[tuple[str, dict]], mixture: dict,
                   only_correct: bool = True, dedupe: bool = True, seed: int = 0, answer_form: str = "full"
                   ) -> list[Example]:
    """The SFT mixture. ``mixture`` maps each component to a weight: 1.0 uses every example once, 0.5 a
    random half, 2.0 each twice, 0 none. ``only_correct`` keeps trajectories whose refinement passed every
    test. ``dedupe`` drops repeats of the same (prompt, target) before weighting. ``answer_form``: how
    refinements are written (``selfdebug.core.answers``); a fix the form cannot express is left out."""
    unknown = sorted(set(mixture) - set(COMPONENTS))
    if unknown:
        raise ConfigError(f"dataset.mixture: unknown component(s) {unknown}; expected {list(COMPONENTS)}")
    for name, w in mixture.items():
        if not isinstance(w, (int, float)) or w < 0:
            raise ConfigError(f"dataset.mixture.{name} = {w!r}; it must be a number >= 0")
    if not any(mixture.get(name, 0) for name in COMPONENTS):
        raise ConfigError("dataset.mixture: every weight is 0, so there is nothing to train on")
    kept = [(w, r) for w, r in trajectories if r["verdict"] == "correct" or not only_correct]
    pools: dict[str, list[Example]] = {name: [] for name in COMPONENTS}
    for kind in ("explain_refine", "refine"):
        if mixture.get(kind, 0):
            pools[kind] = [ex for w, r in kept if (ex := trajectory_example(w, r, kind, answer_form)) is not None]
    if mixture.get("codegen", 0):
        pools["codegen"] = [codegen_example(w, r) for w, r in codegen]
    rng = random.Random(seed)
    out: list[Example] = []
    for kind in COMPONENTS:
        pool = pools[kind]
        if dedupe:
            seen, unique = set(), []
            for ex in pool:
                key = (json.dumps(ex.messages), ex.target)
                if key not in seen:
                    seen.add(key)
                    unique.append(ex)
            pool = unique
        out += _weighted(pool, float(mixture.get(kind, 0)), rng)
    return out


def split_heldout(examples: list[Example], n_problems: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """``(train, heldout)``: every example of ``n_problems`` randomly chosen problems is held out."""
    problems = sorted({ex.problem_id for ex in examples})
    if n_problems <= 0:
        return examples, []
    if n_problems >= len(problems):
        raise ConfigError(f"dataset.heldout_problems = {n_problems}, but the dataset has only {len(problems)} "
                          "problem(s): nothing would be left to train on; lower it (0 turns it off)")
    held = set(random.Random(seed).sample(problems, n_problems))
    return ([ex for ex in examples if ex.problem_id not in held], [ex for ex in examples if ex.problem_id in held])


# ------------------------------------------------------------------------------------------------ tokens

@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of prompt + target; the first ``n_prompt`` carry no loss."""

    input_ids: torch.Tensor  # 1-D int64
    n_prompt: int
    kind: str
    problem_id: str

    def __len__(self) -> int:
        return int(self.input_ids.numel())

    def labels(self) -> torch.Tensor:
        labels = self.input_ids.clone()
        labels[: self.n_prompt] = IGNORE_INDEX
        return labels


def render_example(example: Example, tokenizer=None) -> tuple[str, str]:
    """``(prompt, target)`` text: the prompt exactly as evaluation renders it (generation prompt included),
    and the rest of the conversation once the assistant's answer is appended (its end-of-turn marker too)."""
    prompt = render_chat(example.messages, tokenizer, add_generation_prompt=True)
    full = render_chat([*example.messages, {"role": "assistant", "content": example.target}], tokenizer,
                       add_generation_prompt=False)
    if not full.startswith(prompt):
        raise ConfigError("model.name_or_path: the tokenizer's chat template does not render the prompt as a "
                          "prefix of the conversation with the answer, so the answer's tokens cannot be "
                          "separated from the prompt's; use a model whose template does, or remove its template "
                          "to fall back to StarChat turns")
    return prompt, full[len(prompt):]


def tokenize_examples(examples: list[Example], tokenizer, max_length: int | None = None
                      ) -> tuple[list[TokenizedExample], int]:
    """Tokenize prompt and target separately (prompt as ``HFGenerator`` does: the tokenizer's special tokens
    only without a chat template) and concatenate. Examples over ``max_length`` tokens are dropped (a cut
    target would teach unfinished code). Returns ``(tokenized, n_dropped)``."""
    if not examples:
        return [], 0
    add_special = not getattr(tokenizer, "chat_template", None)
    texts = [render_example(ex, tokenizer) for ex in examples]
    prompts = tokenizer([p for p, _ in texts], add_special_tokens=add_special)["input_ids"]
    targets = tokenizer([t for _, t in texts], add_special_tokens=False)["input_ids"]
    out, dropped = [], 0
    for ex, p, t in zip(examples, prompts, targets):
        if max_length is not None and len(p) + len(t) > max_length:
            dropped += 1
            continue
        out.append(TokenizedExample(torch.tensor(p + t, dtype=torch.long), len(p), ex.kind, ex.problem_id))
    return out, dropped


def collate(items: list[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item: ``input_ids``, ``attention_mask``, ``labels`` (-100 on prompt and pad)."""
    width = max(len(x) for x in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x)
        input_ids[i, :n] = x.input_ids
        attention_mask[i, :n] = 1
        labels[i, x.n_prompt:n] = x.input_ids[x.n_prompt:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ------------------------------------------------------------------------------------------------ steps

@dataclass(frozen=True)
class BatchPlan:
    batch_size: int  # examples per optimizer step
    micro_batch_size: int  # examples per forward/backward
    steps_per_epoch: int
    total_steps: int

    @property
    def accumulation(self) -> int:
        return self.batch_size // self.micro_batch_size


def plan_batches(n_examples: int, batch_size: int, micro_batch_size: int, epochs: float,
                 max_steps: int | None = None) -> BatchPlan:
    """How many optimizer steps: ``epochs`` passes over the data (the last partial batch of an epoch is
    dropped so every step has exactly ``batch_size`` examples), or exactly ``max_steps`` if set."""
    if micro_batch_size < 1 or batch_size < 1 or batch_size % micro_batch_size:
        raise ConfigError(f"sft.batch_size = {batch_size} must be a positive multiple of sft.micro_batch_size = "
                          f"{micro_batch_size} (the accumulation steps are batch_size / micro_batch_size)")
    if n_examples < batch_size:
        raise ConfigError(f"sft.batch_size = {batch_size}, but the training set has only {n_examples} examples; "
                          "lower sft.batch_size or add data")
    steps_per_epoch = n_examples // batch_size
    total = int(max_steps) if max_steps is not None else math.ceil(epochs * steps_per_epoch)
    if total < 1:
        raise ConfigError(f"sft.epochs = {epochs} / sft.max_steps = {max_steps} give no optimizer step")
    return BatchPlan(batch_size, micro_batch_size, steps_per_epoch, total)


class StepBatches:
    """The training stream: item ``s`` is optimizer step ``s`` as a list of collated micro-batches.

    Each epoch is a fresh seeded permutation of the examples, cut into ``batch_size`` chunks; a chunk is
    sorted by length before it is split into micro-batches, so each micro-batch holds similar lengths and
    padding stays small (length bucketing within the step; the step's examples do not change).
    It is resumable: ``state_dict`` records the next step, ``load_state_dict`` makes the next pass start
    there. Lightning saves both with its checkpoints (the stream has a length, so Lightning does not
    prefetch, and the count is exactly the steps taken).

    Under data parallelism (``world`` ranks) every rank computes the same global step and keeps micro-batches
    ``rank, rank + world, ...`` of it: the ranks' micro-batches together are exactly the one-process step's,
    neighbours in length go to different ranks (balanced work), and the data order does not depend on the
    number of ranks (a run can resume on another number of devices).
    """

    def __init__(self, examples: list[TokenizedExample], plan: BatchPlan, pad_id: int, seed: int = 0,
                 rank: int = 0, world: int = 1):
        self.examples, self.plan, self.pad_id, self.seed = examples, plan, int(pad_id), int(seed)
        self.rank, self.world = int(rank), int(world)
        if not 0 <= self.rank < self.world or plan.batch_size % (plan.micro_batch_size * self.world):
            raise ConfigError(f"sft.batch_size = {plan.batch_size} must be a multiple of sft.micro_batch_size "
                              f"({plan.micro_batch_size}) x trainer.devices ({self.world})")
        self._start = 0
        self._next = 0
        self._order_cache: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return self.plan.total_steps

    def __iter__(self):
        start, self._start = self._start, 0
        for step in range(start, len(self)):
            self._next = step + 1
            yield self.batch(step)

    def _order(self, epoch: int) -> list[int]:
        if self._order_cache is None or self._order_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order_cache = (epoch, torch.randperm(len(self.examples), generator=g).tolist())
        return self._order_cache[1]

    def step_indices(self, step: int) -> list[int]:
        """The example indices of optimizer step ``step`` (0-based), longest first."""
        epoch, index = divmod(step, self.plan.steps_per_epoch)
        bs = self.plan.batch_size
        ids = self._order(epoch)[index * bs:(index + 1) * bs]
        return sorted(ids, key=lambda i: (-len(self.examples[i]), i))

    def batch(self, step: int) -> list[dict[str, torch.Tensor]]:
        """This rank's collated micro-batches of step ``step``."""
        ids, mb = self.step_indices(step), self.plan.micro_batch_size
        chunks = [ids[j:j + mb] for j in range(0, len(ids), mb)]
        return [collate([self.examples[i] for i in chunk], self.pad_id) for chunk in chunks[self.rank::self.world]]

    def state_dict(self) -> dict:
        return {"next_step": self._next, "n_examples": len(self.examples), "seed": self.seed,
                "batch_size": self.plan.batch_size}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n_examples": len(self.examples), "seed": self.seed, "batch_size": self.plan.batch_size}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ConfigError(f"the checkpoint was written for another data stream ({theirs}); this run has "
                              f"{mine}. Resume with the same dataset, seed and sft.batch_size, or start a new "
                              "run dir")
        self._start = self._next = int(state["next_step"])
