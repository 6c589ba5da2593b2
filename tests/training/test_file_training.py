"""End to end on generated JPEG layouts: `ccsam train` on ImageNet-LT-shaped lists, and exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from _jpeg_layouts import NUM_CLASSES, OPEN_IMAGES, TEST_PER_CLASS, file_overrides, write_list_layout

from ccsam.cli.main import main
from ccsam.config import resolve_config
from ccsam.data.build import build_open_images
from ccsam.evaluation.open_set import open_set_report
from ccsam.evaluation.predict import split_logits
from ccsam.training.checkpoint import load_checkpoint
from ccsam.training.evaluate_run import evaluate_run, load_trained
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer, train


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The runs here set runtime.threads=1 (fast on a shared CPU); give the next test its threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_ccsam_train_runs_both_stages_on_imagenet_lt_lists(tmp_path, capsys):
    root = write_list_layout(tmp_path / "imagenet_lt", "imagenet_lt")
    overrides = file_overrides(
        root,
        "imagenet_lt",
        **{
            "stage1.method": "ccsam",
            "stage2.epochs": 1,
            "stage2.sampler": "class_aware",
            "data.num_workers": 1,
        },
    )
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", *overrides]) == 0
    assert "overall" in capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["test"]["per_class_accuracy"]) == NUM_CLASSES
    assert results["class_counts"][0] == 30 and results["epochs"] == 2
    split = json.loads((tmp_path / "run" / "split_manifest.json").read_text())
    assert split["sources"]["test"]["class_counts"] == [TEST_PER_CLASS] * NUM_CLASSES
    assert main(["eval", str(tmp_path / "run")]) == 0  # re-evaluation reads the files again
    assert f"{100 * results['test']['top1']:.1f}" in capsys.readouterr().out


def test_resume_on_files_equals_an_uninterrupted_run(tmp_path):
    root = write_list_layout(tmp_path / "inat2018", "inat2018")
    config = resolve_config(
        "digits-lt",
        file_overrides(
            root,
            "inat2018",
            **{
                "stage1.epochs": 2,
                "data.selection_per_class": 1,
                "stage1.sampler": "sqrt",
            },
        ),
    )
    reference = train(config, RunDir.create(tmp_path / "full", config, []), progress=False)
    run = RunDir.create(tmp_path / "cut", config, [])
    Trainer(config, run, progress=False).fit(stop_at=1)
    resumed = train(config, RunDir.open(run.path), resume=True, progress=False)
    assert resumed["test"] == reference["test"] and resumed["val"] == reference["val"]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(run.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_open_set_evaluation_reads_the_open_list(tmp_path):
    root = write_list_layout(tmp_path / "places_lt", "places_lt")
    config = resolve_config("digits-lt", file_overrides(root, "places_lt", **{"eval.open_set": "true"}))
    results = train(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    report = results["open_set"]
    assert 0.0 <= report["f_measure"] <= 1.0 and 0.0 <= report["open_rejected"] <= 1.0
    assert report["closed_top1"] == results["test"]["top1"]


def test_eval_recomputes_open_set_metrics_at_an_overridden_threshold(tmp_path, capsys):
    root = write_list_layout(tmp_path / "places_lt", "places_lt")
    config = resolve_config("digits-lt", file_overrides(root, "places_lt", **{"eval.open_set": "true"}))
    trained = train(config, RunDir.create(tmp_path / "run", config, []), progress=False)["open_set"]
    run = RunDir.open(tmp_path / "run")
    # independently: the checkpoint's logits on the test images, then on the open images labelled -1
    loaded = load_trained(run)
    with torch.no_grad():
        test_logits = split_logits(loaded.model, loaded.data.test, loaded.data, loaded.cfg)
        open_logits = split_logits(
            loaded.model, build_open_images(loaded.cfg.data, loaded.data), loaded.data, loaded.cfg
        )
    logits = torch.cat([test_logits, open_logits])
    labels = torch.cat([loaded.data.test.labels.cpu(), torch.full((len(open_logits),), -1)])
    # a threshold halfway between two middle max-softmax scores: it rejects about half the images
    scores = torch.softmax(logits.double(), dim=1).max(dim=1).values.sort().values
    k = len(scores) // 2
    threshold = round(float(scores[k - 1] + scores[k]) / 2, 6)
    assert bool((scores < threshold).sum() != (scores < config.eval.open_threshold).sum())  # premise: they differ
    expected = open_set_report(logits, labels, loaded.data.class_counts, threshold=threshold,
                               many_threshold=config.eval.many_threshold, few_threshold=config.eval.few_threshold)
    assert expected["num_open"] == OPEN_IMAGES and expected["num_known"] == NUM_CLASSES * TEST_PER_CLASS

    results = evaluate_run(run, eval_overrides=[f"eval.open_threshold={threshold}"])
    assert results["open_set"] == pytest.approx(expected)
    assert results["open_set"] != trained and trained["threshold"] == config.eval.open_threshold
    assert "open_set" not in evaluate_run(run, split="val")  # the open images go with the test split only
    assert evaluate_run(run)["open_set"] == pytest.approx(trained)  # the training threshold: the same numbers

    assert main(["eval", str(run.path), f"eval.open_threshold={threshold}"]) == 0
    out = capsys.readouterr().out
    assert f"open set (threshold {threshold:g}" in out and f"F-measure {expected['f_measure']:.3f}" in out
