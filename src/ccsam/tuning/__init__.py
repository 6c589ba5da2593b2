"""Hyper-parameter search on the validation split (Optuna: TPE, a pruner, SQLite storage), then a
multi-seed final phase that evaluates the test split once per seed. Needs ``pip install 'ccsam[tune]'``.

Example (``study.yaml`` is your study spec and ``studies/fmnist`` your study folder; the calls train
models, so they are not run here):
    >>> spec = load_study_spec("study.yaml")  # doctest: +SKIP
    >>> choice = run_search(spec, "studies/fmnist", "ce")  # doctest: +SKIP
    >>> final = run_final(spec, "studies/fmnist", "ce")  # doctest: +SKIP

``run_search`` scores trials on the validation split only; ``run_final`` trains N seeds and evaluates
the test split once per seed.
"""

from ccsam.tuning.records import export_records, restore_study
from ccsam.tuning.space import MethodSearch, ParamSpec, StudySpec, load_study_spec
from ccsam.tuning.study import run_final, run_search, study_summary, validation_score

__all__ = [
    "MethodSearch",
    "ParamSpec",
    "StudySpec",
    "export_records",
    "load_study_spec",
    "restore_study",
    "run_final",
    "run_search",
    "study_summary",
    "validation_score",
]
