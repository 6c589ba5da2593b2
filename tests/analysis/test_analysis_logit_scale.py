"""The analyses score the logits the run's evaluation scores: the head's logits times eval.logit_scale."""

from __future__ import annotations

import pytest
import torch

from ccsam.analysis.runs import _load
from ccsam.cli.main import main
from ccsam.evaluation.predict import adjust_logits
from ccsam.training.evaluate_run import load_trained
from ccsam.training.run_dir import RunDir


@pytest.mark.parametrize(
    "model_overrides",
    [
        ["model.head=cosine", "model.head_scale=4", "stage1.loss.name=ldam", "eval.logit_scale=3"],
        ["eval.logit_scale=2.5"],  # a linear head: wrapped, its parameters the same tensors
    ],
    ids=["cosine", "linear"],
)
def test_analysed_logits_are_the_evaluated_ones(tmp_path, tiny_overrides, model_overrides):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--no-progress",
            *tiny_overrides(**{"stage1.method": "erm", "stage2.epochs": 0}), *model_overrides]
    assert main(argv) == 0
    run = RunDir.open(out)
    evaluated = load_trained(run)
    analysed = _load(run, None, None, None)
    x = torch.randn(6, *evaluated.data.train.images.shape[1:])
    evaluated.model.eval()
    analysed.model.eval()
    with torch.no_grad():
        want = adjust_logits(evaluated.model(x), evaluated.cfg, evaluated.data.class_counts)
        got = analysed.model(x)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, evaluated.model(x).detach())  # the scale is not 1: not vacuous
    trained = {id(p) for p in analysed.model.head.parameters()}
    assert len(trained) == len(list(evaluated.model.head.parameters())) > 0
