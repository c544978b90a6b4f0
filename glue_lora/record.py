"""The run record (`<run_dir>/results.json`): its shape, strict atomic writes and validated reads.

Torch-free on purpose: sweep, report and predict read records without paying for torch. Every reader goes
through `load_record`, which never raises for a bad file: it returns the record, `None` (no file) or a
`Malformed` saying why, so one broken file is listed apart instead of taking a whole sweep or report down.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
RUNNING, SUCCESS, FAILED, INTERRUPTED = "running", "success", "failed", "interrupted"
STATUSES = (RUNNING, SUCCESS, FAILED, INTERRUPTED)
UNRECORDED = "unrecorded"  #: an attempt's outcome when its process ended without saying (kill -9, power loss)
NON_FINITE_KEY = "non_finite"  # lists the fields whose NaN/Infinity was written as null


@dataclass(frozen=True)
class Malformed:
    """A results.json that exists but is not a run record; `reason` is one line for people."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"malformed: {self.reason}"


# --- writing --------------------------------------------------------------------------------------------------

def strict(data: Any, where: str = "", _path: tuple[int, ...] = ()) -> tuple[Any, list[str]]:
    """A copy of `data` with every NaN/Infinity float replaced by None, and the dotted paths it replaced.

    Python's json writes them as bare `NaN`/`Infinity`, which strict JSON readers (jq, browsers, pandas'
    default engine) refuse.
    """
    if isinstance(data, float) and not math.isfinite(data):
        return None, [where or "."]
    if not isinstance(data, (dict, list, tuple)):
        return data, []
    if id(data) in _path:
        raise ValueError(f"Circular reference detected at {where or '.'}")
    inner = (*_path, id(data))
    if isinstance(data, dict):
        pairs = [(key, strict(value, f"{where}.{key}" if where else str(key), inner)) for key, value in data.items()]
        return {key: clean for key, (clean, _) in pairs}, [p for _, (_, found) in pairs for p in found]
    items = [strict(value, f"{where}[{i}]", inner) for i, value in enumerate(data)]
    return [clean for clean, _ in items], [p for _, found in items for p in found]


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`; when the block succeeds it is flushed to disk and renamed over `path`.

    Readers never see half a file, and a failed write (full disk, killed process) leaves the previous file as
    it was, with no stray temporary file beside it. The result is readable by others (report, sweep, people).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename must not reach the disk before the data (power loss)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON, written atomically (`atomic_file`). NaN/Infinity become null; a dict then lists the
    replaced fields under `non_finite`."""
    clean, replaced = strict(data)
    if replaced and isinstance(clean, dict):
        clean[NON_FINITE_KEY] = sorted(set(clean.get(NON_FINITE_KEY) or []) | set(replaced))
    write_text_atomic(path, json.dumps(clean, indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / RESULTS_FILE, record)


# --- reading --------------------------------------------------------------------------------------------------

def load_json(path: Path) -> Any | Malformed | None:
    """Any JSON value from `path` (NaN/Infinity read as None), None when missing, Malformed when unreadable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        return Malformed(path, f"cannot read ({err.strerror or err})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Malformed(path, f"not UTF-8 (byte {err.start})")
    try:
        return json.loads(text, parse_constant=lambda _: None)
    except json.JSONDecodeError as err:
        return Malformed(path, f"not valid JSON (line {err.lineno} column {err.colno}: {err.msg})")


def load_record(path: Path) -> dict[str, Any] | Malformed | None:
    """The run record at `path` (a run directory or its results.json): a dict, None when there is none,
    or Malformed (not a JSON object, no or unknown status). Never raises for a bad file."""
    path = Path(path)
    if path.is_dir() or path.name != RESULTS_FILE:
        path = path / RESULTS_FILE
    data = load_json(path)
    if data is None or isinstance(data, Malformed):
        return data
    reason = _shape_problem(data)
    return Malformed(path, reason) if reason else data


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"not a JSON object (a JSON {_json_type(data)})"
    if "status" not in data:
        return "no status key"
    if data["status"] not in STATUSES:
        return f"unknown status {data['status']!r} (expected one of {', '.join(STATUSES)})"
    if not isinstance(data.get("attempts", []), list) or not isinstance(data.get("evals", []), list):
        return "attempts/evals is not a list"
    return None


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The valid record of `run_dir`, or None when it has none or it is malformed (callers that must tell
    the two apart use `load_record`)."""
    found = load_record(run_dir)
    return found if isinstance(found, dict) else None


def status_of(run_dir: Path) -> str | None:
    """The recorded status, 'malformed', or None when there is no record."""
    found = load_record(run_dir)
    if isinstance(found, Malformed):
        return "malformed"
    return None if found is None else found["status"]


# --- attempts -------------------------------------------------------------------------------------------------

def start_attempt(record: dict[str, Any], from_checkpoint: str | None) -> dict[str, Any]:
    """Append a new attempt (one process's try at the run) and return it; earlier attempts are kept."""
    for earlier in record.get("attempts", []):
        if earlier.get("outcome") == RUNNING:
            earlier["outcome"] = UNRECORDED  # its process is gone (we hold the run's lease) without a word
    attempt = {"started": time.time(), "ended": None, "from_checkpoint": from_checkpoint, "outcome": RUNNING,
               "step": None, "train_seconds": None, "error": None}
    record.setdefault("attempts", []).append(attempt)
    return attempt


def end_attempt(record: dict[str, Any], outcome: str, step: int | None, train_seconds: float | None = None,
                error: str | None = None) -> None:
    """Close the latest attempt and set the run's status to its outcome."""
    attempt = record["attempts"][-1]
    attempt.update(ended=time.time(), outcome=outcome, step=step, train_seconds=train_seconds, error=error)
    record["status"] = outcome
    if error is not None:
        record["error"] = error
    elif outcome == SUCCESS:
        record.pop("error", None)


def total_train_seconds(record: dict[str, Any]) -> float:
    """Training time summed over every attempt (each resumed attempt times only its own part)."""
    return sum(a.get("train_seconds") or 0.0 for a in record.get("attempts", []))
