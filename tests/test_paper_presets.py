"""The paper presets against the table of docs/paper-fidelity.md (the one source of truth for what they set).

Each table row names presets and ``key=value`` settings; every training preset (``sft_*``, ``rl_*``, the LoRA
variants included) is composed with the real Hydra config and each of its rows' settings is checked. Rows for
collection and evaluation (marked "(eval)") are read by ``fidelity_rows`` too, and checked by that side's tests.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from functools import cache

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from tests.conftest import REPO

CONF = REPO / "conf"
TABLE = REPO / "docs" / "paper-fidelity.md"
# The paper presets: every experiment named sft_* or rl_* but the offline quickstarts.
TRAINING_PRESETS = sorted(p.stem for p in (CONF / "exp").glob("*.yaml")
                          if p.stem.startswith(("sft_", "rl_")) and not p.stem.endswith("_quickstart"))
PRIMARY = {"collect": "collect", "evaluate": "evaluate", "train": "train"}  # a primary config by its name


@dataclass(frozen=True)
class Row:
    number: int
    stage: str
    setting: str
    settings: tuple[tuple[str, str], ...]  # (key, value as written)
    targets: tuple[str, ...]  # experiments (globs expanded), group/name files, or primary configs
    eval_side: bool  # marked "(eval)": collection and evaluation check it


def _expand(token: str) -> list[str]:
    if "*" in token:
        names = sorted(p.stem for p in (CONF / "exp").glob("*.yaml"))
        return [n for n in names if fnmatch.fnmatch(n, token) and not n.endswith("_quickstart")]
    return [token]


def fidelity_rows(path=TABLE) -> list[Row]:
    """The table of ``docs/paper-fidelity.md``: one ``Row`` per line that starts with ``| <number> |``."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells or not cells[0].isdigit():
            continue
        assert len(cells) == 7, f"{path.name}: row {cells[0]} has {len(cells)} cells, not 7: {line}"
        number, stage, setting, _paper, value, presets, _source = cells
        pairs = tuple(tuple(m.split("=", 1)) for m in re.findall(r"`([^`]+=[^`]*)`", value))
        targets = tuple(t for token in re.split(r"[,\s]+", presets) if token for t in _expand(token))
        rows.append(Row(int(number), stage, setting, pairs, targets, "(eval)" in setting))
    return rows


def literal(text: str):
    """A table value as YAML reads it, with numbers in e-notation (``2e-6``) read as floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def same(actual, expected) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(float(actual), float(expected), rel_tol=1e-12)
    if isinstance(expected, list) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    return actual == expected


@cache
def composed(preset: str):
    """``(config, group choices)`` of the experiment ``preset`` on the train entry point."""
    from hydra import compose, initialize_config_dir

    from selfdebug.train.settings import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"+exp={preset}"], return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def setting_of(preset: str, key: str):
    cfg, choices = composed(preset)
    if "." not in key and key in choices:
        return choices[key]
    node = OmegaConf.select(cfg, key, throw_on_missing=False, default="<absent>")
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


ROWS = fidelity_rows()
CHECKS = [(preset, row.number, key, value) for row in ROWS if not row.eval_side for preset in row.targets
          if preset in TRAINING_PRESETS for key, value in row.settings]


def test_the_table_reads_and_names_only_configs_that_exist():
    numbers = [r.number for r in ROWS]
    assert numbers == list(range(1, len(ROWS) + 1)), "rows are numbered 1, 2, ... without gaps"
    assert len(ROWS) >= 60 and len(CHECKS) >= 200
    for row in ROWS:
        assert row.targets, f"row {row.number} names no preset"
        for target in row.targets:
            known = (target in TRAINING_PRESETS or (CONF / "exp" / f"{target}.yaml").is_file()
                     or (CONF / f"{target}.yaml").is_file() or target in PRIMARY)
            assert known, f"row {row.number}: {target!r} is no experiment, config group file or entry point"
        if not row.eval_side:
            assert all(t in TRAINING_PRESETS for t in row.targets), f"row {row.number}: a training row names " \
                "something else; mark collection/evaluation rows (eval)"


def test_every_training_preset_is_in_the_table():
    """A new sft_/rl_ preset cannot skip the table: each one is checked on the paper's core settings."""
    core = {"sft": {"sft.lr", "sft.batch_size", "sft.epochs", "sft.warmup_steps", "dataset.mixture.refine",
                    "dataset.mixture.explain_refine", "model", "peft", "trainer"},
            "rl": {"rl.lr", "rl.batch_size", "rl.gamma", "rl.lam", "rl.mode", "rl.sources", "rl.require_reference",
                   "reward.explanation_model", "model", "peft", "trainer"}}
    assert set(TRAINING_PRESETS) >= {"sft_7b", "sft_13b", "sft_starcoder_15b", "rl_7b", "rl_13b",
                                     "rl_starcoder_15b", "rl_7b_lora", "rl_13b_lora", "rl_starcoder_15b_lora",
                                     "sft_13b_lora", "sft_starcoder_15b_lora"}
    for preset in TRAINING_PRESETS:
        keys = {key for p, _, key, _ in CHECKS if p == preset}
        missing = core[preset.split("_")[0]] - keys
        assert not missing, f"{preset}: the table checks none of {sorted(missing)}"


@pytest.mark.parametrize("preset, row, key, value", CHECKS, ids=[f"{p}-{n}-{k}" for p, n, k, _ in CHECKS])
def test_preset_matches_the_table(preset, row, key, value):
    actual = setting_of(preset, key)
    assert same(actual, literal(value)), f"{preset}: {key} = {actual!r}, but docs/paper-fidelity.md row {row} " \
        f"says {value}"


@pytest.mark.parametrize("preset", TRAINING_PRESETS)
def test_every_preset_builds_its_settings(preset):
    """The composed blocks pass their dataclasses' checks, the reward builds, and the batch splits over the
    preset's devices (what the recipe checks before loading anything)."""
    from selfdebug.rewards import CompositeReward
    from selfdebug.train.distributed import check_divisible
    from selfdebug.train.rl.settings import PPOSettings
    from selfdebug.train.settings import LoraSettings, settings_from
    from selfdebug.train.sft.settings import SFTSettings

    cfg, choices = composed(preset)
    devices = int(cfg.trainer.devices)
    settings_from(LoraSettings, cfg.peft, "peft")
    if cfg.stage == "sft":
        s = settings_from(SFTSettings, cfg.sft, "sft")
        check_divisible(s.batch_size, s.micro_batch_size, devices, ("sft.batch_size", "sft.micro_batch_size"))
        return
    s = settings_from(PPOSettings, OmegaConf.merge(cfg.rl, {"sft_checkpoint": "/some/sft/model"}), "rl")
    assert s.prompts_per_step % devices == 0
    check_divisible(s.mini_batch_size, s.micro_batch_size, devices, ("rl.mini_batch_size", "rl.micro_batch_size"))
    reward = CompositeReward(**{k: v for k, v in OmegaConf.to_container(cfg.reward).items() if k != "_target_"})
    assert reward.fallback == "error" and reward.s_ex_min == 0.0
    assert (choices["peft"] == "lora") == preset.endswith("_lora")


def test_a_drifted_preset_fails_the_check():
    """The check can fail: an override the table does not share is caught (rl.lam back to TRL's 0.95)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["+exp=rl_7b", "rl.lam=0.95"])
    (expected,) = [v for p, _, k, v in CHECKS if p == "rl_7b" and k == "rl.lam"]
    assert not same(cfg.rl.lam, literal(expected)) and same(setting_of("rl_7b", "rl.lam"), literal(expected))


# ------------------------------------------------------------------------------------- collection and evaluation

def entry_point_of(target: str) -> tuple[str, list[str]]:
    """The entry point and overrides an (eval) row's target is composed with."""
    if target in PRIMARY:
        return PRIMARY[target], []
    if "/" in target:
        group, name = target.split("/", 1)
        return ("collect" if group in ("data", "teacher") else "evaluate"), [f"{group}={name}"]
    return ("collect" if target.startswith("collect") else "evaluate"), [f"+exp={target}"]


@cache
def composed_eval(target: str):
    from hydra import compose, initialize_config_dir

    import selfdebug.core.cli  # noqa: F401 - registers the resolvers the configs use

    entry, overrides = entry_point_of(target)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(entry, overrides=overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        run_dir = cfg.hydra.run.dir  # resolved against the job's config, as Hydra does at run time
        del cfg["hydra"]
    return cfg, choices, run_dir


EVAL_CHECKS = [(target, row.number, key, value) for row in ROWS if row.eval_side for target in row.targets
               for key, value in row.settings]


def test_the_collection_and_evaluation_rows_are_checked():
    targets = {t for t, *_ in EVAL_CHECKS}
    assert {"collect_paper", "collect_codellama34b", "paper_eval", "model/codellama_7b", "model/codellama_13b",
            "model/starcoder_15b"} <= targets and len(EVAL_CHECKS) >= 20


@pytest.mark.parametrize("target, row, key, value", EVAL_CHECKS, ids=[f"{t}-{n}-{k}" for t, n, k, _ in EVAL_CHECKS])
def test_collection_and_evaluation_presets_match_the_table(target, row, key, value):
    cfg, choices, _ = composed_eval(target)
    if "." not in key and key in choices:
        actual = choices[key]
    else:
        node = OmegaConf.select(cfg, key, throw_on_missing=False, default="<absent>")
        actual = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    assert same(actual, literal(value)), f"{target}: {key} = {actual!r}, but docs/paper-fidelity.md row {row} " \
        f"says {value}"


def test_the_paper_presets_read_the_folder_the_paper_collection_writes():
    """`python -m selfdebug.collect +exp=collect_paper` (the README's step 1) writes the dataset every SFT and RL
    paper preset reads, so the five steps run as written."""
    _, _, run_dir = composed_eval("collect_paper")
    for preset in TRAINING_PRESETS:
        cfg, _ = composed(preset)
        assert cfg.dataset.path == f"{run_dir}/dataset", preset
