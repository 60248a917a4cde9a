"""``python -m selfdebug.dashboard entity=ENTITY [project=selfdebug] [group=GROUP]``: the W&B report that
reads the runs this project logs (needs ``pip install -e ".[dashboard]"``, a W&B login and the network).

Four sections, each a panel grid over the runs of one job type (and of one group, with ``group=``):
evaluation (pass@1 and pass@10 by round per model label, the refinement samples), RL (reward terms, KL,
entropy, pass rate over steps, sampled rollouts), SFT (loss, held-out samples) and sweeps (parallel coordinates
from the reward weights and the seed to the final reward and pass rate). The metric names are the ones
``RunLogger`` writes, so the report works on synced offline runs too.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from selfdebug.analysis import options
from selfdebug.core.cli import CONF_DIR
from selfdebug.core.errors import ConfigError

ROUNDS = 4  # the initial code and up to 3 rounds of explanation + refinement (the paper's protocol)


def build_report(entity: str, project: str = "selfdebug", group: str | None = None):
    """The report, built locally (nothing is sent until ``.save()``)."""
    import wandb_workspaces.reports.v2 as wr

    def runs(name: str, job_type: str) -> wr.Runset:
        where = f"Metric('JobType') == '{job_type}'" + (f" and Metric('Group') == '{group}'" if group else "")
        return wr.Runset(entity=entity, project=project, name=name, filters=where)

    def table(name: str):
        return wr.WeavePanelSummaryTable(table_name=name)

    evaluation = wr.PanelGrid(runsets=[runs("evaluations", "evaluate")], panels=[
        wr.BarPlot(title=f"pass@{k} by round (0 = initial code)", groupby=wr.Config("label"),
                   metrics=[wr.SummaryMetric(f"round_{r}/pass@{k}") for r in range(ROUNDS)])
        for k in (1, 10)] + [table("refinements")])
    rl = wr.PanelGrid(runsets=[runs("PPO runs", "rl")], panels=[
        wr.LinePlot(title="reward terms", y=["reward/total", "reward/r_code", "reward/r_expl", "reward/kl_penalty"]),
        wr.LinePlot(title="scores", y=["reward/s_ut", "reward/s_cb", "reward/s_ex"]),
        wr.LinePlot(title="KL to the SFT policy", y=["objective/kl"]),
        wr.LinePlot(title="entropy", y=["objective/entropy"]),
        wr.LinePlot(title="rollout pass rate", y=["rollout/pass_rate"]),
        wr.LinePlot(title="PPO health", y=["ppo/clipfrac", "ppo/approx_kl", "ppo/explained_variance"]),
        table("rollouts/samples")])
    sft = wr.PanelGrid(runsets=[runs("SFT runs", "sft")], panels=[
        wr.LinePlot(title="loss", y=["train/loss", "heldout/loss"]), table("heldout/samples")])
    columns = [wr.Config("reward.weights.explanation"), wr.Config("reward.weights.codebleu"),
               wr.Config("reward.weights.unit_tests"), wr.Config("seed"),
               wr.SummaryMetric("reward/total"), wr.SummaryMetric("rollout/pass_rate")]
    sweeps = wr.PanelGrid(runsets=[runs("sweeps", "rl")], panels=[
        wr.ParallelCoordinatesPlot(title="reward weights -> reward and pass rate",
                                   columns=[wr.ParallelCoordinatesPlotColumn(metric=c) for c in columns])])
    return wr.Report(
        entity=entity, project=project, title="selfdebug" + (f": {group}" if group else ""),
        description="pass@k by round per model, PPO reward terms / KL / entropy, samples, reward-weight sweeps",
        blocks=[wr.H2("Evaluation: pass@k by round per model"), evaluation,
                wr.H2("RL: reward terms, KL and entropy over PPO steps"), rl,
                wr.H2("SFT"), sft,
                wr.H2("Sweeps over the reward weights"), sweeps])


def run(cfg: DictConfig) -> str:
    entity = options.text(cfg, "entity", "entity=my-team (the W&B user or team that owns the project)")
    project = options.text(cfg, "project", "project=selfdebug")
    group = cfg.get("group")
    try:
        report = build_report(entity, project, None if group is None else str(group))
    except ImportError:
        raise ConfigError('the dashboard needs wandb-workspaces: pip install -e ".[dashboard]"') from None
    report.save()
    print(report.url)
    return report.url


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="dashboard")
def main(cfg: DictConfig) -> None:
    options.run_command(run, cfg)


if __name__ == "__main__":
    main()
