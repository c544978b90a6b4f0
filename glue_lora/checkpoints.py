"""Which Trainer checkpoint a resume can trust: the newest *complete* one.

A kill or a full disk during a save leaves `checkpoint-N` half-written, and Trainer's own pick (the highest
N) then fails on every retry although `checkpoint-N-1` is intact. A checkpoint counts as complete when every
file Trainer reads on resume is there and whole: `trainer_state.json` parses, each safetensors file's size
matches its header, and each torch file (optimizer, scheduler, RNG state: zip archives) has its central
directory, which is the last thing written. Reading headers only keeps this cheap for multi-GB checkpoints.
Torch-free.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
BROKEN_PREFIX = "broken-"
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def checkpoint_problem(folder: Path, world_size: int = 1) -> str | None:
    """Why Trainer could not resume from `folder` exactly, or None when it is complete."""
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    rng = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{i}.pth" for i in range(world_size)]
    missing += [name for name in rng if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHTS):
        missing.append(" or ".join(WEIGHTS[:2]))
    if missing:
        return f"missing {', '.join(missing)}"
    state = _trainer_state_problem(folder / "trainer_state.json")
    if state:
        return state
    for path in sorted(folder.glob("*.safetensors")):
        if (why := safetensors_problem(path)) is not None:
            return f"{path.name}: {why}"
    for path in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
        if not zipfile.is_zipfile(path):
            return f"{path.name}: truncated or not a torch archive"
    return None


def _trainer_state_problem(path: Path) -> str | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"trainer_state.json unreadable ({type(err).__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    return None


def safetensors_problem(path: Path) -> str | None:
    """None when the file is as long as its header says; else what is wrong (a truncated write)."""
    try:
        size = path.stat().st_size
        if size < 8:
            return f"truncated ({size} bytes)"
        with open(path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if 8 + header_len > size:
                return f"truncated ({size} bytes)"
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError, struct.error) as err:
        return f"unreadable header ({type(err).__name__})"
    try:
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (AttributeError, KeyError, TypeError, IndexError):
        return "unreadable header (not a safetensors index)"
    expected = 8 + header_len + max(ends, default=0)
    return None if size >= expected else f"truncated ({size} of {expected} bytes)"


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header, without reading any tensor data."""
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    return {key: entry["shape"] for key, entry in header.items() if key != "__metadata__"}


def step_of(folder: Path) -> int:
    match = re.fullmatch(rf"{PREFIX}(\d+)", folder.name)
    return int(match.group(1)) if match else -1


def newest_complete(checkpoints_dir: Path, world_size: int = 1) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint under `checkpoints_dir` (None when there is none) and the newer ones
    it skipped, each with the reason."""
    if not checkpoints_dir.is_dir():
        return None, []
    found = sorted((p for p in checkpoints_dir.iterdir() if p.is_dir() and step_of(p) >= 0), key=step_of, reverse=True)
    skipped = []
    for folder in found:
        problem = checkpoint_problem(folder, world_size)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def set_aside(folder: Path) -> Path:
    """Rename a broken checkpoint out of Trainer's `checkpoint-*` pattern (kept for inspection, never picked or
    counted by rotation); an older broken copy of the same step is replaced."""
    target = folder.with_name(BROKEN_PREFIX + folder.name)
    if target.exists():
        shutil.rmtree(target)
    folder.rename(target)
    return target


def choose_resume_checkpoint(checkpoints_dir: Path, world_size: int = 1, tidy: bool = True) -> Path | None:
    """The checkpoint to resume from, logging (and, with `tidy`, setting aside) every newer broken one."""
    chosen, skipped = newest_complete(checkpoints_dir, world_size)
    for folder, problem in skipped:
        log.warning("skipping %s: %s", folder.name, problem)
        if tidy:
            set_aside(folder)
    if skipped:
        log.warning("resuming from %s", chosen.name if chosen else "the start (no complete checkpoint)")
    return chosen
