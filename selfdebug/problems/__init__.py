"""One ``Problem`` type and the loaders that produce it, one module per data set.

HumanEval (``humaneval``), HumanEvalPack (``humanevalpack``), MBPP full and sanitized (``mbpp``), EvalPlus
MBPP+ / HumanEval+ (``evalplus``), APPS (``apps``) and CodeContests (``codecontests``); ``registry`` picks
one by name (``load_benchmark``). Loaders read local files (``.jsonl``, ``.jsonl.gz``, a ``.json`` array),
the packaged copies (``datafiles``) or the Hugging Face hub. Every loader returns ``list[Problem]`` in file
order; bad input raises ``DataError`` naming the file and line, an unknown option ``ConfigError``.
Generated test code starts with the sandbox-side helpers in ``sandbox_helpers/`` (see ``testcode``).
"""

from selfdebug.problems.apps import APPS_DIFFICULTIES, load_apps
from selfdebug.problems.codecontests import CODECONTESTS_PYTHON3, load_codecontests
from selfdebug.problems.datafiles import DATA_DIR_ENV, data_dir, data_file
from selfdebug.problems.evalplus import load_evalplus
from selfdebug.problems.humaneval import load_humaneval, split_humaneval_check
from selfdebug.problems.humanevalpack import load_humanevalpack
from selfdebug.problems.mbpp import HELD_OUT_SPLITS, MBPP_SPLITS, load_mbpp
from selfdebug.problems.problem import Problem
from selfdebug.problems.records import iter_records
from selfdebug.problems.registry import BENCHMARKS, load_benchmark, select_problems

__all__ = [
    "APPS_DIFFICULTIES", "BENCHMARKS", "CODECONTESTS_PYTHON3", "DATA_DIR_ENV", "HELD_OUT_SPLITS", "MBPP_SPLITS",
    "Problem",
    "data_dir", "data_file", "iter_records", "load_apps", "load_benchmark", "load_codecontests",
    "load_evalplus", "load_humaneval", "load_humanevalpack", "load_mbpp", "select_problems",
    "split_humaneval_check",
]
