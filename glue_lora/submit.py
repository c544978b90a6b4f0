"""`glue-lora submit RUNS... --out glue_submission.zip`: the GLUE leaderboard zip, in the server's exact format.

Eleven files, `index<TAB>prediction` with a header: label strings for the NLI tasks whose files carry
strings (MNLI-m, MNLI-mm, AX, QNLI, RTE), 0/1 for CoLA, SST-2, MRPC, QQP and WNLI (whose GLUE files carry
integers), STS-B scores clipped to [0, 5]. AX is predicted by the MNLI run. Row counts are checked against
the official test sizes. Per task the run is chosen as the report does (best dev primary metric, or the
median seed of the best setting with --pick median). A task without a run is an error, unless
--allow-missing: then its file predicts the majority class of the task's training labels (the usual GLUE
baseline, and the customary WNLI entry), and MANIFEST.json says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glue_lora.errors import UsageError
from glue_lora.record import atomic_file
from glue_lora.results import versions

HELP = "write the GLUE leaderboard zip (test predictions of the best run per task) from runs or sweep folders"


@dataclass(frozen=True)
class SubmissionFile:
    """One file of the zip: which task and test split it predicts, and how many rows the server expects."""

    name: str
    task: str  #: the task whose run predicts it (AX: mnli)
    split: str  #: that run's split name
    rows: int  #: official GLUE test size
    data_task: str = ""  #: the task whose data holds the split, when not `task` (AX)
    labels_as_strings: bool = False


FILES = (
    SubmissionFile("CoLA.tsv", "cola", "test", 1063),
    SubmissionFile("SST-2.tsv", "sst2", "test", 1821),
    SubmissionFile("MRPC.tsv", "mrpc", "test", 1725),
    SubmissionFile("STS-B.tsv", "stsb", "test", 1379),
    SubmissionFile("QQP.tsv", "qqp", "test", 390965),
    SubmissionFile("MNLI-m.tsv", "mnli", "test_matched", 9796, labels_as_strings=True),
    SubmissionFile("MNLI-mm.tsv", "mnli", "test_mismatched", 9847, labels_as_strings=True),
    SubmissionFile("QNLI.tsv", "qnli", "test", 5463, labels_as_strings=True),
    SubmissionFile("RTE.tsv", "rte", "test", 3000, labels_as_strings=True),
    SubmissionFile("WNLI.tsv", "wnli", "test", 146),
    SubmissionFile("AX.tsv", "mnli", "ax", 1104, data_task="ax", labels_as_strings=True),
)
TASKS = tuple(dict.fromkeys(f.task for f in FILES))
PICKS = ("best", "median")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories and/or folders of runs (a sweep's output_root)")
    parser.add_argument("--out", required=True, help="the zip to write, e.g. glue_submission.zip")
    parser.add_argument("--pick", choices=PICKS, default="best",
                        help="per task: the run with the best dev score (default), or the median seed of the best setting")
    parser.add_argument("--allow-missing", action="store_true",
                        help="tasks without a run get the majority class of their training labels")
    parser.add_argument("--data-dir", default=None,
                        help="GLUE data for the test splits (default: each run's own data_dir)")


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".zip":
        raise UsageError(f"--out {out} should end in .zip (the GLUE server takes a zip of the eleven .tsv files)")
    chosen = choose_runs([Path(p) for p in args.runs], args.pick)
    missing = [task for task in TASKS if task not in chosen]
    if missing and not args.allow_missing:
        raise UsageError(f"no finished run for {', '.join(missing)}; train them, or pass --allow-missing to "
                         "submit their majority class")
    manifest = write_submission(out, chosen, args.pick, args.data_dir)
    for name, entry in manifest["files"].items():
        origin = entry.get("run_dir") or f"majority class {entry['prediction']!r} ({entry['why']})"
        print(f"{name:<12} {entry['rows']:>7} rows  {origin}")
    print(f"wrote {out}")
    return 0


# --- choosing runs -------------------------------------------------------------------------------------------

def choose_runs(paths: list[Path], pick: str) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Per task, the run the report would call best (or the median seed of the best setting)."""
    from glue_lora.report import label_settings, run_rows

    records = finished_records(paths)
    if not records:
        return {}
    runs = label_settings(run_rows((path / "results.json", record) for path, record in records.items()))
    chosen = {}
    for task, group in runs.groupby("task"):
        path = _pick_best(group) if pick == "best" else _pick_median(group)
        chosen[task] = (Path(path), records[Path(path)])
    return chosen


def finished_records(paths: list[Path]) -> dict[Path, dict[str, Any]]:
    """Every successful run under `paths`; failed, running and malformed ones are skipped, as the report does."""
    from glue_lora.record import RESULTS_FILE, load_record
    from glue_lora.report import problem

    found: dict[Path, dict[str, Any]] = {}
    for root in paths:
        if not root.exists():
            raise UsageError(f"{root} does not exist; give run directories or the folder a sweep wrote runs to")
        files = [root / RESULTS_FILE] if (root / RESULTS_FILE).is_file() else sorted(root.rglob(RESULTS_FILE))
        for file in files:
            record = load_record(file)
            if record is not None and problem(record) is None and file.parent.name != "final":
                found[file.parent] = record
    return found


def _pick_best(group) -> str:
    return group.sort_values(["score", "path"], ascending=[False, True]).iloc[0]["path"]


def _pick_median(group) -> str:
    """The best setting by median score, then its run whose score is the (lower) median."""
    settings = group.groupby(["model", "method", "setting"])["score"].median().sort_values(ascending=False)
    best = group.set_index(["model", "method", "setting"]).loc[settings.index[0]].reset_index()
    target = statistics.median_low(list(best["score"]))
    return best[best["score"] == target].sort_values("path").iloc[0]["path"]


# --- predicting and writing ----------------------------------------------------------------------------------

def write_submission(out: Path, chosen: dict[str, tuple[Path, dict[str, Any]]], pick: str,
                     data_dir: str | None) -> dict[str, Any]:
    """Predict every file, check it, then write the zip (temporary file + rename: never half a zip)."""
    contents, entries = {}, {}
    for spec in FILES:
        if spec.task in chosen:
            run_dir, record = chosen[spec.task]
            rows, entry = predicted_rows(spec, run_dir, record, data_dir)
        else:
            rows, entry = majority_rows(spec, data_dir or _any_data_dir(chosen))
        check_rows(spec, rows)
        contents[spec.name] = "index\tprediction\n" + "".join(f"{i}\t{p}\n" for i, p in rows)
        entries[spec.name] = {"task": spec.task, "split": spec.split, "rows": len(rows), **entry}
    manifest = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "pick": pick, "files": entries, "versions": versions()}
    _write_zip(out, contents, manifest)
    return manifest


def predicted_rows(spec: SubmissionFile, run_dir: Path, record: dict[str, Any],
                   data_dir: str | None) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    from glue_lora.predict import predict_run
    from glue_lora.tasks import get_task

    [result] = predict_run(run_dir, spec.split, {"data_dir": data_dir} if data_dir else None)
    task = get_task(spec.task)
    values = [format_prediction(task, p, spec.labels_as_strings) for p in result.predictions]
    weights = record.get("weights") or {}
    key = record["primary_metric"]
    evaluation = next((e for e in record.get("evals", []) if e["step"] == weights.get("step")), record.get("best"))
    entry = {"source": "run", "run_dir": str(run_dir), "run": record.get("name"),
             "checkpoint": {"evaluation": weights.get("evaluation", "best"), "step": weights.get("step"),
                            "epoch": (evaluation or {}).get("epoch")},
             "dev_score": {"metric": key, "value": (evaluation or {}).get("metrics", {}).get(key)}}
    return list(zip((int(i) for i in result.index), values)), entry


def format_prediction(task, value: Any, as_string: bool) -> str:
    if task.is_regression:
        return f"{min(5.0, max(0.0, float(value))):.6g}"  # the server scores 0-5 similarity
    return task.label_names[int(value)] if as_string else str(int(value))


def majority_rows(spec: SubmissionFile, data_dir: str | None) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    """The task's most frequent training label (STS-B: the mean training score) for every test row.

    GLUE's test files number their rows 0..N-1, so the rows are written without reading a test file.
    """
    from glue_lora.tasks import get_task

    task = get_task(spec.task)
    label, counted = majority_label(task, data_dir)
    value = format_prediction(task, label, spec.labels_as_strings)
    why = f"no run for {spec.task} (--allow-missing)"
    return [(i, value) for i in range(spec.rows)], {"source": "majority_class", "prediction": value, "why": why,
                                                   "label_from": counted}


def majority_label(task, data_dir: str | None) -> tuple[float | int, str]:
    """(label, where it was counted). Without training data: label id 0 (STS-B 2.5), stated in the manifest."""
    from glue_lora.data import load_glue

    try:
        train = load_glue(task, data_dir)[0].get("train")
    except UsageError:
        train = None
    if train is None:
        return (2.5 if task.is_regression else 0), "default: no training labels available (label id 0; STS-B 2.5)"
    labels = train["label"]
    if task.is_regression:
        return sum(labels) / len(labels), f"mean of {len(labels)} training scores"
    label, count = Counter(labels).most_common(1)[0]
    return label, f"{count} of {len(labels)} training labels"


def check_rows(spec: SubmissionFile, rows: list[tuple[int, str]]) -> None:
    if len(rows) != spec.rows:
        raise UsageError(f"{spec.name}: {len(rows)} predictions, but the GLUE server expects {spec.rows:,} "
                         f"({spec.task} {spec.split}); point --data-dir at the complete GLUE test files")
    if len({i for i, _ in rows}) != len(rows):
        raise UsageError(f"{spec.name}: repeated example indices; the test file is not a GLUE test file")


def _any_data_dir(chosen: dict[str, tuple[Path, dict[str, Any]]]) -> str | None:
    dirs = [(record.get("config") or {}).get("data_dir") for _, record in chosen.values()]
    return next((d for d in dirs if d), None)


def _write_zip(out: Path, contents: dict[str, str], manifest: dict[str, Any]) -> None:
    with atomic_file(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in contents.items():
            archive.writestr(name, text)
        archive.writestr("MANIFEST.json", json.dumps(manifest, indent=2) + "\n")
