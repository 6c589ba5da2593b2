"""evaluate_split at many classes: the C x C confusion matrix only up to eval.confusion_max_classes."""

from __future__ import annotations

from ccsam.config import resolve_config
from ccsam.evaluation.predict import evaluate_split
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer


def test_confusion_matrix_only_up_to_the_class_limit(tmp_path, tiny_overrides) -> None:
    config = resolve_config("digits-lt", tiny_overrides())  # 5 classes
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    data = trainer.data
    full = evaluate_split(trainer.model, data.test, data, config, trainer.runtime, details=True)
    assert len(full["confusion_matrix"]) == 5 and "reliability" in full
    capped = config.model_copy(update={"eval": config.eval.model_copy(update={"confusion_max_classes": 4})})
    report = evaluate_split(trainer.model, data.test, data, capped, trainer.runtime, details=True)
    assert "confusion_matrix" not in report and "reliability" in report
    assert report["top1"] == full["top1"]
