#!/usr/bin/env bash
# The reward-weight sweep of reward_weights.sh (explanation weight 0 / 0.5 / 1 x 3 seeds) as a SLURM array job,
# one GPU per run (the LoRA presets; the full-weight paper presets need gpus_per_node=8), through Hydra's submitit launcher (conf/hydra/launcher/submitit_slurm.yaml).
#
#   PARTITION=gpu sweeps/slurm_reward_weights.sh rl.sft_checkpoint=outputs/train/sft/codellama_7b/<time>/model
#   PARTITION=gpu EXP=rl_13b_lora TIMEOUT_MIN=720 sweeps/slurm_reward_weights.sh rl.sft_checkpoint=...
#
# Preemption and time limits: SLURM sends USR2 (hydra.launcher.signal_delay_s before the limit; at a preemption
# where the cluster sets SlurmctldParameters=preempt_send_user_signal, and partitions with PreemptMode=REQUEUE
# requeue by themselves); submitit requeues the job with the same pickled config, so it comes
# back in the same run dir <DIR>/<job number>, resumes from the newest checkpoint there (resume: auto; the work
# since rl.checkpoint_every is redone) and continues the same W&B run (its id is in <run dir>/wandb_run_id.txt).
# Time-outs are requeued up to hydra.launcher.max_num_timeout times, preemptions always.
#
# This command waits for the whole sweep (run it in tmux/screen on the login node). If it dies, the jobs go on
# (squeue); when they are done: python -m selfdebug.sweep_summary sweep_dir="$DIR". To redo runs that failed for good
# (requeues used up, a crash), run the same command with the same DIR once none of its jobs is queued or running
# (two jobs in one run dir would clobber each other): each run resumes from its checkpoints, finished ones return
# at once.
# Compute nodes without internet: W&B stays offline (the default); afterwards, from a node with internet,
#   wandb sync "$DIR"/*/wandb/offline-run-*      # the segments of a requeued run go to one W&B run, in order
set -euo pipefail
: "${PARTITION:?set PARTITION to the GPU partition of your cluster}"
EXP=${EXP:-rl_7b_lora}
DIR=${DIR:-multirun/rl/reward_weights_slurm/$(date +%Y-%m-%d_%H-%M-%S)}
python -m selfdebug.train --multirun hydra/launcher=submitit_slurm hydra.launcher.partition="$PARTITION" \
    hydra.launcher.timeout_min="${TIMEOUT_MIN:-1440}" hydra.launcher.gpus_per_node=1 \
    +exp="$EXP" reward.weights.explanation=0,0.5,1 seed=1,2,3 hydra.sweep.dir="$DIR" "$@"
python -m selfdebug.sweep_summary sweep_dir="$DIR"
