"""Per-run claims: which sweep driver owns a run, safe across processes and machines.

A driver claims a run before starting it by taking a lease (`glue_lora.lease`: flock plus an owner file
with host, pid and a heartbeat) on `<run_dir>/.sweep-claim`, and gives it back when the run has ended. A
second driver (on this machine or another one sharing the output root) finds the claim held, skips the run
for now and waits for its end instead of starting it again; its other runs are not held up. A claim whose
driver died is free again: at once on the same host (its pid is gone; its flock went with it), after the
lease's stale time when the driver was on another machine (its heartbeat stopped).

The claim lives in its own subdirectory so that the training process can hold its own lease on the run
directory itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from glue_lora import lease
from glue_lora.lease import Holder

CLAIM_DIR = ".sweep-claim"


class Claims:
    """The claims one sweep driver holds."""

    def __init__(self, stale_after: float = lease.STALE_AFTER_S, heartbeat: float = lease.HEARTBEAT_S):
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self._held: dict[Path, lease.Lease] = {}

    def acquire(self, run_dir: Path) -> Holder | None:
        """Claim `run_dir`; None on success, else the live holder (another driver is running it)."""
        try:
            self._held[run_dir] = lease.acquire(run_dir / CLAIM_DIR, f"sweep driver {os.getpid()}",
                                                self.stale_after, self.heartbeat)
        except lease.Busy as busy:
            now = time.time()
            return busy.holder or Holder("?", 0, now, now)  # owner file not written yet: held all the same
        return None

    def release(self, run_dir: Path) -> None:
        held = self._held.pop(run_dir, None)
        if held is not None:
            held.release()

    def release_all(self) -> None:
        for run_dir in list(self._held):
            self.release(run_dir)

    def holder(self, run_dir: Path) -> Holder | None:
        """The live holder of `run_dir`'s claim, or None when it is free (never claimed, released or stale)."""
        found = lease.read_holder(run_dir / CLAIM_DIR)
        return None if found is None or found.is_stale(self.stale_after) else found
