"""The transformers-only sentence encoder against sentence-transformers itself, on the bundled all-MiniLM-L6-v2
and on copies of it with other pooling layouts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from selfdebug.core.errors import ConfigError
from selfdebug.rewards.explanation import ExplanationScorer, default_model_path, load_sentence_encoder
from selfdebug.rewards.sentence_encoder import PlainSentenceEncoder, plain_layout
from tests.conftest import REPO

TEXTS = ["The loop stops one element early: range(len(xs) - 1) never looks at the last item.",
         "   leading and trailing spaces   ", "x", "déjà vu: ünïcödé text", "",
         # longer than the model's 256-token limit, so truncation must match too
         "return None => return False " * 80] + [f"bug number {i} " * (i % 11 + 1) for i in range(30)]


@pytest.fixture(scope="module")
def bundled():
    return default_model_path()


def variant(bundled, tmp_path, pooling: dict, normalize: bool) -> str:
    """A copy of the bundled folder with another pooling config, and with or without the Normalize module."""
    folder = tmp_path / "variant"
    shutil.copytree(bundled, folder)
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config.update({key: False for key in config if key.startswith("pooling_mode")}, **pooling)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())
    if not normalize:
        modules = [m for m in modules if not m["type"].endswith("Normalize")]
    (folder / "modules.json").write_text(json.dumps(modules))
    return str(folder)


def sentence_transformers_vectors(path: str, texts, batch_size: int, normalize: bool) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    return model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                        normalize_embeddings=normalize, show_progress_bar=False)


def test_bundled_model_vectors_equal_sentence_transformers(bundled, batch_size=8):
    ours = load_sentence_encoder(bundled, "cpu")
    assert isinstance(ours, PlainSentenceEncoder)
    got = ours.encode(TEXTS, batch_size=batch_size, normalize_embeddings=True)
    want = sentence_transformers_vectors(bundled, TEXTS, batch_size, normalize=True)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    # Identical with sentence-transformers 6.3 (benchmarks/embedding_startup.py reports it); another release may
    # order float sums differently, so the contract is 1e-6, far below the 3 decimals S_ex is reported to.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_tokens"])
def test_other_pooling_modes_without_normalize_match_too(bundled, tmp_path, mode):
    path = variant(bundled, tmp_path, {mode: True}, normalize=False)
    layout = plain_layout(path)
    assert layout is not None and not layout.normalize
    got = load_sentence_encoder(path, "cpu").encode(TEXTS, batch_size=8)
    want = sentence_transformers_vectors(path, TEXTS, 8, normalize=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.abs(np.linalg.norm(got, axis=1) - 1.0).max() > 1e-3  # really not normalised


def test_layouts_it_cannot_encode_go_to_sentence_transformers(bundled, tmp_path):
    assert plain_layout(tmp_path / "missing") is None
    assert plain_layout("sentence-transformers/all-roberta-large-v1") is None  # a hub id, not a folder
    weighted = variant(bundled, tmp_path, {"pooling_mode_weightedmean_tokens": True}, normalize=True)
    assert plain_layout(weighted) is None
    model = load_sentence_encoder(weighted, "cpu")
    assert type(model).__name__ == "SentenceTransformer"
    two_modes = tmp_path / "two"
    shutil.copytree(weighted, two_modes)
    (two_modes / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}))
    assert plain_layout(two_modes) is None
    dense = json.loads((two_modes / "modules.json").read_text())
    dense.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (two_modes / "modules.json").write_text(json.dumps(dense))
    (two_modes / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}))
    assert plain_layout(two_modes) is None  # the Dense module
    (two_modes / "modules.json").write_text("not json")
    assert plain_layout(two_modes) is None


def test_scorer_on_a_plain_folder_with_broken_weights_names_the_key(bundled, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(bundled, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    assert plain_layout(folder) is not None
    with pytest.raises(ConfigError, match=r"reward.explanation_model = .*broken"):
        ExplanationScorer(str(folder))


def test_scoring_explanations_does_not_import_sentence_transformers():
    code = ("import sys\n"
            "from selfdebug.rewards.explanation import ExplanationScorer\n"
            "s = ExplanationScorer()\n"
            "same = s.similarity('the loop skips the last item', ['the loop skips the last item'])\n"
            "other = s.similarity('the loop skips the last item', ['a wrong operator: + where - was meant'])\n"
            "print(round(same, 4), other < same, 'sentence_transformers' in sys.modules)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["1.0", "True", "False"]
