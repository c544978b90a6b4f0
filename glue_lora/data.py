"""GLUE data from three sources behind one function: the Hub, a classic TSV directory, or Hub-layout parquet.

Every source yields the same `DatasetDict`: the task's text columns, `label` (ClassLabel ids in the
`nyu-mll/glue` order, float for STS-B, -1 on test splits) and `idx` (int32).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import Counter
from pathlib import Path

import datasets

from glue_lora.errors import UsageError, require_hub
from glue_lora.tasks import TaskSpec, TsvLayout

log = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
GET_DATA_HINT = ("point data_dir at a classic GLUE copy (e.g. data_dir=../shared/data/glue, the layout "
                 "download_glue_data.py writes) or at Hub-layout parquet files")


def features(task: TaskSpec) -> datasets.Features:
    """The column types every source is cast to."""
    label = datasets.Value("float32") if task.is_regression else datasets.ClassLabel(names=list(task.label_names))
    cols = {name: datasets.Value("string") for name in task.text_columns}
    return datasets.Features({**cols, "label": label, "idx": datasets.Value("int32")})


def load_glue(task: TaskSpec, data_dir: str | None = None) -> tuple[datasets.DatasetDict, str]:
    """Load every available split of `task`; returns the splits and a description of the source."""
    kind, folder = locate(task, data_dir)
    if kind == "tsv":
        return _load_tsv_dir(task, folder), f"tsv:{folder}"
    if kind == "parquet":
        return _load_parquet_dir(task, folder), f"parquet:{folder}"
    return _load_hub(task), f"hub:{HUB_DATASET}/{task.name}"


def locate(task: TaskSpec, data_dir: str | None) -> tuple[str, Path]:
    """Which source serves `task`: ("tsv" | "parquet", its folder), or ("hub", Path()) when data_dir is unset."""
    if data_dir is None:
        return "hub", Path()
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"data_dir {root} does not exist or is not a directory; {GET_DATA_HINT}, "
                         "or leave data_dir unset to use the Hub")
    tsv_dir, parquet_dir = root / task.tsv_dir, root / task.name
    if tsv_dir.is_dir():
        return "tsv", tsv_dir
    if parquet_dir.is_dir() and any(parquet_dir.glob("*.parquet")):
        return "parquet", parquet_dir
    raise UsageError(f"no {task.name} data under {root}: tried {tsv_dir}/ (classic TSV) and {parquet_dir}/*.parquet "
                     f"(Hub layout); {GET_DATA_HINT}, or leave data_dir unset to use the Hub")


def require_training_splits(task: TaskSpec, data_dir: str | None) -> None:
    """Fail in one line, before a model is loaded, when a local copy lacks the train or an evaluation split.

    Checks file names only (nothing is read). The Hub serves every split, so it is not checked.
    """
    kind, folder = locate(task, data_dir)
    if kind == "hub":
        return
    expected = {split: task.tsv[split].file if kind == "tsv" else f"{split}-00000-of-00001.parquet"
                for split in (task.train_split, *task.eval_splits) if split}
    missing = [split for split, name in expected.items()
               if not ((folder / name).is_file() if kind == "tsv" else parquet_shards(folder, split))]
    if missing:
        files = ", ".join(f"{expected[split]} ({split})" for split in missing)
        raise UsageError(f"{folder} lacks {files}, which training needs; see what is there with "
                         f"`glue-lora data {task.name} data_dir={data_dir}`, or leave data_dir unset to use the Hub")


def check_local_data(task: TaskSpec, data_dir: str | None) -> None:
    """Read and check every classic-TSV file of `task` (UTF-8, header, field counts, labels), so a bad file is
    one line before any model loads. Parquet and the Hub carry typed columns and are checked when loaded."""
    kind, folder = locate(task, data_dir)
    if kind != "tsv":
        return
    for split, layout in task.tsv.items():
        if (folder / layout.file).exists():
            _read_tsv(folder / layout.file, layout, task, split)


# --- the Hub -------------------------------------------------------------------------------------------------

def _load_hub(task: TaskSpec) -> datasets.DatasetDict:
    require_hub(f"{HUB_DATASET}/{task.name}", GET_DATA_HINT)
    try:
        raw = datasets.load_dataset(HUB_DATASET, task.name)
    except (ConnectionError, FileNotFoundError, OSError) as err:
        raise UsageError(f"could not load {HUB_DATASET}/{task.name} from the Hub or its cache "
                         f"({type(err).__name__}); {GET_DATA_HINT}") from err
    return _conform(raw, task)


def _conform(raw: datasets.DatasetDict, task: TaskSpec) -> datasets.DatasetDict:
    """Keep the task's columns in a fixed order with our feature types (drops datasets' large_string)."""
    feats = features(task)
    out = {}
    for split in task.splits:
        if split in raw:
            missing = [col for col in feats if col not in raw[split].column_names]
            if missing:
                raise UsageError(f"{task.name} {split} has no column(s) {', '.join(missing)} (found: "
                                 f"{', '.join(raw[split].column_names)}); the Hub layout has {', '.join(feats)}")
            out[split] = raw[split].select_columns(list(feats)).cast(feats)
    return datasets.DatasetDict(out)


# --- Hub-layout parquet --------------------------------------------------------------------------------------

def parquet_shards(folder: Path, split: str) -> list[str]:
    """The Hub's file names for one split: `<split>-00000-of-00001.parquet`, or several shards when large."""
    return sorted(str(path) for path in folder.glob(f"{split}-[0-9]*-of-[0-9]*.parquet"))


def _load_parquet_dir(task: TaskSpec, folder: Path) -> datasets.DatasetDict:
    files = {split: shards for split in task.splits if (shards := parquet_shards(folder, split))}
    if not files:
        raise UsageError(f"no <split>-00000-of-00001.parquet files in {folder}; expected e.g. "
                         f"{folder}/{task.eval_splits[0] if task.eval_splits else 'test'}-00000-of-00001.parquet")
    return _conform(datasets.load_dataset("parquet", data_files=files), task)


# --- classic TSV ---------------------------------------------------------------------------------------------

def _load_tsv_dir(task: TaskSpec, folder: Path) -> datasets.DatasetDict:
    feats = features(task)
    out = {}
    for split, layout in task.tsv.items():
        path = folder / layout.file
        if path.exists():
            columns = _read_tsv(path, layout, task, split)
            out[split] = datasets.Dataset.from_dict(columns, features=feats)
    if not out:
        raise UsageError(f"{folder} holds none of {', '.join(layout.file for layout in task.tsv.values())}; "
                         f"{GET_DATA_HINT}")
    return datasets.DatasetDict(out)


def _read_tsv(path: Path, layout: TsvLayout, task: TaskSpec, split: str) -> dict[str, list]:
    """Read one classic GLUE file: no quoting (a sentence may start with a lone `"`), BOM-tolerant.

    Strict, because a silently misread file trains on garbage: UTF-8, a header with the expected columns,
    every row as wide as the header (a wider row usually means a tab inside a sentence, shifting the label),
    labels in the task's vocabulary. Every problem is one line naming the file and line.
    """
    rows = _tsv_rows(path)
    header = rows.pop(0)[1] if layout.has_header and rows else []
    positions = _positions(path, layout, header)
    width = len(header) if header else len(rows[0][1]) if rows else 0
    if layout.has_header and "label" in positions and _is_label(header[positions["label"]], task):
        raise UsageError(f"{path}:1: the first row looks like data, not the header; restore the header line")
    out: dict[str, list] = {name: [] for name in (*task.text_columns, "label", "idx")}
    skipped = 0
    for line, row in rows:
        if len(row) < width and task.skip_malformed_rows:
            skipped += 1
            continue
        if len(row) != width:
            raise UsageError(f"{path}:{line}: {len(row)} fields, expected {width} (as the "
                             f"{'header' if header else 'first row'}); a tab inside a sentence or a cut line? "
                             "re-download the file (the classic GLUE zip is read as-is)")
        for col in task.text_columns:
            out[col].append(row[positions[col]])
        out["label"].append(_parse_label(row[positions["label"]], task, f"{path}:{line}") if "label" in positions else -1)
        out["idx"].append(len(out["idx"]))
    if not out["idx"]:
        raise UsageError(f"{path}: no data rows{' after the header' if header else ''}; re-download the file")
    if skipped:
        log.warning("%s: skipped %d malformed rows (missing fields), as the legacy GLUE processor did", path, skipped)
    return out


def _tsv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank line; non-UTF-8 bytes and empty files are one-line errors."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
        line = raw[:err.start + bom].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 (byte 0x{raw[err.start + bom]:02x}); re-save the file as "
                         "UTF-8 or re-download it") from err
    if not text.strip():
        raise UsageError(f"{path}: empty file; re-download it")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    # a blank line is no example (csv.DictReader, which the Hub's conversion used, skips it too)
    return [(reader.line_num, row) for row in reader if row]


def _positions(path: Path, layout: TsvLayout, header: list[str]) -> dict[str, int]:
    missing = [ref for ref in layout.columns.values() if isinstance(ref, str) and ref not in header]
    if missing:
        raise UsageError(f"{path}:1: header lacks column(s) {', '.join(map(repr, missing))} (found: "
                         f"{', '.join(header) or 'nothing'}); re-download the file or restore the header")
    return {col: header.index(ref) if isinstance(ref, str) else ref for col, ref in layout.columns.items()}


def _is_label(value: str, task: TaskSpec) -> bool:
    try:
        _parse_label(value, task, "")
        return True
    except UsageError:
        return False


def _parse_label(value: str, task: TaskSpec, where: str) -> float | int:
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise UsageError(f"{where}: score {value!r} is not a number (STS-B scores are 0 to 5)")
        return score
    if value in task.label_names:
        return task.label_names.index(value)
    if value.isdigit() and int(value) < task.num_labels:
        return int(value)
    raise UsageError(f"{where}: label {value!r} is not one of {', '.join(task.label_names)} or their ids "
                     f"0-{task.num_labels - 1}")


# --- inspection ----------------------------------------------------------------------------------------------

def split_source(task: TaskSpec, source: str, split: str) -> str:
    """Where one split came from: its file for a local copy, `<dataset>/<task>[split]` for the Hub."""
    kind, _, where = source.partition(":")
    if kind == "tsv":
        return str(Path(where) / task.tsv[split].file)
    if kind == "parquet":
        return ", ".join(parquet_shards(Path(where), split))
    return f"{where}[{split}]"


def describe_splits(task: TaskSpec, splits: datasets.DatasetDict, source: str = "") -> list[dict]:
    """Per split: source, rows and the label distribution (mean/min/max score for STS-B), for `glue-lora data`."""
    rows = []
    for name, split in splits.items():
        labels = split["label"]
        if name in task.test_splits:
            dist = {"unlabelled": len(labels)}
        elif task.is_regression:
            dist = {"mean": round(sum(labels) / len(labels), 4), "min": round(min(labels), 4),
                    "max": round(max(labels), 4)}
        else:
            # -1 marks a missing label (as on test splits); indexing with it would name the last class
            dist = {task.label_names[k] if k >= 0 else "unlabelled": v for k, v in sorted(Counter(labels).items())}
        described = {"split": name, "rows": len(split), "labels": dist}
        rows.append({**described, "source": split_source(task, source, name)} if source else described)
    return rows
