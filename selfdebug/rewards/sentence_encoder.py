"""Sentence embeddings from a sentence-transformers folder, with transformers alone.

Loading an embedding model through sentence-transformers takes about 1.5 s longer on a 2-core CPU than this module
(``benchmarks/embedding_startup.py``: its import pulls in scikit-learn and its backends), and every evaluation
and every PPO run pays it once just to embed explanations. The usual folder layout, a
``Transformer`` module, a ``Pooling`` module (mean, CLS or max) and optionally ``Normalize`` (all-MiniLM-L6-v2,
the paper's all-roberta-large-v1), needs only a transformers encoder and a pooling step. ``plain_layout`` says
whether a folder has that layout; anything else (hub ids, other modules, other pooling modes) goes to
sentence-transformers itself. Inputs are batched as sentence-transformers batches them (longest first), so each
batch is padded the same way and the vectors match its ``encode``: identical with sentence-transformers 6.3,
within 1e-6 by contract (``tests/test_sentence_encoder.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODULE_PREFIX = "sentence_transformers.models."
POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                "pooling_mode_max_tokens": "max"}


@dataclass(frozen=True)
class PlainLayout:
    """What the folder's ``modules.json`` and module configs say: one pooling mode, the encoder's truncation
    length, and whether the vectors are unit-normalised."""
    pooling: str
    max_seq_length: int | None
    do_lower_case: bool
    normalize: bool


def plain_layout(folder: str | Path) -> PlainLayout | None:
    """The layout of a local sentence-transformers folder when this module can encode it, else None."""
    folder = Path(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [m["type"].removeprefix(MODULE_PREFIX) for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        if modules[0].get("path", "") != "":
            return None
        pooling_config = json.loads((folder / modules[1]["path"] / "config.json").read_text())
        encoder_file = folder / "sentence_bert_config.json"
        encoder_config = json.loads(encoder_file.read_text()) if encoder_file.is_file() else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    modes = [mode for key, mode in POOLING_KEYS.items() if pooling_config.get(key)]
    others = [key for key, on in pooling_config.items()
              if key.startswith("pooling_mode") and on and key not in POOLING_KEYS]
    if len(modes) != 1 or others or pooling_config.get("include_prompt") is False:
        return None
    if set(encoder_config) - {"max_seq_length", "do_lower_case"}:
        return None  # tokenizer or model arguments this module does not pass on
    return PlainLayout(pooling=modes[0], max_seq_length=encoder_config.get("max_seq_length"),
                       do_lower_case=bool(encoder_config.get("do_lower_case", False)),
                       normalize=kinds[-1] == "Normalize")


class PlainSentenceEncoder:
    """``encode`` and ``get_sentence_embedding_dimension`` for a folder with a ``plain_layout``."""

    def __init__(self, folder: str | Path, layout: PlainLayout, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.layout = layout
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).to(self.device).eval()

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 32, normalize_embeddings: bool = False,
               **_ignored) -> np.ndarray:
        """Float32 sentence vectors, one row per text; unit-norm when the folder ends in ``Normalize`` or
        ``normalize_embeddings`` is set (both: normalised twice, as sentence-transformers does)."""
        import torch

        order = np.argsort([-len(text) for text in texts])  # sentence-transformers' order: same batches
        rows: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = [texts[i] for i in order[start:start + batch_size]]
                if self.layout.do_lower_case:
                    batch = [text.lower() for text in batch]
                features = self.tokenizer(batch, padding=True, truncation="longest_first", return_tensors="pt",
                                          max_length=self.layout.max_seq_length).to(self.device)
                tokens = self.model(**features).last_hidden_state
                rows.extend(self._pool(tokens, features["attention_mask"]))
        vectors = torch.stack([rows[i] for i in np.argsort(order)]) if rows else \
            torch.zeros((0, self.get_sentence_embedding_dimension()))
        for _ in range(int(self.layout.normalize) + int(normalize_embeddings)):
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.float().cpu().numpy()

    def _pool(self, tokens, attention_mask):
        import torch

        if self.layout.pooling == "cls":
            return tokens[:, 0]
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        if self.layout.pooling == "max":
            return tokens.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        summed = (tokens * mask).sum(dim=1, dtype=torch.float32)
        return summed / torch.clamp(mask.sum(dim=1, dtype=torch.float32), min=1e-9)
