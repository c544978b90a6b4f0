"""What goes into a results record: versions, machine, memory, evaluation summaries and the best one."""

from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# The record's shape, reading and writing live in glue_lora.record (torch-free); re-exported here for callers.
from glue_lora.record import RESULTS_FILE, read_record, write_json_atomic  # noqa: F401

PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate", "scikit-learn", "glue-lora")


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The valid record of `run_dir`, or None (no record, or a malformed one: see `record.load_record`)."""
    return read_record(run_dir)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_state() -> dict[str, Any]:
    """The commit of the code that produced a result, and whether the working tree had changes."""
    repo = Path(__file__).resolve().parent.parent
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if sha else None}


def peak_memory_mb() -> dict[str, float | None]:
    """Peak resident memory of this process (Linux reports KiB), and peak GPU memory when on a GPU."""
    import torch  # here, not at the top: report and sweep read records without loading torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"rss": round(rss, 1), "gpu": round(gpu, 1) if gpu is not None else None}


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "argv": sys.argv}


def summarise_evals(log_history: list[dict], eval_splits: tuple[str, ...]) -> list[dict[str, Any]]:
    """Group Trainer's `eval_<split>_<metric>` log entries by step into {step, epoch, metrics: {split/metric}}."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        for key, value in entry.items():
            split = next((s for s in eval_splits if key.startswith(f"eval_{s}_")), None)
            if split is None or key.endswith(("_runtime", "_samples_per_second", "_steps_per_second")):
                continue
            record = by_step.setdefault(entry["step"], {"step": entry["step"], "epoch": entry.get("epoch"), "metrics": {}})
            record["metrics"][f"{split}/{key.removeprefix(f'eval_{split}_')}"] = value
    return [by_step[step] for step in sorted(by_step)]


def pick_best(evals: list[dict[str, Any]], primary_key: str, higher_is_better: bool = True) -> dict[str, Any] | None:
    """The evaluation with the best primary metric (the paper reports the best epoch); earliest wins ties.

    A NaN score (Pearson of constant predictions, early in an STS-B run) never wins: NaN compares false with
    everything, so `max` would otherwise keep whichever evaluation came first.
    """
    scored = [e for e in evals if _finite(e["metrics"].get(primary_key))]
    if not scored:
        return None
    sign = 1 if higher_is_better else -1
    return max(scored, key=lambda e: (sign * e["metrics"][primary_key], -e["step"]))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
