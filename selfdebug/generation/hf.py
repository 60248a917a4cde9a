"""The transformers backend: batched ``model.generate`` on a causal LM."""

from __future__ import annotations

import copy
import gc
from collections.abc import Sequence
from typing import Any

from selfdebug.core.errors import ConfigError
from selfdebug.generation.base import GenerationRequest, Generator, SamplingParams, cut_at_stop


class HFGenerator(Generator):
    """Batched ``model.generate`` with a transformers causal LM (left padding, KV cache).

    Each prompt is repeated ``n`` times and the repeated prompts are cut into batches of ``batch_size``.
    Sampling is seeded from ``params.seed`` on every call, so the same call gives the same completions.
    """

    def __init__(self, model_name_or_path: str, *, batch_size: int = 8, dtype: Any = "auto",
                 device: str = "cpu", tiny_cache_dir: str | None = None, stop: Sequence[str] = ("<|end|>",),
                 show_progress: bool = True, trust_remote_code: bool = False, chat_format: str = "template",
                 cache_implementation: str = "auto", attn_implementation: str | None = None):
        from selfdebug.core.models import check_kv_cache, kv_cache_implementation, load_causal_lm
        from selfdebug.core.prompts import apply_chat_format, check_chat_format

        check_chat_format(chat_format)  # before the weights load
        if batch_size < 1:
            raise ConfigError(f"generation.batch_size: must be >= 1, got {batch_size}")
        self.model_name_or_path = str(model_name_or_path)
        self.batch_size = batch_size
        self.stop = tuple(stop)
        self.show_progress = show_progress
        check_kv_cache(cache_implementation)  # before the weights load
        self.model, self.tokenizer = load_causal_lm(
            model_name_or_path, dtype=dtype, device=device, tiny_cache_dir=tiny_cache_dir,
            trust_remote_code=trust_remote_code, attn_implementation=attn_implementation,
        )
        apply_chat_format(self.tokenizer, chat_format, "model.chat_format")
        self.device = next(self.model.parameters()).device
        self.cache_implementation = kv_cache_implementation(self.model, cache_implementation)
        # Stop strings that are one token end generation early; the others are cut from the text after.
        self.stop_token_ids = self._stop_token_ids()

    @property
    def name(self) -> str:
        return f"hf:{self.model_name_or_path}"

    def _stop_token_ids(self) -> list[int]:
        ids = []
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, (list, tuple)) else [eos]
        ids.extend(int(e) for e in eos if e is not None)
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        for s in self.stop:
            enc = self.tokenizer.encode(s, add_special_tokens=False)
            if len(enc) == 1:
                ids.append(int(enc[0]))
        return sorted(set(ids))

    def render(self, messages: list[dict]) -> str:
        from selfdebug.core.prompts import render_chat

        return render_chat(messages, self.tokenizer, add_generation_prompt=True)

    def _generation_config(self, params: SamplingParams):
        gen = copy.deepcopy(self.model.generation_config)
        gen.max_new_tokens = params.max_new_tokens
        gen.max_length = None
        gen.use_cache = True
        gen.cache_implementation = self.cache_implementation
        gen.num_return_sequences = 1
        gen.num_beams = 1
        gen.eos_token_id = self.stop_token_ids or None
        gen.pad_token_id = self.tokenizer.pad_token_id
        if params.greedy:
            gen.do_sample = False
            gen.temperature, gen.top_p, gen.top_k = 1.0, 1.0, None
        else:
            # Pure nucleus sampling (top_k off), as the paper's temperature/top_p describe and as vLLM does.
            gen.do_sample = True
            gen.temperature, gen.top_p, gen.top_k = float(params.temperature), float(params.top_p), 0
        return gen

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[str]]:
        import torch
        from tqdm.auto import tqdm

        from selfdebug.core.models import fit_static_cache

        if not requests:
            return []
        prompts = [self.render(r.messages) for r in requests]
        # Chat templates put their own special tokens in the text; StarChat text gets the tokenizer's.
        add_special = not getattr(self.tokenizer, "chat_template", None)
        lengths = [len(self.tokenizer.encode(p, add_special_tokens=add_special)) for p in prompts]
        # Longest prompts first: batches hold prompts of similar length (less padding), OOM shows up early.
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        flat = [i for i in order for _ in range(params.n)]
        batches = [flat[s:s + self.batch_size] for s in range(0, len(flat), self.batch_size)]
        out: list[list[str]] = [[] for _ in requests]
        gen_config = self._generation_config(params)
        stop_ids = set(self.stop_token_ids)

        torch.manual_seed(params.seed)
        bar = tqdm(batches, desc=f"generate {self.name}", unit="batch", disable=not self.show_progress)
        with torch.inference_mode():
            for batch in bar:
                enc = self.tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                                     add_special_tokens=add_special).to(self.device)
                if self.cache_implementation == "static":
                    fit_static_cache(self.model)
                seqs = self.model.generate(**enc, generation_config=gen_config)
                new = seqs[:, enc["input_ids"].shape[1]:].tolist()
                for i, ids in zip(batch, new):
                    end = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
                    text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
                    out[i].append(cut_at_stop(text, self.stop))
        bar.close()
        return out

    def close(self) -> None:
        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
