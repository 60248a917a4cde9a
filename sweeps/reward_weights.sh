#!/usr/bin/env bash
# Reward-weight sweep: the explanation reward's weight (0 = no R_expl, 0.5, 1 = the paper) x 3 seeds, then the
# summary table (mean and 95% interval across seeds per weight) in <sweep dir>/sweep_summary.{md,csv,json}.
# W&B runs of the sweep share the group "sweep-<folder name>" (offline unless logger.mode=online).
#
#   sweeps/reward_weights.sh                                  # the tiny quickstart (CPU, minutes)
#   EXP=rl_7b_lora sweeps/reward_weights.sh rl.sft_checkpoint=outputs/train/sft/codellama_7b/<time>/model
#
# Extra arguments are passed to every run.
set -euo pipefail
EXP=${EXP:-rl_quickstart}
DIR=${DIR:-multirun/rl/reward_weights/$(date +%Y-%m-%d_%H-%M-%S)}
python -m selfdebug.train --multirun +exp="$EXP" reward.weights.explanation=0,0.5,1 seed=1,2,3 hydra.sweep.dir="$DIR" "$@"
python -m selfdebug.sweep_summary sweep_dir="$DIR"
