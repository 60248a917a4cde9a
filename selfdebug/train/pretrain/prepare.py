"""From source folders to the token tensors of one pretraining run, cached in ``<run dir>/data/``.

    prepared = prepare(settings, seed, run_dir / "data", sandbox_config)   # built once, read on resume

Order: source files -> units (``corpus``) -> MBPP train problems (optional) -> decontamination -> held-out
split by unit -> repair pairs (``repairs``) -> tokenizer trained on the training text -> packed sequences
(``data``). The folder is written under a temporary name and renamed, so one that exists is complete; a
resumed run reads it instead of rebuilding (same tokenizer, same sequences, whatever the files are now).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from selfdebug.collect.teachers.mutation import canonical, stable_seed
from selfdebug.core.errors import ConfigError, DataError
from selfdebug.train.data import render_example
from selfdebug.train.pretrain.corpus import (
    Unit,
    benchmark_problems,
    decontaminate,
    extract_units,
    files_digest,
    source_files,
)
from selfdebug.train.pretrain.data import chat_tokens, encode, pack_stream, pack_whole
from selfdebug.train.pretrain.repairs import codegen_examples, corpus_pairs, mbpp_pairs
from selfdebug.train.pretrain.settings import PretrainSettings

log = logging.getLogger("selfdebug.train")

DATA_VERSION = 3  # bump when preparation changes what it writes
# The settings that decide the prepared data (a resumed run must have the same ones).
DATA_KEYS = ("vocab_size", "seq_len", "source_dirs", "include_tests", "max_files", "min_unit_lines", "max_unit_chars",
             "mbpp_train", "mbpp_repairs", "decontaminate", "decontamination_threshold", "heldout_fraction", "repair_pairs",
             "repair_max_lines", "repair_per_function", "repair_mode", "answer_form", "prompt_loss")


def data_settings(settings: PretrainSettings, seed: int) -> dict:
    return {"seed": seed, **{k: getattr(settings, k) for k in DATA_KEYS}}


@dataclass
class Prepared:
    tokenizer: object
    tensors: dict  # code_train, code_heldout, chat_train_ids/labels, chat_heldout_ids/labels
    heldout_repairs: list  # [{"prompt", "wrong", "fixed", "operator", "unit"}] for greedy evaluation
    record: dict  # what recipe.json tells about the data (corpus digest, counts, tokens)


def _heldout(name: str, seed: int, fraction: float) -> bool:
    return stable_seed(seed, name, "heldout") / 2 ** 64 < fraction


def _mbpp_train(settings: PretrainSettings, benchmark: list | None):
    from selfdebug.collect.decontamination import find_contaminated
    from selfdebug.problems import load_mbpp

    problems = [p for p in load_mbpp(split="train", sanitized=False) if p.reference]
    dropped = set()
    if benchmark is not None:
        dropped = {m.task_id for m in find_contaminated(problems, benchmark, settings.decontamination_threshold)}
    return [p for p in problems if p.task_id not in dropped], len(dropped)


def build(settings: PretrainSettings, seed: int, sandbox_config) -> Prepared:
    from selfdebug.core.models import train_tokenizer

    t0 = time.time()
    files = source_files(settings.source_dirs, settings.include_tests, settings.max_files)
    units, counts = extract_units(files, settings.min_unit_lines, settings.max_unit_chars)
    benchmark = benchmark_problems() if settings.decontaminate else None
    matches = []
    if benchmark is not None:
        units, matches = decontaminate(units, benchmark, settings.decontamination_threshold)
    mbpp, mbpp_dropped = _mbpp_train(settings, benchmark) if settings.mbpp_train else ([], 0)
    mbpp_units = [Unit(f"mbpp/{p.task_id}", "function", (canonical(p.reference) or p.reference).rstrip() + "\n",
                       "") for p in mbpp]
    all_units = units + mbpp_units
    if not all_units:
        raise DataError("pretrain.source_dirs: no function or class survived extraction and decontamination")
    held = {u.name for u in all_units if _heldout(u.name, seed, settings.heldout_fraction)}
    log.info("pretrain corpus: %d files, %d units (%d dropped as near evaluation problems), %d MBPP train "
             "problems, %d units held out", len(files), len(units), len(matches), len(mbpp), len(held))

    pairs, pair_counts = corpus_pairs(units, settings.repair_pairs, seed, settings.repair_mode,
                                      settings.answer_form, settings.repair_max_lines,
                                      settings.repair_per_function)
    if mbpp and settings.mbpp_repairs and settings.repair_fraction > 0:
        more, pair_counts["mbpp"] = mbpp_pairs(mbpp, seed, settings.repair_mode, settings.answer_form,
                                               sandbox_config)
        pairs += more
    chats = [p.example for p in pairs] + (codegen_examples(mbpp) if settings.repair_fraction > 0 else [])
    chat_unit = {id(p.example): p.unit for p in pairs} | {id(ex): f"mbpp/{ex.problem_id}" for ex in chats
                                                          if ex.kind == "codegen"}
    train_chats = [ex for ex in chats if chat_unit[id(ex)] not in held]
    held_chats = [ex for ex in chats if chat_unit[id(ex)] in held]
    train_units = [u for u in all_units if u.name not in held]
    held_units = [u for u in all_units if u.name in held]

    # The tokenizer sees the training text only: code, and the chat turns (so prompts' English and the chat
    # tokens get merges of their own).
    tok_text = [u.text for u in train_units] + ["".join(render_example(ex)) for ex in train_chats]
    tokenizer = train_tokenizer(settings.vocab_size, tok_text)
    tokenizer.model_max_length = sys.maxsize  # whole units are encoded, then cut: no length warning
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    code_train = pack_stream(encode(tokenizer, [u.text for u in train_units]), eos, settings.seq_len)
    code_held = pack_stream(encode(tokenizer, [u.text for u in held_units]), eos, settings.seq_len)
    chat_train = pack_whole(chat_tokens(train_chats, tokenizer, settings.prompt_loss), pad, settings.seq_len, seed)
    chat_held = pack_whole(chat_tokens(held_chats, tokenizer, False), pad, settings.seq_len, seed)
    tokenizer.model_max_length = 4 * settings.seq_len  # the model's positions
    if not len(code_train) and not len(chat_train[0]):
        raise DataError(f"pretrain.seq_len = {settings.seq_len}: the corpus fills no training sequence")
    tensors = {"code_train": code_train, "code_heldout": code_held, "chat_train_ids": chat_train[0],
               "chat_train_labels": chat_train[1], "chat_heldout_ids": chat_held[0],
               "chat_heldout_labels": chat_held[1]}
    heldout_repairs = [{"prompt": render_example(p.example)[0], "wrong": p.wrong, "fixed": p.fixed,
                        "operator": p.operator, "unit": p.unit} for p in pairs if p.unit in held]
    record = {
        "version": DATA_VERSION,
        "settings": data_settings(settings, seed),
        "python": sys.version.split()[0],
        "source_dirs": settings.source_dirs or ["<stdlib>"],
        "files": len(files), "files_sha256": files_digest(files),
        "file_list_sha256": _list_digest(files),
        "extraction": counts,
        "decontamination": {"enabled": settings.decontaminate, "dropped_units": len(matches),
                            "dropped_mbpp_train": mbpp_dropped,
                            "matches": [asdict(m) for m in matches]},
        "mbpp_train_problems": len(mbpp),
        "units": {"train": len(train_units), "heldout": len(held_units)},
        "repair_pairs": {**pair_counts, "by_operator": dict(Counter(p.operator for p in pairs).most_common())},
        "chat_examples": {"train": len(train_chats), "heldout": len(held_chats),
                          "dropped_over_seq_len": chat_train[2] + chat_held[2]},
        "sequences": {k: int(v.size(0)) for k, v in tensors.items() if not k.endswith("labels")},
        "tokens": {"code_train": int(code_train.numel()),
                   "chat_train": int((chat_train[1] != -100).sum() + 0),
                   "chat_train_with_pad": int(chat_train[0].numel())},
        "seconds": round(time.time() - t0, 1),
    }
    return Prepared(tokenizer, tensors, heldout_repairs, record)


def _list_digest(files) -> str:
    import hashlib

    return hashlib.sha256("\n".join(str(p.relative_to(r)) for r, p in files).encode()).hexdigest()


def save(prepared: Prepared, folder: Path) -> None:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        prepared.tokenizer.save_pretrained(tmp / "tokenizer")
        torch.save(prepared.tensors, tmp / "tensors.pt")
        (tmp / "heldout_repairs.json").write_text(json.dumps(prepared.heldout_repairs, indent=1) + "\n")
        (tmp / "data.json").write_text(json.dumps(prepared.record, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(folder: Path) -> Prepared:
    from transformers import AutoTokenizer

    folder = Path(folder)
    record = json.loads((folder / "data.json").read_text())
    if record.get("version") != DATA_VERSION:
        raise DataError(f"{folder}: prepared with another data version ({record.get('version')}); delete the folder "
                        "to prepare it again")
    return Prepared(AutoTokenizer.from_pretrained(folder / "tokenizer"),
                    torch.load(folder / "tensors.pt", weights_only=True),
                    json.loads((folder / "heldout_repairs.json").read_text()), record)


def prepare(settings: PretrainSettings, seed: int, folder: Path, sandbox_config) -> Prepared:
    """The run's data: read from ``folder`` if a previous start of this run prepared it, else built and saved."""
    folder = Path(folder)
    if (folder / "data.json").exists():
        log.info("pretrain data: reading %s", folder)
        prepared = load(folder)
        want = json.loads(json.dumps(data_settings(settings, seed)))
        changed = sorted(k for k in want if prepared.record["settings"].get(k) != want[k])
        if changed:
            raise ConfigError(f"pretrain.{changed[0]} = {want[changed[0]]!r}, but this run dir's data ({folder}) was "
                              f"prepared with {prepared.record['settings'].get(changed[0])!r}; resume with the same "
                              "settings, or start a new run dir")
        return prepared
    prepared = build(settings, seed, sandbox_config)
    save(prepared, folder)
    return prepared
