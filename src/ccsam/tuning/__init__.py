"""Hyper-parameter search on the validation split (Optuna: TPE, a pruner, SQLite storage), then a
multi-seed final phase that evaluates the test split once per seed. Needs ``pip install 'ccsam[tune]'``.

Example:
    >>> spec = load_study_spec("study.yaml")
    >>> choice = run_search(spec, "studies/fmnist", "ce")      # validation only
    >>> final = run_final(spec, "studies/fmnist", "ce")        # N seeds, test once per seed
"""

from ccsam.tuning.space import MethodSearch, ParamSpec, StudySpec, load_study_spec
from ccsam.tuning.study import run_final, run_search, study_summary, validation_score

__all__ = [
    "MethodSearch",
    "ParamSpec",
    "StudySpec",
    "load_study_spec",
    "run_final",
    "run_search",
    "study_summary",
    "validation_score",
]
