"""selfdebug.generation: the HF generator on the tiny model (and its KV cache choice), the reference generator, the
factory."""

from __future__ import annotations

import pytest

from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import initial_messages, parse_completion, refine_messages
from selfdebug.execution.spec import TestSuite as Suite
from selfdebug.generation import (
    GenerationRequest,
    Generator,
    HFGenerator,
    ReferenceGenerator,
    SamplingParams,
    build_generator,
    cut_at_stop,
)
from selfdebug.problems import Problem

PROBLEM = Problem(task_id="mbpp/1", source="mbpp", prompt="Write a function to add two numbers.",
                  tests=Suite("assert", ("assert add(1, 2) == 3",)), entry_point="add",
                  reference="def add(a, b):\n    return a + b\n", tests_shown=("assert add(1, 2) == 3",))


@pytest.fixture(scope="module")
def hf_gen(tiny_cache_dir, tiny_model_dir):
    gen = HFGenerator("tiny", tiny_cache_dir=tiny_cache_dir, batch_size=4, show_progress=False)
    yield gen
    gen.close()


def _requests():
    return [GenerationRequest(initial_messages(PROBLEM), PROBLEM),
            GenerationRequest(refine_messages(PROBLEM, "def add(a, b):\n    return a - b\n",
                                              "AssertionError", "explain_refine"), PROBLEM),
            GenerationRequest([{"role": "user", "content": "hi"}])]


def test_hf_returns_n_per_request(hf_gen):
    out = hf_gen.generate(_requests(), SamplingParams(n=3, max_new_tokens=8, seed=0))
    assert len(out) == 3 and all(len(c) == 3 and all(isinstance(s, str) for s in c) for c in out)
    assert hf_gen.generate([], SamplingParams()) == []
    assert hf_gen.name == "hf:tiny" and isinstance(hf_gen, Generator)


def test_hf_seeded_reproducible(hf_gen):
    p = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=7)
    a = hf_gen.generate(_requests(), p)
    b = hf_gen.generate(_requests(), p)
    c = hf_gen.generate(_requests(), SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=8))
    assert a == b
    assert a != c
    assert len({s for comps in a for s in comps}) > 1  # sampling, not one repeated string


def test_hf_greedy_deterministic(hf_gen):
    p = SamplingParams(n=2, temperature=0.0, max_new_tokens=8, seed=0)
    a = hf_gen.generate(_requests(), p)
    b = hf_gen.generate(_requests(), SamplingParams(n=2, temperature=0.0, max_new_tokens=8, seed=123))
    assert a == b
    assert all(c[0] == c[1] for c in a)


def test_hf_batching_does_not_change_greedy(tiny_cache_dir, tiny_model_dir, hf_gen):
    one = HFGenerator("tiny", tiny_cache_dir=tiny_cache_dir, batch_size=1, show_progress=False)
    p = SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    assert one.generate(_requests()[:2], p) == hf_gen.generate(_requests()[:2], p)


def test_cut_at_stop():
    assert cut_at_stop("abc<|end|>def<|user|>", ["<|user|>", "<|end|>"]) == "abc"
    assert cut_at_stop("abc", ["<|end|>"]) == "abc"


def test_reference_generator_parses_back():
    out = ReferenceGenerator().generate(_requests()[:2], SamplingParams(n=2))
    assert len(out) == 2 and all(len(c) == 2 for c in out)
    parsed = parse_completion(out[0][0])
    assert parsed.code == PROBLEM.reference and parsed.explanation


def test_reference_generator_needs_reference():
    no_ref = Problem(task_id="x/1", source="x", prompt="p", tests=Suite("assert"))
    with pytest.raises(ConfigError, match="x/1"):
        ReferenceGenerator().generate([GenerationRequest([], no_ref)], SamplingParams())
    with pytest.raises(ConfigError):
        ReferenceGenerator().generate([GenerationRequest([])], SamplingParams())


def test_build_generator():
    assert isinstance(build_generator("reference"), ReferenceGenerator)
    with pytest.raises(ConfigError, match="generation.kind"):
        build_generator("nope")


def test_build_generator_hf(tiny_cache_dir, tiny_model_dir):
    gen = build_generator("hf", model_name_or_path="tiny", tiny_cache_dir=tiny_cache_dir, show_progress=False)
    assert isinstance(gen, HFGenerator)


@pytest.mark.parametrize("bad", [{"n": 0}, {"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}])
def test_sampling_params_validate(bad):
    with pytest.raises(ConfigError):
        SamplingParams(**bad)


# ------------------------------------------------------------------------------------------------ KV cache

def test_kv_cache_choice(hf_gen):
    from transformers import MptConfig, MptForCausalLM

    from selfdebug.core.models import kv_cache_implementation

    assert hf_gen.cache_implementation == "static"  # auto, on the CPU, for a Llama
    assert kv_cache_implementation(hf_gen.model, "dynamic") is None
    assert kv_cache_implementation(hf_gen.model, "static") == "static"
    with pytest.raises(ConfigError, match=r"model\.generator\.cache_implementation = 'paged'"):
        kv_cache_implementation(hf_gen.model, "paged")
    # A class without a static cache keeps transformers' default under auto; asking for static is an error.
    mpt = MptForCausalLM(MptConfig(d_model=32, n_heads=2, n_layers=1, vocab_size=64, max_seq_len=32))
    assert kv_cache_implementation(mpt) is None
    with pytest.raises(ConfigError, match="MptForCausalLM has no static KV cache"):
        kv_cache_implementation(mpt, "static")


def test_kv_cache_under_peft(hf_gen):
    from peft import LoraConfig, get_peft_model

    from selfdebug.core.models import kv_cache_implementation

    wrapped = get_peft_model(hf_gen.model, LoraConfig(r=2, target_modules=["q_proj"]))
    try:
        assert kv_cache_implementation(wrapped) == "static"
    finally:
        wrapped.unload()  # hf_gen's model without the adapters, for the tests after this one


def test_bad_kv_cache_fails_before_loading():
    with pytest.raises(ConfigError, match="cache_implementation = 'paged'"):
        HFGenerator("no/such-model-anywhere", cache_implementation="paged", show_progress=False)


def test_static_cache_gives_the_same_answers(tiny_cache_dir, tiny_model_dir, hf_gen):
    """Prompts of different lengths (left padding), greedy and seeded sampling: the static cache changes the
    speed, not the tokens."""
    dynamic = HFGenerator("tiny", tiny_cache_dir=tiny_cache_dir, batch_size=4, show_progress=False,
                          cache_implementation="dynamic")
    assert dynamic.cache_implementation is None
    for params in (SamplingParams(n=1, temperature=0.0, max_new_tokens=24),
                   SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=3)):
        assert dynamic.generate(_requests(), params) == hf_gen.generate(_requests(), params)
    dynamic.close()


def test_each_batch_gets_a_static_cache_of_its_own_length(hf_gen):
    """transformers would keep the first (longest) batch's cache length for every later call; each call's
    static cache must fit its own batch, or short batches attend over the longest prompt's length."""
    lengths = []

    def record(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and type(cache).__name__ == "StaticCache":
            lengths.append(cache.get_max_length())

    long = GenerationRequest([{"role": "user", "content": "def f(x):\n    return x\n" * 60}])
    short = GenerationRequest([{"role": "user", "content": "hi"}])
    handle = hf_gen.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=4)
        hf_gen.generate([long], params)
        first = max(lengths)
        lengths.clear()
        hf_gen.generate([short], params)
    finally:
        handle.remove()
    assert lengths and max(lengths) < first / 4
