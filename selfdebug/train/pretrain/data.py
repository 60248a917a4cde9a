"""Token data of the pretraining stage: the tokenizer, packed sequences, the held-out split and the step stream.

Two pools of fixed-length sequences (``seq_len`` tokens):

- ``code``: every unit's text, each followed by the end-of-text token, concatenated and cut into sequences
  (units run across sequence boundaries, as in GPT pretraining; the last partial sequence is dropped);
- ``chat``: repair pairs and MBPP code-generation examples, rendered like SFT's examples and packed whole
  (best fit, in a seeded order; a conversation longer than ``seq_len`` is dropped), padded at the end. Pad
  positions carry no loss, nor the prompt's when ``prompt_loss`` is false.

``PackedSteps`` hands out each optimizer step: ``round(batch_size * repair_fraction)`` chat sequences and the
rest code sequences, each pool read in a fresh seeded permutation per pass. Step ``s``'s batch is a function
of (seed, s) alone, so a resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import random

import torch

from selfdebug.core.errors import ConfigError
from selfdebug.train.data import IGNORE_INDEX, Example, render_example


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def pack_stream(docs: list[list[int]], eos_id: int, seq_len: int) -> torch.Tensor:
    """``[n, seq_len]``: the documents, each ended by ``eos_id``, concatenated and cut."""
    flat = [t for doc in docs for t in (*doc, eos_id)]
    n = len(flat) // seq_len
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)


def chat_tokens(examples: list[Example], tokenizer, prompt_loss: bool) -> list[tuple[list[int], list[int]]]:
    """``(ids, labels)`` of each conversation: the prompt as evaluation renders it, then the answer and its
    end-of-turn marker; the prompt's labels are IGNORE_INDEX unless ``prompt_loss``."""
    texts = [render_example(ex) for ex in examples]
    prompts, answers = encode(tokenizer, [p for p, _ in texts]), encode(tokenizer, [a for _, a in texts])
    out = []
    for p, a in zip(prompts, answers):
        labels = (p if prompt_loss else [IGNORE_INDEX] * len(p)) + a
        out.append((p + a, labels))
    return out


def pack_whole(docs: list[tuple[list[int], list[int]]], pad_id: int, seq_len: int, seed: int
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(ids, labels, dropped)``: conversations packed whole into ``[n, seq_len]`` rows, padded with ``pad_id``
    (label IGNORE_INDEX); longer ones are dropped and counted. Each conversation, in a seeded order, goes into
    the open row it fills best (best fit): on the mini recipe's chats 7.1% of positions are padding, where
    filling only the newest row left a quarter empty."""
    order = random.Random(seed).sample(range(len(docs)), len(docs))
    rows: list[tuple[list[int], list[int]]] = []
    by_room: dict[int, list[int]] = {}  # free positions -> rows with that much room, oldest first
    dropped = 0
    for i in order:
        ids, labels = docs[i]
        if len(ids) > seq_len:
            dropped += 1
            continue
        room = next((r for r in range(len(ids), seq_len) if by_room.get(r)), None)
        if room is None:
            rows.append(([], []))
            row = len(rows) - 1
        else:
            row = by_room[room].pop(0)
        rows[row][0].extend(ids)
        rows[row][1].extend(labels)
        by_room.setdefault(seq_len - len(rows[row][0]), []).append(row)
    ids_t = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    labels_t = torch.full((len(rows), seq_len), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, labels) in enumerate(rows):
        ids_t[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels_t[r, : len(labels)] = torch.tensor(labels, dtype=torch.long)
    return ids_t, labels_t, dropped


def micro_batch(ids: torch.Tensor, labels: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """What ``selfdebug.train.sft.module.accumulate`` reads: pads are masked out of attention and loss."""
    mask = (labels != IGNORE_INDEX) | (ids != pad_id)
    return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}


class PackedSteps:
    """The training stream: item ``s`` is optimizer step ``s`` as a list of micro-batches (see the module
    docstring). Resumable like ``selfdebug.train.data.StepBatches``: Lightning saves ``state_dict`` with its
    checkpoints and the next pass starts at the saved step. Under data parallelism each rank keeps
    micro-batches ``rank, rank + world, ...`` of the step."""

    def __init__(self, code: torch.Tensor, chat_ids: torch.Tensor, chat_labels: torch.Tensor, *, batch_size: int,
                 micro_batch_size: int, repair_fraction: float, total_steps: int, pad_id: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.code, self.chat_ids, self.chat_labels = code, chat_ids, chat_labels
        self.batch_size, self.micro = int(batch_size), int(micro_batch_size)
        self.n_chat = round(self.batch_size * repair_fraction) if len(chat_ids) else 0
        self.n_code = self.batch_size - self.n_chat
        if self.n_code and not len(code):
            raise ConfigError(f"pretrain.seq_len = {code.size(1) if code.dim() == 2 else '?'}: the corpus gives no "
                              "full code sequence; lower seq_len or add source files")
        self.total_steps, self.pad_id, self.seed = int(total_steps), int(pad_id), int(seed)
        self.rank, self.world = int(rank), int(world)
        self._start = self._next = 0
        self._perms: dict[tuple[str, int], list[int]] = {}

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self):
        start, self._start = self._start, 0
        for step in range(start, len(self)):
            self._next = step + 1
            yield self.batch(step)

    def _take(self, pool: str, size: int, step: int, k: int) -> list[int]:
        out = []
        for pos in range(step * k, (step + 1) * k):
            epoch, i = divmod(pos, size)
            if (pool, epoch) not in self._perms:
                self._perms = {key: v for key, v in self._perms.items() if key[0] != pool}  # keep one per pool
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2 + (pool == "chat"))
                self._perms[(pool, epoch)] = torch.randperm(size, generator=g).tolist()
            out.append(self._perms[(pool, epoch)][i])
        return out

    def batch(self, step: int) -> list[dict[str, torch.Tensor]]:
        rows_ids, rows_labels = [], []
        if self.n_code:
            idx = self._take("code", len(self.code), step, self.n_code)
            rows_ids.append(self.code[idx])
            rows_labels.append(self.code[idx])
        if self.n_chat:
            idx = self._take("chat", len(self.chat_ids), step, self.n_chat)
            rows_ids.append(self.chat_ids[idx])
            rows_labels.append(self.chat_labels[idx])
        ids, labels = torch.cat(rows_ids), torch.cat(rows_labels)
        chunks = [(ids[j:j + self.micro], labels[j:j + self.micro]) for j in range(0, len(ids), self.micro)]
        return [micro_batch(i, lab, self.pad_id) for i, lab in chunks[self.rank::self.world]]

    def state_dict(self) -> dict:
        return {"next_step": self._next, "seed": self.seed, "batch_size": self.batch_size,
                "code_sequences": len(self.code), "chat_sequences": len(self.chat_ids)}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "batch_size", "code_sequences", "chat_sequences"):
            if state.get(key) != mine[key]:
                raise ConfigError(f"resume: the checkpoint was trained with {key} = {state.get(key)}, this run has "
                                  f"{mine[key]}; resume with the same settings and data, or set resume=null")
        self._start = self._next = int(state["next_step"])
