"""Put a pretraining run's model where ``model=mini`` loads it: ``selfdebug/models/mini/`` (or ``--to``).

    python -m selfdebug.train.pretrain.install outputs/train/pretrain/mini/<time>/model

Checks first that every file recipe.json lists has its recorded sha256 and that the folder stays within the
size the repository accepts (30 MB), then copies it (to a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from selfdebug.core.errors import ConfigError
from selfdebug.core.models import mini_dir
from selfdebug.train.pretrain.recipe import RECIPE

MAX_BYTES = 30 * 1024 * 1024


def verify(model_dir: Path) -> dict:
    """The folder's recipe, once every file it lists has its recorded sha256 (a ConfigError otherwise)."""
    model_dir = Path(model_dir)
    recipe_path = model_dir / RECIPE
    if not recipe_path.is_file():
        raise ConfigError(f"{model_dir}: no {RECIPE}; install a finished pretraining run's model/ folder")
    recipe = json.loads(recipe_path.read_text())
    for name, digest in recipe["sha256"].items():
        path = model_dir / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ConfigError(f"{path}: missing or changed since training (sha256 differs from {RECIPE})")
    size = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    if size > MAX_BYTES:
        raise ConfigError(f"{model_dir}: {size / 2**20:.1f} MB, over the {MAX_BYTES // 2**20} MB a committed model may "
                          "take; train a smaller one (pretrain.hidden_size, layers, vocab_size)")
    return recipe


def install(model_dir: Path, target: Path | None = None) -> Path:
    recipe = verify(model_dir)
    target = Path(target) if target is not None else mini_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in [*recipe["sha256"], RECIPE]:
            shutil.copyfile(Path(model_dir) / name, tmp / name)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="<pretraining run dir>/model")
    parser.add_argument("--to", type=Path, default=None, help="target folder (default: selfdebug/models/mini)")
    args = parser.parse_args(argv)
    try:
        target = install(args.model_dir, args.to)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"installed {args.model_dir} -> {target}; `model=mini` loads it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
