"""PPO on explanation + refinement with the span-level composite reward, as a LightningModule.

One Lightning batch is one PPO iteration, read top to bottom in ``PPOModule.training_step``:

1. **rollout**   the policy samples an explanation and a refinement for each wrong program of the batch
                 (``offline``: the teacher's collected answers are the responses instead); each finished
                 chunk of generations goes to the sandbox at once, so judging overlaps the next chunk;
2. **judge**     wait for the sandbox verdicts that are still out;
3. **reward**    ``CompositeReward.score``: R_code (CodeBLEU + unit tests) and R_expl (embedding similarity);
4. **evaluate**  log-probs of the responses under the policy (old) and the reference (the SFT model: the
                 same weights with the LoRA adapters disabled, or a frozen copy), values from the value head;
5. **advantage** per-token rewards: R_expl on the explanation's last token, R_code on the final token,
                 -kl_coef * KL_t everywhere (``reward.placement=sequence``: both on the final token); then
                 GAE(gamma, lambda) and whitening;
6. **update**    ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss, clipped value loss,
                 optional entropy bonus, gradient clipping, one optimizer step per minibatch; stop early
                 when the approximate KL to the rollout policy passes ``target_kl``;
7. the KL controller adapts, and every figure goes to metrics.jsonl / W&B.

The math lives in ``selfdebug.train.rl.ppo_math`` (pure functions, tested by hand) and ``selfdebug.rewards``;
every trick is a named field of ``PPOSettings`` (``rl/settings.py``) with a one-line comment. The module owns
its rollout engine (``rl/engines``: the policy's own ``generate``, or a vLLM copy) and calls it through
``sync`` / ``generate`` / ``close``. Randomness is re-seeded from ``(seed, step)`` at the start of every step,
and checkpoints hold the policy, the value head, the optimizer, the KL controller, the RNG and the data
position, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import END, assemble_program
from selfdebug.rewards import RewardSample, place_rewards_batch, same_program
from selfdebug.train.checkpoints import rng_state, save_step_checkpoint, set_rng_state
from selfdebug.train.distributed import (
    across_ranks,
    backward_sync,
    clip_grad_norm,
    global_mean,
    rank_world,
    reduce_metrics,
    shard_modules,
    sum_across_ranks,
)
from selfdebug.train.model import stop_token_ids
from selfdebug.train.optim import make_optimizer, trainable_parameters
from selfdebug.train.rl.data import RLItem
from selfdebug.train.rl.engines import RolloutEngine, Samples, rollout_rows, rollout_seeds, start_engine
from selfdebug.train.rl.metrics import log_rollouts, sandbox_delta, step_metrics
from selfdebug.train.rl.model import ValueHead, disable_dropout, hidden_size_of, response_scores
from selfdebug.train.rl.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    gradient_cosine,
    kl_estimate,
    leave_one_out,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from selfdebug.train.rl.settings import PPOSettings
from selfdebug.train.rl.tokens import Response, Rollouts, left_pad, micro_batches, read_response, right_pad


class PPOModule(pl.LightningModule):
    """Manual optimization: one Lightning batch (a tensor of item indices) = one PPO step."""

    def __init__(self, policy, tokenizer, reward, sandbox, items: list[RLItem], settings: PPOSettings, *,
                 seed: int = 0, lora: bool = False, run_logger=None, run_dir: Path | None = None):
        super().__init__()
        s = self.settings = settings
        self.policy = policy
        self.tokenizer = tokenizer
        self.value_head = ValueHead(hidden_size_of(policy), s.value_head_std)
        self.reward, self.sandbox, self.items = reward, sandbox, items
        self.seed, self.lora, self.run_logger = int(seed), bool(lora), run_logger
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.automatic_optimization = False
        # LoRA: checkpoints hold only the trainable weights (the frozen base is reloaded from its source).
        self.strict_loading = not self.lora
        if s.disable_dropout:
            disable_dropout(policy)

        # The reference policy is the SFT model. With LoRA it is the policy with its adapters disabled (no
        # second copy); otherwise a frozen copy, kept out of the state dict (a list hides it from nn.Module).
        kl_coef = float(reward.kl_coef)
        self.use_reference = not (s.kl_control == "fixed" and kl_coef == 0.0)
        self._reference: list = []
        if self.use_reference and not self.lora:
            ref = copy.deepcopy(policy).eval()
            ref.requires_grad_(False)
            self._reference.append(ref)
        self.kl_ctl = (AdaptiveKLController(kl_coef, s.kl_target, s.kl_horizon) if s.kl_control == "adaptive"
                       else FixedKLController(kl_coef))

        self.stop_ids = set(stop_token_ids(tokenizer, policy))
        self.stop_strings = (END,)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.ppo_step = 0  # PPO steps done (Lightning's global_step counts optimizer steps: several per PPO step)
        self.history: list[dict] = []  # every step's metrics (summary.json averages the last few)
        self._sandbox_before = dict(sandbox.stats()) if sandbox is not None else {}
        self.engine: RolloutEngine | None = None  # what samples the rollouts; started in on_fit_start
        self._synced_step: int | None = None  # the PPO step whose weights the engine holds
        self._sync_seconds = 0.0  # the step's sync (time/sync; time/generate is the sampling alone)

    # -------------------------------------------------------------------------------------------- setup
    def configure_model(self) -> None:
        # trainer=fsdp: FSDP2 units for the policy, its reference copy and the value head (else nothing)
        shard_modules(self, [*self._reference, self.policy, self.value_head])

    def configure_optimizers(self):
        s = self.settings
        opt = make_optimizer(self.policy, s.lr, s.weight_decay, s.betas, s.eps)  # the policy (or its LoRA)
        opt.add_param_group({"params": list(self.value_head.parameters()), "weight_decay": 0.0,
                             "lr": s.value_lr if s.value_lr is not None else s.lr})
        return opt

    def on_fit_start(self) -> None:
        for ref in self._reference:
            ref.to(self.device)
        self.start_engine()

    def start_engine(self) -> None:
        """The rollout engine ``rl.rollout_engine`` names, on the policy as it will train (device, dtype)."""
        if self.engine is None:
            self.engine = start_engine(self.settings, self.policy, self.value_head, self.tokenizer,
                                       stop_ids=self.stop_ids, pad_id=self.pad_id, seed=self.seed, owner=self)

    def teardown(self, stage: str) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()  # vLLM: its KV cache and weight copy

    def on_train_batch_start(self, batch, batch_idx: int):
        if self.settings.stop_after is not None and self.ppo_step >= self.settings.stop_after:
            return -1  # resumed at or past rl.stop_after: nothing to do (Lightning ends the epoch)
        return None

    def reference_forward(self, *args, **kwargs):
        """Log-probs under the SFT model."""
        if self.lora:
            with self.policy.disable_adapter():
                return response_scores(self.policy, *args, **kwargs)
        return response_scores(self._reference[0], *args, **kwargs)

    # -------------------------------------------------------------------------------------------- the step
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict:
        s = self.settings
        step = self.ppo_step
        rank, world = rank_world(self)
        seed_step(self.seed, step, rank)  # one seed per step and rank: a resumed run samples as an uninterrupted one
        # Data parallel: each rank takes every world-th prompt of the step; whitening, the KL controller and
        # the logged figures are computed over all ranks below.
        items = [self.items[int(i)] for i in batch.tolist()[rank::world] for _ in range(s.samples_per_prompt)]
        times = {}

        # 1-2. rollout, with judging overlapped, then wait for the verdicts still out
        t0 = time.perf_counter()
        rollouts, futures = self.rollout(items)
        t1 = time.perf_counter()
        rollouts.results = [f.result() for f in futures]
        t2 = time.perf_counter()
        times["sync"], times["generate"], times["judge"] = self._sync_seconds, t1 - t0 - self._sync_seconds, t2 - t1

        # 3. reward: the composite score of every rollout (R_code, R_expl and their parts)
        samples = [RewardSample(item.wrong_id, program or "", result, response.explanation,
                                unchanged=same_program(program, assemble_program(item.problem, item.wrong_program)))
                   for item, program, result, response in zip(items, rollouts.programs, rollouts.results,
                                                               rollouts.responses)]
        scored = self.reward.score(samples)
        t3 = time.perf_counter()
        times["reward"] = t3 - t2

        # 4. evaluate: old log-probs and values of the policy, log-probs of the reference
        old_logprobs, old_values, ref_logprobs = self.evaluate(rollouts)
        mask = rollouts.response_mask.to(self.device).float()
        t4 = time.perf_counter()
        times["evaluate"] = t4 - t3

        # 5. per-token rewards (span placement + KL penalty), GAE, whitening
        kl = kl_estimate(old_logprobs, ref_logprobs, s.kl_estimator) * mask
        ends = [r.explanation_end for r in rollouts.responses]
        r_expl, r_code = (torch.as_tensor(r, dtype=torch.float32) for r in (scored.r_expl, scored.r_code))
        if s.reward_baseline == "leave_one_out":  # a rank's items hold each prompt's samples side by side
            r_expl, r_code = (leave_one_out(r, s.samples_per_prompt) for r in (r_expl, r_code))
        rewards = place_rewards_batch(rollouts.lengths.to(self.device), ends, r_expl, r_code, kl=kl,
                                      kl_coef=self.kl_ctl.value, placement=self.reward.placement)
        if s.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False, all_reduce=across_ranks())
        advantages, returns = gae(rewards, old_values, mask, s.gamma, s.lam)
        if s.whiten_advantages:
            advantages = masked_whiten(advantages, mask, shift_mean=s.whiten_shift_mean, all_reduce=across_ranks())

        # 6. update: epochs of clipped PPO over shuffled minibatches
        update = self.update(rollouts, old_logprobs, old_values, advantages, returns, step)
        t5 = time.perf_counter()
        times["update"] = t5 - t4

        # 7. KL control, metrics
        kl_per_sequence, n_rollouts = global_mean((kl * mask).sum(1))  # over all ranks: one controller state
        kl_coef = self.kl_ctl.value
        self.kl_ctl.update(kl_per_sequence, n_rollouts)
        now = dict(self.sandbox.stats())
        metrics = reduce_metrics({**step_metrics(rollouts, scored, kl, mask, rewards, old_values, returns, advantages,
                                                 update, kl_per_sequence, kl_coef, times,
                                                 sandbox_delta(now, self._sandbox_before),
                                                 by_mode=s.mode == "mixed"),
                                  **(self.engine.metrics() if self.engine is not None else {})})
        self._sandbox_before = now
        self.ppo_step += 1
        self.history.append(metrics)
        if self.run_logger is not None:
            self.run_logger.log(metrics, step=self.ppo_step)
            if s.table_every and (self.ppo_step % s.table_every == 0 or self.ppo_step == 1):
                log_rollouts(self.run_logger, self.run_dir, self.ppo_step, rollouts, scored, s.table_rows)
        self.log("reward", metrics["reward/total"], prog_bar=True, logger=False, batch_size=len(rollouts))
        self.log("pass", metrics["rollout/pass_rate"], prog_bar=True, logger=False, batch_size=len(rollouts))
        return metrics

    # -------------------------------------------------------------------------------------------- 1. rollout
    def rollout(self, items: list[RLItem]) -> tuple[Rollouts, list]:
        """Responses for ``items`` and a sandbox future per response (submitted as each chunk finishes)."""
        s = self.settings
        responses: list[Response] = []
        programs: list[str | None] = []
        futures = []
        sampled: list[tuple[torch.Tensor, torch.Tensor]] = []  # (log-probs, values) per row, when kept
        chunk = len(items) if s.offline else s.generation_batch_size
        rows = rollout_rows(len(items), *rank_world(self), s.samples_per_prompt)  # each rollout's place in the step
        self._sync_seconds = 0.0
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            if s.offline:
                generated = Samples(self.teacher_answers(part))
            else:
                generated = self.generate([it.prompt_ids for it in part], rows[start:start + chunk])
            logprobs, values = generated.logprobs, generated.values
            for row, (item, ids) in enumerate(zip(part, generated.ids)):
                response = read_response(self.tokenizer, ids, self.stop_ids, self.stop_strings, item.explained,
                                         raw_code=s.code_from == "raw", answer_form=item.answer_form,
                                         wrong_program=item.wrong_program)
                program = assemble_program(item.problem, response.code) if response.code is not None else None
                responses.append(response)
                programs.append(program)
                futures.append(self.sandbox.submit(program, item.problem.tests, s.judge_timeout))
                if logprobs is not None:
                    n = len(response.ids)
                    sampled.append((logprobs[row, :n], values[row, :n]))
        query, query_mask = left_pad([it.prompt_ids for it in items], self.pad_id)
        response, response_mask = right_pad([r.ids for r in responses], self.pad_id)
        rollouts = Rollouts(items, query, query_mask, response, response_mask, responses, programs)
        if sampled:
            rollouts.sampled_logprobs = torch.nn.utils.rnn.pad_sequence([lp for lp, _ in sampled], batch_first=True)
            rollouts.sampled_values = torch.nn.utils.rnn.pad_sequence([v for _, v in sampled], batch_first=True)
        return rollouts, futures

    def generate(self, prompts: list[list[int]], rows: list[int] | None = None) -> Samples:
        """Sampled responses from the engine, which gets the policy's weights at a step's first rollout (they
        change only in the update, between steps). ``rows``: the rollouts' places in the step, which seed them
        (the vLLM engine); default: ``0, 1, ...``."""
        if self._synced_step != self.ppo_step:
            t0 = time.perf_counter()
            self.engine.sync(self.policy)
            self._sync_seconds += time.perf_counter() - t0
            self._synced_step = self.ppo_step
        rows = list(range(len(prompts))) if rows is None else rows
        return self.engine.generate(prompts, rollout_seeds(self.seed, self.ppo_step, rows))

    def teacher_answers(self, items: list[RLItem]) -> list[list[int]]:
        """Offline: the collected answer of each item as response tokens, ended by the stop token (whole:
        ``rl.max_new_tokens`` bounds sampling only)."""
        end_of_turn = self.tokenizer.encode(END, add_special_tokens=False)  # as the SFT targets end
        end = end_of_turn if len(end_of_turn) == 1 else ([min(self.stop_ids)] if self.stop_ids else [])
        encoded = self.tokenizer([it.answer for it in items], add_special_tokens=False)["input_ids"]
        return [list(ids) + end for ids in encoded]

    # -------------------------------------------------------------------------------------------- 4. evaluate
    @torch.no_grad()
    def evaluate(self, rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(old_logprobs, old_values, ref_logprobs)``, each ``[B, R]`` and zero on padding."""
        s = self.settings
        shape = tuple(rollouts.response.shape)
        old_logprobs = torch.zeros(shape, device=self.device)
        old_values = torch.zeros(shape, device=self.device)
        ref_logprobs = torch.zeros(shape, device=self.device)
        sampled = rollouts.sampled_logprobs is not None  # rl.rollout_logprobs=generation: no policy pass here
        if sampled:
            n = rollouts.sampled_logprobs.shape[1]
            mask = rollouts.response_mask[:, :n].to(self.device)
            old_logprobs[:, :n] = rollouts.sampled_logprobs.to(self.device) * mask
            old_values[:, :n] = rollouts.sampled_values.to(self.device) * mask
        for rows in micro_batches(range(len(rollouts)), rollouts.lengths, s.micro_batch_size):
            q, qm, r, rm = (t.to(self.device) for t in rollouts.rows(rows))
            n = r.shape[1]
            if not sampled:
                logprobs, values, _ = response_scores(self.policy, q, qm, r, rm, s.temperature, self.value_head)
                old_logprobs[rows, :n] = logprobs * rm
                old_values[rows, :n] = values.float() * rm
            if self.use_reference:
                ref, _, _ = self.reference_forward(q, qm, r, rm, s.temperature)
                ref_logprobs[rows, :n] = ref * rm
            else:
                ref_logprobs[rows, :n] = old_logprobs[rows, :n]  # no KL term: the reference is never needed
        return old_logprobs, old_values, ref_logprobs

    # -------------------------------------------------------------------------------------------- 6. update
    def update(self, rollouts: Rollouts, old_logprobs, old_values, advantages, returns, step: int) -> dict:
        s = self.settings
        opt = self.optimizers()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        lengths = rollouts.lengths
        sums: dict[str, float] = {}
        updates, early_stop = 0, False
        cosine = None  # rl.gradient_cosine: measured once a step, at its first update
        # Data parallel: rl.mini_batch_size is global, each rank updates on its share of it; the ranks' orders
        # have the same shape, so every rank takes the same number of optimizer steps.
        _, world = rank_world(self)
        mini = s.mini_batch_size // world
        for epoch in range(s.ppo_epochs):
            order = torch.randperm(len(rollouts), generator=generator).tolist()
            for start in range(0, len(order), mini):
                minibatch = order[start:start + mini]
                n_tokens = float(lengths[minibatch].sum())
                if world > 1:  # the token-mean is over the global minibatch
                    n_tokens = float(sum_across_ranks(torch.tensor(n_tokens, dtype=torch.float64,
                                                                   device=self.device)))
                stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clipfrac": 0.0, "approx_kl": 0.0,
                         "vf_clipfrac": 0.0, "ratio": 0.0}
                chunks = micro_batches(minibatch, lengths, s.micro_batch_size)
                for k, rows in enumerate(chunks):
                    q, qm, r, rm = (t.to(self.device) for t in rollouts.rows(rows))
                    n, mask = r.shape[1], rm.float()
                    new_logprobs, new_values, entropy = response_scores(
                        self.policy, q, qm, r, rm, s.temperature, self.value_head, with_entropy=True,
                        detach_value=s.detach_value_head, entropy_grad=s.ent_coef > 0)
                    pg_loss, pg_stats = policy_loss(new_logprobs, old_logprobs[rows, :n], advantages[rows, :n],
                                                    mask, s.clip_range)
                    vf_loss, vf_stats = value_loss(new_values.float(), old_values[rows, :n], returns[rows, :n], mask,
                                                   s.clip_range_value)
                    ent = masked_mean(entropy, mask)
                    weight = float(mask.sum()) / n_tokens  # token-mean over the whole minibatch
                    loss = pg_loss + s.vf_coef * vf_loss - (s.ent_coef * ent if s.ent_coef else 0.0)
                    with backward_sync(self, k == len(chunks) - 1):  # DDP reduces once, after the last
                        self.manual_backward(loss * weight * world)  # the backend averages over the ranks
                    for key, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("entropy", ent),
                                       ("clipfrac", pg_stats["clipfrac"]), ("approx_kl", pg_stats["approx_kl"]),
                                       ("vf_clipfrac", vf_stats["vf_clipfrac"]), ("ratio", pg_stats["ratio"])):
                        stats[key] += float(value.detach()) * weight
                if world > 1:  # the ranks' weighted shares add up to the global figures (target_kl sees those)
                    totals = sum_across_ranks(torch.tensor(list(stats.values()), dtype=torch.float64,
                                                           device=self.device))
                    stats = dict(zip(stats, totals.tolist()))
                if s.gradient_cosine and updates == 0:  # before clipping: the gradient as the rollouts give it
                    cosine = self.gradient_cosine_to_previous()
                stats["grad_norm"] = clip_grad_norm(self, trainable_parameters(self), s.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                updates += 1
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                if s.target_kl is not None and stats["approx_kl"] > s.target_kl:
                    early_stop = True
                    break
            if early_stop:
                break
        out = {key: value / max(1, updates) for key, value in sums.items()}
        if cosine is not None:
            out["gradient_cosine"] = cosine
        out.update(updates=updates, epochs=epoch + 1, early_stopped=float(early_stop))
        return out

    def gradient_cosine_to_previous(self) -> float:
        """``rl.gradient_cosine``: the cosine between the policy's gradient now and at the previous step's first
        update (NaN at the first step, and at the first after a resume), then keep this one. The value head is
        left out: its gradient is the critic's, not the policy's."""
        grads = [p.grad for p in self.policy.parameters() if p.requires_grad and p.grad is not None]
        grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]  # FSDP2: this rank's shard
        previous = getattr(self, "_previous_gradient", None)
        self._previous_gradient = [g.detach().clone() for g in grads]
        if previous is None or not grads:
            return float("nan")
        return gradient_cosine(previous, self._previous_gradient, all_reduce=across_ranks())

    # -------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["selfdebug_ppo"] = {"ppo_step": self.ppo_step, "kl_ctl": self.kl_ctl.state_dict(),
                                       "history": self.history, "rng": rng_state()}
        if self.lora:
            keep = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("selfdebug_ppo")
        if not state:
            raise ConfigError("the checkpoint holds no PPO state; it was not written by the RL stage")
        self.ppo_step = int(state["ppo_step"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.history = list(state.get("history") or [])
        set_rng_state(state["rng"])


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Python, NumPy and torch (CPU and CUDA) seeded from the run's seed, the step number and the rank."""
    value = (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**31 - 1)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class PPOCheckpoint(pl.Callback):
    """A Lightning checkpoint every ``every`` PPO steps, at ``stop_after`` and at the last step
    (``step-NNNNNNN.ckpt``, the PPO step; written under a temporary name, then renamed; the newest ``keep``
    stay). At ``stop_after`` the run stops; the same command resumes it."""

    def __init__(self, dirpath: Path, every: int, keep: int, stop_after: int | None, total_steps: int):
        self.dirpath, self.every, self.keep = Path(dirpath), int(every), int(keep)
        self.stop_after, self.total_steps = stop_after, int(total_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.ppo_step
        stop = self.stop_after is not None and step >= self.stop_after and step < self.total_steps
        if (self.every and step % self.every == 0) or step == self.total_steps or stop:
            save_step_checkpoint(trainer, self.dirpath, step, self.keep)
        if stop:
            trainer.should_stop = True
