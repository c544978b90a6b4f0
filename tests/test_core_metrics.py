import math

import numpy as np
import pytest

from glue_lora.metrics import glue_metrics, predictions_from_logits, trainer_metrics_fn
from glue_lora.tasks import get_task


def test_accuracy_and_binary_f1_by_hand():
    pred = np.array([1, 1, 0, 0, 1])
    ref = np.array([1, 0, 0, 1, 1])
    # TP=2, FP=1, FN=1 -> precision 2/3, recall 2/3, F1 2/3; accuracy 3/5
    scores = glue_metrics(get_task("mrpc"), pred, ref)
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["combined_score"] == pytest.approx((0.6 + 2 / 3) / 2)


def test_matthews_by_hand():
    pred = np.array([1, 1, 0, 0, 1])
    ref = np.array([1, 0, 0, 1, 1])
    tp, tn, fp, fn = 2, 1, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert glue_metrics(get_task("cola"), pred, ref) == {"matthews_correlation": pytest.approx(expected)}


def test_pearson_spearman_by_hand():
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    ref = np.array([1.0, 2.0, 3.0, 5.0])
    mx, my = pred.mean(), ref.mean()
    pearson = ((pred - mx) * (ref - my)).sum() / math.sqrt(((pred - mx) ** 2).sum() * ((ref - my) ** 2).sum())
    scores = glue_metrics(get_task("stsb"), pred, ref)
    assert scores["pearson"] == pytest.approx(pearson)
    assert scores["spearmanr"] == pytest.approx(1.0)  # same ranks
    assert scores["combined_score"] == pytest.approx((pearson + 1.0) / 2)


def test_predictions_argmax_and_regression_squeeze():
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0]])
    assert predictions_from_logits(get_task("mnli"), logits).tolist() == [1, 0]
    assert predictions_from_logits(get_task("stsb"), np.array([[0.5], [4.0]])).tolist() == [0.5, 4.0]


def test_trainer_metrics_fn_takes_eval_prediction():
    from transformers import EvalPrediction

    fn = trainer_metrics_fn(get_task("sst2"))
    out = fn(EvalPrediction(predictions=np.array([[0.0, 1.0], [1.0, 0.0]]), label_ids=np.array([1, 1])))
    assert out == {"accuracy": 0.5}


def test_three_class_accuracy_by_hand():
    pred = np.array([0, 1, 2, 2, 1, 0])
    ref = np.array([0, 1, 1, 2, 0, 0])
    assert glue_metrics(get_task("mnli"), pred, ref) == {"accuracy": pytest.approx(4 / 6)}


def test_constant_regression_predictions_give_nan_pearson():
    # GLUE's definition (scipy) is undefined here; the record keeps NaN and pick_best never selects it
    with pytest.warns(Warning):
        scores = glue_metrics(get_task("stsb"), np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 5.0]))
    assert math.isnan(scores["pearson"])
