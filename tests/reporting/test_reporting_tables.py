"""ccsam.reporting.tables / summary / collect: golden tables from hand-made results, and the config hash."""

from __future__ import annotations

import math

import pytest

from ccsam.reporting.collect import config_hash
from ccsam.reporting.summary import format_results_table
from ccsam.reporting.tables import format_duration, group_table, mean_std


def _results(seed: int, top1: float, nll: float | None = 1.25, epochs_trained: int = 3) -> dict:
    return {
        "name": "erm", "seed": seed, "epochs": 3, "epochs_trained": epochs_trained, "train_time_s": 90.0 + 60 * seed,
        "many_threshold": 100, "few_threshold": 20, "class_counts": [500, 50, 5],
        "test": {"top1": top1, "many": 0.9, "medium": 0.5, "few": None, "ece": 0.05, "nll": nll,
                 "num_samples": 30, "group_sizes": {"many": 1, "medium": 1, "few": 1}},
    }


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.1, 0.3])
    assert mean == pytest.approx(0.2) and std == pytest.approx(math.sqrt(0.02))


def test_group_table_rows_are_mean_and_std_in_percent_over_seeds():
    text = group_table({"erm": [_results(1, 0.3), _results(0, 0.1)]})
    lines = text.splitlines()
    assert lines[0].startswith("| method (run name) | seeds | overall % |")
    # seeds sorted; 10 % and 30 % -> 20.00 ± 14.14; few is None in every run -> "-"; (1.5 + 2.5) / 2 minutes
    assert lines[2] == "| erm | 0,1 | 20.00 ± 14.14 | 90.00 ± 0.00 | 50.00 ± 0.00 | - | 5.00 ± 0.00 | 2.0 min |"
    assert "many (> 100) = 1 classes, medium = 1, few (< 20) = 1; training counts [500, 50, 5]" in text


def test_group_table_shows_a_single_seed_without_a_spread_and_short_runs_in_seconds():
    one = _results(0, 0.48)
    one["train_time_s"] = 42.0
    assert group_table({"erm": [one]}).splitlines()[2] == "| erm | 0 | 48.00 | 90.00 | 50.00 | - | 5.00 | 42 s |"
    # two seeds, but ECE measured in one of them only: that cell has one value, so no spread either
    other = _results(1, 0.52)
    other["test"]["ece"] = None
    row = group_table({"erm": [one, other]}).splitlines()[2]
    assert row.startswith("| erm | 0,1 | 50.00 ± 2.83 | 90.00 ± 0.00 | 50.00 ± 0.00 | - | 5.00 |"), row


@pytest.mark.parametrize(("seconds", "text"), [(0.04, "0.0 s"), (3.46, "3.5 s"), (42.0, "42 s"), (59.4, "59 s"),
                                               (59.6, "1.0 min"), (90.0, "1.5 min"), (3600.0, "60.0 min")])
def test_format_duration_uses_seconds_below_a_minute(seconds, text):
    assert format_duration(seconds) == text


def test_results_table_of_a_finished_and_of_an_interrupted_run():
    finished = format_results_table(_results(0, 0.25)).splitlines()
    assert finished[0].startswith("erm - test split, last epoch (3 of 3) (30 images, seed 0)")
    assert finished[1].split() == ["overall", "many", "(1)", "medium", "(1)", "few", "(1)", "ECE", "%", "NLL"]
    assert finished[2].split() == ["top-1", "%", "25.0", "90.0", "50.0", "-", "5.0", "1.250"]
    interrupted = format_results_table(_results(0, 0.25, nll=None, epochs_trained=2))
    assert "checkpoint after epoch 2 of 3 (the run was interrupted; resume it to finish)" in interrupted
    assert interrupted.splitlines()[2].split()[-1] == "-"


def test_config_hash_ignores_seed_and_name_but_not_settings():
    base = {"seed": 0, "name": "a", "stage1": {"lr": 0.1}}
    same = config_hash(base)
    assert len(same) == 8 and int(same, 16) >= 0
    assert config_hash({**base, "seed": 5, "name": "b"}) == same
    assert config_hash({**base, "stage1": {"lr": 0.2}}) != same


def test_results_table_adds_the_open_set_line_on_the_test_split_only():
    results = _results(0, 0.25)
    assert "open set" not in format_results_table(results)  # a closed-set run: no line
    results["val"] = results["test"]
    results["open_set"] = {"f_measure": 0.61234, "known_top1": 0.5, "many": 0.75, "medium": 0.25, "few": None,
                           "open_rejected": 1 / 3, "threshold": 0.35, "variant": "oltr", "num_known": 30,
                           "num_open": 6}
    lines = format_results_table(results).splitlines()
    assert len(lines) == 4 and lines[3] == (
        "open set (threshold 0.35, oltr F-measure; 30 known + 6 open images): F-measure 0.612, "
        "known top-1 50.0 % (many 75.0, medium 25.0, few -), open rejected 33.3 %")
    assert len(format_results_table(results, split="val").splitlines()) == 3
