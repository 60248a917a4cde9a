"""The ``pretrain`` config block (registered as the structured config ``pretrain/default``): every key of the
pretraining stage, its default and what it does. ``conf/exp/pretrain_*.yaml`` override some of them.

The defaults are the recipe of the committed ``model=mini`` checkpoint (see docs/pretrain.md for how they were
chosen: a 2-core CPU, 90 minutes, the measured tokens/s)."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import ANSWER_FORMS, MODES


@dataclass
class PretrainSettings:
    """A small Llama and its byte-level BPE trained from scratch on Python source (``docs/pretrain.md``)."""

    # ---- model (a LlamaForCausalLM built from these; the tokenizer is trained on the corpus)
    vocab_size: int = 2048  # BPE vocabulary, chat and special tokens included
    hidden_size: int = 256
    intermediate_size: int = 512  # the MLP's inner width
    layers: int = 4
    heads: int = 4
    seq_len: int = 512  # tokens per packed training sequence (also the model's max positions x 2)
    # ---- corpus (docs/pretrain.md: what the model is taught)
    source_dirs: list[str] | None = None  # folders of .py files; null: this interpreter's standard library
    include_tests: bool = False  # also read test/, tests/ and idle_test/ folders
    max_files: int | None = None  # read only the first N files (sorted paths); null: all
    min_unit_lines: int = 3  # shorter functions/classes are dropped
    max_unit_chars: int = 6000  # a longer class is split into its methods; a longer function is dropped
    mbpp_train: bool = True  # add MBPP train (tasks 601-974): references as code and code-generation chats
    mbpp_repairs: bool = True  # with mbpp_train: also its mutants as repair pairs (false leaves them to SFT)
    decontaminate: bool = True  # drop units near a HumanEval / MBPP-test problem (selfdebug.collect.decontamination)
    decontamination_threshold: float = 0.7  # Jaccard similarity of word 3-grams (text or canonical code)
    heldout_fraction: float = 0.02  # units (and their repair pairs) kept out of training for the held-out loss
    # ---- repair pairs (wrong program -> fix, in the chat format of SFT and evaluation)
    repair_pairs: int = 6000  # pairs made by the mutation operators from corpus functions (0: none)
    repair_max_lines: int = 30  # functions longer than this give no pair (a shorter prompt, more pairs/token)
    repair_per_function: int = 1  # distinct mutants (pairs) drawn from one function: more pairs than functions
    repair_mode: str = "refine"  # refine | explain_refine (the explanation from the mutation teacher) | both (alternating)
    answer_form: str = "line"  # full: the whole program; line: `old => new`; search_replace: a SEARCH/REPLACE block
    prompt_loss: bool = True  # loss on the prompt tokens of repair pairs too (false: on the answer only)
    repair_fraction: float = 0.5  # share of each batch's sequences that hold repair pairs (0..1)
    # ---- optimization
    batch_size: int = 16  # sequences per optimizer step
    micro_batch_size: int = 16  # sequences per forward/backward (batch_size / micro_batch_size accumulation)
    token_budget: int = 5_000_000  # training tokens (sequences x seq_len): the schedule's length
    max_steps: int | None = None  # if set, exactly this many steps instead of token_budget's
    max_minutes: float | None = None  # end training (and save the model) after this much wall time; null: never
    stop_after: int | None = None  # stop with a checkpoint after this many steps (resume: same command)
    lr: float = 2e-3  # AdamW peak learning rate
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay to min_lr_ratio * lr at the last step
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float | None = 1.0
    # ---- records
    checkpoint_every: int = 200  # Lightning checkpoint every N steps (and at the last); 0: last only
    keep_checkpoints: int = 2
    eval_every: int = 100  # held-out losses and greedy repairs every N steps (and at the last); 0: never
    eval_sequences: int = 16  # held-out sequences of each kind scored for the loss
    eval_repairs: int = 8  # held-out repair prompts answered greedily (exact-fix rate, samples.jsonl)
    eval_max_new_tokens: int = 96

    def __post_init__(self) -> None:
        for key in ("vocab_size", "hidden_size", "intermediate_size", "layers", "heads", "seq_len", "batch_size",
                    "micro_batch_size", "token_budget", "keep_checkpoints", "min_unit_lines", "max_unit_chars",
                    "repair_max_lines", "repair_per_function", "eval_max_new_tokens"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"pretrain.{key} = {getattr(self, key)}; it must be >= 1")
        for key in ("repair_pairs", "warmup_steps", "checkpoint_every", "eval_every", "eval_sequences",
                    "eval_repairs"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"pretrain.{key} = {getattr(self, key)}; it must be >= 0")
        for key in ("max_steps", "stop_after", "max_files"):
            if getattr(self, key) is not None and int(getattr(self, key)) < 1:
                raise ConfigError(f"pretrain.{key} = {getattr(self, key)}; it must be >= 1 or null")
        if self.vocab_size < 300:
            raise ConfigError(f"pretrain.vocab_size = {self.vocab_size}; a byte-level BPE needs at least 300 "
                              "(256 bytes, the special tokens and some merges)")
        if self.hidden_size % self.heads:
            raise ConfigError(f"pretrain.hidden_size = {self.hidden_size} is not divisible by pretrain.heads = "
                              f"{self.heads}")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"pretrain.batch_size = {self.batch_size} is not divisible by "
                              f"pretrain.micro_batch_size = {self.micro_batch_size}")
        if self.repair_mode not in (*MODES, "both"):
            raise ConfigError(f"pretrain.repair_mode = {self.repair_mode!r}; expected one of {[*MODES, 'both']}")
        if self.answer_form not in ANSWER_FORMS:
            raise ConfigError(f"pretrain.answer_form = {self.answer_form!r}; expected one of {list(ANSWER_FORMS)}")
        if not 0 <= self.repair_fraction <= 1:
            raise ConfigError(f"pretrain.repair_fraction = {self.repair_fraction}; it must be in [0, 1]")
        if self.repair_fraction > 0 and self.repair_pairs == 0 and not (self.mbpp_train and self.mbpp_repairs):
            raise ConfigError(f"pretrain.repair_fraction = {self.repair_fraction} but pretrain.repair_pairs = 0 and "
                              "MBPP train mutants are off (pretrain.mbpp_train / pretrain.mbpp_repairs): no repair pair would "
                              "exist; set repair_fraction=0")
        if not 0 <= self.heldout_fraction < 0.5:
            raise ConfigError(f"pretrain.heldout_fraction = {self.heldout_fraction}; it must be in [0, 0.5)")
        if not 0 < self.decontamination_threshold <= 1:
            raise ConfigError(f"pretrain.decontamination_threshold = {self.decontamination_threshold}; it must be "
                              "in (0, 1]")
        if not self.lr > 0:
            raise ConfigError(f"pretrain.lr = {self.lr}; it must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"pretrain.min_lr_ratio = {self.min_lr_ratio}; it must be in [0, 1]")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"pretrain.max_grad_norm = {self.max_grad_norm}; it must be > 0 or null")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"pretrain.max_minutes = {self.max_minutes}; it must be > 0 or null")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"pretrain.betas = {list(self.betas)}; expected two numbers in [0, 1)")
        if self.source_dirs is not None:
            if isinstance(self.source_dirs, str) or not self.source_dirs:
                raise ConfigError(f"pretrain.source_dirs = {self.source_dirs!r}; give a list of folders, e.g. "
                                  "pretrain.source_dirs=[src/mypkg], or null for the standard library")
            self.source_dirs = [str(d) for d in self.source_dirs]


def register_configs() -> None:
    """``pretrain/default`` in Hydra's ConfigStore (safe to call again: the store is overwritten)."""
    ConfigStore.instance().store(group="pretrain", name="default", node=PretrainSettings)
