"""SFT end to end: the LightningModule on the tiny model, golden losses, resume, every experiment config,
the saved model in ``selfdebug.evaluate``, and bad input stopping the run before training."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from selfdebug.core.errors import ConfigError
from selfdebug.train.app import run
from selfdebug.train.lifecycle import cpu_has_bf16, resolve_precision
from selfdebug.train.model import check_target_modules, generation_context
from selfdebug.train.sft.module import warmup_cosine
from tests.conftest import HEAVY_MODULES, REPO, run_profiled
from tests.test_sft_data import write_sft_dataset

CONF = REPO / "conf"
SFT_EXPS = sorted(p.stem for p in (CONF / "exp").glob("sft_*.yaml"))
# One thread: on a shared 2-core machine two OpenMP threads can be 20x slower than one.
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}

# The first losses of `+exp=sft_quickstart` on write_sft_dataset() with sft.max_steps=10, seed 0, computed
# once (CPU, fp32). A change to the data pipeline, the prompt format, the loss or the optimizer moves them.
GOLDEN_LOSSES = [8.239563941955566, 7.747343063354492, 7.412724494934082, 7.112981796264648, 6.682408809661865]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_sft_dataset(tmp_path_factory.mktemp("sft") / "dataset")


def config(*overrides: str, exp: str = "sft_quickstart"):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"+exp={exp}", *overrides])


def quiet(dataset: Path, tiny_cache_dir: Path) -> list[str]:
    return [f"dataset.path={dataset}", "logger=none", "progress=false", "trainer.enable_progress_bar=false",
            f"model.generator.tiny_cache_dir={tiny_cache_dir}"]


def train_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "selfdebug.train", f"hydra.run.dir={run_dir}", "progress=false",
           "trainer.enable_progress_bar=false", *overrides]
    return subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=900, env=ENV)


# ------------------------------------------------------------------------------------------------ pure parts

def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 4, 20, 0.1) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and all(a > b for a, b in itertools.pairwise(lrs[4:]))
    assert math.isclose(warmup_cosine(20, 4, 20, 0.1), 0.1)
    assert math.isclose(warmup_cosine(12, 4, 20), 0.5)


def test_lora_targets_must_exist(tiny_lm):
    model = tiny_lm[0]
    check_target_modules(model, ["q_proj", "v_proj"])
    check_target_modules(model, "all-linear")
    check_target_modules(model, r".*\.mlp\.down_proj")
    with pytest.raises(ConfigError, match=r"peft.target_modules: \['qkv_proj'\] match no module.*'q_proj'"):
        check_target_modules(model, ["q_proj", "qkv_proj"])


def test_bf16_falls_back_to_fp32_on_a_cpu_without_it(monkeypatch, caplog):
    from selfdebug.train import lifecycle

    monkeypatch.setattr(lifecycle, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        assert resolve_precision("bf16-mixed", "cpu") == "32-true"
    assert "trainer.precision=bf16-mixed but this CPU has no native bf16" in caplog.text
    assert resolve_precision("32-true", "cpu") == "32-true" and resolve_precision("16-mixed", "cpu") == "16-mixed"
    monkeypatch.setattr(lifecycle, "cpu_has_bf16", lambda: True)
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_generation_inside_training_runs_in_fp32_on_the_cpu():
    import pytorch_lightning as pl
    import torch

    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False)
    with trainer.precision_plugin.forward_context():
        assert torch.is_autocast_enabled("cpu")  # the training step's products run in bf16
        with generation_context(trainer):  # even inside the step's autocast
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")
    with generation_context(trainer):
        assert not torch.is_autocast_enabled("cpu")


# ------------------------------------------------------------------------------------------------ training

def test_golden_losses_and_the_loss_falls(tmp_path, dataset, tiny_cache_dir, one_thread):
    summary = run(config(*quiet(dataset, tiny_cache_dir), "sft.max_steps=10", "sft.eval_every=5"), tmp_path)
    losses = train_losses(tmp_path)
    assert len(losses) == 10 and summary["finished"] and summary["steps"] == 10
    assert losses[:5] == pytest.approx(GOLDEN_LOSSES, abs=2e-4)
    assert sum(losses[-3:]) / 3 < losses[0] - 2.0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss" in r]
    assert all(r["train/tokens_per_s"] > 0 and r["train/grad_norm"] > 0 and r["train/lr"] > 0 for r in steps)
    assert steps[0]["train/lr"] == pytest.approx(1e-3 / 3)  # warm-up: the first step already moves
    heldout = [r["heldout/loss"] for r in rows if "heldout/loss" in r]
    assert len(heldout) == 2 and heldout[1] < heldout[0]
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["step"] for s in samples} == {5, 10}
    assert all(s["problem_id"].startswith("Toy/") and s["kind"] != "codegen" for s in samples)
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["final_loss"] == pytest.approx(losses[-1])



def test_eager_attention_trains_to_the_same_losses(tmp_path, dataset, tiny_cache_dir, one_thread, caplog):
    """``model.attn_implementation=eager`` (the quickstart's SFT) reaches the training model, and in fp32 it
    gives the golden losses of the default kernel."""
    import logging

    with caplog.at_level(logging.INFO, logger="selfdebug.train"):
        run(config(*quiet(dataset, tiny_cache_dir), "sft.max_steps=5", "sft.eval_every=0",
                   "model.attn_implementation=eager"), tmp_path)
    assert any(r.getMessage().startswith("SFT: ") and r.getMessage().endswith("; eager attention")
               for r in caplog.records)
    assert train_losses(tmp_path) == pytest.approx(GOLDEN_LOSSES, abs=2e-4)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
def test_bf16_mixed_on_the_cpu_tracks_the_fp32_losses(tmp_path, dataset, tiny_cache_dir, one_thread):
    """The quickstart's SFT precision: bf16 products, fp32 weights. The losses follow the fp32 golden ones
    closely but not exactly (so bf16 was in effect), and the saved model is fp32."""
    run(config(*quiet(dataset, tiny_cache_dir), "sft.max_steps=5", "sft.eval_every=5",
               "trainer.precision=bf16-mixed"), tmp_path)
    losses = train_losses(tmp_path)
    assert losses == pytest.approx(GOLDEN_LOSSES, rel=2e-3)
    assert max(abs(a - b) for a, b in zip(losses, GOLDEN_LOSSES, strict=True)) > 2e-4
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as weights:
        assert {str(weights.get_tensor(name).dtype) for name in weights.keys()} == {"torch.float32"}
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(s["step"] == 5 for s in samples)

@pytest.mark.slow
@pytest.mark.parametrize("peft", ["none", "lora"])
def test_resume_gives_the_same_losses(tmp_path, dataset, tiny_cache_dir, one_thread, peft):
    common = [*quiet(dataset, tiny_cache_dir), f"peft={peft}", "sft.max_steps=6", "sft.eval_every=2",
              "sft.checkpoint_every=2"]
    run(config(*common), tmp_path / "straight")
    interrupted = tmp_path / "interrupted"
    first = run(config(*common, "sft.stop_after=3"), interrupted)
    assert not first["finished"] and not (interrupted / "model").exists()
    assert sorted(p.name for p in (interrupted / "checkpoints").glob("*.ckpt")) == ["step-0000002.ckpt",
                                                                                   "step-0000003.ckpt"]
    second = run(config(*common), interrupted)
    assert second["finished"] and second["resumed_from"].endswith("step-0000003.ckpt")
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(interrupted)
    assert len(straight) == len(resumed) == 6
    assert resumed == straight  # bit for bit: weights, optimizer, schedule, data order and RNG all restored


@pytest.mark.parametrize("exp", SFT_EXPS)
def test_every_sft_experiment_composes_and_runs_a_step(tmp_path, dataset, tiny_cache_dir, one_thread, exp):
    """The paper's configs with the tiny model on the CPU; batch 8 instead of 128 (the toy dataset is small),
    everything else (LoRA or full, gradient checkpointing, schedule, micro-batch size, the paper's mixture of
    both formats) as configured; one CPU device instead of the presets' 8 GPUs."""
    cfg = config("model=tiny", "trainer=cpu", "trainer.devices=1", *quiet(dataset, tiny_cache_dir),
                 "sft.batch_size=8", "sft.stop_after=1", "dataset.heldout_problems=2", "sft.eval_every=1",
                 "sft.samples=1", "sft.sample_max_new_tokens=8", exp=exp)
    assert cfg.model.name == "tiny" and cfg.stage == "sft"
    summary = run(cfg, tmp_path)
    assert summary["steps"] == 1 and summary["peft"] == ("lora" if cfg.peft.enabled else "none")
    assert math.isfinite(train_losses(tmp_path)[0])
    assert (tmp_path / "checkpoints" / "step-0000001.ckpt").is_file()
    kinds = summary["examples_by_kind"]
    if exp != "sft_quickstart":  # the paper's presets train both formats from every verified trajectory
        assert kinds["refine"] > 0 and kinds["explain_refine"] > 0 and kinds["codegen"] > 0


def test_composing_each_experiment_as_written():
    for exp in SFT_EXPS:
        cfg = config(exp=exp)
        assert cfg.stage == "sft" and cfg.dataset.path
        if exp != "sft_quickstart":
            assert cfg.sft.batch_size == 128 and cfg.sft.epochs == 2 and cfg.sft.warmup_steps == 500
            assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
            assert cfg.sft.batch_size % cfg.sft.micro_batch_size == 0
    assert config(exp="sft_7b").sft.lr == 2e-5 and not config(exp="sft_7b").peft.enabled


@pytest.mark.slow
def test_lora_adapter_loads_in_evaluate_by_path(tmp_path, dataset, tiny_cache_dir):
    """The acceptance command's shape, in a subprocess with W&B offline: LoRA training saves an adapter folder
    that ``selfdebug.evaluate model=hf model.name_or_path=<dir>`` runs."""
    run_dir = tmp_path / "sft"
    proc = train(run_dir, "+exp=sft_quickstart", f"dataset.path={dataset}", "peft=lora", "sft.max_steps=3",
                 "sft.eval_every=3", f"model.generator.tiny_cache_dir={tiny_cache_dir}")
    assert proc.returncode == 0, proc.stderr
    model_dir = run_dir / "model"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in model_dir.iterdir()}
    for name in ("metrics.jsonl", "summary.json", "samples.jsonl", ".hydra/config.yaml"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run"
    eval_dir = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "selfdebug.evaluate", "model=hf", f"model.name_or_path={model_dir}", "limit=2",
         "n_samples=1", "rounds=1", "ks=[1]", "sampling.max_new_tokens=16", "logger=none", "progress=false",
         f"hydra.run.dir={eval_dir}"], check=False, cwd=REPO, capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((eval_dir / "results.json").read_text())
    assert results["n_problems"] == 2


def test_merged_lora_saves_full_weights(tmp_path, dataset, tiny_cache_dir, one_thread):
    from selfdebug.core.models import load_causal_lm

    run(config(*quiet(dataset, tiny_cache_dir), "peft=lora", "peft.merge=true", "peft.target_modules=[q_proj,v_proj]",
               "sft.max_steps=2", "sft.eval_every=0"), tmp_path)
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "model" / "adapter_config.json").exists()
    model, _ = load_causal_lm(str(tmp_path / "model"))
    assert not hasattr(model, "peft_config")


# ------------------------------------------------------------------------------------------------ bad input

def assert_stopped_before_training(proc: subprocess.CompletedProcess, run_dir: Path, pattern: str) -> None:
    import re

    assert proc.returncode == 2, proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "model").exists() and not (run_dir / "checkpoints").exists()
    assert not (run_dir / "metrics.jsonl").exists()


def _bad_record_dataset(tmp_path: Path) -> Path:
    folder = write_sft_dataset(tmp_path / "bad", n_problems=12)
    shard = folder / "trajectories" / "part-00001-of-00002.jsonl"
    lines = shard.read_text().splitlines()
    rec = json.loads(lines[1])
    del rec["refinement"]
    lines[1] = json.dumps(rec)
    shard.write_text("\n".join(lines) + "\n")
    return folder


def _empty_dataset(tmp_path: Path) -> Path:
    folder = write_sft_dataset(tmp_path / "empty", n_problems=0)
    assert (folder / "trajectories" / "part-00000-of-00001.jsonl").read_text() == ""
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_field", "empty_dataset", "lora_target", "batch_size", "attention"])
def test_bad_input_stops_before_training(tmp_path, dataset, tiny_cache_dir, case):
    run_dir = tmp_path / "run"
    base = ["+exp=sft_quickstart", "logger=none", f"model.generator.tiny_cache_dir={tiny_cache_dir}"]
    if case == "missing_field":
        proc = train(run_dir, *base, f"dataset.path={_bad_record_dataset(tmp_path)}")
        pattern = r"error: .*part-00001-of-00002\.jsonl:2: trajectory record is missing field 'refinement'"
    elif case == "empty_dataset":
        proc = train(run_dir, *base, f"dataset.path={_empty_dataset(tmp_path)}")
        pattern = r"error: dataset.path: .* holds no records"
    elif case == "lora_target":
        proc = train(run_dir, *base, f"dataset.path={dataset}", "peft=lora", "peft.target_modules=[q_proj,attn_out]")
        pattern = r"error: peft.target_modules: \['attn_out'\] match no module"
    elif case == "attention":
        proc = train(run_dir, *base, f"dataset.path={dataset}", "model.attn_implementation=fastest")
        pattern = r"error: model.attn_implementation = 'fastest': .*not supported"
    else:
        proc = train(run_dir, *base, f"dataset.path={dataset}", "sft.batch_size=10", "sft.micro_batch_size=4")
        pattern = r"error: sft.batch_size = 10 is not divisible by sft.micro_batch_size = 4"
    assert_stopped_before_training(proc, run_dir, pattern)


@pytest.mark.parametrize("overrides, pattern", [
    (["sft.batch_size=0"], r"error: sft\.batch_size = 0; it must be >= 1"),
    (["+exp=rl_quickstart", "rl.lam=2"], r"error: rl\.lam = 2\.0; it must be in \[0\.0, 1\.0\]"),
    (["stage=rl"], r"error: rl: the config has no `rl` block"),
    (["stage=evaluate"], r"error: stage = 'evaluate'; expected one of \['pretrain', 'rl', 'sft'\]"),
])
def test_a_bad_setting_fails_before_torch_is_imported(tmp_path, overrides, pattern):
    # The stage's settings are checked before its recipe (torch, Lightning, transformers) is imported, so a
    # mistyped value costs a second, not the 5-10 s of those imports. Python's import profile lists every
    # module the process imported.
    run_dir = tmp_path / "run"
    proc, imported = run_profiled("selfdebug.train", f"hydra.run.dir={run_dir}", *overrides)
    assert "selfdebug.train.app" in imported, proc.stderr[-2000:]  # the profile saw the entry point
    assert not HEAVY_MODULES & imported
    assert_stopped_before_training(proc, run_dir, pattern)


def test_a_filtered_out_dataset_and_too_few_examples_are_config_errors(tmp_path, dataset, tiny_cache_dir):
    from selfdebug.core.errors import DataError

    with pytest.raises(DataError, match="gives no training examples"):
        run(config(*quiet(dataset, tiny_cache_dir), "dataset.mixture.explain_refine=0", "dataset.mixture.codegen=0",
                   "dataset.mixture.refine=1", "dataset.only_correct=true", "dataset.path=" + str(
                       _all_wrong(tmp_path))), tmp_path / "a")
    with pytest.raises(ConfigError, match="sft.batch_size = 512, but the training set has only"):
        run(config(*quiet(dataset, tiny_cache_dir), "sft.batch_size=512"), tmp_path / "b")
    with pytest.raises(ConfigError, match="trainer.devices = 2"):
        run(config(*quiet(dataset, tiny_cache_dir), "trainer.devices=2"), tmp_path / "c")
    assert not any((tmp_path / d / "model").exists() for d in "abc")


def _all_wrong(tmp_path: Path) -> Path:
    folder = write_sft_dataset(tmp_path / "wrong", n_problems=4)
    for shard in (folder / "trajectories").glob("*.jsonl"):
        rows = [dict(json.loads(line), verdict="wrong") for line in shard.read_text().splitlines()]
        shard.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for shard in (folder / "codegen").glob("*.jsonl"):
        shard.write_text("")
    return folder


def test_the_micro_batch_benchmark_composes_the_quickstarts_sft_in_a_fresh_process():
    # benchmarks/sft_micro_batch.py composes the train config itself; in a process that has not imported
    # selfdebug.train, the sft/rl/peft groups its defaults name must still be registered.
    code = ("import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; "
            "from sft_micro_batch import sft_config; c = sft_config(Path('data'), []); "
            "print(c.sft.max_steps, c.sft.micro_batch_size, c.trainer.precision, c.dataset.path)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["600", "2", "bf16-mixed", "data"]
