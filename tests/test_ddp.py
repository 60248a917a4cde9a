"""Training on several processes (selfdebug/train/distributed.py, conf/trainer/{ddp,fsdp,deepspeed}.yaml).

Two gloo ranks on the CPU, started by Lightning through the real entry point (``python -m selfdebug.train ...
trainer=ddp trainer.accelerator=cpu trainer.devices=2``), checked against one process where they must agree:

- SFT: the ranks' micro-batches together are the one-process step's, so the loss trajectory and the final
  weights match one process with the same global batch; stopped after step 2 and resumed, the run continues
  on the same trajectory; only rank 0 writes the run's records.
- PPO (offline rollouts, so both runs score the same responses; one minibatch per epoch, so the updates see
  the same examples): whitening over all ranks' tokens and one KL controller fed the global KL give the
  one-process rewards, KL coefficients and weights; both ranks end with the same weights and coefficient.
- The statistics themselves: each rank's whitened advantages equal the one-process whitening of the whole
  batch (two real gloo processes).
- trainer=fsdp (FSDP2 through Lightning's ModelParallelStrategy) runs on the CPU too: SFT matches one process,
  PPO shards the policy, its reference and the value head, and both save a model that loads.
- DeepSpeed cannot run here (no CUDA): its configs compose, and the strategy is built or refused clearly.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from selfdebug.core.errors import ConfigError
from tests.conftest import REPO
from tests.test_ppo import WRONG_DIGITS, toy_record, write_dataset
from tests.test_sft_data import write_sft_dataset

CONF = REPO / "conf"
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TWO_CPUS = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
SFT = ["+exp=sft_quickstart", "logger=none", "progress=false", "trainer.enable_progress_bar=false", "sft.max_steps=4",
       "sft.micro_batch_size=2", "sft.checkpoint_every=2", "sft.eval_every=4", "sft.samples=1",
       "sft.sample_max_new_tokens=8"]
# Offline PPO: the teacher's answers are the responses (no sampling), one minibatch of the whole batch per epoch.
PPO = ["+exp=rl_quickstart", "progress=false", "trainer.enable_progress_bar=false", "rl.offline=true",
       "rl.total_steps=2", "rl.batch_size=8", "rl.mini_batch_size=8", "rl.micro_batch_size=2", "rl.ppo_epochs=2",
       "rl.checkpoint_every=1", "rl.table_every=1", "rl.gradient_cosine=true"]


def config(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def launch(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """The entry point in a subprocess; with trainer.devices=2 Lightning re-runs it for rank 1."""
    cmd = [sys.executable, "-m", "selfdebug.train", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def assert_weights_close(a: dict, b: dict, atol: float) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= atol, worst
    return worst


def assert_two_ranks_ran(run_dir: Path) -> None:
    """Rank 1 ran (Hydra's log of its job is there; Lightning starts it without an output subdir)."""
    assert (run_dir / "train_ddp_process_1.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["devices"] == 2


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    return write_sft_dataset(tmp_path_factory.mktemp("ddp-sft") / "dataset")


@pytest.fixture(scope="module")
def ppo_data(tmp_path_factory) -> Path:
    """The toy problem's nine wrong programs; every third teacher answer keeps the bug (the judge fails it) and
    the explanations differ in length, so rewards and lengths vary between ranks: whitening with one rank's
    statistics instead of the global ones moves the weights by 7.6e-4 (measured), 15x the tolerance below."""
    records = []
    for i, digit in enumerate(WRONG_DIGITS):
        rec = toy_record(i, digit)
        if i % 3 == 0:
            rec.update(refinement=f"x = {digit}\n", verdict="wrong", status="failed", n_passed=0)
        rec["explanation"] = " ".join([rec["explanation"]] * (1 + i % 3))
        records.append(rec)
    return write_dataset(tmp_path_factory.mktemp("ddp-ppo"), records)


@pytest.fixture(scope="module")
def sft_one_process(tmp_path_factory, sft_data, tiny_cache_dir) -> Path:
    from selfdebug.train.app import run

    run_dir = tmp_path_factory.mktemp("sft-one")
    run(config(*SFT, f"dataset.path={sft_data}", f"model.generator.tiny_cache_dir={tiny_cache_dir}"), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def ppo_one_process(tmp_path_factory, ppo_data, tiny_cache_dir) -> Path:
    from selfdebug.train.rl.recipe import run

    run_dir = tmp_path_factory.mktemp("ppo-one")
    run(config(*PPO, "logger=none", f"dataset.path={ppo_data}", f"model.generator.tiny_cache_dir={tiny_cache_dir}"),
        run_dir)
    return run_dir


# ------------------------------------------------------------------------------------------------ the statistics

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Six right-padded rows of different lengths; rows 1, 3, 5 sit far from rows 0, 2, 4 (the shards differ)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 7, generator=g, dtype=torch.float64)
    x[1::2] = 3.0 * x[1::2] + 5.0
    lengths = [7, 2, 5, 3, 1, 6]
    mask = torch.zeros(6, 7, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return x * mask, mask


def _statistics_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from selfdebug.train.distributed import close_process_group, global_mean, reduce_metrics, sum_across_ranks
    from selfdebug.train.rl.ppo_math import AdaptiveKLController, masked_whiten

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x, mask = _batch()
    mine = slice(rank, None, 2)
    width = int(mask[mine].sum(1).max())  # each rank pads to its own longest row, as a rollout batch does
    x, mask = x[mine, :width], mask[mine, :width]
    kl = AdaptiveKLController(0.2, target=6.0, horizon=10)
    kl_mean, n = global_mean((x * mask).sum(1))
    kl.update(kl_mean, n)
    metrics = reduce_metrics({"reward/total": float(x[:, 0].mean()), "rollout/n": 3, "sandbox/executed": rank + 1,
                              "time/step": 1.0 + rank, "rollout/response_length_max": 4.0 + rank,
                              "rollout/no_code_rate": 0.5 * rank, "reward/r_expl": float("nan") if rank else 1.0})
    torch.save({"whitened": masked_whiten(x, mask, all_reduce=sum_across_ranks),
                "unshifted": masked_whiten(x, mask, shift_mean=False, all_reduce=sum_across_ranks),
                "kl_coef": kl.value, "kl_mean": kl_mean, "n": n, "metrics": metrics}, Path(out) / f"rank{rank}.pt")
    close_process_group()  # what the entry point does after a run
    (Path(out) / f"closed{rank}").write_text(str(dist.is_initialized()))
    close_process_group()  # no group left: nothing to do


def test_whitening_and_the_kl_controller_use_every_rank(tmp_path):
    """Two gloo processes, each with half the rows (padded to its own width): what each rank computes equals
    the one-process computation on the whole batch; the entry point's closing of the group ends it on both."""
    from selfdebug.train.rl.ppo_math import AdaptiveKLController, masked_whiten

    torch.multiprocessing.start_processes(_statistics_worker, args=(_free_port(), str(tmp_path)), nprocs=2,
                                          start_method="spawn")
    x, mask = _batch()
    whole, unshifted = masked_whiten(x, mask), masked_whiten(x, mask, shift_mean=False)
    kl = AdaptiveKLController(0.2, target=6.0, horizon=10)
    kl.update(float((x * mask).sum(1).mean()), 6)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [(tmp_path / f"closed{r}").read_text() for r in range(2)] == ["False", "False"]
    for r, got in enumerate(ranks):
        width = got["whitened"].shape[1]
        assert torch.allclose(got["whitened"], whole[r::2, :width], atol=1e-12)
        assert torch.allclose(got["unshifted"], unshifted[r::2, :width], atol=1e-12)
        assert got["n"] == 6 and got["kl_mean"] == pytest.approx(float((x * mask).sum(1).mean()), abs=1e-12)
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"] == pytest.approx(kl.value) != 0.2  # one controller state
    local = masked_whiten(x[0::2], mask[0::2])  # what rank 0 alone would compute: visibly different
    assert not torch.allclose(local, whole[0::2], atol=1e-3)
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == {
        "reward/total": pytest.approx(float(x[:, 0].mean())), "rollout/n": 6, "sandbox/executed": 3, "time/step": 2.0,
        "rollout/response_length_max": 5.0, "rollout/no_code_rate": 0.25, "reward/r_expl": 1.0}


# ------------------------------------------------------------------------------------------------ DDP end to end

@pytest.mark.slow
def test_ddp_sft_and_ppo_match_one_process(tmp_path, sft_data, ppo_data, tiny_cache_dir, sft_one_process,
                                           ppo_one_process):
    start = time.time()
    cache = f"model.generator.tiny_cache_dir={tiny_cache_dir}"
    sft_dir, ppo_dir = tmp_path / "sft", tmp_path / "ppo"
    # Both runs at once: each rank 0 idles while its rank 1 starts up.
    sft = launch(sft_dir, *SFT, *TWO_CPUS, "trainer=ddp", f"dataset.path={sft_data}", cache, "sft.stop_after=2")
    ppo = launch(ppo_dir, *PPO, *TWO_CPUS, "trainer=ddp", f"dataset.path={ppo_data}", cache, "logger=wandb")
    out = finish(sft)
    assert "SFT stopped after step 2 of 4" in out and not (sft_dir / "model").exists()
    resumed = launch(sft_dir, *SFT, *TWO_CPUS, "trainer=ddp", f"dataset.path={sft_data}", cache)
    assert "RL done: 2 PPO steps" in finish(ppo)
    assert "SFT done: 4 steps" in finish(resumed)
    print(f"DDP runs: {time.time() - start:.1f} s")

    # SFT: the same global batch gives the same trajectory, through a stop and a resume.
    one, two = rows(sft_one_process), rows(sft_dir)
    losses_one = [r["train/loss"] for r in one if "train/loss" in r]
    losses_two = [r["train/loss"] for r in two if "train/loss" in r]
    assert [r["step"] for r in two if "train/loss" in r] == [1, 2, 3, 4]  # rank 0 alone wrote them, once each
    assert losses_two == pytest.approx(losses_one, rel=1e-5)
    assert [r["train/grad_norm"] for r in two if "train/loss" in r] == pytest.approx(
        [r["train/grad_norm"] for r in one if "train/loss" in r], rel=1e-4)
    # held-out loss at the end (the stopped run also evaluated at its last step, 2)
    assert [r["heldout/loss"] for r in two if r["step"] == 4 and "heldout/loss" in r] == pytest.approx(
        [r["heldout/loss"] for r in one if "heldout/loss" in r], rel=1e-5)
    worst = assert_weights_close(weights(sft_one_process / "model" / "model.safetensors"),
                                 weights(sft_dir / "model" / "model.safetensors"), atol=1e-4)
    print(f"SFT losses 1 process {losses_one}\n           2 ranks   {losses_two}\n max weight difference {worst:.2e}")
    summary = json.loads((sft_dir / "summary.json").read_text())
    assert summary["finished"] and summary["strategy"] == "ddp"
    assert summary["resumed_from"].endswith("step-0000002.ckpt")
    assert summary["ranks"]["weights"][0] == summary["ranks"]["weights"][1]  # replicas identical, bit for bit
    samples = [json.loads(line)["step"] for line in (sft_dir / "samples.jsonl").read_text().splitlines()]
    assert samples == [2, 4]  # one held-out sample per evaluation, written by rank 0 only
    assert_two_ranks_ran(sft_dir)

    # PPO: same rollouts, global whitening and KL: the one-process run's figures and weights.
    one, two = rows(ppo_one_process), rows(ppo_dir)
    assert [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        assert b["rollout/n"] == a["rollout/n"] == 8  # the two ranks' 4 rollouts each, summed
        assert b["objective/kl_coef"] == pytest.approx(a["objective/kl_coef"], rel=1e-9)
        for key in ("reward/total", "reward/r_code", "rollout/pass_rate", "objective/kl", "ppo/policy_loss",
                    "ppo/value_loss", "ppo/approx_kl", "ppo/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert two[-1]["objective/kl_coef"] != two[0]["objective/kl_coef"]  # the adaptive controller moved
    # the gradient cosine sums its parts over the ranks: the one-process figure (NaN at the first step)
    assert math.isnan(two[0]["ppo/gradient_cosine"]) and math.isnan(one[0]["ppo/gradient_cosine"])
    assert two[1]["ppo/gradient_cosine"] == pytest.approx(one[1]["ppo/gradient_cosine"], rel=1e-4)
    summary, single = (json.loads((d / "summary.json").read_text()) for d in (ppo_dir, ppo_one_process))
    assert summary["ranks"]["kl_coef"] == [single["kl_coef_final"]] * 2  # one coefficient, on both ranks
    assert summary["ranks"]["weights"][0] == summary["ranks"]["weights"][1]
    worst = assert_weights_close(weights(ppo_one_process / "model" / "model.safetensors"),
                                 weights(ppo_dir / "model" / "model.safetensors"), atol=5e-5)
    head_one, head_two = (torch.load(d / "value_head.pt") for d in (ppo_one_process, ppo_dir))
    assert torch.allclose(head_one["linear.weight"], head_two["linear.weight"], atol=1e-5)
    print(f"PPO max weight difference {worst:.2e}")
    assert len(list((ppo_dir / "wandb").glob("offline-run-*"))) == 1  # rank 0's W&B run only
    # table_every=1: each step rank 0 writes the rows of its own 4 rollouts, rank 1 none
    assert len((ppo_dir / "rollouts.jsonl").read_text().splitlines()) == 2 * 4
    assert_two_ranks_ran(ppo_dir)


# ------------------------------------------------------------------------------------------------ FSDP2

@pytest.mark.slow
def test_fsdp_runs_sft_and_ppo_on_cpu(tmp_path, sft_data, ppo_data, tiny_cache_dir, sft_one_process):
    from selfdebug.core.models import load_causal_lm

    cache = f"model.generator.tiny_cache_dir={tiny_cache_dir}"
    sft_dir, ppo_dir, lora_dir = tmp_path / "sft", tmp_path / "ppo", tmp_path / "lora"
    sft = launch(sft_dir, *SFT, *TWO_CPUS, "trainer=fsdp", f"dataset.path={sft_data}", cache)
    # PPO with full weights: policy, frozen reference and value head sharded; sampled rollouts (synced_gpus)
    ppo = launch(ppo_dir, *PPO, *TWO_CPUS, "trainer=fsdp", f"dataset.path={ppo_data}", cache, "logger=none",
                 "rl.offline=false", "rl.max_new_tokens=12", "rl.generation_batch_size=4")
    # LoRA: the transformer under the adapters is the sharded root, so generate() (held-out samples) works
    lora = launch(lora_dir, *SFT, *TWO_CPUS, "trainer=fsdp", f"dataset.path={sft_data}", cache, "peft=lora",
                  "sft.max_steps=2", "sft.eval_every=2")
    finish(sft)
    finish(ppo)
    finish(lora)
    load_causal_lm(str(lora_dir / "model"))  # the adapter, saved from the gathered weights, loads on its base
    assert [json.loads(line)["step"] for line in (lora_dir / "samples.jsonl").read_text().splitlines()] == [2]
    one = [r["train/loss"] for r in rows(sft_one_process) if "train/loss" in r]
    sharded = [r["train/loss"] for r in rows(sft_dir) if "train/loss" in r]
    assert sharded == pytest.approx(one, rel=1e-5)
    assert_weights_close(weights(sft_one_process / "model" / "model.safetensors"),
                         weights(sft_dir / "model" / "model.safetensors"), atol=1e-4)
    summary = json.loads((ppo_dir / "summary.json").read_text())
    assert summary["finished"] and summary["strategy"] == "fsdp"
    cosine = rows(ppo_dir)[1]["ppo/gradient_cosine"]  # from the ranks' shards, summed
    assert -1.0 <= cosine <= 1.0
    assert len(set(summary["ranks"]["weights"])) == 1 and len(set(summary["ranks"]["kl_coef"])) == 1
    hidden = json.loads((ppo_dir / "model" / "config.json").read_text())["hidden_size"]
    assert torch.load(ppo_dir / "value_head.pt")["linear.weight"].shape == (1, hidden)  # gathered, not a shard
    load_causal_lm(str(ppo_dir / "model"))  # the gathered full weights load as an ordinary model


# ------------------------------------------------------------------------------------------------ configs

def test_trainer_configs_compose_and_build_lightnings_strategies():
    from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy

    from selfdebug.train.distributed import build_strategy, build_trainer, check_trainer

    ddp = config("trainer=ddp").trainer
    strategy = build_strategy(dict(ddp.strategy), check_trainer(dict(ddp), lora=False), max_grad_norm=1.0)
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs == {"find_unused_parameters": False}
    fsdp = config("trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true").trainer
    trainer = build_trainer(dict(fsdp), lora=False, max_grad_norm=1.0, logger=False)
    assert isinstance(trainer.strategy, ModelParallelStrategy)
    assert trainer.strategy._tensor_parallel_size == 1 and trainer.strategy._data_parallel_size == 1
    assert trainer.strategy._save_distributed_checkpoint is False
    for name, stage in (("deepspeed", 2), ("deepspeed_zero3", 3)):
        cfg = config(f"trainer={name}").trainer
        assert cfg.strategy._target_.endswith("DeepSpeedStrategy") and cfg.strategy.stage == stage
        assert cfg.accelerator == "gpu" and cfg.precision == "bf16-mixed"
    assert "not implemented" not in (CONF / "trainer" / "gpu.yaml").read_text()


def test_deepspeed_is_built_or_refused_with_one_clear_error():
    import importlib.util

    from selfdebug.train.distributed import build_strategy, check_trainer

    tcfg = dict(config("trainer=deepspeed_zero3").trainer)
    tcfg["strategy"] = dict(tcfg["strategy"])
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match=r"trainer=deepspeed needs the deepspeed package.*pip install deepspeed"):
            check_trainer(tcfg, lora=False)
        return
    strategy = build_strategy(tcfg["strategy"], check_trainer(tcfg, lora=False), max_grad_norm=0.5)
    assert strategy.config["zero_optimization"]["stage"] == 3 and strategy.config["gradient_clipping"] == 0.5
    with pytest.raises(ConfigError, match="trainer.accelerator = cpu: trainer=deepspeed needs GPUs"):
        check_trainer({**tcfg, "accelerator": "cpu"}, lora=False)


@pytest.mark.parametrize("overrides, words", [
    (["trainer.strategy=fsdp"], ["trainer.strategy", "FSDP1", "#19626", "trainer=fsdp"]),
    (["trainer.strategy=ddp_spawn"], ["trainer.strategy = 'ddp_spawn'", "trainer=ddp"]),
    (["trainer=fsdp", "trainer.accelerator=cpu", "peft=lora", "peft.merge=true"], ["peft.merge", "trainer=fsdp"]),
    (["trainer=ddp", *TWO_CPUS, "sft.batch_size=8", "sft.micro_batch_size=8"],
     ["sft.batch_size = 8 must be a multiple of sft.micro_batch_size (8) x trainer.devices (2)"]),
    (["trainer=ddp", *TWO_CPUS], ["trainer.devices = 2", "python -m selfdebug.train"]),  # pytest is no entry point
])
def test_bad_multi_device_config_is_one_config_error(tmp_path, sft_data, tiny_cache_dir, overrides, words):
    from selfdebug.train.app import run

    with pytest.raises(ConfigError) as info:
        run(config(*SFT, f"dataset.path={sft_data}", f"model.generator.tiny_cache_dir={tiny_cache_dir}", *overrides),
            tmp_path)
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()


def test_ppo_batch_must_split_over_the_ranks():
    from selfdebug.train.rl.recipe import check_data_parallel
    from selfdebug.train.rl.settings import PPOSettings

    check_data_parallel(PPOSettings(batch_size=8, mini_batch_size=4, micro_batch_size=2), 2, "ddp")
    with pytest.raises(ConfigError, match=r"rl.batch_size = 6 \(6 prompts .*trainer.devices = 4"):
        check_data_parallel(PPOSettings(batch_size=6, mini_batch_size=2, micro_batch_size=2), 4, "ddp")
    with pytest.raises(ConfigError, match=r"rl.mini_batch_size = 4 must be a multiple of rl.micro_batch_size \(4\)"):
        check_data_parallel(PPOSettings(batch_size=8, mini_batch_size=4, micro_batch_size=4), 2, "ddp")
    with pytest.raises(ConfigError, match="rl.micro_batch_size=4 \\(rl.mini_batch_size / trainer.devices\\)"):
        check_data_parallel(PPOSettings(batch_size=16, mini_batch_size=8, micro_batch_size=2), 2, "deepspeed")


def test_step_batches_shard_a_step_by_rank():
    """The ranks' micro-batches are the one-process step's micro-batches, dealt out round-robin."""
    from selfdebug.train.data import BatchPlan, StepBatches, TokenizedExample

    examples = [TokenizedExample(torch.arange(1, 3 + i % 7), 1, "refine", f"p{i}") for i in range(24)]
    plan = BatchPlan(8, 2, steps_per_epoch=3, total_steps=5)
    whole = StepBatches(examples, plan, pad_id=0, seed=3)
    ranks = [StepBatches(examples, plan, pad_id=0, seed=3, rank=r, world=2) for r in range(2)]
    for step in range(5):
        full = whole.batch(step)
        assert len(full) == 4 and [len(r.batch(step)) for r in ranks] == [2, 2]
        dealt = [ranks[k % 2].batch(step)[k // 2] for k in range(4)]
        assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(full, dealt))
    with pytest.raises(ConfigError, match="trainer.devices \\(3\\)"):
        StepBatches(examples, plan, pad_id=0, rank=0, world=3)


@pytest.mark.slow
def test_a_bad_strategy_ends_the_command_with_exit_2_and_one_error_line(tmp_path):
    """The entry point as a user runs it: Lightning's FSDP1 strategy is refused before any data or model loads."""
    proc = subprocess.run([sys.executable, "-m", "selfdebug.train", "+exp=sft_quickstart", "trainer=gpu",
                           "trainer.strategy=fsdp", "trainer.devices=8", "logger=none", f"hydra.run.dir={tmp_path}"],
                          check=False, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.strategy" in errors[0] and "trainer=fsdp" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "metrics.jsonl").exists()
