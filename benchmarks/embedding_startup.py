"""Start-up of the explanation scorer: our transformers-only encoder against sentence-transformers, in one run.

Every evaluation and every PPO run builds one ``ExplanationScorer`` (S_ex, R_expl). Each side runs in a fresh
Python process, as a stage does, after importing torch and transformers' ``AutoModel`` (a stage has already
imported them for its language model), and times: load the embedding model (the bundled all-MiniLM-L6-v2 unless
``--model``), then embed ``--texts`` explanations. The sides alternate, ``--repeats`` times each; the best time
of each is reported, with whether their vectors are identical. Prints one JSON line.

    python benchmarks/embedding_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SIDE = r"""
import sys, time
import numpy as np, torch, transformers
from transformers import AutoModel
side, path, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
texts = [f"The loop stops one item early, so case {i} of the input is never counted." * (1 + i % 4) for i in range(n)]
start = time.perf_counter()
if side == "ours":
    from selfdebug.rewards.explanation import load_sentence_encoder
    model = load_sentence_encoder(path, "cpu")
else:
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(path, device="cpu")
vectors = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                       show_progress_bar=False)
seconds = time.perf_counter() - start
np.save(out, vectors)
print(seconds, "sentence_transformers" in sys.modules)
"""


def run_side(side: str, path: str, texts: int, out: str) -> tuple[float, bool]:
    done = subprocess.run([sys.executable, "-c", SIDE, side, path, str(texts), out], capture_output=True,
                          text=True, check=True)
    seconds, imported = done.stdout.split()[-2:]
    return float(seconds), imported == "True"


def main() -> None:
    import numpy as np

    from selfdebug.rewards.explanation import default_model_path
    from selfdebug.rewards.sentence_encoder import plain_layout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a sentence-transformers folder (default: the bundled one)")
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/selfdebug-embedding-startup")
    args = parser.parse_args()
    path = args.model or default_model_path()
    if plain_layout(path) is None:
        sys.exit(f"error: {path} is not a Transformer + Pooling (+ Normalize) folder; ours would fall back to "
                 f"sentence-transformers there")
    os.makedirs(args.workdir, exist_ok=True)
    times: dict[str, list[float]] = {"ours": [], "sentence_transformers": []}
    imported = {}
    for _ in range(args.repeats):
        for side, seconds_so_far in times.items():
            seconds, imported[side] = run_side(side, path, args.texts, os.path.join(args.workdir, f"{side}.npy"))
            seconds_so_far.append(seconds)
    ours, peer = (np.load(os.path.join(args.workdir, f"{side}.npy")) for side in times)
    best = {side: min(values) for side, values in times.items()}
    print(json.dumps({
        "benchmark": "embedding_startup", "model": os.path.basename(os.path.dirname(path)) or path,
        "texts": args.texts, "repeats": args.repeats,
        "ours_s": round(best["ours"], 3), "sentence_transformers_s": round(best["sentence_transformers"], 3),
        "saved_s": round(best["sentence_transformers"] - best["ours"], 3),
        "speedup": round(best["sentence_transformers"] / best["ours"], 2),
        "ours_imports_sentence_transformers": imported["ours"],
        "vectors_identical": bool(np.array_equal(ours, peer)),
        "max_abs_diff": float(np.abs(ours - peer).max()),
    }))


if __name__ == "__main__":
    main()
