"""Rewards for RL on explanation + refinement: plain functions and one Hydra-configured component.

    R_code = 5 * (S_cb + S_ut) - 5          (CodeBLEU to verified refinements, share of unit tests passed)
    R_expl = (50 * S_ex - 35) / 3           (embedding similarity to verified explanations)

R_expl lands on the explanation's last token, R_code on the final token, the KL penalty on every token.
"""

from selfdebug.rewards.code import (
    code_reward,
    codebleu_pair,
    codebleu_score,
    codebleu_scores,
    same_program,
    unit_test_score,
    unit_test_scores,
)
from selfdebug.rewards.composite import (
    COMPONENTS,
    CompositeReward,
    RewardBatch,
    RewardSample,
    place_rewards,
    place_rewards_batch,
)
from selfdebug.rewards.explanation import ExplanationScorer, default_model_path, explanation_reward
from selfdebug.rewards.references import ReferenceIndex, build_references, iter_records

__all__ = [
    "COMPONENTS",
    "CompositeReward",
    "ExplanationScorer",
    "ReferenceIndex",
    "RewardBatch",
    "RewardSample",
    "build_references",
    "code_reward",
    "codebleu_pair",
    "codebleu_score",
    "codebleu_scores",
    "default_model_path",
    "explanation_reward",
    "iter_records",
    "place_rewards",
    "place_rewards_batch",
    "same_program",
    "unit_test_score",
    "unit_test_scores",
]
