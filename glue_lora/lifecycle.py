"""A run's record through its life: written before the model loads, updated at every evaluation, closed with
the attempt's outcome (success, failed, interrupted), and never losing what an earlier attempt measured.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from glue_lora.errors import UsageError
from glue_lora.record import FAILED, INTERRUPTED, end_attempt, write_record
from glue_lora.results import summarise_evals
from glue_lora.tasks import TaskSpec

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """SIGTERM (e.g. a sweep's stop, `kill`), raised where training stands so the record says `interrupted`."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Diverged(UsageError):
    """The training loss became NaN/inf: continuing would only waste time and record NaN scores."""


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block SIGTERM raises `Interrupted` (SIGINT already raises KeyboardInterrupt); a repeated
    signal while the outcome is being written is ignored, so the record gets written."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. run() called from a worker)
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def merge_evals(earlier: list[dict], current: list[dict]) -> list[dict]:
    """Evaluations of every attempt by step; the current attempt's value wins for a step measured twice."""
    by_step = {e["step"]: e for e in earlier}
    by_step.update({e["step"]: e for e in current})
    return [by_step[step] for step in sorted(by_step)]


def whole_run_loss(log_history: list[dict], first_step: int, attempt_loss: float | None, last_step: int) -> float | None:
    """Mean training loss over all steps, also after a resume (Trainer's `train_loss` covers only the steps of
    its own `train()` call). The logged losses up to `first_step` cover steps 1..first_step exactly because
    `RecordCallback` logs at every checkpoint; the attempt's own mean covers the rest."""
    if last_step <= 0:
        return attempt_loss
    total, previous_step = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] <= first_step:
            total += entry["loss"] * (entry["step"] - previous_step)
            previous_step = entry["step"]
    if attempt_loss is not None and last_step > first_step:
        total += attempt_loss * (last_step - first_step)
    return total / last_step


class Keeper:
    """Holds the record of one run and writes it (main process only)."""

    def __init__(self, run_dir: Path, task: TaskSpec, record: dict[str, Any], writes: bool):
        self.run_dir, self.task, self.record, self.writes = run_dir, task, record, writes
        self.step: int | None = None
        self.train_began: float | None = None
        self.clock: Any = None  #: the attempt's glue_lora.timing.TrainClock, once training is set up

    def save(self) -> None:
        if self.writes:
            write_record(self.run_dir, self.record)

    def attempt_seconds(self) -> float | None:
        return None if self.train_began is None else round(time.time() - self.train_began, 3)

    def close_failed(self, err: BaseException) -> None:
        """Record the attempt's outcome, best-effort: if even that write fails (full disk), the last good record
        stays on disk as it was (the write is atomic), still holding everything measured so far."""
        outcome = INTERRUPTED if isinstance(err, KeyboardInterrupt) else FAILED
        error = str(err) if isinstance(err, (Interrupted, Diverged)) else f"{type(err).__name__}: {err}"
        if isinstance(err, KeyboardInterrupt) and not isinstance(err, Interrupted):
            error = "interrupted by SIGINT"
        end_attempt(self.record, outcome, self.step, self.attempt_seconds(), error[:2000])
        if self.clock is not None:
            self.record["attempts"][-1]["clock"] = self.clock.summary()
        self.record["finished"] = time.time()
        try:
            self.save()
        except Exception as write_err:  # noqa: BLE001 - the original error is what the caller must see
            log.error("could not record the %s outcome (%s); %s keeps the last good record", outcome,
                      write_err, self.run_dir / "results.json")


class RecordCallback(TrainerCallback):
    """Keeps the record current: progress, evaluations (written at once, so a crash loses nothing measured),
    a loss log at each checkpoint, and a stop with `Diverged` when the loss is NaN/inf."""

    def __init__(self, keeper: Keeper):
        self.keeper = keeper

    def on_train_begin(self, args, state, control, **kwargs):
        self.keeper.train_began = time.time()
        self.keeper.step = state.global_step
        restore_evals(state, self.keeper.record.get("evals", []))


    def on_step_end(self, args, state, control, **kwargs):
        self.keeper.step = state.global_step
        if control.should_save:
            control.should_log = True  # so the losses logged up to a checkpoint cover every step before it

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        check_finite(logs or {}, "loss", state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        evals = summarise_evals(state.log_history, self.keeper.task.eval_splits)
        self.keeper.record["evals"] = merge_evals(self.keeper.record.get("evals", []), evals)
        if state.is_world_process_zero:
            self.keeper.save()
        loss_key = next((k for k in (metrics or {}) if k.endswith("_loss")), None)
        if loss_key:
            check_finite(metrics, loss_key, state.global_step)


def restore_evals(state, evals: list[dict]) -> None:
    """Give a resumed Trainer the evaluations its checkpoint missed but an earlier attempt measured (an
    epoch-end evaluation runs after a step checkpoint of the same step), so its history, and every callback
    reading it (best weights), matches the uninterrupted run's."""
    logged = {(e["step"], k) for e in state.log_history for k in e if k.startswith("eval_")}
    added = False
    for evaluation in evals:
        if evaluation["step"] > state.global_step:
            continue
        entry = {f"eval_{key.replace('/', '_', 1)}": value for key, value in evaluation["metrics"].items()}
        if any((evaluation["step"], key) in logged for key in entry):
            continue
        state.log_history.append({**entry, "epoch": evaluation.get("epoch"), "step": evaluation["step"]})
        added = True
    if added:
        state.log_history.sort(key=lambda e: e.get("step", 0))  # stable: an evaluation follows its step's loss


def check_finite(logs: dict, key: str, step: int) -> None:
    value = logs.get(key)
    if isinstance(value, (int, float)) and not math.isfinite(value):
        raise Diverged(f"diverged at step {step}: {key} is {value}; lower training.learning_rate "
                       "(or check the data), then start again with overwrite=true")
