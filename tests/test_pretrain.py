"""The pretraining stage on tiny sizes: corpus extraction, decontamination, repair pairs in the chat format
whose answers apply, the packed step stream, and real Trainer runs through the entry point (model/ +
recipe.json, resume after a stop with the same numbers, bad settings stopping the run with exit 2)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from selfdebug.collect.teachers.mutation import canonical
from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import INITIAL_INSTRUCTION, refine_instruction, refine_messages, render_starchat
from selfdebug.train.data import IGNORE_INDEX
from selfdebug.core.answers import ARROW, apply_answer, edit_answer
from selfdebug.train.pretrain.corpus import (
    benchmark_problems,
    decontaminate,
    extract_units,
    files_digest,
    source_files,
    stdlib_dir,
)
from selfdebug.train.pretrain.data import PackedSteps, pack_stream, pack_whole
from selfdebug.train.pretrain.repairs import NO_TESTS_FEEDBACK, corpus_pairs, unit_problem
from selfdebug.train.pretrain.settings import ANSWER_FORMS, PretrainSettings
from selfdebug.train.settings import settings_from
from tests.conftest import REPO

ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
# Stdlib modules of plain functions: enough units for pairs, small enough for a 20-second run.
STDLIB_FILES = ("bisect.py", "heapq.py", "textwrap.py", "fnmatch.py", "shlex.py", "colorsys.py", "statistics.py")

MODULE_A = '''\
import functools


def add(a, b):
    """Add two numbers."""
    total = a + b
    return total


def tiny(x): return x


@functools.lru_cache(maxsize=None)
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


class Box:
    def __init__(self, v):
        self.v = v

    async def get(self):
        return self.v
'''


def write_package(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text(MODULE_A)
    (root / "pkg" / "broken.py").write_text("def f(:\n    pass\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text("def test_add():\n    x = 1\n    assert x == 1\n")
    (root / "site-packages" / "dep").mkdir(parents=True)
    (root / "site-packages" / "dep" / "m.py").write_text("def dep():\n    a = 1\n    return a\n")
    return root


def stdlib_copy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in STDLIB_FILES:
        (folder / name).write_text((stdlib_dir() / name).read_text())
    return folder


# ------------------------------------------------------------------------------------------------ corpus

def test_corpus_extraction_from_a_small_folder(tmp_path):
    root = write_package(tmp_path / "src")
    files = source_files([str(root)])
    assert [str(p.relative_to(r)) for r, p in files] == ["pkg/a.py", "pkg/broken.py"]  # no tests, no site-packages
    units, counts = extract_units(files)
    assert counts == {"files": 2, "unreadable_files": 0, "unparsable_files": 1, "units": 3}
    by_name = {u.name: u for u in units}
    assert sorted(by_name) == ["pkg/a.py::Box", "pkg/a.py::add", "pkg/a.py::fib"]  # `tiny` is one line: dropped
    assert by_name["pkg/a.py::fib"].text.startswith("@functools.lru_cache(maxsize=None)\ndef fib(n):\n")
    assert by_name["pkg/a.py::add"].docstring == "Add two numbers."
    assert by_name["pkg/a.py::Box"].kind == "class"

    # A class over max_chars is cut into its methods, dedented; test folders are read when asked.
    units, _ = extract_units(files, min_lines=2, max_chars=60)
    methods = {u.name: u for u in units if u.kind in ("method", "class")}
    assert sorted(methods) == ["pkg/a.py::Box.__init__", "pkg/a.py::Box.get"]
    assert methods["pkg/a.py::Box.__init__"].text == "def __init__(self, v):\n    self.v = v\n"
    assert methods["pkg/a.py::Box.get"].kind == "method"
    with_tests = source_files([str(root)], include_tests=True)
    assert "tests/test_a.py" in [str(p.relative_to(r)) for r, p in with_tests]

    # The digest follows the content.
    before = files_digest(files)
    (root / "pkg" / "a.py").write_text(MODULE_A.replace("a + b", "b + a"))
    assert files_digest(files) != before


def test_the_default_corpus_is_the_standard_library_without_site_packages():
    files = source_files(None, max_files=50)
    assert all(root == stdlib_dir() for root, _ in files)
    assert not any("site-packages" in p.parts or "test" in p.relative_to(r).parts[:-1] for r, p in files)
    with pytest.raises(ConfigError, match="pretrain.source_dirs: '/nonexistent/dir' is not a folder"):
        source_files(["/nonexistent/dir"])


def test_decontamination_drops_a_planted_evaluation_problem(tmp_path):
    benchmark = benchmark_problems()
    ids = {p.task_id for p in benchmark}
    assert "HumanEval/0" in ids and "MBPP/11" in ids and not any(i.startswith("MBPP/6") and len(i) == 8 for i in ids)
    he0 = next(p for p in benchmark if p.task_id == "HumanEval/0")
    planted = he0.reference.replace("from typing import List\n", "from typing import List  # copied\n")
    root = tmp_path / "src"
    root.mkdir()
    (root / "mod.py").write_text(planted + "\n\n" + MODULE_A.split("import functools\n", 1)[1])
    units, _ = extract_units(source_files([str(root)]))
    assert "mod.py::has_close_elements" in {u.name for u in units}
    kept, matches = decontaminate(units, benchmark)
    assert [m.task_id for m in matches] == ["mod.py::has_close_elements"]
    assert matches[0].benchmark_task_id == "HumanEval/0"
    assert sorted(u.name for u in kept) == ["mod.py::Box", "mod.py::add", "mod.py::fib"]


# ------------------------------------------------------------------------------------------------ repair pairs

@pytest.fixture(scope="module")
def stdlib_units(tmp_path_factory):
    return extract_units(source_files([str(stdlib_copy(tmp_path_factory.mktemp("std")))]))[0]


@pytest.mark.parametrize("mode", ["refine", "explain_refine"])
@pytest.mark.parametrize("form", ANSWER_FORMS)
def test_repair_pairs_render_in_the_chat_format_and_their_answers_apply(stdlib_units, mode, form):
    pairs, counts = corpus_pairs(stdlib_units, 40, seed=0, mode=mode, form=form)
    assert len(pairs) == 40 and counts["pairs"] == 40
    assert len({p.operator for p in pairs}) >= 5
    units = {u.name: u for u in stdlib_units}
    for pair in pairs:
        ex = pair.example
        unit = units[pair.unit]
        # The prompt is the evaluation's refinement turn on this wrong program, rendered as StarChat turns.
        assert ex.messages == refine_messages(unit_problem(unit), pair.wrong, NO_TESTS_FEEDBACK, mode, form)
        rendered = render_starchat(ex.messages)
        assert rendered.startswith(f"<|user|>\n{INITIAL_INSTRUCTION}\n\n")
        assert f"```python\n{pair.wrong.rstrip()}\n```<|end|>\n<|user|>\nExecution feedback:\n" in rendered
        assert rendered.endswith(f"{refine_instruction(mode, form)}<|end|>\n<|assistant|>\n")
        # The answer turns the mutant back into the original function.
        assert pair.wrong != pair.fixed and canonical(pair.fixed) == canonical(unit.text)
        assert apply_answer(pair.wrong, ex.target, form) == pair.fixed
        if form == "line":
            assert all(ARROW in row for row in ex.target.splitlines()[-1:])
        if mode == "explain_refine":
            assert ex.target.split("\n\n")[0].strip() and ex.target.split("\n\n")[0] != ex.target


def test_several_distinct_mutants_per_function_and_alternating_modes(stdlib_units):
    pairs, counts = corpus_pairs(stdlib_units, 60, seed=0, mode="both", form="line", per_function=3)
    assert len(pairs) == 60 and counts["pairs"] == 60
    by_unit: dict[str, list] = {}
    for pair in pairs:
        by_unit.setdefault(pair.unit, []).append(pair)
    assert max(len(v) for v in by_unit.values()) == 3 and len(by_unit) < 60
    for group in by_unit.values():
        assert len({p.wrong for p in group}) == len(group)  # a function's mutants differ
        assert len({p.fixed for p in group}) == 1
    # ``both``: refine-only and explain + refine conversations take turns, so each is half the pairs.
    assert [p.example.kind for p in pairs[:4]] == ["refine", "explain_refine", "refine", "explain_refine"]
    assert sum(p.example.kind == "refine" for p in pairs) == 30
    for pair in pairs:
        assert apply_answer(pair.wrong, pair.example.target, "line") == pair.fixed
    once, _ = corpus_pairs(stdlib_units, 60, seed=0, mode="refine", form="line")
    assert len({p.unit for p in once}) == 60  # the default: one pair per function
    with pytest.raises(ConfigError, match="pretrain.repair_mode"):
        PretrainSettings(repair_mode="alternate")


def test_answer_forms_refuse_what_they_cannot_say():
    wrong = "def f(x):\n    y = 1\n    y = 1\n    return y\n"
    fixed = "def f(x):\n    y = 1\n    y = 2\n    return y\n"
    assert edit_answer(wrong, fixed, "line") is None  # `y = 1` is on two lines: ambiguous
    block = edit_answer(wrong, fixed, "search_replace")
    assert block.count("y = 1") == 3  # context added until the quoted lines are unique
    assert apply_answer(wrong, block, "search_replace") == fixed
    assert apply_answer(wrong, "y = 7 => y = 2", "line") is None
    assert apply_answer(wrong, "no edit here", "search_replace") is None
    dropped = "def f(x):\n    return y\n"
    assert edit_answer(wrong, dropped, "line") is None
    assert apply_answer(wrong, edit_answer(wrong, dropped, "search_replace"), "search_replace") == dropped


# ------------------------------------------------------------------------------------------------ packing

def test_packing_and_the_step_stream_mix_and_resume():
    code = pack_stream([[5, 6, 7], [8, 9]], eos_id=1, seq_len=3)
    assert code.tolist() == [[5, 6, 7], [1, 8, 9]]  # the trailing eos is dropped with the partial row
    docs = [([3, 4], [IGNORE_INDEX, 4]), ([5, 6, 7], [5, 6, 7]), (list(range(10, 20)), list(range(10, 20)))]
    ids, labels, dropped = pack_whole(docs, pad_id=0, seq_len=5, seed=0)
    assert dropped == 1 and ids.shape == (1, 5)
    assert sorted(ids[0, :5].tolist()) == [3, 4, 5, 6, 7] and (labels == IGNORE_INDEX).sum() == 1

    # Best fit: each conversation goes into the open row it fills best, not only into the newest row.
    docs = [([k] * n, [k] * n) for k, n in enumerate([6, 5, 4, 3, 2], start=1)]
    ids, labels, dropped = pack_whole(docs, pad_id=0, seq_len=10, seed=0)
    assert dropped == 0 and ids.shape == (2, 10) and int((ids == 0).sum()) == 0
    assert sorted(sorted(set(row.tolist())) for row in ids) in ([[1, 3], [2, 4, 5]], [[1, 4], [2, 3, 5]])

    code = torch.arange(40 * 4).view(40, 4) + 10
    chat = torch.arange(10 * 4).view(10, 4) + 1000
    kw = {"batch_size": 8, "micro_batch_size": 4, "repair_fraction": 0.25, "total_steps": 12, "pad_id": 0, "seed": 3}
    stream = PackedSteps(code, chat, chat.clone(), **kw)
    step = stream.batch(5)
    rows = torch.cat([mb["input_ids"] for mb in step])
    assert len(step) == 2 and rows.shape == (8, 4) and int((rows >= 1000).all(dim=1).sum()) == 2
    seen = [tuple(r) for s in range(5) for r in torch.cat([mb["input_ids"] for mb in stream.batch(s)]).tolist()
            if r[0] < 1000]
    assert len(set(seen)) == 30  # a pass over the code pool repeats no sequence
    # Resume: a fresh stream told where to start hands out the same steps.
    run = list(stream)
    again = PackedSteps(code, chat, chat.clone(), **kw)
    again.load_state_dict({**stream.state_dict(), "next_step": 7})
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for x, y in zip(run[7:], again) for a, b in zip(x, y))
    with pytest.raises(ConfigError, match="seed"):
        PackedSteps(code, chat, chat.clone(), **{**kw, "seed": 4}).load_state_dict(stream.state_dict())


# ------------------------------------------------------------------------------------------------ settings

@pytest.mark.parametrize(("overrides", "pattern"), [
    ({"answer_form": "diff"}, r"pretrain.answer_form = 'diff'; expected one of \['full', 'line', 'search_replace'\]"),
    ({"repair_mode": "explain"}, r"pretrain.repair_mode = 'explain'"),
    ({"hidden_size": 100, "heads": 3}, r"pretrain.hidden_size = 100 is not divisible by pretrain.heads = 3"),
    ({"repair_fraction": 1.5}, r"pretrain.repair_fraction = 1.5; it must be in \[0, 1\]"),
    ({"batch_size": 10, "micro_batch_size": 4}, r"pretrain.batch_size = 10 is not divisible"),
    ({"vocab_size": 100}, r"pretrain.vocab_size = 100; a byte-level BPE needs at least 300"),
    ({"source_dirs": []}, r"pretrain.source_dirs = \[\]"),
    ({"max_minutes": 0}, r"pretrain.max_minutes = 0"),
    ({"repair_fraction": 0.5, "repair_pairs": 0, "mbpp_train": False}, r"no repair pair would exist"),
    ({"repair_fraction": 0.5, "repair_pairs": 0, "mbpp_repairs": False}, r"pretrain.mbpp_repairs\): no repair pair"),
    ({"seq_length": 5}, r"pretrain.seq_length: no such setting"),
])
def test_bad_settings_name_their_key(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        settings_from(PretrainSettings, overrides, "pretrain")


def test_the_experiment_composes():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+exp=pretrain_mini"])
    assert cfg.stage == "pretrain" and cfg.model.name == "mini"
    s = settings_from(PretrainSettings, cfg.pretrain, "pretrain")
    assert (s.hidden_size, s.layers, s.vocab_size, s.answer_form) == (256, 4, 2048, "line")


# ------------------------------------------------------------------------------------------------ training runs

def tiny_overrides(src: Path) -> list[str]:
    return ["+exp=pretrain_mini", f"pretrain.source_dirs=[{src}]", "pretrain.mbpp_train=false",
            "pretrain.vocab_size=512", "pretrain.hidden_size=32", "pretrain.intermediate_size=64", "pretrain.layers=2",
            "pretrain.heads=2", "pretrain.seq_len=256", "pretrain.batch_size=4", "pretrain.micro_batch_size=2",
            "pretrain.max_steps=3", "pretrain.warmup_steps=1", "pretrain.repair_pairs=60",
            "pretrain.heldout_fraction=0.1", "pretrain.eval_every=2", "pretrain.eval_repairs=2",
            "pretrain.eval_max_new_tokens=8", "pretrain.checkpoint_every=1", "logger=none"]


def train(run_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "selfdebug.train", "stage=pretrain", f"hydra.run.dir={run_dir}", "progress=false",
           "trainer.enable_progress_bar=false", *overrides]
    return subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=env or ENV)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_three_steps_write_model_and_recipe_and_a_stopped_run_resumes_with_equal_numbers(tmp_path):
    src = stdlib_copy(tmp_path / "std")
    full, part = tmp_path / "full", tmp_path / "part"
    proc = train(full, *tiny_overrides(src))
    assert proc.returncode == 0, proc.stderr
    model_dir = full / "model"
    recipe = json.loads((model_dir / "recipe.json").read_text())
    assert recipe["command"].startswith("python -m selfdebug.train stage=pretrain")
    assert recipe["seed"] == 0 and recipe["steps"] == 3 and recipe["tokens_seen"] == 3 * 4 * 256
    assert recipe["data"]["files"] == len(STDLIB_FILES)
    assert recipe["data"]["files_sha256"] == files_digest(source_files([str(src)]))
    assert recipe["data"]["repair_pairs"]["pairs"] == 60 and recipe["data"]["sequences"]["chat_train_ids"] > 0
    for name, digest in recipe["sha256"].items():
        assert hashlib.sha256((model_dir / name).read_bytes()).hexdigest() == digest
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(recipe["sha256"])
    rows = metrics(full)
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3]
    assert any("heldout/answer_loss" in r for r in rows) and (full / "samples.jsonl").exists()

    # Stopped after step 1, then the same command resumes: the same losses and the same weights.
    proc = train(part, *tiny_overrides(src), "pretrain.stop_after=1")
    assert proc.returncode == 0, proc.stderr
    assert "stopped after step 1 of 3" in proc.stdout and not (part / "model").exists()
    proc = train(part, *tiny_overrides(src))
    assert proc.returncode == 0, proc.stderr
    losses = [[r["train/loss"] for r in metrics(d) if "train/loss" in r] for d in (full, part)]
    assert losses[0] == losses[1]
    assert json.loads((part / "model" / "recipe.json").read_text())["sha256"]["model.safetensors"] == \
        recipe["sha256"]["model.safetensors"]
    # A resumed start with other data settings is refused, naming the key.
    (part / "summary.json").unlink()
    proc = train(part, *tiny_overrides(src), "pretrain.answer_form=full")
    assert proc.returncode == 2 and "pretrain.answer_form = 'full', but this run dir's data" in proc.stderr

    # model=mini loads the built model by name; install copies it after checking its sha256.
    from selfdebug.core.models import MINI_ENV, load_causal_lm
    from selfdebug.train.pretrain.install import install

    target = install(model_dir, tmp_path / "mini")
    os.environ[MINI_ENV] = str(target)
    try:
        model, tok = load_causal_lm("mini")
        assert model.config.hidden_size == 32 and len(tok) == model.config.vocab_size
    finally:
        del os.environ[MINI_ENV]
    (target / "config.json").write_text((target / "config.json").read_text() + " ")
    with pytest.raises(ConfigError, match="config.json: missing or changed since training"):
        install(target, tmp_path / "again")


def test_mini_absent_says_how_to_build_it(tmp_path, monkeypatch):
    from selfdebug.core.models import MINI_ENV, load_causal_lm

    monkeypatch.setenv(MINI_ENV, str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match=r"'mini' is not built: .*`python -m selfdebug.train \+exp=pretrain_mini"):
        load_causal_lm("mini")


@pytest.mark.slow
def test_bad_settings_stop_the_entry_point_with_exit_2(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(run_dir, *tiny_overrides(tmp_path), "pretrain.answer_form=diff")
    assert proc.returncode == 2, proc.stderr
    assert "pretrain.answer_form = 'diff'" in proc.stderr and "Traceback" not in proc.stderr
    proc = train(run_dir, *tiny_overrides(tmp_path / "missing"))
    assert proc.returncode == 2 and "pretrain.source_dirs: " in proc.stderr and "is not a folder" in proc.stderr
    assert not (run_dir / "model").exists() and not (run_dir / "metrics.jsonl").exists()
