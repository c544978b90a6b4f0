"""`glue-lora predict RUN_DIR`: per-example predictions of a trained run (or exported model) for any split.

Labelled splits also get their metrics, computed as training computed them (same rows, same batches, same
metric code), so they equal the evaluation the run directory's weights come from.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glue_lora.errors import UsageError
from glue_lora.record import write_text_atomic

HELP = "per-example predictions of a trained run (or exported model) for any split, with metrics where labelled"
FORMATS = ("jsonl", "tsv")


@dataclass
class SplitPredictions:
    """One split's predictions: example indices, predicted ids (or STS-B scores), probabilities, metrics."""

    split: str
    index: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None  #: softmax of the logits; None for regression
    metrics: dict[str, float] | None  #: None for unlabelled splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished run directory (runs/<name>) or a `glue-lora export` directory")
    parser.add_argument("overrides", nargs="*", help="data_dir=PATH (default: the run's own data_dir)")
    parser.add_argument("--split", default=None,
                        help="validation, test, test_matched, ax (MNLI runs), ... or all (default: the evaluation splits)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/predictions)")
    parser.add_argument("--format", choices=FORMATS, default="jsonl",
                        help="jsonl: one JSON object per example (default); tsv: a table with a header")


def main(args: argparse.Namespace) -> int:
    from glue_lora.config import parse_override

    overrides = dict(parse_override(item) for item in args.overrides)
    if set(overrides) - {"data_dir"}:
        raise UsageError(f"glue-lora predict takes only data_dir=..., not {', '.join(sorted(set(overrides) - {'data_dir'}))}")
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "predictions"
    results = predict_run(run_dir, args.split, overrides)
    record = _record(run_dir)
    differs = []
    for result in results:
        path = write_predictions(result, record["task"], out, args.format)
        print(f"{result.split}: {len(result.index)} predictions -> {path}")
        if result.metrics is not None:
            print(f"  {_format_metrics(result.metrics)}  ({compare_with_record(result, record)})")
            if matches_record(result, record) is False:
                differs.append(result.split)
    if differs:
        # the saved weights no longer reproduce the record (other data, other libraries): not a silent success
        print(f"error: {', '.join(differs)}: metrics differ from the run's record; check data_dir and the "
              "library versions in results.json", file=sys.stderr)
        return 1
    return 0


def _record(run_dir: Path) -> dict[str, Any]:
    from glue_lora.runs import check_run_dir

    return check_run_dir(run_dir)


def predict_run(run_dir: Path, split: str | None = None, overrides: dict[str, Any] | None = None) -> list[SplitPredictions]:
    """Predict the named split(s) with the model in `run_dir`; data problems fail before the model loads."""
    from glue_lora import pipeline
    from glue_lora.runs import load_trained_model, run_config

    record = _record(run_dir)
    config = run_config(run_dir, record, overrides)
    splits = resolve_splits(config.task, split)
    built = pipeline.build(config, splits, model=None)
    built.model = load_trained_model(run_dir)
    return [predict_split(built, name) for name in splits]


def resolve_splits(task_name: str, split: str | None) -> list[str]:
    from glue_lora.tasks import get_task

    task = get_task(task_name)
    if split is None:
        return list(task.eval_splits)
    if split == "all":
        return [*task.eval_splits, *task.test_splits, *(["ax"] if task.name == "mnli" else [])]
    return [split]


def predict_split(built, split: str) -> SplitPredictions:
    """Trainer's evaluation loop over one split: the batching, order, padding and precision training used."""
    from glue_lora.config import plan_batch
    from glue_lora.metrics import glue_metrics, predictions_from_logits
    from glue_lora.train import training_arguments

    task, dataset = built.task, built.encoded[split]
    labelled = split in task.eval_splits
    if not labelled:
        dataset = dataset.remove_columns("labels")  # -1 placeholders; a loss over them would fail
    with tempfile.TemporaryDirectory(prefix="glue-lora-predict-") as scratch:
        args = training_arguments(built.config, plan_batch(built.config, 1))
        args.output_dir, args.disable_tqdm = scratch, not sys.stderr.isatty()  # a progress bar only for people
        args.eval_strategy = args.save_strategy = "no"  # nothing trains; only the evaluation settings matter
        trainer = _make_ordered_trainer()(model=built.model, args=args, data_collator=built.collator(args.fp16),
                                  processing_class=built.tokenizer)
        output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    predictions = predictions_from_logits(task, logits)
    metrics = glue_metrics(task, predictions, output.label_ids) if labelled else None
    back = np.argsort(trainer.eval_order)  # Trainer's order -> the split's order
    probabilities = None if task.is_regression else _softmax(logits)[back]
    return SplitPredictions(split, np.asarray(dataset["idx"]), predictions[back], probabilities, metrics)


def _make_ordered_trainer():
    from transformers import Trainer

    class OrderedTrainer(Trainer):
        """Records the order its evaluation sampler visits examples in.

        Training evaluates with Trainer's sampler (length-grouped under group_by_length, seeded); predicting
        in that same order keeps every batch, and so every padded length and logit, identical to training's.
        """

        def _get_eval_sampler(self, eval_dataset):
            probe = super()._get_eval_sampler(eval_dataset)  # a fresh, identically seeded twin of the one used
            self.eval_order = list(probe) if probe is not None else list(range(len(eval_dataset)))
            return super()._get_eval_sampler(eval_dataset)

    return OrderedTrainer


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# --- output --------------------------------------------------------------------------------------------------

def prediction_rows(result: SplitPredictions, task_name: str) -> list[dict[str, Any]]:
    """index, prediction (label name, or the STS-B score), label_id, probabilities per label."""
    from glue_lora.tasks import get_task

    names = get_task(task_name).label_names
    rows = []
    for i, index in enumerate(result.index):
        if not names:
            rows.append({"index": int(index), "prediction": float(result.predictions[i])})
            continue
        label = int(result.predictions[i])
        probs = {name: round(float(p), 6) for name, p in zip(names, result.probabilities[i])}
        rows.append({"index": int(index), "prediction": names[label], "label_id": label, "probabilities": probs})
    return rows


def write_predictions(result: SplitPredictions, task_name: str, out: Path, fmt: str) -> Path:
    """`<out>/<split>.<fmt>` (+ `<split>.metrics.json` for labelled splits), each written whole or not at all."""
    rows = prediction_rows(result, task_name)
    path = Path(out) / f"{result.split}.{fmt}"
    write_text_atomic(path, _jsonl(rows) if fmt == "jsonl" else _tsv(rows))
    if result.metrics is not None:
        write_text_atomic(Path(out) / f"{result.split}.metrics.json", json.dumps(result.metrics, indent=2) + "\n")
    return path


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _tsv(rows: list[dict]) -> str:
    if not rows:
        return "index\tprediction\n"
    probs = list(rows[0].get("probabilities", {}))
    header = ["index", "prediction", *(["label_id"] if probs else []), *(f"p_{name}" for name in probs)]
    lines = ["\t".join(header)]
    for row in rows:
        cells = [row["index"], row["prediction"], *([row["label_id"]] if probs else []),
                 *(row["probabilities"][name] for name in probs)]
        lines.append("\t".join(str(c) for c in cells))
    return "\n".join(lines) + "\n"


# --- checking against the record -----------------------------------------------------------------------------

def recorded_metrics(record: dict[str, Any], split: str) -> dict[str, float]:
    """The metrics the run recorded for `split` at the evaluation its saved weights come from."""
    step = (record.get("weights") or {}).get("step")
    evaluation = next((e for e in record.get("evals", []) if e["step"] == step), None) or record.get("best") or {}
    return {key.split("/", 1)[1]: value for key, value in evaluation.get("metrics", {}).items()
            if key.startswith(f"{split}/") and not key.endswith("/loss")}


def matches_record(result: SplitPredictions, record: dict[str, Any]) -> bool | None:
    """Whether the metrics equal the record's evaluation of the saved weights; None when none is recorded."""
    recorded = recorded_metrics(record, result.split)
    return all(_same(result.metrics.get(k), v) for k, v in recorded.items()) if recorded else None


def compare_with_record(result: SplitPredictions, record: dict[str, Any]) -> str:
    recorded = recorded_metrics(record, result.split)
    if not recorded:
        return "no recorded evaluation of this split to compare with"
    same = matches_record(result, record)
    step = (record.get("weights") or {}).get("step")
    return f"equal to the recorded step-{step} evaluation" if same else \
        f"DIFFERS from the recorded step-{step} evaluation: {_format_metrics(recorded)}"


def _same(a: Any, b: Any) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def _format_metrics(metrics: dict[str, float]) -> str:
    # a metric can be undefined (None), e.g. Pearson of constant predictions
    return ", ".join(f"{k} {'n/a' if v is None else format(v, '.4f')}" for k, v in metrics.items())
