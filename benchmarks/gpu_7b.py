"""The 7B presets on one GPU: SFT with LoRA and PPO iterations of ``rl_7b_lora``, with random weights.

A CodeLlama-7B-architecture ``LlamaForCausalLM`` (32 layers, hidden 4096, MLP 11008, 32 heads, vocabulary
32016, RoPE theta 1e6) is built from its config on the GPU in bf16 with random weights: nothing is downloaded,
and every matrix product has the real model's shape. Three measurements, one script:

1. SFT with LoRA (``+exp=sft_7b peft=lora trainer=gpu trainer.devices=1``) at the preset's sequence length (``dataset.max_length`` = 2048):
   ``SFTModule`` under the Lightning Trainer, micro-batches of ``sft.micro_batch_size`` full-length sequences.
   Tokens/s, peak GPU memory, and model FLOPs utilisation against the card's dense bf16 peak (989 TFLOP/s for
   H100 SXM and H200). Model FLOPs per token follow PaLM's count (matrix products 2N per token forward, plus
   attention 4 * layers * hidden * seq_len); a training step is 3x forward for full weights, 2x for LoRA
   (frozen weights need no weight gradients); activation recompute is not counted.
2. PPO of ``+exp=rl_7b_lora`` (LoRA policy, the reference through disabled adapters, value head, the LeDex composite
   reward with CodeBLEU, unit tests and the MiniLM explanation embedding) with a batch of 8 prompts and 256
   new tokens: ``PPOModule`` under the Lightning Trainer, the time split generate / judge / reward / evaluate
   (old log-probs, values, reference log-probs) / update, and peak GPU memory. The first iteration warms up.
3. The same iteration (one PPO epoch) with ever larger batches, generated at once, until the GPU runs out
   of memory: where memory runs out.
4. The rollout engines side by side (``--parts engines``): ``rl_7b_lora`` at ``--engine-batch`` (64)
   rollouts of ``--engine-new-tokens`` (512) new tokens, generated at once, two PPO iterations with
   ``rl.rollout_engine=hf`` and then with ``rl.rollout_engine=vllm`` (adapter-only sync) in the same process:
   rollouts/s of the step and of generation alone, the step split, the sync time and bytes per step (the
   first sync also carries the frozen base; the second is the adapter alone), and peak GPU memory.

Random weights write no runnable code, so the judge's share here is a floor (every response is judged, but
none reaches a test); ``benchmarks/collect_throughput.py`` measures the sandbox on real programs.

Inputs it needs beside the code (``prepare`` writes them here, in a folder the device run carries):
a byte-level BPE tokenizer with the model's 32016 ids trained on HumanEval + MBPP text, a collected
dataset (the trajectories PPO prompts come from), and a half-precision copy of the bundled all-MiniLM-L6-v2.

    python benchmarks/gpu_7b.py prepare --dataset <collect run>/dataset --out .bench      # here
    python benchmarks/gpu_7b.py run --bench-dir .bench                                    # on the GPU
    python benchmarks/gpu_7b.py run --bench-dir .bench --arch small --device cpu           # smoke test
    python benchmarks/gpu_7b.py run --bench-dir .bench --parts engines                    # HF vs vLLM

Prints one JSON line (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# CodeLlama-7B's architecture (its config.json on the hub); "small" keeps the shape family for a CPU smoke test.
ARCHS = {
    "codellama_7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, rope_theta=1_000_000.0, max_position_embeddings=16384,
                         rms_norm_eps=1e-5),
    "small": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, rope_theta=1_000_000.0, max_position_embeddings=4096, rms_norm_eps=1e-5),
}
VOCAB = 32016
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, vendor datasheets (SXM)


# ------------------------------------------------------------------------------------------------ prepare

def prepare(args) -> None:
    """Tokenizer (32016 ids), dataset copy and a half-precision MiniLM into ``args.out``."""
    import torch
    from safetensors.torch import load_file, save_file

    from selfdebug.core.models import tiny_corpus, train_tokenizer
    from selfdebug.problems import data_file, iter_records
    from selfdebug.rewards.explanation import default_model_path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = tiny_corpus()
    for name in ("mbpp.jsonl",):
        for _, rec in iter_records(data_file(name)):
            corpus.append(str(rec.get("text", "")) + "\n" + str(rec.get("code", "")))
    # HumanEval + MBPP alone hold ~6k merges; the standard library's own sources bring the vocabulary to the
    # model's 32016 ids, so every id a random model samples decodes to text.
    stdlib = Path(os.__file__).parent
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "site-packages" not in path.parts:
            corpus.append(path.read_text(errors="replace"))
    tokenizer = train_tokenizer(VOCAB, corpus)
    if len(tokenizer) != VOCAB:
        raise SystemExit(f"tokenizer: {len(tokenizer)} ids, expected {VOCAB}; give it more text")
    tokenizer.save_pretrained(out / "tokenizer")
    print(f"tokenizer: {len(tokenizer)} ids from {len(corpus)} texts", flush=True)

    dataset = Path(args.dataset)
    if (dataset / "dataset").is_dir():
        dataset = dataset / "dataset"
    if (out / "dataset").exists():
        shutil.rmtree(out / "dataset")
    shutil.copytree(dataset, out / "dataset")

    # The bundled embedding model is 87 MiB in fp32; the device call carries at most 64 MiB, so it travels in
    # fp16 and is read back into fp32 there (cosine similarities agree to ~1e-3).
    src = Path(default_model_path())
    dst = out / "minilm"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md", ".gitattributes"))
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
              str(dst / "model.safetensors"))
    config = json.loads((dst / "config.json").read_text())
    config.update(torch_dtype="float32", dtype="float32")  # load the fp16 file back into fp32
    (dst / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"prepared {out}: {size / 2**20:.1f} MiB", flush=True)


# ------------------------------------------------------------------------------------------------ helpers

def gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 2)


def reset_peak(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict:
    import torch

    if device != "cuda":
        return {}
    return {"peak_allocated_gib": gib(torch.cuda.max_memory_allocated()),
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved())}


def card_peak_tflops(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def build_model(arch: str, tokenizer, device: str, dtype, seed: int = 0):
    """The architecture from its config, random weights (std 0.02), built directly on ``device``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, **ARCHS[arch])
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 directly: no fp32 copy of 7B parameters on the way
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def matmul_params(config) -> int:
    """Parameters that take part in a matrix product per token: every linear layer and the LM head
    (the input embedding is a lookup)."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = d * config.num_key_value_heads // config.num_attention_heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ff
    return layers * per_layer + d * config.vocab_size


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import selfdebug.train  # noqa: F401  (registers the sft/rl/peft groups the train config's defaults name)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def trainer_for(cfg, device: str, steps: int, callbacks=()):
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from selfdebug.train.lifecycle import resolve_precision

    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    precision = resolve_precision(tcfg.get("precision", "32-true")) if device == "cuda" else "32-true"
    return pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                      max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      use_distributed_sampler=False, callbacks=list(callbacks))


class StepTimer:
    """Wall time of each training step, with the GPU synchronised at both ends."""

    def __init__(self, device: str):
        import pytorch_lightning as pl
        import torch

        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        times = self.times = []

        class _Callback(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                sync()
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                sync()
                times.append(time.perf_counter() - self.t0)

        self.callback = _Callback()


# ------------------------------------------------------------------------------------------------ 1. SFT

class Batches:
    """The step batches as one iterable (Lightning reads a plain list as several dataloaders)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def bench_sft(args, tokenizer, device: str) -> dict:
    import torch

    from selfdebug.train.model import apply_lora, enable_gradient_checkpointing
    from selfdebug.train.settings import LoraSettings
    from selfdebug.train.sft.module import SFTModule
    from selfdebug.train.sft.settings import SFTSettings

    cfg = compose(["+exp=sft_7b", "peft=lora", "trainer=gpu", "trainer.devices=1", "logger=none", "sft.lr=2e-4"])
    seq = args.sft_seq or int(cfg.dataset.max_length)
    micro = int(cfg.sft.micro_batch_size)
    accumulation = args.sft_accumulation
    settings = SFTSettings(**{**dict(cfg.sft), "batch_size": micro * accumulation, "warmup_steps": 0,
                              "max_steps": args.sft_steps + 1})
    lora = LoraSettings(**dict(cfg.peft))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    reset_peak(device)
    model = build_model(args.arch, tokenizer, device, dtype)
    config = model.config
    model = apply_lora(model, lora)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())

    generator = torch.Generator().manual_seed(0)
    prompt = seq // 4  # the first quarter is the prompt (no loss), as in a refinement example

    def micro_batch():
        ids = torch.randint(0, VOCAB, (micro, seq), generator=generator)
        labels = ids.clone()
        labels[:, :prompt] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    batches = [[micro_batch() for _ in range(accumulation)] for _ in range(args.sft_steps + 1)]
    module = SFTModule(model, settings, total_steps=args.sft_steps + 1, steps_per_epoch=args.sft_steps + 1,
                       trainable_only_checkpoints=True)
    timer = StepTimer(device)
    trainer = trainer_for(cfg, device, args.sft_steps + 1, [timer.callback])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not a `DataLoader`.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, train_dataloaders=Batches(batches))
    measured = timer.times[1:]  # the first step warms up (allocator, kernels)
    tokens_per_step = micro * accumulation * seq
    tokens_per_s = tokens_per_step * len(measured) / sum(measured)
    n_matmul = matmul_params(config)
    forward_per_token = 2 * n_matmul + 4 * config.num_hidden_layers * config.hidden_size * seq
    out = {"seq_len": seq, "micro_batch_size": micro, "accumulation": accumulation,
           "tokens_per_step": tokens_per_step, "steps_timed": len(measured),
           "step_seconds": [round(t, 3) for t in measured], "tokens_per_s": round(tokens_per_s, 1),
           "parameters": total_params, "trainable_parameters": trainable,
           "gradient_checkpointing": settings.gradient_checkpointing,
           "lora": {"r": lora.r, "alpha": lora.alpha, "target_modules": lora.target_modules},
           **peak_memory(device)}
    peak = card_peak_tflops(device)
    if peak:
        achieved_lora = tokens_per_s * 2 * forward_per_token / 1e12
        achieved_full = tokens_per_s * 3 * forward_per_token / 1e12
        out.update({"model_tflops_lora": round(achieved_lora, 1), "mfu_lora": round(achieved_lora / peak, 4),
                    "mfu_6n_convention": round(achieved_full / peak, 4), "peak_tflops": peak})
    del module, trainer, model, batches
    reset_peak(device)
    return out


# ------------------------------------------------------------------------------------------------ 2-3. PPO

class PPOBench:
    """Builds the ``rl_7b_lora`` pieces once (reward, references, items, the LoRA policy) and runs iterations."""

    def __init__(self, args, tokenizer, device: str):
        from omegaconf import OmegaConf

        from selfdebug.core.errors import ConfigError
        from selfdebug.execution import Sandbox, SandboxConfig
        from selfdebug.train.data import load_records
        from selfdebug.rewards import ReferenceIndex
        from selfdebug.train.model import apply_lora, enable_gradient_checkpointing
        from selfdebug.train.rl.data import build_items, check_has_wrong_solutions
        from selfdebug.train.rl.recipe import build_reward
        from selfdebug.train.settings import LoraSettings

        import torch

        self.args, self.device, self.tokenizer = args, device, tokenizer
        bench = Path(args.bench_dir).resolve()
        self.base_overrides = ["+exp=rl_7b_lora", "logger=none", "rl.sft_checkpoint=null",
                               f"dataset.path={bench / 'dataset'}", f"reward.explanation_model={bench / 'minilm'}",
                               f"rl.max_new_tokens={args.new_tokens}", "rl.checkpoint_every=0", "rl.table_every=0"]
        cfg = compose(self.base_overrides)
        self.cfg = cfg
        self.reward = build_reward(cfg)
        trajectories, _ = load_records(cfg.dataset.path)
        check_has_wrong_solutions(trajectories, cfg.dataset.path)
        self.reward.attach_references(ReferenceIndex.from_records(rec for _, rec in trajectories))
        self.reward.scorer.model.float()  # load the embedding model before timing; fp32 as the preset runs it
        self.sandbox_config = SandboxConfig(**OmegaConf.to_container(cfg.sandbox, resolve=True))
        try:
            Sandbox(self.sandbox_config).close()
            self.isolation = "namespaces"
        except ConfigError as exc:  # a machine without user namespaces: limits only (random weights run no code)
            print(f"sandbox: {exc}; going on without namespaces", flush=True)
            self.sandbox_config = SandboxConfig(**{**OmegaConf.to_container(cfg.sandbox, resolve=True),
                                                   "allow_unisolated": True})
            self.isolation = "none"
        rl = OmegaConf.to_container(cfg.rl, resolve=True)
        self.items, self.item_counts = build_items(trajectories, tokenizer, rl["mode"], False,
                                                   int(rl["max_prompt_length"]))
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        reset_peak(device)
        policy = build_model(args.arch, tokenizer, device, dtype)
        self.lora = LoraSettings(**OmegaConf.to_container(cfg.peft, resolve=True))
        policy = apply_lora(policy, self.lora)
        if rl.get("gradient_checkpointing"):
            enable_gradient_checkpointing(policy)
        policy.train()
        self.policy = policy
        self.weights_memory = peak_memory(device)
        lengths = [len(it.prompt_ids) for it in self.items]
        self.prompt_tokens = {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths),
                              "items": len(self.items)}

    def iterate(self, batch: int, steps: int, ppo_epochs: int | None = None, engine: str = "hf",
                new_tokens: int | None = None) -> dict:
        """``steps`` PPO iterations at ``batch`` rollouts, all generated at once, sampled by ``engine``
        (``rl.rollout_engine``); the last one is reported."""
        from omegaconf import OmegaConf

        from selfdebug.execution import Sandbox
        from selfdebug.train.rl.data import PromptStream
        from selfdebug.train.rl.module import PPOModule
        from selfdebug.train.rl.settings import PPOSettings
        from selfdebug.train.settings import settings_from

        rl = OmegaConf.to_container(self.cfg.rl, resolve=True)
        prompts = min(batch, len(self.items))
        while batch % prompts:
            prompts -= 1
        mini = min(int(rl["mini_batch_size"]), batch)
        rl.update(batch_size=batch, samples_per_prompt=batch // prompts, generation_batch_size=batch,
                  mini_batch_size=mini, micro_batch_size=min(int(rl["micro_batch_size"]), mini), total_steps=steps)
        if ppo_epochs is not None:
            rl["ppo_epochs"] = ppo_epochs
        if new_tokens is not None:
            rl["max_new_tokens"] = new_tokens
        rl["rollout_engine"] = engine
        if engine == "vllm":
            rl["vllm"] = {**rl["vllm"], "gpu_memory_utilization": self.args.vllm_memory}
            if self.device != "cuda":  # the CPU build sizes its KV cache from RAM minus this process: give a size
                rl["vllm"]["engine_kwargs"] = {"kv_cache_memory_bytes": 512 << 20}
        settings = settings_from(PPOSettings, rl, "rl")
        sandbox = Sandbox(self.sandbox_config)
        reset_peak(self.device)
        module = trainer = None
        try:
            module = PPOModule(self.policy, self.tokenizer, self.reward, sandbox, self.items, settings,
                               seed=0, lora=True)
            stream = PromptStream(len(self.items), settings.prompts_per_step, steps, seed=0)
            trainer = trainer_for(self.cfg, self.device, -1)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is not a `DataLoader`.*")
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                trainer.fit(module, train_dataloaders=stream)
            last = module.history[-1]
            times = {k.split("/", 1)[1]: round(v, 3) for k, v in last.items() if k.startswith("time/")}
            step = times.get("step") or 1.0
            share = {k: round(times[k] / step, 3)
                     for k in ("sync", "generate", "judge", "reward", "evaluate", "update") if k in times}
            engine_figures = {"engine": engine, "new_tokens": settings.max_new_tokens,
                              "generate_rollouts_per_s": round(batch / max(times["generate"], 1e-9), 3),
                              "sync_s_per_step": [round(h.get("time/sync", 0.0), 4) for h in module.history],
                              "sync_bytes_per_step": [h.get("vllm/sync_bytes", 0) for h in module.history]}
            return {**engine_figures, "batch": batch, "prompts": prompts, "samples_per_prompt": batch // prompts,
                    "ppo_epochs": settings.ppo_epochs, "mini_batch_size": settings.mini_batch_size,
                    "micro_batch_size": settings.micro_batch_size, "fits": True, "iterations": steps,
                    "time_s": times, "time_share": share,
                    "response_tokens_mean": last.get("rollout/response_length_mean"),
                    "rollouts_per_s": round(batch / step, 3), **peak_memory(self.device)}
        finally:
            sandbox.close()
            del module, trainer
            reset_peak(self.device)


def bench_engines(bench: PPOBench, args, device: str) -> dict:
    """Both rollout engines on the same policy, prompts and settings, one after the other in this process."""
    out = {}
    for engine in ("hf", "vllm"):
        out[engine] = bench.iterate(args.engine_batch, steps=2, engine=engine, new_tokens=args.engine_new_tokens)
        print(json.dumps({"engine": out[engine]}), flush=True)
    hf, vllm = out["hf"], out["vllm"]
    out["vllm_over_hf_rollouts_per_s"] = round(vllm["rollouts_per_s"] / hf["rollouts_per_s"], 3)
    out["vllm_over_hf_generate_rollouts_per_s"] = round(
        vllm["generate_rollouts_per_s"] / hf["generate_rollouts_per_s"], 3)
    out["vllm_sync_share_of_step"] = vllm["time_share"].get("sync")
    return out


def bench_scan(bench: PPOBench, batches: list[int], deadline: float, device: str) -> list[dict]:
    import torch

    rows = []
    for batch in batches:
        if time.monotonic() > deadline:
            rows.append({"batch": batch, "skipped": "time budget"})
            break
        try:
            rows.append(bench.iterate(batch, steps=1, ppo_epochs=1))
        except torch.OutOfMemoryError as exc:
            rows.append({"batch": batch, "fits": False, "error": str(exc).splitlines()[0][:200],
                         **peak_memory(device)})
            reset_peak(device)
            break
        print(json.dumps({"scan": rows[-1]}), flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ main

def run(args) -> dict:
    import torch
    import transformers
    from transformers import AutoTokenizer

    start = time.monotonic()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is visible")
    import peft
    import pytorch_lightning

    try:
        import vllm

        vllm_version = vllm.__version__
    except ImportError:
        vllm_version = None
        if "engines" in args.parts:
            raise SystemExit("--parts engines: vllm is not importable here (pip install 'selfdebug[vllm]')")

    report = {"benchmark": "gpu_7b", "arch": args.arch,
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__, "lightning": pytorch_lightning.__version__,
                           "vllm": vllm_version}}
    if device == "cuda":
        report["gpu_memory_gib"] = gib(torch.cuda.get_device_properties(0).total_memory)
    tokenizer = AutoTokenizer.from_pretrained(Path(args.bench_dir) / "tokenizer")
    tokenizer.padding_side = "left"

    def emit(key, value):
        report[key] = value
        print(json.dumps({key: value}), flush=True)

    if "sft" in args.parts:
        emit("sft_lora", bench_sft(args, tokenizer, device))
    if {"ppo", "scan", "engines"} & set(args.parts):
        bench = PPOBench(args, tokenizer, device)
        emit("ppo_setup", {"prompt_tokens": bench.prompt_tokens, "sandbox_isolation": bench.isolation, "weights_and_adapters": bench.weights_memory,
                           "new_tokens": args.new_tokens, **bench.item_counts})
        if "ppo" in args.parts:
            emit("ppo_lora", bench.iterate(args.ppo_batch, steps=2))
        if "engines" in args.parts:
            emit("rollout_engines", bench_engines(bench, args, device))
        if "scan" in args.parts:
            deadline = start + args.budget_s
            emit("ppo_scan", bench_scan(bench, args.scan, deadline, device))
    report["seconds"] = round(time.monotonic() - start, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the tokenizer, dataset and embedding model the run needs")
    p.add_argument("--dataset", required=True, help="a collection's dataset folder (or its run dir)")
    p.add_argument("--out", default=".bench")
    r = sub.add_parser("run", help="measure")
    r.add_argument("--bench-dir", default=".bench")
    r.add_argument("--arch", choices=sorted(ARCHS), default="codellama_7b")
    r.add_argument("--device", default="cuda")
    r.add_argument("--parts", nargs="+", default=["sft", "ppo", "scan"], choices=["sft", "ppo", "scan", "engines"])
    r.add_argument("--sft-steps", type=int, default=3, help="timed optimizer steps (after one warm-up step)")
    r.add_argument("--sft-accumulation", type=int, default=4, help="micro-batches per optimizer step")
    r.add_argument("--sft-seq", type=int, default=None, help="sequence length (default: the preset's)")
    r.add_argument("--ppo-batch", type=int, default=8)
    r.add_argument("--new-tokens", type=int, default=256)
    r.add_argument("--engine-batch", type=int, default=64, help="engines: rollouts per step (rl_7b_lora: 64)")
    r.add_argument("--engine-new-tokens", type=int, default=512, help="engines: new tokens (rl_7b_lora: 512)")
    r.add_argument("--vllm-memory", type=float, default=0.3, help="engines: rl.vllm.gpu_memory_utilization")
    r.add_argument("--scan", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64, 128, 256, 512])
    r.add_argument("--budget-s", type=float, default=420.0, help="no new scan point starts after this many seconds")
    r.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args)
        return
    report = run(args)
    line = json.dumps(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
