"""selfdebug.core.models: the tiny model builds deterministically and loads like any checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from selfdebug.core.errors import ConfigError
from selfdebug.core.models import (
    CHAT_TOKENS,
    build_tiny,
    count_parameters,
    load_causal_lm,
    resolve_dtype,
    tiny_cache_key,
)

SMALL = {"vocab_size": 512, "hidden_size": 32, "layers": 1, "heads": 2, "max_position": 128}


def test_build_is_deterministic(tmp_path):
    a = build_tiny(tmp_path / "a", seed=3, **SMALL)
    b = build_tiny(tmp_path / "b", seed=3, **SMALL)
    c = build_tiny(tmp_path / "c", seed=4, **SMALL)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    meta = json.loads((a / "selfdebug_tiny.json").read_text())
    assert meta["seed"] == 3 and meta["n_params"] > 0
    # No temporary directories are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_rebuild_replaces_existing_dir(tmp_path):
    d = build_tiny(tmp_path / "m", seed=0, **SMALL)
    (d / "stale.txt").write_text("x")
    build_tiny(d, seed=1, **SMALL)
    assert not (d / "stale.txt").exists()
    assert json.loads((d / "selfdebug_tiny.json").read_text())["seed"] == 1


def test_reload_gives_same_logits(tmp_path, tiny_lm, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model, tok = tiny_lm
    again = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = tok("def add(a, b):\n    return a + b\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert tiny_model_dir.name == f"tiny-{tiny_cache_key()}"
    assert 100_000 < count_parameters(model) < 5_000_000


def test_the_attention_kernel_is_a_load_option_with_the_same_numbers(tiny_cache_dir, tiny_lm):
    """``model.attn_implementation`` picks transformers' kernel; in fp32 eager attention and the default
    (sdpa) give the same logits on a left-padded batch, so the choice is one of speed only."""
    default, tok = tiny_lm
    eager, _ = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager" != default.config._attn_implementation
    enc = tok(["def add(a, b):\n    return a + b\n", "x = 1\n"], return_tensors="pt", padding=True)
    assert not enc["attention_mask"].all()  # one row is padded
    with torch.no_grad():
        a, b = default(**enc).logits, eager(**enc).logits
    real = enc["attention_mask"].bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)


def test_an_unknown_attention_kernel_names_the_key(tiny_cache_dir):
    with pytest.raises(ConfigError, match=r"model\.attn_implementation = 'fastest': .*not supported"):
        load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir, attn_implementation="fastest")


def test_load_tiny_uses_cache(tiny_cache_dir, tiny_model_dir):
    before = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    model, _ = load_causal_lm("tiny", tiny_cache_dir=tiny_cache_dir)
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == before
    assert model.dtype == torch.float32 and not model.training


def test_tokenizer_round_trips_code_and_keeps_specials(tiny_lm):
    _, tok = tiny_lm
    code = 'def f(xs: list[int]) -> int:\n\t"""Sum — ünïcode 日本."""\n    return sum(x ** 2 for x in xs)  # ok\n'
    ids = tok.encode(code, add_special_tokens=False)
    assert tok.decode(ids) == code
    for t in (*CHAT_TOKENS, tok.pad_token, tok.eos_token, tok.bos_token):
        enc = tok.encode(t, add_special_tokens=False)
        assert len(enc) == 1 and enc[0] == tok.convert_tokens_to_ids(t), t
    text = "<|user|>\nhi<|end|>\n<|assistant|>\n"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<|end|>") in ids
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "left"
    assert not tok.chat_template


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model-xyz", "a/b/c", "../x"])
def test_missing_local_path_is_config_error(name):
    with pytest.raises(ConfigError, match=r"model\.name_or_path.*does not exist"):
        load_causal_lm(name)


def test_unavailable_hub_id_is_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"(?s)model\.name_or_path.*HF_HUB_OFFLINE=0"):
        load_causal_lm("selfdebug-no-such-org/no-such-model")


def test_existing_dir_without_model_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.name_or_path"):
        load_causal_lm(str(tmp_path))


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ConfigError, match="model.dtype"):
        resolve_dtype("int3", "cpu")


# ------------------------------------------------------------------ the paper's backbones in conf/model

def _model_cfg(option: str):
    from hydra import compose, initialize_config_dir

    import selfdebug.core.cli  # noqa: F401 - registers the sanitize resolver
    from tests.conftest import REPO

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[f"model={option}"]).model


@pytest.mark.parametrize("option,checkpoint,chat_format", [
    ("codellama_7b", "codellama/CodeLlama-7b-hf", "starchat"),
    ("codellama_13b", "codellama/CodeLlama-13b-hf", "starchat"),
    ("starcoder_15b", "bigcode/starcoder", "starchat"),
    ("codellama_7b_instruct", "codellama/CodeLlama-7b-Instruct-hf", "template"),
    ("codellama_13b_instruct", "codellama/CodeLlama-13b-Instruct-hf", "template"),
])
def test_paper_backbones_are_base_checkpoints_with_starchat_turns(option, checkpoint, chat_format):
    model = _model_cfg(option)
    assert model.name == option and model.name_or_path == checkpoint
    assert model.generator.model_name_or_path == checkpoint and model.generator.chat_format == chat_format


def test_generator_renders_starchat_turns_for_a_base_preset(tiny_cache_dir, tiny_model_dir, tmp_path):
    """A base preset's generator (chat_format from the model config) renders StarChat turns although the
    checkpoint's tokenizer has a chat template; the Instruct setting keeps the template."""
    import hydra
    from transformers import AutoTokenizer

    ckpt = tmp_path / "templated"
    import shutil

    shutil.copytree(tiny_model_dir, ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    tok.chat_template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    tok.save_pretrained(ckpt)
    msgs = [{"role": "user", "content": "U"}]
    for option, expected in (("codellama_7b", "<|user|>\nU<|end|>\n<|assistant|>\n"),
                             ("codellama_7b_instruct", "[INST] U [/INST]")):
        gen_cfg = _model_cfg(option).generator
        gen_cfg.model_name_or_path, gen_cfg.device, gen_cfg.dtype, gen_cfg.show_progress = str(ckpt), "cpu", "auto", False
        generator = hydra.utils.instantiate(gen_cfg)
        assert generator.render(msgs) == expected, option
        generator.close()


def test_the_generator_takes_the_attention_kernel_from_the_model_config(tiny_cache_dir, tiny_model_dir):
    import hydra
    from hydra import compose, initialize_config_dir

    import selfdebug.core.cli  # noqa: F401 - registers the sanitize resolver
    from selfdebug.core.cli import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["model=tiny", "model.attn_implementation=eager",
                                             f"model.generator.tiny_cache_dir={tiny_cache_dir}", "progress=false"])
    generator = hydra.utils.instantiate(cfg.model.generator)
    assert generator.model.config._attn_implementation == "eager"
    generator.close()
