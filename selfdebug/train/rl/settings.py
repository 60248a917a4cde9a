"""The ``rl`` config block (registered as the structured config ``rl/default``): every PPO setting, its
default and what it does, each trick behind a named setting. ``conf/exp/rl_*.yaml`` override some of them;
``+rl=default`` adds the block to any train config."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import MODES
from selfdebug.train.repair_settings import RepairEvalSettings, repair_eval_settings

# How to fill the one setting PPO cannot default (its error message ends with this).
SFT_CHECKPOINT_HINT = ", e.g. rl.sft_checkpoint=outputs/train/sft/<model>/<time>/model"

# rl.mode: one format for every prompt, or "mixed": each wrong program drawn into one of MODES, half each.
RL_MODES = (*MODES, "mixed")

# rl.rollout_engine=vllm: one engine per rank, sharing that rank's device with training.
VLLM_ENGINE = {
    "gpu_memory_utilization": 0.3,  # fraction of GPU memory for vLLM's weights + KV cache (CPU build: of RAM)
    "dtype": "auto",  # auto: the policy's dtype
    "tensor_parallel_size": 1,
    "max_model_len": None,  # null: rl.max_prompt_length + rl.max_new_tokens
    "enforce_eager": True,  # no CUDA graphs: faster start, less memory
    "sync": "auto",  # auto: the LoRA adapter alone when vLLM can serve it, else full; adapter; full (merged)
}


@dataclass
class PPOSettings:
    """The ``rl`` config block (the structured config ``rl/default``), checked before anything is loaded.
    Paper (LeDex 3.3): PPO as in TRL, lr 2e-6, batch 64, gamma 0.99, from the SFT checkpoint; values the paper
    does not state follow TRL's PPO defaults. The reward (its weights, the KL coefficient, span/sequence
    placement) is the ``reward`` group."""

    # --- what to train on
    mode: str = "explain_refine"  # explain_refine: explanation then code (R_expl + R_code); refine: code only;
    #                               mixed: half the wrong programs in each format (seeded by `seed`), as the
    #                               paper trains one model for both
    sources: list[str] | None = None  # problem sources whose wrong programs become prompts (the records'
    #                                   `source`, e.g. [mbpp, apps]); null: every source (paper: MBPP + APPS)
    require_reference: bool = False  # keep only wrong programs with a verified refinement (their reward needs
    #                                  it: paper); false: the others get reward.fallback
    offline: bool = False  # score the teacher's collected answers instead of sampling the policy
    sft_checkpoint: str | None = MISSING  # required: the SFT model's folder (<sft run>/model) to start from and
    #                                       to stay near; null: start from model.name_or_path
    max_prompt_length: int = 1536  # prompts longer than this are left out (counted)
    max_prompts: int | None = None  # keep a seeded draw of this many wrong programs as the prompts (after the
    #                                 filters above); with rl.batch_size = max_prompts x rl.samples_per_prompt
    #                                 every step answers all of them: the check that PPO climbs its reward on
    #                                 programs it sees before a long run is trusted. null: every wrong program
    # --- rollouts
    batch_size: int = 64  # rollouts per PPO step (paper: 64)
    samples_per_prompt: int = 1  # responses per wrong program in a step
    generation_batch_size: int = 16  # rollouts generated at once; each chunk is judged while the next generates
    max_new_tokens: int = 512  # response length cap (a cut response is judged as is)
    temperature: float = 1.0  # sampling temperature; log-probs are computed at the same temperature
    top_p: float = 1.0
    judge_timeout: float | None = None  # seconds per program; null: sandbox.timeout
    code_from: str = "fenced"  # fenced: the last ```python block of the answer; raw: the whole answer is code
    rollout_logprobs: str = "recompute"  # recompute: old log-probs and values from a forward pass after sampling
    #                                      (exact); generation: kept from sampling itself (one pass fewer; under
    #                                      bf16 the cached decoding differs slightly, so the first ratio is ~1)
    rollout_engine: str = "hf"  # hf: policy.generate; vllm: a vLLM copy of the policy, weights synced every step
    vllm: dict = field(default_factory=lambda: dict(VLLM_ENGINE))  # rollout_engine=vllm: the engine's settings
    # --- optimisation
    total_steps: int = 200  # PPO steps of the run
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps; resume continues
    lr: float = 2.0e-6  # AdamW, constant (paper: 2e-6)
    value_lr: float | None = None  # the value head's own lr (a fresh linear head learns slowly at 2e-6); null: lr
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    ppo_epochs: int = 4  # passes over the rollouts per step
    mini_batch_size: int = 16  # rollouts per optimizer step
    micro_batch_size: int = 4  # rollouts per forward/backward (gradient accumulation inside a minibatch)
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; null: measure only
    gradient_cosine: bool = False  # log ppo/gradient_cosine: the cosine between this step's first policy gradient
    #                                and the previous step's (near 0: the step's gradient is mostly sampling noise;
    #                                at a fixed policy, rl.lr ~ 0, it estimates the signal's share). Keeps a copy of
    #                                the gradient, the size of the trainable weights: off by default
    # --- the PPO tricks
    gamma: float = 0.99  # discount (paper: 0.99)
    lam: float = 0.95  # GAE lambda (TRL's default; the paper's A_t = sum_k gamma^k delta_{t+k} is lam 1.0)
    clip_range: float = 0.2  # policy ratio clipping
    clip_range_value: float | None = 0.2  # value clipping around the rollout values; null: plain squared error
    vf_coef: float = 0.1  # value loss weight
    ent_coef: float = 0.0  # entropy bonus weight (0: entropy is only logged)
    whiten_advantages: bool = True  # unit variance advantages over the batch's tokens
    whiten_shift_mean: bool = True  # ... and zero mean (TRL); false keeps their sign (a batch that all passed
    #                                 is then not half "bad": only the scale changes)
    whiten_rewards: bool = False  # whiten the per-token rewards (KL included) before GAE
    reward_baseline: str = "none"  # none: the critic alone is the baseline (paper); leave_one_out: each
    #                                sample's R_code and R_expl minus the mean of its siblings' (the other
    #                                rl.samples_per_prompt - 1 answers to the same wrong program) before
    #                                placement, as RLOO does: a baseline where the critic explains nothing
    target_kl: float | None = None  # stop the epochs once the approximate KL to the rollout policy exceeds it
    kl_estimator: str = "k1"  # per-token KL to the reference: k1 (log ratio), abs, k2, k3
    kl_control: str = "adaptive"  # fixed: reward.kl_coef throughout; adaptive: steer towards kl_target
    kl_target: float = 6.0  # adaptive control: target KL per sequence (TRL's default)
    kl_horizon: int = 10000  # adaptive control: horizon in rollouts (TRL's default)
    disable_dropout: bool = True  # dropout off, so the first epoch's ratio is exactly 1
    value_head_std: float = 0.0  # init std of the value head's weights (0: zeros, a flat first critic)
    detach_value_head: bool = False  # the value loss trains the head only, not the policy's trunk (TRL: shared)
    # --- memory and precision
    dtype: str = "auto"  # weights: auto = fp32 for full weights, bf16 base under LoRA on a bf16 GPU
    gradient_checkpointing: bool = False
    # --- bookkeeping
    checkpoint_every: int = 10  # Lightning checkpoint every N steps (and at the last step); 0: last only
    keep_checkpoints: int = 2
    table_every: int = 10  # sampled rollouts to rollouts.jsonl and a W&B table every N steps; 0: never
    table_rows: int = 8
    summary_window: int = 5  # summary.json's final/* figures average the last N steps
    # held-out mutants repaired greedily every N PPO steps (repair/pass@1, repair_eval.jsonl); every: 0 is off
    repair_eval: RepairEvalSettings = field(default_factory=RepairEvalSettings)

    def __post_init__(self) -> None:
        self.repair_eval = repair_eval_settings(self.repair_eval, "rl.repair_eval")
        self.betas = tuple(float(b) for b in self.betas)
        ints_pos = ("batch_size", "samples_per_prompt", "generation_batch_size", "max_new_tokens", "total_steps",
                    "ppo_epochs", "mini_batch_size", "micro_batch_size", "max_prompt_length", "keep_checkpoints",
                    "kl_horizon", "summary_window", "max_prompts")
        optional = {"max_prompts": "every wrong program"}  # null allowed, meaning this
        for key in ints_pos:
            value = getattr(self, key)
            if value is None and key in optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                also = f", or null for {optional[key]}" if key in optional else ""
                raise ConfigError(f"rl.{key} = {value!r}; it must be an integer >= 1{also}")
        for key in ("checkpoint_every", "table_every", "table_rows"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"rl.{key} = {getattr(self, key)!r}; it must be >= 0")
        if self.stop_after is not None and int(self.stop_after) < 1:
            raise ConfigError(f"rl.stop_after = {self.stop_after}; it must be >= 1 or null")
        if self.mode not in RL_MODES:
            raise ConfigError(f"rl.mode = {self.mode!r}; choose one of {', '.join(RL_MODES)}")
        if self.sources is not None:
            if isinstance(self.sources, str) or not self.sources or \
                    not all(isinstance(x, str) and x for x in self.sources):
                raise ConfigError(f"rl.sources = {self.sources!r}; give a non-empty list of problem sources "
                                  "(e.g. rl.sources=[mbpp,apps]) or null for all")
            self.sources = list(self.sources)
        if self.batch_size % self.samples_per_prompt:
            raise ConfigError(f"rl.batch_size = {self.batch_size} is not a multiple of rl.samples_per_prompt = "
                              f"{self.samples_per_prompt}")
        if self.reward_baseline not in ("none", "leave_one_out"):
            raise ConfigError(f"rl.reward_baseline = {self.reward_baseline!r}; choose none or leave_one_out")
        if self.reward_baseline == "leave_one_out" and self.samples_per_prompt < 2:
            raise ConfigError("rl.reward_baseline = leave_one_out compares the answers to one wrong program; set "
                              f"rl.samples_per_prompt to 2 or more (it is {self.samples_per_prompt})")
        if self.offline and self.samples_per_prompt != 1:
            raise ConfigError("rl.offline = true scores each collected answer once; set rl.samples_per_prompt=1")
        if self.batch_size % self.mini_batch_size or self.mini_batch_size % self.micro_batch_size:
            raise ConfigError(f"rl.batch_size = {self.batch_size}, rl.mini_batch_size = {self.mini_batch_size}, "
                              f"rl.micro_batch_size = {self.micro_batch_size}: each must divide the one before")
        for key, low, high in (("gamma", 0.0, 1.0), ("lam", 0.0, 1.0), ("top_p", 1e-6, 1.0)):
            value = getattr(self, key)
            if not low <= float(value) <= high:
                raise ConfigError(f"rl.{key} = {value}; it must be in [{low}, {high}]")
        for key in ("lr", "temperature", "clip_range", "kl_target"):
            if not float(getattr(self, key)) > 0:
                raise ConfigError(f"rl.{key} = {getattr(self, key)}; it must be > 0")
        for key in ("clip_range_value", "target_kl", "max_grad_norm", "judge_timeout", "value_lr"):
            value = getattr(self, key)
            if value is not None and not float(value) > 0:
                raise ConfigError(f"rl.{key} = {value}; it must be > 0 or null")
        for key in ("vf_coef", "ent_coef", "weight_decay", "value_head_std"):
            if float(getattr(self, key)) < 0:
                raise ConfigError(f"rl.{key} = {getattr(self, key)}; it must be >= 0")
        if self.kl_estimator not in ("k1", "abs", "k2", "k3"):
            raise ConfigError(f"rl.kl_estimator = {self.kl_estimator!r}; choose k1, abs, k2 or k3")
        if self.kl_control not in ("fixed", "adaptive"):
            raise ConfigError(f"rl.kl_control = {self.kl_control!r}; choose fixed or adaptive")
        if self.code_from not in ("fenced", "raw"):
            raise ConfigError(f"rl.code_from = {self.code_from!r}; choose fenced or raw")
        if self.code_from == "raw" and self.mode != "refine":
            raise ConfigError("rl.code_from = raw reads the whole answer as code, so there is no explanation to "
                              "reward; use it with rl.mode=refine")
        if self.rollout_logprobs not in ("recompute", "generation"):
            raise ConfigError(f"rl.rollout_logprobs = {self.rollout_logprobs!r}; choose recompute or generation")
        if self.rollout_engine not in ("hf", "vllm"):
            raise ConfigError(f"rl.rollout_engine = {self.rollout_engine!r}; choose hf or vllm")
        if self.rollout_engine == "vllm":
            from selfdebug.train.rl.engines.vllm import check_rollout_settings

            check_rollout_settings(self)

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.samples_per_prompt
