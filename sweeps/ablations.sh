#!/usr/bin/env bash
# The ablations the paper did not run, each against the paper's reward (reward=ledex), x 3 seeds:
#   no_explanation   R_expl = 0: does explaining help the refinement reward at all?
#   no_codebleu      R_code = 10 * S_ut - 5: unit tests only, without similarity to verified fixes
#   sequence_level   R_expl and R_code both on the final token instead of the paper's span placement
# The summary table (mean and 95% interval per reward variant) lands in <sweep dir>/sweep_summary.md.
#
#   sweeps/ablations.sh
#   EXP=rl_13b sweeps/ablations.sh rl.sft_checkpoint=outputs/train/sft/codellama_13b/<time>/model rl.mode=refine
set -euo pipefail
EXP=${EXP:-rl_quickstart}
ENTRY=${ENTRY:-selfdebug.train}
DIR=${DIR:-multirun/rl/ablations/$(date +%Y-%m-%d_%H-%M-%S)}
python -m "$ENTRY" --multirun +exp="$EXP" reward=ledex,no_explanation,no_codebleu,sequence_level seed=1,2,3 \
    hydra.sweep.dir="$DIR" "$@"
python -m selfdebug.sweep_summary sweep_dir="$DIR"
