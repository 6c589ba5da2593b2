"""The training engine: objectives, the epoch loop, checkpoints, run folders."""

from ccsam.training.evaluate_run import evaluate_run
from ccsam.training.run_dir import RunDir
from ccsam.training.stage1_reuse import start_from_stage1
from ccsam.training.trainer import Trainer, train

__all__ = ["RunDir", "Trainer", "evaluate_run", "start_from_stage1", "train"]
