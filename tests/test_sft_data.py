"""SFT data: records -> chat examples -> token ids and label masks -> resumable length-bucketed steps.

``write_sft_dataset`` (also used by test_sft.py) writes a small collection-shaped dataset: short toy problems,
so a training step of the tiny model takes a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfdebug.core.errors import ConfigError, DataError
from selfdebug.train.data import (
    IGNORE_INDEX,
    BatchPlan,
    StepBatches,
    answer_text,
    build_examples,
    collate,
    load_records,
    plan_batches,
    record_problem,
    render_example,
    split_heldout,
    tokenize_examples,
)
from selfdebug.core.prompts import END, initial_messages, parse_completion, refine_messages, render_chat


def write_sft_dataset(folder: Path, n_problems: int = 24, per_wrong: int = 2, shard_size: int = 20) -> Path:
    """A dataset folder like ``selfdebug.collect`` writes: ``trajectories/`` and ``codegen/`` JSONL shards.

    Problem i asks for ``add_i(x) = x + i``; the wrong program subtracts. Each wrong program has ``per_wrong``
    teacher samples with different explanations and the same refinement; every fifth sample is judged wrong.
    """
    folder = Path(folder)
    trajectories, codegen = [], []
    for i in range(n_problems):
        name = f"add_{i}"
        base = {"problem_id": f"Toy/{i}", "source": "toy", "problem": f"Write a function {name}(x) that adds {i} to x.",
                "entry_point": name,
                "tests": {"kind": "assert", "asserts": [f"assert {name}(1) == {1 + i}", f"assert {name}(2) == {2 + i}"],
                          "setup": "", "stdio": []}}
        right = f"def {name}(x):\n    return x + {i}\n"
        wrong = f"def {name}(x):\n    return x - {i}\n"
        for j in range(per_wrong):
            trajectories.append({
                "id": f"t{i}-{j}", **base, "wrong_id": f"w{i}", "wrong_code": wrong, "wrong_origin": "mutation",
                "feedback": f"Failed test: assert {name}(1) == {1 + i}\nActual output: {1 - i}",
                "wrong_status": "failed", "wrong_n_passed": 0,
                "explanation": f"The code subtracts {i} from x instead of adding it." if j % 2 == 0 else
                               f"`{name}` uses - where the task asks for +.",
                "refinement": right, "verdict": "wrong" if (i * per_wrong + j) % 5 == 4 else "correct",
                "status": "passed", "n_passed": 2, "n_tests": 2, "teacher": "toy", "teacher_model": "toy",
                "sample_index": j, "sampling": {}, "mutation": None})
        codegen.append({"id": f"c{i}", **base, "code": right, "n_passed": 2, "n_tests": 2, "model": "toy",
                        "sampling": {}})
    for sub, rows in (("trajectories", trajectories), ("codegen", codegen)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        parts = [rows[k:k + shard_size] for k in range(0, len(rows), shard_size)] or [[]]
        for k, part in enumerate(parts):
            with open(folder / sub / f"part-{k:05d}-of-{len(parts):05d}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in part)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_sft_dataset(tmp_path_factory.mktemp("sft-data") / "dataset")


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    return tiny_lm[1]


ALL = {"explain_refine": 1.0, "refine": 1.0, "codegen": 1.0}


# ------------------------------------------------------------------------------------------------ records

def test_records_become_the_papers_formats(dataset):
    traj, codegen = load_records(dataset)
    assert len(traj) == 48 and len(codegen) == 24
    examples = build_examples(traj, codegen, ALL)
    by_kind = {k: [e for e in examples if e.kind == k] for k in ALL}
    n_correct = sum(r["verdict"] == "correct" for _, r in traj)
    assert len(by_kind["explain_refine"]) == n_correct  # distinct explanations: no duplicates
    assert len(by_kind["refine"]) == len({r["problem_id"] for _, r in traj if r["verdict"] == "correct"})  # deduped
    assert len(by_kind["codegen"]) == 24

    ex = by_kind["explain_refine"][0]
    rec = next(r for w, r in traj if w == ex.where)
    problem = record_problem(rec)
    assert ex.messages == refine_messages(problem, rec["wrong_code"], rec["feedback"], "explain_refine")
    parsed = parse_completion(ex.target)
    assert parsed.explanation == rec["explanation"] and parsed.code == rec["refinement"]
    refine = by_kind["refine"][0]
    rec = next(r for w, r in traj if w == refine.where)
    assert refine.messages == refine_messages(record_problem(rec), rec["wrong_code"], rec["feedback"], "refine")
    assert refine.target == answer_text(rec["refinement"]) and refine.target.startswith("```python")
    gen = by_kind["codegen"][0]
    assert gen.messages == initial_messages(record_problem(next(r for w, r in codegen if w == gen.where)))


def test_only_correct_mixture_weights_and_dedupe(dataset):
    traj, codegen = load_records(dataset)
    n_correct = sum(r["verdict"] == "correct" for _, r in traj)
    every = build_examples(traj, codegen, {"explain_refine": 1.0}, only_correct=False)
    assert len(every) == 48
    assert len(build_examples(traj, codegen, {"explain_refine": 2.0})) == 2 * n_correct
    half = build_examples(traj, codegen, {"explain_refine": 0.5}, seed=1)
    assert len(half) == round(0.5 * n_correct)
    assert half == build_examples(traj, codegen, {"explain_refine": 0.5}, seed=1)  # seeded
    assert len(build_examples(traj, codegen, {"refine": 1.0}, dedupe=False)) == n_correct
    with pytest.raises(ConfigError, match="dataset.mixture: unknown"):
        build_examples(traj, codegen, {"explain": 1.0})
    with pytest.raises(ConfigError, match="every weight is 0"):
        build_examples(traj, codegen, {"codegen": 0})


def test_heldout_split_is_by_problem(dataset):
    examples = build_examples(*load_records(dataset), ALL)
    train, held = split_heldout(examples, 5, seed=3)
    held_ids = {e.problem_id for e in held}
    assert len(held_ids) == 5 and not held_ids & {e.problem_id for e in train}
    assert len(train) + len(held) == len(examples)
    with pytest.raises(ConfigError, match="dataset.heldout_problems"):
        split_heldout(examples, 24)


@pytest.mark.parametrize("problem", [
    ("missing", "explanation"), ("bad_json", None), ("bad_verdict", None), ("bad_type", "tests")])
def test_bad_records_name_the_shard_and_line(tmp_path, problem):
    kind, field = problem
    folder = write_sft_dataset(tmp_path / "d", n_problems=12)  # 24 trajectories: shards of 20 and 4
    shard = folder / "trajectories" / "part-00001-of-00002.jsonl"
    lines = shard.read_text().splitlines()
    rec = json.loads(lines[2])
    if kind == "missing":
        del rec[field]
        lines[2] = json.dumps(rec)
    elif kind == "bad_json":
        lines[2] = lines[2][:-5]
    elif kind == "bad_verdict":
        rec["verdict"] = "maybe"
        lines[2] = json.dumps(rec)
    else:
        rec[field] = "assert True"
        lines[2] = json.dumps(rec)
    shard.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"part-00001-of-00002\.jsonl:3: ") as err:
        load_records(folder)
    if field:
        assert repr(field) in str(err.value)


def test_missing_dataset_folder_names_the_key(tmp_path):
    with pytest.raises(DataError, match="dataset.path: .* does not exist"):
        load_records(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="dataset.path: .* holds no trajectories/"):
        load_records(tmp_path / "empty")
    # A collection run dir works as well as its dataset/ folder.
    write_sft_dataset(tmp_path / "run" / "dataset", n_problems=2)
    assert len(load_records(tmp_path / "run")[0]) == 4


# ------------------------------------------------------------------------------------------------ label mask

def _char_starts(tokenizer, ids: list[int]) -> list[int]:
    """The character offset in the decoded text at which each token starts."""
    starts, text = [], ""
    for k in range(len(ids)):
        starts.append(len(text))
        text = tokenizer.decode(ids[: k + 1])
    assert text == tokenizer.decode(ids)
    return starts


@pytest.mark.parametrize("kind", ["explain_refine", "refine"])
def test_label_mask_token_by_token(dataset, tokenizer, kind):
    """Every token of the prompt -- user turns, the wrong program in the history -- has label -100; every
    token of the assistant's final turn (its end marker included) has its own id as label."""
    traj, _ = load_records(dataset)
    ex = build_examples(traj, [], {kind: 1.0})[0]
    rec = next(r for w, r in traj if w == ex.where)
    [tok], dropped = tokenize_examples([ex], tokenizer)
    assert dropped == 0
    ids, labels = tok.input_ids.tolist(), tok.labels().tolist()
    prompt, target = render_example(ex, tokenizer)

    # The prompt is exactly what evaluation feeds the model for this wrong program.
    eval_prompt = render_chat(refine_messages(record_problem(rec), rec["wrong_code"], rec["feedback"], kind),
                              tokenizer, add_generation_prompt=True)
    assert prompt == eval_prompt
    assert ids[: tok.n_prompt] == tokenizer(eval_prompt)["input_ids"]
    assert target == ex.target + END + "\n"

    text = tokenizer.decode(ids)
    assert text == prompt + target
    starts = _char_starts(tokenizer, ids)
    for k, (tid, label, start) in enumerate(zip(ids, labels, starts)):
        if start < len(prompt):
            assert label == IGNORE_INDEX, f"prompt token {k} {tokenizer.decode([tid])!r} carries loss"
        else:
            assert label == tid, f"target token {k} {tokenizer.decode([tid])!r} is masked"

    # Spans that must carry no loss: the wrong program and every user turn.
    wrong_at = text.index(rec["wrong_code"].strip())
    user_spans = [(m.start(), text.index(END, m.start())) for m in _finditer(text, "<|user|>")]
    spans = [(wrong_at, wrong_at + len(rec["wrong_code"].strip())), *user_spans]
    assert len(user_spans) == 2
    for lo, hi in spans:
        covered = [k for k, s in enumerate(starts) if lo <= s < hi]
        assert covered and all(labels[k] == IGNORE_INDEX for k in covered)
    # And the target is all of the loss: the unmasked tokens decode to the answer.
    assert tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]) == target
    if kind == "explain_refine":
        assert rec["explanation"] in target
    assert rec["wrong_code"].strip() not in target


def _finditer(text: str, needle: str):
    import re

    return re.finditer(re.escape(needle), text)


def test_label_mask_with_a_chat_template(dataset, tokenizer):
    """With the tokenizer's own chat template (as CodeLlama-Instruct has), the prompt is still evaluation's
    and only the answer carries loss."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                         "{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}")
    ex = build_examples(*load_records(dataset), {"explain_refine": 1.0})[0]
    [x], _ = tokenize_examples([ex], tok)
    prompt, target = render_example(ex, tok)
    assert prompt == tok.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True)
    assert target == " " + ex.target + "</s>"
    assert x.input_ids[: x.n_prompt].tolist() == tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.decode(x.input_ids[x.n_prompt:].tolist()) == target
    assert (x.labels()[: x.n_prompt] == IGNORE_INDEX).all() and (x.labels()[x.n_prompt:] != IGNORE_INDEX).all()


def test_collate_pads_right_and_masks_padding(dataset, tokenizer):
    examples = build_examples(*load_records(dataset), ALL)[:3]
    toks, _ = tokenize_examples(examples, tokenizer)
    mb = collate(toks, tokenizer.pad_token_id)
    width = max(len(t) for t in toks)
    assert mb["input_ids"].shape == mb["labels"].shape == mb["attention_mask"].shape == (3, width)
    for i, t in enumerate(toks):
        n = len(t)
        assert mb["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert mb["input_ids"][i, :n].tolist() == t.input_ids.tolist()
        assert (mb["input_ids"][i, n:] == tokenizer.pad_token_id).all()
        assert mb["labels"][i].tolist() == t.labels().tolist() + [IGNORE_INDEX] * (width - n)


def test_examples_over_max_length_are_dropped(dataset, tokenizer):
    examples = build_examples(*load_records(dataset), ALL)
    toks, _ = tokenize_examples(examples, tokenizer)
    cut = sorted(len(t) for t in toks)[len(toks) // 2]
    kept, dropped = tokenize_examples(examples, tokenizer, max_length=cut)
    assert all(len(t) <= cut for t in kept) and len(kept) + dropped == len(examples) and dropped > 0


# ------------------------------------------------------------------------------------------------ steps

def _toks(lengths: list[int]):
    from selfdebug.train.data import TokenizedExample

    return [TokenizedExample(torch.arange(1, n + 1), n // 2, "refine", f"p{i}") for i, n in enumerate(lengths)]


def test_plan_batches():
    plan = plan_batches(50, 8, 4, epochs=2)
    assert (plan.steps_per_epoch, plan.total_steps, plan.accumulation) == (6, 12, 2)
    assert plan_batches(50, 8, 2, epochs=2, max_steps=20).total_steps == 20
    with pytest.raises(ConfigError, match=r"sft.batch_size = 8 .* sft.micro_batch_size = 3"):
        plan_batches(50, 8, 3, epochs=1)
    with pytest.raises(ConfigError, match="only 5 examples"):
        plan_batches(5, 8, 4, epochs=1)


def test_steps_are_full_batches_bucketed_by_length_and_cover_each_epoch():
    lengths = [5 + (7 * i) % 23 for i in range(20)]
    stream = StepBatches(_toks(lengths), BatchPlan(8, 4, steps_per_epoch=2, total_steps=5), pad_id=0, seed=1)
    steps = list(stream)
    assert len(steps) == len(stream) == 5
    epoch0 = stream.step_indices(0) + stream.step_indices(1)
    assert len(set(epoch0)) == 16  # no example twice within an epoch
    assert stream.step_indices(2) != stream.step_indices(0)  # a new permutation next epoch
    for s, micro in enumerate(steps):
        assert len(micro) == 2 and all(mb["input_ids"].shape[0] == 4 for mb in micro)
        ids = stream.step_indices(s)
        assert [lengths[i] for i in ids] == sorted((lengths[i] for i in ids), reverse=True)
        assert micro[0]["input_ids"].shape[1] == lengths[ids[0]] and micro[1]["input_ids"].shape[1] == lengths[ids[4]]
    again = StepBatches(_toks(lengths), BatchPlan(8, 4, 2, 5), pad_id=0, seed=1)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for x, y in zip(steps, again) for a, b in zip(x, y))


def test_stream_state_resumes_at_the_next_step():
    lengths = [3 + i % 9 for i in range(24)]
    full = [m[0]["input_ids"] for m in StepBatches(_toks(lengths), BatchPlan(4, 2, 6, 9), 0, seed=2)]
    first = StepBatches(_toks(lengths), BatchPlan(4, 2, 6, 9), 0, seed=2)
    it = iter(first)
    for _ in range(4):
        next(it)
    state = first.state_dict()
    assert state["next_step"] == 4
    resumed = StepBatches(_toks(lengths), BatchPlan(4, 2, 6, 9), 0, seed=2)
    resumed.load_state_dict(state)
    rest = [m[0]["input_ids"] for m in resumed]
    assert len(rest) == 5 and all(torch.equal(a, b) for a, b in zip(rest, full[4:]))
    assert len(list(resumed)) == 9  # a later pass starts from the beginning again
    other = StepBatches(_toks(lengths[:20]), BatchPlan(4, 2, 5, 9), 0, seed=2)
    with pytest.raises(ConfigError, match="another data stream"):
        other.load_state_dict(state)


def test_answer_text_round_trips_through_the_parser():
    code = "def f(x):\n    return x\n"
    assert parse_completion(answer_text(code, "Because.")).explanation == "Because."
    assert parse_completion(answer_text(code, "Because.")).code == code
    assert parse_completion(answer_text(code)).code == code and parse_completion(answer_text(code)).explanation == ""
