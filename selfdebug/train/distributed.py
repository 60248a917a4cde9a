"""Training on several devices: the ``trainer`` config's strategy, checked before the Trainer starts, and the few
collectives the SFT and PPO steps need.

Strategies (``conf/trainer/``), all Lightning's own:

- ``ddp``: ``DDPStrategy``; every rank holds the whole model; gradients are averaged over the ranks once per
  optimizer step (the all-reduce is skipped for all but the last micro-batch of an accumulation).
- ``fsdp``: ``ModelParallelStrategy`` with FSDP2 (``fully_shard``): parameters, gradients and optimizer state are
  sharded over the ranks. Lightning's ``FSDPStrategy`` (FSDP1) is refused: it runs ``training_step`` inside the
  root module's forward, and a backward there breaks FSDP1's state machine (Lightning issue #19626), while both
  of our steps call ``manual_backward`` several times per optimizer step. FSDP2 hooks each sharded module
  separately, so it has no such restriction (and it runs on CPUs with gloo, so the tests exercise it).
- ``deepspeed`` / ``deepspeed_zero3``: ``DeepSpeedStrategy``, ZeRO stage 2 / 3 (needs ``pip install deepspeed``
  and CUDA). DeepSpeed accumulates gradients through its own engine, so under it each rank runs one
  forward/backward per optimizer step (checked: micro_batch_size * devices = the step's batch).

Every stage keeps its batch sizes global: ``sft.batch_size`` / ``rl.batch_size`` / ``rl.mini_batch_size`` count
examples over all ranks, and a micro-batch is per rank. The backends average gradients over ranks, so a rank's
loss is its share of the global token-mean times the world size; the step's token count is summed first.

One process per device is started by Lightning re-running the command line (``python -m selfdebug.train ...``)
with ``LOCAL_RANK`` set; every rank runs the same setup, and only rank 0 writes the run dir's records.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext

import torch

from selfdebug.core.errors import ConfigError
from selfdebug.core.models import fit_static_cache, kv_cache_implementation, peft_base

log = logging.getLogger(__name__)

# The entry points Lightning may re-run, one process per device.
ENTRY_POINTS = ("selfdebug.train.__main__", "selfdebug.train.app")
_FSDP2 = "ModelParallelStrategy"
_KINDS = {"DDPStrategy": "ddp", _FSDP2: "fsdp", "DeepSpeedStrategy": "deepspeed", "FSDPStrategy": "fsdp1"}
# Strategies given by Lightning's name; the others need settings only the conf/trainer files carry.
_STRING_KINDS = {"auto": "auto", "single_device": "auto", "ddp": "ddp", "fsdp": "fsdp1"}


# ------------------------------------------------------------------------------------------------ config

def strategy_kind(node) -> str:
    """``auto``, ``ddp``, ``fsdp`` (FSDP2), ``deepspeed`` or ``fsdp1`` for a ``trainer.strategy`` value; a
    ConfigError for a strategy these steps cannot run."""
    if node is None:
        return "auto"
    if isinstance(node, Mapping):
        target = str(node.get("_target_", ""))
        kind = _KINDS.get(target.rsplit(".", 1)[-1])
        if kind is None:
            raise ConfigError(f"trainer.strategy._target_ = {target!r}; expected one of Lightning's "
                              "DDPStrategy, ModelParallelStrategy (trainer=fsdp) or DeepSpeedStrategy")
        return kind
    name = str(node)
    if name in _STRING_KINDS:
        return _STRING_KINDS[name]
    if name.startswith("ddp"):  # ddp_spawn, ddp_fork, ddp_notebook: children are forked or pickled
        raise ConfigError(f"trainer.strategy = {name!r}: the SFT and PPO modules hold a sandbox and open files that "
                          "cannot be pickled into spawned or forked workers; use trainer=ddp (Lightning re-runs the "
                          "command once per device)")
    raise ConfigError(f"trainer.strategy = {name!r}; use trainer=ddp, trainer=fsdp, trainer=deepspeed or "
                      "trainer=deepspeed_zero3 (conf/trainer/: they carry the settings these steps need, e.g. "
                      "FSDP2 without tensor parallelism, DeepSpeed's gradient clipping)")


def check_trainer(tcfg: dict, *, lora: bool, merge: bool = False) -> str:
    """Checks of ``trainer`` that need no model: the strategy's kind (returned) against the accelerator, the
    packages installed and the PEFT choice. Each failure is one ConfigError naming the key."""
    kind = strategy_kind(tcfg.get("strategy"))
    accelerator = str(tcfg.get("accelerator", "auto"))
    if kind == "fsdp1":
        raise ConfigError("trainer.strategy is Lightning's FSDPStrategy (FSDP1), which breaks on a backward inside "
                          "training_step (Lightning issue #19626) and both the SFT and PPO steps do that; use "
                          "trainer=fsdp (FSDP2 through ModelParallelStrategy)")
    if kind == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("trainer=deepspeed needs the deepspeed package, which is not installed: `pip install "
                              "deepspeed` (on a machine with CUDA), or use trainer=fsdp or trainer=ddp")
        if accelerator == "cpu":
            raise ConfigError("trainer.accelerator = cpu: trainer=deepspeed needs GPUs; use trainer=ddp or "
                              "trainer=fsdp on CPUs")
    if kind == "fsdp" and lora and merge:
        raise ConfigError("peft.merge = true with trainer=fsdp: the LoRA adapters are not merged into sharded "
                          "weights; save the adapter (peft.merge=false) and merge it after training, or use "
                          "trainer=ddp")
    if kind == "fsdp" and isinstance(tcfg.get("strategy"), Mapping):
        tp = tcfg["strategy"].get("tensor_parallel_size", 1)
        if tp not in (1, "1"):
            raise ConfigError(f"trainer.strategy.tensor_parallel_size = {tp!r}: the modules shard parameters only "
                              "(FSDP2, no tensor parallelism); set it to 1")
    if kind == "deepspeed" and lora and isinstance(tcfg.get("strategy"), Mapping) \
            and int(tcfg["strategy"].get("stage", 2)) == 3:
        log.warning("trainer=deepspeed_zero3 with peft=lora: ZeRO-3 partitions the frozen base too, so every "
                    "forward gathers it; with LoRA, trainer=ddp usually fits and is faster")
    return kind


def build_strategy(node, kind: str, *, max_grad_norm: float | None):
    """The strategy object (or Lightning's string) for ``trainer.strategy``."""
    if not isinstance(node, Mapping):
        return "auto" if node is None else node
    import hydra

    node = dict(node)
    if kind == "fsdp":
        node.setdefault("tensor_parallel_size", 1)  # Lightning's "auto" would make every device tensor-parallel
    try:
        strategy = hydra.utils.instantiate(node, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - a bad key or value becomes one ConfigError; anything else re-raises
        _raise_as_config_error(exc, f"trainer.strategy ({node.get('_target_')})")
    if kind == "deepspeed":
        # The engine clips (our manual clip would see no gradients: ZeRO keeps them in its own buffers).
        strategy.config.setdefault("gradient_clipping", float(max_grad_norm) if max_grad_norm else 0.0)
    return strategy


def build_trainer(tcfg: dict, *, lora: bool, max_grad_norm: float | None, **kwargs):
    """The Lightning Trainer of ``trainer`` (``tcfg``, resolved) with its strategy; nothing starts yet."""
    import hydra

    tcfg = dict(tcfg)
    node = tcfg.pop("strategy", None)
    kind = check_trainer({**tcfg, "strategy": node}, lora=lora)
    strategy = build_strategy(node, kind, max_grad_norm=max_grad_norm)
    try:
        trainer = hydra.utils.instantiate(tcfg, strategy=strategy, **kwargs, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - Lightning's own checks (no GPU, bad devices) as one ConfigError
        _raise_as_config_error(exc, f"trainer (accelerator={tcfg.get('accelerator')!r}, "
                                    f"devices={tcfg.get('devices')!r}, strategy={kind})")
    world = trainer.world_size
    # FSDP over every rank: the data-parallel mesh is the world (Lightning's "auto" means one rank per node).
    if kind == "fsdp" and trainer.strategy._data_parallel_size == "auto":
        trainer.strategy._data_parallel_size = world
    return trainer


def _raise_as_config_error(exc: Exception, where: str):
    """A user error behind ``exc`` (Hydra wraps what the constructor raised) as one ConfigError; others re-raise."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from selfdebug.core.cli import user_error_in

    cause = user_error_in(exc)
    if cause is not None:
        raise cause from None
    inner = exc.__cause__ or exc
    if isinstance(inner, (ValueError, TypeError, MisconfigurationException)):
        raise ConfigError(f"{where}: {type(inner).__name__}: {inner}") from None
    raise exc


def check_launch(trainer) -> None:
    """Lightning starts the other ranks by re-running this process's command line: that must be an entry point
    (or the ranks come from outside: torchrun, SLURM, which set the rank variables). Called last, after the
    checks of the batch sizes, so a bad value is reported whatever the launch."""
    if trainer.world_size == 1 or trainer.strategy.cluster_environment.creates_processes_externally:
        return
    import __main__

    spec = getattr(__main__, "__spec__", None)
    name = spec.name if spec is not None else ""
    if name not in ENTRY_POINTS:
        raise ConfigError(f"trainer.devices = {trainer.num_devices}: Lightning starts one process per device by "
                          f"re-running the command line, and this process is not `python -m selfdebug.train` "
                          f"({name or sys.argv[0]!r}); run the entry point, or start the ranks with torchrun")


def check_divisible(total: int, per_rank: int, world: int, keys: tuple[str, str]) -> int:
    """``total`` examples as micro-batches of ``per_rank`` on each of ``world`` ranks: the accumulation steps
    per rank, or a ConfigError naming both keys and trainer.devices."""
    if world < 1 or total % (per_rank * world):
        raise ConfigError(f"{keys[0]} = {total} must be a multiple of {keys[1]} ({per_rank}) x trainer.devices "
                          f"({world}): each rank runs {keys[0]} / ({keys[1]} x devices) micro-batches per step; "
                          f"e.g. {keys[0]}={per_rank * world * max(1, round(total / (per_rank * world)))}")
    return total // (per_rank * world)


# ------------------------------------------------------------------------------------------------ ranks

def rank_world(module=None) -> tuple[int, int]:
    """``(rank, world size)`` of the running data-parallel group; ``(0, 1)`` outside one."""
    if module is not None:
        trainer = getattr(module, "_trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def distributed() -> bool:
    return rank_world()[1] > 1


def close_process_group() -> None:
    """End the default process group after a finished run, on every rank.

    Left to the interpreter's exit, gloo's worker threads are torn down after Python is gone, and the process
    can abort (SIGABRT, "terminate called without an active exception") although the run succeeded. The
    barrier first: no rank drops the group (rank 0 hosts its store) while another still uses it. Only after a
    run that returned normally; after an error another rank may never reach the barrier."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` summed over the ranks (``t`` itself on one process)."""
    if not distributed():
        return t
    out = t.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out


def across_ranks() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``sum_across_ranks`` under data parallelism, else None (the single-process arithmetic, unchanged)."""
    return sum_across_ranks if distributed() else None


def global_mean(values: torch.Tensor) -> tuple[float, int]:
    """Mean and count of ``values`` over every rank's values."""
    if not distributed():
        return float(values.float().mean()), int(values.numel())
    total = sum_across_ranks(torch.stack([values.double().sum(), torch.tensor(float(values.numel()),
                                                                                dtype=torch.float64,
                                                                                device=values.device)]))
    return float(total[0] / total[1]), int(total[1])


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` on one process."""
    if not distributed():
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


# Per-step figures: how the ranks' values combine into the one logged (a rank holds an equal share of rollouts,
# so a per-rollout mean is the mean of the ranks' means; token-weighted figures are approximated the same way).
_SUM_PREFIXES = ("sandbox/", "reward/n_")
_SUM_KEYS = ("rollout/n", "rollout/samples_per_s")
_MAX_PREFIXES = ("time/",)
_MEAN_KEYS = ("time/judge_reward_share",)


def _combine(key: str, values: list):
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values):
        return values[0]
    finite = [v for v in numbers if math.isfinite(v)]
    if key.startswith(_SUM_PREFIXES) or key in _SUM_KEYS:
        total = sum(numbers)
        return int(total) if all(isinstance(v, int) for v in values) else total
    if key.endswith("_max") or (key.startswith(_MAX_PREFIXES) and key not in _MEAN_KEYS):
        return max(numbers)
    if key.endswith("_min"):
        return min(numbers)
    return sum(finite) / len(finite) if finite else float("nan")


def reduce_metrics(metrics: dict) -> dict:
    """One step's figures over all ranks (identity on one process): sums for counts, max for times and maxima,
    min for minima, the mean of finite values otherwise."""
    if not distributed():
        return metrics
    every = gather_objects(metrics)
    return {key: _combine(key, [m.get(key, float("nan")) for m in every]) for key in metrics}


def summed_over_ranks(stats: dict) -> dict:
    """A dict of counts (a sandbox's) summed over the ranks; anything not a number is rank 0's."""
    every = gather_objects(stats)
    return {k: sum(r.get(k, 0) for r in every) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for k, v in every[0].items()}


def rank_fingerprints(module, **values) -> dict | None:
    """Under data parallelism: each rank's fingerprint of ``module``'s trainable weights (sum and sum of squares,
    float64) and ``values``, in rank order, for the run's summary: replicas that drifted apart show here.
    None on one process and under DeepSpeed (its partitioned weights are not readable per rank)."""
    if not distributed() or is_deepspeed(module):
        return None
    total = torch.zeros((), dtype=torch.float64)
    for p in module.parameters():
        if p.requires_grad:
            t = p.detach()
            t = t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP2: a collective, every rank calls it
            total += t.double().sum().cpu() + t.double().pow(2).sum().cpu()
    mine = {"weights": float(total), **{k: float(v) for k, v in values.items()}}
    every = gather_objects(mine)
    return {key: [r[key] for r in every] for key in mine}


# ------------------------------------------------------------------------------------------------ the step

def backward_sync(module, last: bool):
    """Inside a step's gradient accumulation: skip DDP's all-reduce for every micro-batch but the last (the
    last one reduces the accumulated sum; the result is the same, the traffic 1/n)."""
    trainer = getattr(module, "_trainer", None)
    if last or trainer is None or not hasattr(trainer.strategy, "block_backward_sync"):
        return nullcontext()
    return trainer.strategy.block_backward_sync()


def is_deepspeed(module) -> bool:
    trainer = getattr(module, "_trainer", None)
    return trainer is not None and type(trainer.strategy).__name__ == "DeepSpeedStrategy"


def clip_grad_norm(module, params: Sequence[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip the global gradient norm of ``params`` and return it (before clipping). FSDP2's sharded gradients
    are DTensors: torch's clip computes the norm over all shards. DeepSpeed clips inside its step (its
    config's ``gradient_clipping``), so here it is NaN."""
    if is_deepspeed(module):
        return float("nan")
    norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm if max_norm is not None else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def generate_kwargs(module, model) -> dict:
    """The extra arguments of one ``model.generate`` call in training: the KV cache for the device
    (``selfdebug.core.models.kv_cache_implementation``; a static one is sized for this call's batch), and under
    sharded parameters, where every forward is a collective, ``synced_gpus`` to keep all ranks generating until
    the longest is done."""
    kwargs = {"cache_implementation": kv_cache_implementation(model)}
    if kwargs["cache_implementation"] == "static":
        fit_static_cache(model)
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size == 1:
        return kwargs
    name = type(trainer.strategy).__name__
    sharded = name == _FSDP2 or (name == "DeepSpeedStrategy" and trainer.strategy.zero_stage_3)
    return {**kwargs, "synced_gpus": True} if sharded else kwargs


# ------------------------------------------------------------------------------------------------ FSDP2

def _shard_classes(model) -> set[type]:
    """The transformer block classes of ``model`` (HF's ``_no_split_modules``), each one FSDP unit."""
    names = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or [])
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def shard_modules(module, roots: Sequence[torch.nn.Module]) -> None:
    """``configure_model`` under trainer=fsdp: every transformer block of each root, then the root itself, is
    ``fully_shard``-ed over the data-parallel mesh (a no-op under any other strategy)."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None or type(trainer.strategy).__name__ != _FSDP2:
        return
    import warnings

    from torch.distributed.fsdp import fully_shard

    # The value head returns squeeze(-1), a view; nothing modifies it in place, which is what FSDP2 warns about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPValueHead\) returned a view tensor")
    mesh = trainer.strategy.device_mesh["data_parallel"]
    for root in roots:
        # PEFT: the transformer under the adapters is the root unit; generate() calls it directly, bypassing
        # the PeftModel wrapper, and FSDP2 gathers a unit's own weights only when that unit is called.
        root = peft_base(root)
        if getattr(root, "_selfdebug_sharded", False):
            continue
        for block_type in _shard_classes(root):
            for sub in root.modules():
                if type(sub) is block_type:
                    fully_shard(sub, mesh=mesh)
        fully_shard(root, mesh=mesh)
        root._selfdebug_sharded = True


@contextmanager
def full_parameters(model):
    """Under FSDP2: ``model``'s full state dict, gathered by every rank onto rank 0's CPU (the other ranks get an
    empty one); None for an unsharded model."""
    from torch.distributed.fsdp import FSDPModule

    if not any(isinstance(m, FSDPModule) for m in model.modules()):
        yield None
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    yield get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# ------------------------------------------------------------------------------------------------ records

class NullRunLogger:
    """What ranks other than 0 log to: nothing (rank 0 writes metrics.jsonl, summary.json and the W&B run)."""

    def log(self, metrics: dict, step: int | None = None) -> None:
        pass

    def table(self, key: str, columns: list, rows: list) -> None:
        pass

    def artifact(self, *args, **kwargs) -> bool:
        return False

    def summary(self, values: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass
