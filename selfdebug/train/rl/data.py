"""The RL data: one prompt per wrong program (``RLItem``) and the seeded, resumable stream of each PPO step's
prompts (``PromptStream``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.core.prompts import refine_messages, render_chat
from selfdebug.problems import Problem
from selfdebug.train.data import answer_text, record_problem


@dataclass
class RLItem:
    """One prompt of the RL data: a wrong program with its feedback (and, offline, the teacher's answer)."""

    wrong_id: str
    problem: Problem
    prompt_ids: list[int]
    where: str
    answer: str | None = None  # offline: the teacher's answer text (explanation, then a fenced block)
    explained: bool = True  # offline: the answer carries an explanation (refine-only records do not)


def build_items(trajectories: list[tuple[str, dict]], tokenizer, mode: str, offline: bool,
                max_prompt_length: int) -> tuple[list[RLItem], dict]:
    """The RL prompts from collected ``(where, record)`` trajectories.

    Online: one item per distinct wrong program (``wrong_id``), in the order they first appear. Offline: one
    item per distinct collected answer (correct and wrong verdicts alike). Prompts are rendered exactly as
    evaluation renders them; ones over ``max_prompt_length`` tokens are left out and counted.
    """
    chosen: list[tuple[str, dict]] = []
    seen: set = set()
    for where, rec in trajectories:
        key = (rec["wrong_id"], rec["explanation"], rec["refinement"]) if offline else rec["wrong_id"]
        if key not in seen:
            seen.add(key)
            chosen.append((where, rec))
    add_special = not getattr(tokenizer, "chat_template", None)
    texts = [render_chat(refine_messages(record_problem(rec, where), rec["wrong_code"], rec["feedback"], mode),
                         tokenizer, add_generation_prompt=True) for where, rec in chosen]
    ids = tokenizer(texts, add_special_tokens=add_special)["input_ids"] if texts else []
    items, too_long = [], 0
    for (where, rec), prompt_ids in zip(chosen, ids):
        if len(prompt_ids) > max_prompt_length:
            too_long += 1
            continue
        answer, explained = None, True
        if offline:
            explained = mode == "explain_refine" and bool(rec["explanation"].strip())
            answer = answer_text(rec["refinement"], rec["explanation"] if explained else None)
        items.append(RLItem(str(rec["wrong_id"]), record_problem(rec, where), list(prompt_ids), where, answer,
                            explained))
    return items, {"rl_items": len(items), "rl_prompts_too_long": too_long,
                   "wrong_programs": len({rec["wrong_id"] for _, rec in trajectories})}


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
