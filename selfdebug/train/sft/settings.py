"""The ``sft`` config block (registered as the structured config ``sft/default``): every key, its default and
what it does. ``conf/exp/sft_*.yaml`` override some of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfdebug.core.errors import ConfigError
from selfdebug.train.repair_settings import RepairEvalSettings, repair_eval_settings


@dataclass
class SFTSettings:
    """The ``sft`` config block, checked before anything is loaded. Defaults follow the paper: 2 epochs, batch
    128, AdamW 2e-5, 500 warm-up steps, cosine."""

    batch_size: int = 128  # examples per optimizer step (paper: 128)
    micro_batch_size: int = 4  # examples per forward/backward; batch_size / micro_batch_size accumulation steps
    epochs: float = 2.0  # passes over the training examples (paper: 2)
    max_steps: int | None = None  # if set, exactly this many optimizer steps (the schedule's length)
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps; the schedule is unchanged
    lr: float = 2e-5  # AdamW peak learning rate (paper: 2e-5)
    warmup_steps: int = 500  # linear warm-up steps (paper: 500), then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0  # applied to matrices only (not to norms and biases)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; null: measure it, do not clip
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    dtype: str = "auto"  # weights: "auto" = fp32 for full fine-tuning; bf16 base weights under LoRA on a bf16 GPU
    checkpoint_every: int = 100  # Lightning checkpoint every N steps (and at the last step); 0: last only
    keep_checkpoints: int = 2  # newest checkpoints kept
    eval_every: int = 50  # held-out loss + greedy samples (W&B table, samples.jsonl) every N steps; 0: never
    eval_max_examples: int = 64  # held-out examples scored for the loss
    samples: int = 4  # held-out prompts answered greedily at each evaluation (a W&B table)
    sample_max_new_tokens: int = 256
    save_dtype: str | None = None  # cast the final weights before save_pretrained (e.g. bfloat16); null: keep
    # held-out mutants repaired greedily every N steps (repair/pass@1, repair_eval.jsonl); every: 0 is off
    repair_eval: RepairEvalSettings = field(default_factory=RepairEvalSettings)

    def __post_init__(self) -> None:
        self.repair_eval = repair_eval_settings(self.repair_eval, "sft.repair_eval")
        positive = ("batch_size", "micro_batch_size", "keep_checkpoints", "sample_max_new_tokens")
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"sft.{key} = {getattr(self, key)}; it must be >= 1")
        for key in ("warmup_steps", "checkpoint_every", "eval_every", "eval_max_examples", "samples"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"sft.{key} = {getattr(self, key)}; it must be >= 0")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"sft.batch_size = {self.batch_size} is not divisible by sft.micro_batch_size = "
                              f"{self.micro_batch_size}; the step accumulates batch_size / micro_batch_size "
                              "micro-batches, so pick a micro_batch_size that divides it")
        for key in ("max_steps", "stop_after"):
            if getattr(self, key) is not None and int(getattr(self, key)) < 1:
                raise ConfigError(f"sft.{key} = {getattr(self, key)}; it must be >= 1 or null")
        if self.epochs <= 0 and self.max_steps is None:
            raise ConfigError(f"sft.epochs = {self.epochs}; it must be > 0 (or set sft.max_steps)")
        if not self.lr > 0:
            raise ConfigError(f"sft.lr = {self.lr}; it must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"sft.min_lr_ratio = {self.min_lr_ratio}; it must be in [0, 1]")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"sft.max_grad_norm = {self.max_grad_norm}; it must be > 0 or null")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"sft.betas = {list(self.betas)}; expected two numbers in [0, 1)")
