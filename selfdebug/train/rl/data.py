"""The RL data: one prompt per wrong program (``RLItem``) and the seeded, resumable stream of each PPO step's
prompts (``PromptStream``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from selfdebug.core.answers import shown_program
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.prompts import MODES, refine_messages, render_chat
from selfdebug.problems import Problem
from selfdebug.train.data import record_problem, refinement_target


@dataclass
class RLItem:
    """One prompt of the RL data: a wrong program with its feedback (and, offline, the teacher's answer)."""

    wrong_id: str
    problem: Problem
    prompt_ids: list[int]
    where: str
    answer: str | None = None  # offline: the teacher's answer text (explanation, then a fenced block)
    explained: bool = True  # the response is read for an explanation (offline: the answer carries one)
    mode: str = "explain_refine"  # the instruction format of this prompt (refine or explain_refine)
    answer_form: str = "full"  # how the response writes its fix (selfdebug.core.answers)
    wrong_program: str = ""  # the wrong program as the prompt shows it: an edit-form answer applies to it


def assign_modes(keys: list[str], mode: str, seed: int) -> dict[str, str]:
    """The instruction format of each wrong program. ``mixed``: a seeded shuffle of the distinct ``keys``, the
    first half (rounded up) ``explain_refine`` and the rest ``refine``, so both formats hold half the prompts and
    a wrong program keeps its format for the whole run (and across resumes)."""
    distinct = list(dict.fromkeys(keys))
    if mode != "mixed":
        return dict.fromkeys(distinct, mode)
    order = sorted(distinct)  # independent of the records' order
    random.Random(f"rl-mode-{seed}").shuffle(order)
    half = (len(order) + 1) // 2
    return {key: ("explain_refine" if k < half else "refine") for k, key in enumerate(order)}


def select_trajectories(trajectories: list[tuple[str, dict]], sources: list[str] | None,
                        references: set[str] | None) -> tuple[list[tuple[str, dict]], dict]:
    """The records whose wrong programs may become RL prompts: those of ``sources`` (None: all) and, when
    ``references`` (the wrong ids with a verified refinement) is given, only wrong programs in it. Returns the
    kept records and the counts of wrong programs dropped, by reason and source."""
    kept, by_source, no_ref = [], {}, {}
    for where, rec in trajectories:
        wid, source = str(rec["wrong_id"]), str(rec.get("source", ""))
        if sources is not None and source not in sources:
            by_source.setdefault(source, set()).add(wid)
        elif references is not None and wid not in references:
            no_ref.setdefault(source, set()).add(wid)
        else:
            kept.append((where, rec))
    counts = {"rl_dropped_source": {k: len(v) for k, v in sorted(by_source.items())},
              "rl_dropped_no_reference": {k: len(v) for k, v in sorted(no_ref.items())}}
    return kept, counts


def build_items(trajectories: list[tuple[str, dict]], tokenizer, mode: str, offline: bool,
                max_prompt_length: int, *, seed: int = 0, sources: list[str] | None = None,
                references: set[str] | None = None, answer_form: str = "full") -> tuple[list[RLItem], dict]:
    """The RL prompts from collected ``(where, record)`` trajectories.

    Only wrong programs of ``sources`` (None: every source) and, when ``references`` is given, with a verified
    refinement are used (see ``select_trajectories``; the drops are counted by reason and source). Online: one
    item per distinct wrong program (``wrong_id``), in the order they first appear. Offline: one item per
    distinct collected answer (correct and wrong verdicts alike). ``mode`` is the instruction format, or
    ``mixed`` (``assign_modes``: half each, seeded). Prompts are rendered exactly as evaluation renders them;
    ones over ``max_prompt_length`` tokens are left out and counted. ``answer_form``: the form the instruction
    asks for and responses are read in (offline: a teacher answer the form cannot express is left out).
    """
    wrong_programs = len({rec["wrong_id"] for _, rec in trajectories})
    trajectories, dropped = select_trajectories(trajectories, sources, references)
    chosen: list[tuple[str, dict]] = []
    seen: set = set()
    for where, rec in trajectories:
        key = (rec["wrong_id"], rec["explanation"], rec["refinement"]) if offline else rec["wrong_id"]
        if key not in seen:
            seen.add(key)
            chosen.append((where, rec))
    modes = assign_modes([str(rec["wrong_id"]) for _, rec in chosen], mode, seed)
    add_special = not getattr(tokenizer, "chat_template", None)
    texts = [render_chat(refine_messages(record_problem(rec, where), rec["wrong_code"], rec["feedback"],
                                         modes[str(rec["wrong_id"])], answer_form), tokenizer,
                         add_generation_prompt=True)
             for where, rec in chosen]
    ids = tokenizer(texts, add_special_tokens=add_special)["input_ids"] if texts else []
    items, too_long, not_expressible = [], 0, 0
    for (where, rec), prompt_ids in zip(chosen, ids):
        if len(prompt_ids) > max_prompt_length:
            too_long += 1
            continue
        item_mode = modes[str(rec["wrong_id"])]
        problem = record_problem(rec, where)
        answer, explained = None, item_mode == "explain_refine"
        if offline:
            explained = explained and bool(rec["explanation"].strip())
            answer = refinement_target(problem, rec, answer_form, rec["explanation"] if explained else None)
            if answer is None:
                not_expressible += 1
                continue
        items.append(RLItem(str(rec["wrong_id"]), problem, list(prompt_ids), where, answer, explained, item_mode,
                            answer_form, shown_program(problem, rec["wrong_code"])))
    by_mode = {m: sum(it.mode == m for it in items) for m in MODES}
    return items, {"rl_items": len(items), "rl_items_by_mode": by_mode, "rl_prompts_too_long": too_long,
                   "answer_form": answer_form, "rl_answers_not_expressible": not_expressible,
                   "wrong_programs": wrong_programs, **dropped}


def draw_prompts(items: list[RLItem], max_prompts: int | None, seed: int) -> list[RLItem]:
    """The items of a seeded draw of ``max_prompts`` distinct wrong programs (None: all items), in their order.
    Offline a wrong program can hold several items (one per collected answer): all of a drawn one's are kept."""
    if max_prompts is None:
        return items
    wrong_ids = sorted({it.wrong_id for it in items})
    if max_prompts > len(wrong_ids):
        raise ConfigError(f"rl.max_prompts = {max_prompts}, but the RL data has {len(wrong_ids)} wrong programs "
                          f"after the filters; lower rl.max_prompts or set it to null for all of them")
    drawn = set(random.Random(f"rl-prompts-{seed}").sample(wrong_ids, max_prompts))
    return [it for it in items if it.wrong_id in drawn]


class PromptStream:
    """The training stream: item ``s`` holds the item indices of PPO step ``s``.

    The items are visited in seeded random order, epoch after epoch, ``per_step`` at a time (an epoch's tail
    continues into the next epoch's order). Resumable like ``selfdebug.train.data.StepBatches``: Lightning saves
    ``state_dict`` with its checkpoints and calls ``load_state_dict`` on resume.
    """

    def __init__(self, n_items: int, per_step: int, total_steps: int, seed: int = 0):
        self.n_items, self.per_step = int(n_items), int(per_step)
        self.total_steps, self.seed = int(total_steps), int(seed)
        self._start = self._next = 0

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self):
        start, self._start = self._start, 0
        for step in range(start, self.total_steps):
            self._next = step + 1
            yield torch.tensor(self.step_items(step), dtype=torch.long)

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_items, generator=g).tolist()

    def step_items(self, step: int) -> list[int]:
        first = step * self.per_step
        out = []
        for k in range(first, first + self.per_step):
            epoch, index = divmod(k, self.n_items)
            out.append(self._order(epoch)[index])
        return out

    def state_dict(self) -> dict:
        return {"next_step": self._next, "n_items": self.n_items, "per_step": self.per_step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n_items": self.n_items, "per_step": self.per_step, "seed": self.seed}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ConfigError(f"the checkpoint was written for another prompt stream ({theirs}); this run has "
                              f"{mine}. Resume with the same dataset, seed and rl.batch_size, or start a new run dir")
        self._start = self._next = int(state["next_step"])


def check_has_wrong_solutions(trajectories: list[tuple[str, dict]], path) -> None:
    if not any((rec.get("wrong_code") or "").strip() for _, rec in trajectories):
        raise DataError(f"dataset.path: {path} holds no wrong solutions (no trajectory record with a wrong_code); "
                        "RL needs wrong programs to explain and fix: collect with a student that makes mistakes, "
                        "or teacher=mutation with mutants_per_problem > 0")
