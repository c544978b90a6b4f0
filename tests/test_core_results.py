"""The results record helpers: atomic writes, eval grouping and best-evaluation selection."""

import json
import math
import os
import stat

import pytest

from glue_lora.results import pick_best, read_results, summarise_evals, write_json_atomic


def evals(*scores: float, key: str = "validation/pearson") -> list[dict]:
    return [{"step": 10 * (i + 1), "epoch": i + 1.0, "metrics": {key: s}} for i, s in enumerate(scores)]


def test_best_is_the_highest_and_earliest_on_ties():
    assert pick_best(evals(0.5, 0.8, 0.8, 0.7), "validation/pearson")["step"] == 20


def test_nan_never_wins():
    # a first STS-B evaluation with constant predictions has Pearson NaN; max() would otherwise keep it
    assert pick_best(evals(math.nan, 0.3, 0.6), "validation/pearson")["step"] == 30
    assert pick_best(evals(math.nan), "validation/pearson") is None


def test_summarise_groups_mnli_splits_by_step():
    history = [
        {"loss": 1.0, "step": 5, "epoch": 0.5},
        {"eval_validation_matched_accuracy": 0.6, "eval_validation_matched_runtime": 1.0, "step": 10, "epoch": 1.0},
        {"eval_validation_mismatched_accuracy": 0.5, "eval_validation_mismatched_loss": 0.9, "step": 10, "epoch": 1.0},
    ]
    assert summarise_evals(history, ("validation_matched", "validation_mismatched")) == [
        {"step": 10, "epoch": 1.0, "metrics": {"validation_matched/accuracy": 0.6,
                                               "validation_mismatched/accuracy": 0.5,
                                               "validation_mismatched/loss": 0.9}}]


def test_atomic_write_is_readable_by_others_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "run" / "results.json"
    write_json_atomic(path, {"status": "success"})
    assert read_results(path.parent) == {"status": "success"}
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o044  # report/sweep may run as another user
    circular: dict = {}
    circular["self"] = circular  # serialisation fails half-way, as an interrupted write would
    with pytest.raises(ValueError, match="Circular reference"):
        write_json_atomic(path, circular)
    assert json.loads(path.read_text()) == {"status": "success"}  # the old record is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
