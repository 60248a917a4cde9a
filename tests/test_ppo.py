"""PPO (selfdebug/train/rl/): response parsing and span positions, the prompt stream,
settings and config checks; the learning test (3 seeds); rl_quickstart end to end; resume equivalence; bad
input; a two-cell sweep with its summary table.

The learning test's task: the wrong program ``x = <digit>`` must become ``x = 1`` (test: ``assert x == 1``).
A small tiny-builder model (hidden 64, 2 layers, the tiny tokenizer) is first taught the answer format with
uniformly random digits (about 10% pass), then PPO with the paper's composite reward (CodeBLEU + unit tests,
real sandbox) must bring the mean reward near its maximum.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfdebug.core.errors import ConfigError, DataError
from tests.conftest import REPO

CONF = REPO / "conf"
EXPLANATION = "The variable x has the wrong value: it must be 1."
TOY_TESTS = {"kind": "assert", "asserts": ["assert x == 1"], "setup": "", "stdio": []}
WRONG_DIGITS = (0, 2, 3, 4, 5, 6, 7, 8, 9)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline",
               WANDB_SILENT="true")
    return env


def toy_record(i: int, wrong: int) -> dict:
    return {"id": f"toy-{i}", "problem_id": "toy/1", "source": "toy", "problem": "Set the variable x to 1.",
            "entry_point": None, "tests": TOY_TESTS, "wrong_id": f"toy-wrong-{wrong}", "wrong_code": f"x = {wrong}\n",
            "wrong_origin": "toy", "feedback": f"Failed test: assert x == 1\nActual output: {wrong}",
            "explanation": EXPLANATION, "refinement": "x = 1\n", "verdict": "correct", "status": "passed",
            "n_passed": 1, "n_tests": 1}


def write_dataset(folder: Path, records: list[dict]) -> Path:
    (folder / "trajectories").mkdir(parents=True, exist_ok=True)
    (folder / "codegen").mkdir(exist_ok=True)
    (folder / "trajectories" / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory) -> Path:
    """Nine wrong programs ``x = <digit>`` of the toy problem, each with its verified fix ``x = 1``."""
    return write_dataset(tmp_path_factory.mktemp("ppo-toy-data"), [toy_record(i, w) for i, w in enumerate(WRONG_DIGITS)])


@pytest.fixture(scope="module")
def toy(tmp_path_factory, toy_dataset):
    """The toy dataset and a small policy taught the answer format (random digit), saved like an SFT model."""
    from selfdebug.train.data import Example, answer_text, collate, tokenize_examples, trajectory_example
    from selfdebug.train.sft.module import target_nll_sum
    from selfdebug.core.models import build_tiny, load_causal_lm

    root = tmp_path_factory.mktemp("ppo-toy")
    records = [toy_record(i, w) for i, w in enumerate(WRONG_DIGITS)]
    dataset = toy_dataset
    build_tiny(root / "small", hidden_size=64, layers=2, heads=2)
    model, tokenizer = load_causal_lm(str(root / "small"))
    examples = []
    for rec in records:
        ex = trajectory_example("toy", rec, "refine")
        for digit in range(10):
            examples.append(Example("refine", "toy/1", ex.messages, answer_text(f"x = {digit}")))
    tokenized, _ = tokenize_examples(examples, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        model.train()
        for step in range(100):
            mb = collate(random.Random(step).sample(tokenized, 16), tokenizer.pad_token_id)
            loss = target_nll_sum(model, mb) / int((mb["labels"][:, 1:] != -100).sum())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    model.save_pretrained(root / "warm")
    tokenizer.save_pretrained(root / "warm")
    return {"root": root, "dataset": dataset, "warm": root / "warm", "records": records}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def run_rl(overrides: list[str], run_dir: Path) -> dict:
    from selfdebug.train.rl.recipe import run

    return run(compose(["+exp=rl_quickstart", "logger=none", "progress=false", "trainer.enable_progress_bar=false",
                        *overrides]), run_dir)


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ pieces

def test_read_response_finds_the_explanations_last_token(tiny_lm):
    from selfdebug.train.model import stop_token_ids
    from selfdebug.train.rl.tokens import read_response

    model, tok = tiny_lm
    stop = set(stop_token_ids(tok, model))
    end_id = tok.convert_tokens_to_ids("<|end|>")
    explanation = "The loop stops one element early, so the last value is never added."
    text = f"  {explanation}\n\n```python\ndef f(xs):\n    return sum(xs)\n```"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [end_id] + [tok.pad_token_id] * 3
    r = read_response(tok, ids, stop, ("<|end|>",), explained=True)
    assert r.ids[-1] == end_id and len(r.ids) == len(ids) - 3 and not r.truncated
    assert r.explanation == explanation and r.code == "def f(xs):\n    return sum(xs)\n"
    upto = tok.decode(r.ids[: r.explanation_end + 1], skip_special_tokens=True)
    before = tok.decode(r.ids[: r.explanation_end], skip_special_tokens=True)
    assert upto.strip().endswith("added.") and not before.strip().endswith("added.")

    refine = read_response(tok, ids, stop, ("<|end|>",), explained=False)
    assert refine.explanation is None and refine.explanation_end is None

    # No stop token: truncated, and the whole text is explanation without code.
    noise = tok("just words and no code", add_special_tokens=False)["input_ids"]
    r = read_response(tok, noise, stop, ("<|end|>",), explained=True)
    assert r.truncated and r.code is None and r.explanation_end == len(noise) - 1


def test_stop_string_spanning_tokens_cuts_the_response(tiny_lm):
    from selfdebug.train.rl.tokens import read_response

    _, tok = tiny_lm
    ids = tok("```python\nx = 1\n```STOPHERE and more", add_special_tokens=False)["input_ids"]
    r = read_response(tok, ids, set(), ("STOPHERE",), explained=False)
    assert r.code == "x = 1\n" and not r.truncated
    assert tok.decode(r.ids).endswith("STOPHERE") or "STOPHERE" in tok.decode(r.ids)
    assert "more" not in tok.decode(r.ids)


def test_log_probs_kept_from_sampling_match_a_forward_pass(tiny_cache_dir):
    """rl.rollout_logprobs=generation: what sampling computed equals the exact recompute (fp32, CPU)."""
    from selfdebug.train.rl.model import response_scores
    from selfdebug.train.rl.module import PPOModule
    from selfdebug.train.rl.settings import PPOSettings
    from selfdebug.train.rl.tokens import left_pad, read_response, right_pad
    from selfdebug.core.models import load_causal_lm
    from selfdebug.rewards import CompositeReward

    model, tok = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    reward = CompositeReward(weights={"codebleu": 0.0, "unit_tests": 1.0, "explanation": 0.0}, kl_coef=0.0)
    settings = PPOSettings(rollout_logprobs="generation", max_new_tokens=12, kl_control="fixed", batch_size=4,
                           mini_batch_size=4, micro_batch_size=4)
    module = PPOModule(model, tok, reward, None, [], settings)
    torch.nn.init.normal_(module.value_head.linear.weight, std=0.1)
    prompts = [tok("def add(a, b):")["input_ids"], tok("The code above is wrong because it adds one")["input_ids"]]
    torch.manual_seed(0)
    module.start_engine()
    samples = module.generate(prompts)
    ids, logprobs, values = samples.ids, samples.logprobs, samples.values
    responses = [read_response(tok, row, module.stop_ids, ("<|end|>",), explained=False) for row in ids]
    q, qm = left_pad(prompts, tok.pad_token_id)
    r, rm = right_pad([x.ids for x in responses], tok.pad_token_id)
    with torch.no_grad():
        exact_lp, exact_v, _ = response_scores(model, q, qm, r, rm, 1.0, module.value_head)
    for i, x in enumerate(responses):
        n = len(x.ids)
        assert torch.allclose(logprobs[i, :n], exact_lp[i, :n], atol=1e-4)
        assert torch.allclose(values[i, :n], exact_v[i, :n], atol=1e-4)


def test_lambda_one_carries_the_code_reward_to_the_explanation_tokens(tiny_lm):
    """The paper's advantage (GAE with lambda 1, gamma 0.99) on a real rollout of the tiny model: with the
    value head near zero, every explanation token's advantage has the sign of R_code, which lands on the final
    token only; TRL's lambda 0.95 leaves them a small fraction of it."""
    from selfdebug.core.prompts import refine_messages, render_chat
    from selfdebug.rewards import place_rewards_batch
    from selfdebug.train.data import answer_text, record_problem
    from selfdebug.train.model import stop_token_ids
    from selfdebug.train.rl.model import ValueHead, hidden_size_of, response_scores
    from selfdebug.train.rl.ppo_math import gae, kl_estimate
    from selfdebug.train.rl.tokens import left_pad, read_response, right_pad

    model, tok = tiny_lm
    rec = toy_record(0, 0)
    prompt = render_chat(refine_messages(record_problem(rec), rec["wrong_code"], rec["feedback"], "explain_refine"),
                         tok, add_generation_prompt=True)
    explanation = " ".join([EXPLANATION] * 12)  # a long explanation: the code reward is far from its tokens
    stop = set(stop_token_ids(tok, model))
    ids = tok(answer_text("x = 1\n", explanation), add_special_tokens=False)["input_ids"] + [min(stop)]
    response = read_response(tok, ids, stop, ("<|end|>",), explained=True)
    end = response.explanation_end
    assert end is not None and end > 100 and len(response.ids) - end > 5
    query, query_mask = left_pad([tok(prompt)["input_ids"]] * 2, tok.pad_token_id)
    resp, resp_mask = right_pad([response.ids] * 2, tok.pad_token_id)
    torch.manual_seed(0)
    head = ValueHead(hidden_size_of(model), init_std=1e-3)
    with torch.no_grad():
        logprobs, values, _ = response_scores(model, query, query_mask, resp, resp_mask, 1.0, head)
    assert values.abs().max() < 0.05  # near zero, not exactly
    kl = kl_estimate(logprobs, logprobs.clone()) * resp_mask  # the policy is still the reference
    r_code = torch.tensor([3.8, -5.0])  # the best fix's R_code, and the worst
    rewards = place_rewards_batch(resp_mask.sum(1), [end, end], torch.zeros(2), r_code, kl=kl, kl_coef=0.2)
    advantages = {lam: gae(rewards, values, resp_mask, 0.99, lam)[0] for lam in (1.0, 0.95)}
    explaining = advantages[1.0][:, :end + 1]
    assert (explaining[0] > 0).all() and (explaining[1] < 0).all()
    # Each explanation token gets R_code * 0.99^(distance to the last token), less its own value.
    last = int(resp_mask.sum(1)[0]) - 1
    expected = r_code[:, None] * 0.99 ** (last - torch.arange(end + 1))[None, :] - values[:, :end + 1]
    torch.testing.assert_close(explaining, expected, atol=1e-4, rtol=1e-4)
    # lambda 0.95: (0.99 * 0.95)^distance, so the explanation's first tokens get almost nothing.
    first = advantages[0.95][:, 0].abs() / explaining[:, 0].abs()
    share = advantages[0.95][:, :end + 1].abs().mean() / explaining.abs().mean()
    assert (first < 0.01).all() and share < 0.25, (first, share)


def test_prompt_stream_is_seeded_and_resumable():
    from selfdebug.train.rl.data import PromptStream

    a = PromptStream(n_items=5, per_step=3, total_steps=4, seed=7)
    steps = [t.tolist() for t in a]
    assert len(steps) == 4 and all(len(s) == 3 for s in steps)
    flat = [i for s in steps for i in s]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))  # epochs visit every item
    b = PromptStream(5, 3, 4, seed=7)
    it = iter(b)
    next(it), next(it)
    state = b.state_dict()
    c = PromptStream(5, 3, 4, seed=7)
    c.load_state_dict(state)
    assert [t.tolist() for t in c] == steps[2:]
    with pytest.raises(ConfigError, match="another prompt stream"):
        PromptStream(6, 3, 4, seed=7).load_state_dict(state)


def test_settings_are_checked():
    from selfdebug.train.rl.settings import PPOSettings
    from selfdebug.train.settings import settings_from

    PPOSettings()
    with pytest.raises(ConfigError, match="rl.batch_size"):
        PPOSettings(batch_size=10, mini_batch_size=4)
    with pytest.raises(ConfigError, match="rl.gamma"):
        PPOSettings(gamma=1.5)
    with pytest.raises(ConfigError, match="rl.kl_control"):
        PPOSettings(kl_control="pid")
    with pytest.raises(ConfigError, match="rl.mode"):
        PPOSettings(mode="explain")
    assert PPOSettings(mode="mixed").mode == "mixed"
    with pytest.raises(ConfigError, match="rl.code_from = raw"):
        PPOSettings(mode="mixed", code_from="raw")
    with pytest.raises(ConfigError, match="rl.sources"):
        PPOSettings(sources=[])
    with pytest.raises(ConfigError, match="rl.sources"):
        PPOSettings(sources="mbpp")
    with pytest.raises(ConfigError, match="rl.reward_baseline = leave_one_out .* rl.samples_per_prompt"):
        PPOSettings(reward_baseline="leave_one_out")
    with pytest.raises(ConfigError, match="rl.reward_baseline"):
        PPOSettings(reward_baseline="mean")
    assert PPOSettings(reward_baseline="leave_one_out", samples_per_prompt=4, batch_size=16).prompts_per_step == 4
    for bad in (0, -3, 2.5, True, "4"):
        with pytest.raises(ConfigError, match="rl.max_prompts"):
            PPOSettings(max_prompts=bad)
    assert PPOSettings(max_prompts=4).max_prompts == 4
    with pytest.raises(ConfigError, match="rl.bogus"):
        settings_from(PPOSettings, {"bogus": 1}, "rl")


@pytest.mark.parametrize("exp", ["rl_quickstart", "rl_7b", "rl_13b", "rl_starcoder_15b", "rl_7b_lora", "rl_13b_lora",
                                 "rl_starcoder_15b_lora"])
def test_every_rl_experiment_composes(exp):
    from omegaconf import OmegaConf

    from selfdebug.rewards import CompositeReward
    from selfdebug.train.rl.settings import PPOSettings
    from selfdebug.train.settings import settings_from

    cfg = compose([f"+exp={exp}", "rl.sft_checkpoint=/some/sft/model"])
    assert cfg.stage == "rl" and cfg.reward.name == "ledex" and cfg.sandbox.timeout > 0
    settings = settings_from(PPOSettings, cfg.rl, "rl")
    assert settings.gamma == 0.99
    if exp == "rl_quickstart":
        assert settings.mode == "explain_refine" and settings.lam == 0.95 and settings.sources is None
    elif exp.endswith("_lora"):  # the named one-GPU deviation: LoRA at 10x the paper's lr
        assert settings.lr == 2e-5 and settings.batch_size == 64 and cfg.peft.enabled and cfg.trainer.devices == 1
    else:  # the paper's: full weights, FSDP over 8 GPUs
        assert settings.lr == 2e-6 and settings.batch_size == 64 and not cfg.peft.enabled
        assert cfg.trainer.devices == 8 and cfg.trainer.strategy._target_.endswith("ModelParallelStrategy")
    if exp != "rl_quickstart":
        assert settings.mode == "mixed" and settings.lam == 1.0 and settings.sources == ["mbpp", "apps"]
        assert settings.require_reference and cfg.reward.fallback == "error"
    CompositeReward(**{k: v for k, v in OmegaConf.to_container(cfg.reward).items() if k != "_target_"})


# ------------------------------------------------------------------------------------------------ RL data

def sourced_records() -> list[dict]:
    """Toy wrong programs of three sources; apps/5 and codecontests/8 have no verified refinement."""
    out = []
    for i, source in enumerate(["mbpp"] * 4 + ["apps"] * 3 + ["codecontests"] * 2):
        rec = toy_record(i, WRONG_DIGITS[i])
        rec.update(source=source, problem_id=f"{source}/{i}", wrong_id=f"{source}-wrong-{i}")
        if i in (5, 8):
            rec.update(verdict="wrong", status="failed", n_passed=0, refinement="x = 7\n")
        out.append(rec)
    return out


def test_mixed_mode_is_half_each_seeded_and_rendered_per_format(tiny_lm):
    from selfdebug.train.rl.data import assign_modes, build_items

    _, tok = tiny_lm
    records = [("toy", r) for r in sourced_records()]
    items, counts = build_items(records, tok, "mixed", False, 4096, seed=3)
    modes = [it.mode for it in items]
    assert len(items) == 9 and counts["rl_items_by_mode"] == {"refine": 4, "explain_refine": 5}
    assert all(it.explained == (it.mode == "explain_refine") for it in items)
    again, _ = build_items(list(reversed(records)), tok, "mixed", False, 4096, seed=3)
    assert {it.wrong_id: it.mode for it in again} == {it.wrong_id: it.mode for it in items}  # order-free, seeded
    keys = [f"w{k}" for k in range(20)]
    draws = {tuple(assign_modes(keys, "mixed", seed)[k] for k in keys) for seed in range(5)}
    assert len(draws) > 1 and all(d.count("refine") == 10 for d in draws)  # another seed, another half
    single, _ = build_items(records, tok, "refine", False, 4096)
    for it, ref in zip(items, single):  # a refine item's prompt is the refine-mode prompt; the other one differs
        assert (it.prompt_ids == ref.prompt_ids) == (it.mode == "refine"), modes


def test_rl_items_keep_the_chosen_sources_with_references_and_count_the_rest(tiny_lm):
    from selfdebug.rewards import ReferenceIndex
    from selfdebug.train.rl.data import build_items

    _, tok = tiny_lm
    records = [("toy", r) for r in sourced_records()]
    refs = set(ReferenceIndex.from_records(r for _, r in records).refinements)
    items, counts = build_items(records, tok, "explain_refine", False, 4096, sources=["mbpp", "apps"],
                                references=refs)
    assert sorted(it.wrong_id for it in items) == sorted(
        [f"mbpp-wrong-{i}" for i in range(4)] + ["apps-wrong-4", "apps-wrong-6"])
    assert counts["rl_dropped_source"] == {"codecontests": 2}
    assert counts["rl_dropped_no_reference"] == {"apps": 1}
    assert counts["wrong_programs"] == 9 and counts["rl_items"] == 6
    everything, counts = build_items(records, tok, "explain_refine", False, 4096)
    assert len(everything) == 9 and counts["rl_dropped_source"] == counts["rl_dropped_no_reference"] == {}


def test_max_prompts_draws_whole_wrong_programs_seeded(tiny_lm):
    from selfdebug.train.rl.data import build_items, draw_prompts

    _, tok = tiny_lm
    records = [("toy", r) for r in sourced_records()]
    items, _ = build_items(records, tok, "explain_refine", False, 4096)
    assert draw_prompts(items, None, 0) is items
    drawn = draw_prompts(items, 3, seed=0)
    assert len({it.wrong_id for it in drawn}) == 3 and drawn == [it for it in items if it in drawn]  # in order
    assert [it.wrong_id for it in draw_prompts(items, 3, seed=0)] == [it.wrong_id for it in drawn]
    assert any({it.wrong_id for it in draw_prompts(items, 3, seed=s)} != {it.wrong_id for it in drawn}
               for s in range(1, 6))
    with pytest.raises(ConfigError, match="rl.max_prompts = 10, but the RL data has 9 wrong programs"):
        draw_prompts(items, 10, seed=0)
    # offline, one item per collected answer: a drawn wrong program keeps all of its answers
    twice = records + [("toy", {**r, "id": r["id"] + "-b", "explanation": r["explanation"] + " Again."})
                       for _, r in records]
    offline, _ = build_items(twice, tok, "explain_refine", True, 4096)
    kept = draw_prompts(offline, 2, seed=1)
    assert len(kept) == 4 and len({it.wrong_id for it in kept}) == 2


def test_max_prompts_run_answers_the_same_programs_every_step(tmp_path):
    """``rl.max_prompts=2`` with 2 answers each: a real PPO run of the tiny model answers the same two wrong
    programs, both of them, at every step."""
    dataset = write_dataset(tmp_path / "dataset", sourced_records())
    summary = run_rl([f"dataset.path={dataset}", "rl.max_prompts=2", "rl.samples_per_prompt=2", "rl.batch_size=4",
                      "rl.mini_batch_size=4", "rl.micro_batch_size=4", "rl.generation_batch_size=4",
                      "rl.ppo_epochs=1", "rl.max_new_tokens=8", "rl.total_steps=3", "rl.table_every=1",
                      "rl.table_rows=4"], tmp_path / "run")
    assert summary["finished"] and summary["rl_items"] == 9 and summary["rl_items_drawn"] == 2
    sampled = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    by_step = {}
    for row in sampled:
        by_step.setdefault(row["step"], []).append(row["wrong_id"])
    assert sorted(by_step) == [1, 2, 3]
    assert all(sorted(ids) == sorted(by_step[1]) and len(set(ids)) == 2 for ids in by_step.values())


def test_mixed_run_logs_dropped_items_and_per_format_rewards(tmp_path, caplog):
    """A real PPO step of the tiny model under the paper's RL data settings: the dropped wrong programs are in
    summary.json and the log, and metrics.jsonl has each format's reward figures."""
    import logging

    dataset = write_dataset(tmp_path / "dataset", sourced_records())
    with caplog.at_level(logging.INFO, logger="selfdebug.train.rl"):
        summary = run_rl([f"dataset.path={dataset}", "rl.mode=mixed", "rl.sources=[mbpp,apps]",
                          "rl.require_reference=true", "reward.fallback=error", "rl.batch_size=6",
                          "rl.mini_batch_size=6", "rl.micro_batch_size=6", "rl.generation_batch_size=6",
                          "rl.ppo_epochs=1", "rl.max_new_tokens=8", "rl.total_steps=1", "rl.table_every=1"],
                         tmp_path / "run")
    assert summary["finished"] and summary["mode"] == "mixed" and summary["rl_items"] == 6
    assert summary["rl_dropped_source"] == {"codecontests": 2} and summary["rl_dropped_no_reference"] == {"apps": 1}
    assert summary["rl_items_by_mode"] == {"refine": 3, "explain_refine": 3}
    logged = [r.getMessage() for r in caplog.records if "RL data:" in r.getMessage()]
    assert len(logged) == 1 and "6 of 9 wrong programs" in logged[0]
    assert "2 of source 'codecontests' (not in rl.sources)" in logged[0]
    assert "1 of source 'apps' without a verified refinement" in logged[0]
    (row,) = metrics_rows(tmp_path / "run")
    assert row["reward/n_refine"] == row["reward/n_explain_refine"] == 3 and row["reward/n_fallback_code"] == 0
    for mode in ("refine", "explain_refine"):
        assert math.isfinite(row[f"reward/{mode}/total"]) and math.isfinite(row[f"rollout/{mode}/pass_rate"])
    assert row["reward/refine/r_expl"] == 0.0  # refine prompts get no explanation reward
    sampled = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in sampled} == {"refine", "explain_refine"}
    assert all((r["explanation"] is None) == (r["mode"] == "refine") for r in sampled)


def test_gradient_cosine_is_logged_from_the_second_step(tmp_path):
    """``rl.gradient_cosine=true``: each step's first policy gradient is compared with the previous step's."""
    dataset = write_dataset(tmp_path / "dataset", sourced_records())
    run_rl([f"dataset.path={dataset}", "rl.gradient_cosine=true", "rl.batch_size=4", "rl.mini_batch_size=4",
            "rl.micro_batch_size=4", "rl.generation_batch_size=4", "rl.ppo_epochs=2", "rl.max_new_tokens=8",
            "rl.total_steps=3", "rl.table_every=0"], tmp_path / "run")
    cosines = [row["ppo/gradient_cosine"] for row in metrics_rows(tmp_path / "run")]
    assert len(cosines) == 3 and math.isnan(cosines[0])
    assert all(-1.0 <= c <= 1.0 for c in cosines[1:]) and len(set(cosines[1:])) == 2
    plain = run_rl([f"dataset.path={dataset}", "rl.batch_size=4", "rl.mini_batch_size=4", "rl.micro_batch_size=4",
                    "rl.generation_batch_size=4", "rl.max_new_tokens=8", "rl.total_steps=1", "rl.table_every=0"],
                   tmp_path / "plain")
    assert plain["finished"] and "ppo/gradient_cosine" not in metrics_rows(tmp_path / "plain")[0]


@pytest.mark.slow  # the only fast-loop user of the toy policy, whose set-up takes about 15 s
def test_leave_one_out_baseline_reaches_the_token_rewards(tmp_path, toy):
    """A real PPO step with two answers per wrong program and ``rl.reward_baseline=leave_one_out``: the rewards
    placed on the tokens are the answers' rewards less their sibling's, so over the batch they sum to the KL
    penalty alone, while the logged reward figures stay the raw ones."""
    summary = run_rl([f"dataset.path={toy['dataset']}", f"rl.sft_checkpoint={toy['warm']}", "rl.mode=refine",
                      "rl.samples_per_prompt=2", "rl.reward_baseline=leave_one_out", "rl.batch_size=8",
                      "rl.mini_batch_size=8", "rl.micro_batch_size=8", "rl.generation_batch_size=8",
                      "rl.ppo_epochs=1", "rl.max_new_tokens=12", "rl.total_steps=1", "rl.table_every=0"],
                     tmp_path / "run")
    (row,) = metrics_rows(tmp_path / "run")
    assert summary["finished"] and row["rollout/n"] == 8
    assert row["reward/token_rewards_sum"] == pytest.approx(row["reward/kl_penalty"], abs=1e-4)
    assert abs(row["reward/total_with_kl"] - row["reward/token_rewards_sum"]) > 0.1  # the raw mean is not zero


def test_no_prompt_left_after_the_filter_is_one_clear_error(tmp_path):
    dataset = write_dataset(tmp_path / "dataset", sourced_records())
    with pytest.raises(DataError, match="no RL prompt is left") as info:
        run_rl([f"dataset.path={dataset}", "rl.sources=[humaneval]"], tmp_path / "run")
    assert "rl.sources" in str(info.value) and "4 of source 'mbpp' (not in rl.sources)" in str(info.value)
    with pytest.raises(DataError, match="rl.require_reference=true"):
        run_rl([f"dataset.path={dataset}", "reward.fallback=error"], tmp_path / "run2")


def test_big_experiments_need_an_sft_checkpoint(tmp_path):
    from selfdebug.train.rl.recipe import run

    with pytest.raises(ConfigError, match="rl.sft_checkpoint must be set"):
        run(compose(["+exp=rl_7b", "logger=none"]), tmp_path)


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("override, error, words", [
    ("reward.weights.explanation=abc", ConfigError, ["reward.weights.explanation", "not a number"]),
    ("+reward.weights.style=1", ConfigError, ["reward.weights.style", "no reward component"]),
    ("rl.sft_checkpoint=/no/such/sft/model", ConfigError, ["rl.sft_checkpoint", "/no/such/sft/model",
                                                            "does not exist"]),
    ("rl.batch_size=6", ConfigError, ["rl.batch_size"]),
])
def test_bad_config_stops_before_training(tmp_path, toy_dataset, override, error, words):
    with pytest.raises(error) as info:
        run_rl([f"dataset.path={toy_dataset}", override], tmp_path / "run")
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_dataset_without_wrong_solutions_is_an_error(tmp_path):
    empty = write_dataset(tmp_path / "dataset", [])
    (empty / "codegen" / "part-00000.jsonl").write_text(json.dumps(
        {"problem_id": "toy/1", "source": "toy", "problem": "p", "entry_point": None, "tests": TOY_TESTS,
         "code": "x = 1\n"}) + "\n")
    with pytest.raises(DataError, match="no wrong solutions") as info:
        run_rl([f"dataset.path={empty}"], tmp_path / "run")
    assert "dataset.path" in str(info.value)


@pytest.mark.slow
def test_bad_input_exits_2_with_one_error_line(tmp_path, toy_dataset):
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.train", "+exp=rl_quickstart", f"dataset.path={toy_dataset}",
         "reward.weights.codebleu=lots", f"hydra.run.dir={tmp_path / 'run'}", "logger=none"],
        check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "reward.weights.codebleu" in errors[0] and "not a number" in errors[0]


# ------------------------------------------------------------------------------------------------ learning

# A small model learns fast but can overshoot (Adam keeps moving a near-certain token after its ratio is
# clipped): a low lr, early stop at a small approximate KL, and a critic free to move (its own lr, no value
# clipping: the reward scale is +-5) keep all seeds on track. The advantages are not whitened: the reward's
# scale is fixed, and once every sample of a batch passes (16 identical answers) the advantages are only the
# critic's error, which whitening would blow up to unit size and push the same way in every row (seed 3 once
# lost its stop token so, p(<|end|>) 0.96 -> 0.40 in one step).
LEARN = ["rl.mode=refine", "rl.batch_size=16", "rl.mini_batch_size=8", "rl.micro_batch_size=8",
         "rl.generation_batch_size=16", "rl.ppo_epochs=4", "rl.max_new_tokens=12", "rl.total_steps=40",
         "rl.lr=2e-4", "rl.value_lr=1e-2", "rl.clip_range_value=null", "rl.whiten_advantages=false",
         "rl.target_kl=0.01", "rl.kl_control=fixed", "reward.kl_coef=0.05", "rl.checkpoint_every=0",
         "rl.table_every=0"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ppo_learns_to_fix_the_toy_bug(tmp_path, toy, seed):
    from selfdebug.rewards import codebleu_pair

    best = 5.0 * (codebleu_pair("x = 1\n", "x = 1\n") + 1.0) - 5.0  # R_code of the right fix (~3.82)
    summary = run_rl([f"dataset.path={toy['dataset']}", f"rl.sft_checkpoint={toy['warm']}", f"seed={seed}", *LEARN],
                     tmp_path / "run")
    rows = metrics_rows(tmp_path / "run")
    rewards = [r["reward/total"] for r in rows]
    passed = [r["rollout/pass_rate"] for r in rows]
    print(f"seed {seed} reward: {[round(x, 2) for x in rewards]}")
    print(f"seed {seed} pass rate: {[round(x, 2) for x in passed]}")
    assert summary["finished"] and len(rows) == 40
    start, end = sum(rewards[:3]) / 3, sum(rewards[-5:]) / 5
    assert start < 0.0, "the warm start should fail most of the time (one digit in ten passes)"
    assert end >= best - 1.0 and end - start >= 3.0, (start, end, best)
    assert sum(passed[-5:]) / 5 >= 0.8
    assert all(r["reward/r_expl"] == 0.0 for r in rows)  # refine-only samples get R_code alone


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_rl_quickstart_end_to_end(tmp_path):
    """Collect a small real dataset, then ``+exp=rl_quickstart`` as shipped (online, the tiny model) in a subprocess
    with the real sandbox, CodeBLEU, embedding model and W&B (offline); then the same data with ``rl.offline=true``
    (the teacher's answers are the responses), where real code reaches the sandbox and CodeBLEU."""
    collect = subprocess.run(
        [sys.executable, "-m", "selfdebug.collect", "+exp=collect_quickstart", "data.limit_per_source=6",
         "n_initial=0", "m_refinements=2", "logger=none", "progress=false", f"hydra.run.dir={tmp_path / 'collect'}"],
        check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-3000:]
    dataset = tmp_path / "collect" / "dataset"
    run_dir = tmp_path / "rl"
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.train", "+exp=rl_quickstart", f"dataset.path={dataset}",
         "rl.total_steps=2", "progress=false", f"hydra.run.dir={run_dir}"],
        check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RL done: 2 PPO steps" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 2 and summary["mode"] == "explain_refine"
    assert summary["policy_init"] == "tiny" and summary["references"]["verified_explanations"] > 0
    rows = metrics_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/r_code", "reward/r_expl", "reward/s_cb", "reward/s_ut", "reward/s_ex", "reward/kl_penalty",
                "reward/n_fallback_code", "objective/kl", "objective/kl_coef", "objective/entropy", "ppo/clipfrac",
                "ppo/value_loss", "ppo/explained_variance", "ppo/approx_kl", "rollout/response_length_mean",
                "rollout/pass_rate", "sandbox/executed", "sandbox/timeouts", "sandbox/errors", "sandbox/cache_hits",
                "sandbox/status/passed", "sandbox/status/blocked", "time/generate", "time/judge", "time/reward", "time/update"):
        assert all(key in r for r in rows), key
    assert all(r["reward/s_ex"] > 0 for r in rows)  # the embedding model scored the (noise) explanations
    sampled = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert sampled and {"explanation", "code", "status", "r_code", "r_expl"} <= set(sampled[0])
    assert list((run_dir / "wandb").glob("*/files/media/table/rollouts/*.table.json"))
    from selfdebug.core.models import load_causal_lm

    model, _ = load_causal_lm(str(run_dir / "model"))  # what `evaluate model=hf model.name_or_path=...` loads
    assert sum(p.numel() for p in model.parameters()) == summary["trainable_parameters"]

    offline = run_rl([f"dataset.path={dataset}", "rl.offline=true", "rl.total_steps=1", "rl.table_every=1"],
                     tmp_path / "offline")
    row = metrics_rows(tmp_path / "offline")[0]
    assert offline["finished"] and offline["sandbox"]["executed"] > 0
    assert row["reward/s_cb"] > 0.5 and row["reward/s_ex"] > 0.5 and row["rollout/pass_rate"] > 0.5
    assert row["reward/r_code"] > 0 and row["rollout/no_code_rate"] == 0.0


# ------------------------------------------------------------------------------------------------ resume

RESUME = ["rl.batch_size=8", "rl.mini_batch_size=4", "rl.micro_batch_size=2", "rl.generation_batch_size=4",
          "rl.ppo_epochs=2", "rl.max_new_tokens=24", "rl.total_steps=4", "rl.lr=1e-3", "rl.checkpoint_every=1",
          "rl.table_every=0", "peft=lora", "seed=5"]
VARIABLE = ("time", "rollout/samples_per_s", "sandbox/cache_hits", "sandbox/executed")


@pytest.mark.slow
def test_resume_gives_the_same_run(tmp_path, toy):
    """LoRA (reference = adapters disabled), adaptive KL: stop after 2 steps, resume, and every figure and
    weight equals the uninterrupted run's."""
    base = [f"dataset.path={toy['dataset']}", f"rl.sft_checkpoint={toy['warm']}", *RESUME]
    whole = run_rl(base, tmp_path / "whole")
    first = run_rl([*base, "rl.stop_after=2"], tmp_path / "split")
    assert not first["finished"] and first["steps"] == 2 and not (tmp_path / "split" / "model").exists()
    second = run_rl(base, tmp_path / "split")
    assert second["finished"] and second["resumed_from"].endswith("step-0000002.ckpt")

    a, b = metrics_rows(tmp_path / "whole"), metrics_rows(tmp_path / "split")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ra:
            if key.startswith(VARIABLE):
                continue
            va, vb = ra[key], rb[key]
            assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), (ra["step"], key, va, vb)
    assert a[-1]["objective/kl_coef"] != a[0]["objective/kl_coef"]  # the adaptive controller moved (and resumed)
    def same(final: dict) -> dict:
        return {k: v for k, v in final.items() if not k.startswith("time/")}

    assert same(whole["final"]) == same(second["final"])
    assert torch.equal(torch.load(tmp_path / "whole" / "value_head.pt")["linear.weight"],
                       torch.load(tmp_path / "split" / "value_head.pt")["linear.weight"])
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "whole" / "model" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "split" / "model" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    from selfdebug.core.models import load_causal_lm

    load_causal_lm(str(tmp_path / "whole" / "model"))  # the adapter loads on its base (the SFT model)


# ------------------------------------------------------------------------------------------------ sweep

@pytest.mark.slow
def test_sweep_of_two_cells_writes_the_summary_table(tmp_path, toy_dataset):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.train", "--multirun", "+exp=rl_quickstart",
         f"dataset.path={toy_dataset}", "reward.weights.explanation=0,1", "seed=1", "rl.total_steps=2",
         "rl.max_new_tokens=16", "logger=none", "progress=false", f"hydra.sweep.dir={sweep}"],
        check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "sweep_summary.md").is_file() and (sweep / "sweep_summary.csv").is_file()
    table = json.loads((sweep / "sweep_summary.json").read_text())
    assert table["columns"] == ["reward.weights.explanation"] and table["runs"] == 2
    cells = {row["cell"]["reward.weights.explanation"]: row for row in table["rows"]}
    assert set(cells) == {"0", "1"} and all(row["n"] == 1 for row in cells.values())
    assert cells["0"]["metrics"]["final/reward/r_expl"]["mean"] == 0.0
    assert cells["1"]["metrics"]["final/reward/r_expl"]["mean"] != 0.0

    from selfdebug.analysis.sweep_summary import mean_ci

    proc = subprocess.run([sys.executable, "-m", "selfdebug.sweep_summary", f"sweep_dir={sweep}",
                           "metrics=[final/rollout/pass_rate]"], check=False, cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final/rollout/pass_rate" in proc.stdout
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2.0 - 4.302653 / math.sqrt(3), rel=1e-5) and high > 3.0
