"""GLUE metrics with scikit-learn/scipy, exactly as `evaluate`'s glue module defines them, but offline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from glue_lora.tasks import TaskSpec

_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda pred, ref: accuracy_score(ref, pred),
    "f1": lambda pred, ref: f1_score(ref, pred),  # binary, positive class 1 (MRPC/QQP)
    "matthews_correlation": lambda pred, ref: matthews_corrcoef(ref, pred),
    "pearson": lambda pred, ref: pearsonr(pred, ref)[0],
    "spearmanr": lambda pred, ref: spearmanr(pred, ref)[0],
}


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Argmax for classification; the single output for STS-B regression."""
    return np.squeeze(logits, axis=-1) if task.is_regression else np.argmax(logits, axis=-1)


def glue_metrics(task: TaskSpec, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """The task's GLUE metrics plus `combined_score` (their mean) when there is more than one."""
    scores = {name: float(_METRICS[name](predictions, references)) for name in task.metrics}
    if len(scores) > 1:
        scores["combined_score"] = float(np.mean(list(scores.values())))
    return scores


def trainer_metrics_fn(task: TaskSpec) -> Callable:
    """A `compute_metrics` for Trainer: EvalPrediction -> metrics."""
    def compute(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return glue_metrics(task, predictions_from_logits(task, logits), eval_prediction.label_ids)
    return compute
