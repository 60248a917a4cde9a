"""One generation interface for every stage: transformers, the reference sanity check, OpenAI-compatible HTTP,
and vLLM (``selfdebug.generation.vllm.VLLMGenerator``, an optional extra).

A ``Generator`` turns chat requests into ``params.n`` completions each. Prompts are rendered by
``selfdebug.core.prompts`` so every backend sees the same text.
"""

from __future__ import annotations

from typing import Any

from selfdebug.core.errors import ConfigError
from selfdebug.generation.base import GenerationRequest, Generator, SamplingParams, cut_at_stop
from selfdebug.generation.hf import HFGenerator
from selfdebug.generation.reference import ReferenceGenerator

__all__ = [
    "GENERATOR_KINDS",
    "GenerationRequest",
    "Generator",
    "HFGenerator",
    "ReferenceGenerator",
    "SamplingParams",
    "build_generator",
    "cut_at_stop",
]

GENERATOR_KINDS = ("hf", "reference", "openai", "vllm")


def build_generator(kind: str, **kwargs: Any) -> Generator:
    """``"hf"`` → HFGenerator, ``"reference"`` → ReferenceGenerator, ``"openai"`` → OpenAIGenerator,
    ``"vllm"`` → VLLMGenerator (selfdebug/generation/vllm.py, the optional ``vllm`` extra)."""
    if kind == "hf":
        return HFGenerator(**kwargs)
    if kind == "reference":
        return ReferenceGenerator()  # needs no settings; others meant for the model backends are ignored
    if kind == "openai":
        from selfdebug.generation.openai import OpenAIGenerator

        return OpenAIGenerator(**kwargs)
    if kind == "vllm":
        from selfdebug.generation.vllm import VLLMGenerator

        return VLLMGenerator(**kwargs)
    raise ConfigError(f"generation.kind: unknown generator kind {kind!r}; expected one of {GENERATOR_KINDS}")
