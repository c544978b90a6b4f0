"""CPU and wall time of training, with evaluation counted apart: a Trainer callback and its record section.

Process CPU seconds (every thread of this process, plus finished child processes such as dataloader workers)
are the robust measure on a shared machine: the same work took 401 s or 2,282 s of wall time under different
load while its CPU seconds per step stayed within a few percent. Both are recorded.

Evaluations that run inside `Trainer.train` (at `eval_strategy` points) are subtracted from the training
clocks and reported on their own; checkpoint saving counts as training. Each process measures itself (under
DDP the record holds the main process's figures).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and of its finished, waited-for children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class Clocks:
    """A (CPU, wall) pair of seconds."""

    cpu: float = 0.0
    wall: float = 0.0

    @classmethod
    def now(cls) -> Clocks:
        return cls(cpu_seconds(), time.perf_counter())

    def __sub__(self, other: Clocks) -> Clocks:
        return Clocks(self.cpu - other.cpu, self.wall - other.wall)

    def __add__(self, other: Clocks) -> Clocks:
        return Clocks(self.cpu + other.cpu, self.wall + other.wall)


@dataclass
class EpochTime:
    epoch: int
    steps: int
    train: Clocks


@dataclass
class TrainClock(TrainerCallback):
    """Times `Trainer.train`: training (evaluation excluded) per epoch and in total, evaluation apart."""

    train: Clocks = field(default_factory=Clocks)  #: training so far, evaluation excluded
    evaluation: Clocks = field(default_factory=Clocks)  #: evaluations run inside training
    evaluations: int = 0
    steps: int = 0  #: optimizer steps taken in this attempt (a resumed run starts from its checkpoint's step)
    epochs: list[EpochTime] = field(default_factory=list)
    _started: Clocks | None = None
    _mark: Clocks | None = None  #: last event before a possible evaluation
    _epoch_start: tuple[Clocks, int] | None = None
    _first_step: int = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = self._mark = Clocks.now()
        self._first_step = state.global_step

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_start = (self._elapsed_training(), state.global_step)
        self._mark = Clocks.now()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps = state.global_step - self._first_step
        self._mark = Clocks.now()  # an evaluation, if one is due, starts right after this

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._epoch_start is not None:
            start, first_step = self._epoch_start
            self.epochs.append(EpochTime(len(self.epochs), state.global_step - first_step,
                                         self._elapsed_training() - start))
        self._mark = Clocks.now()

    def on_evaluate(self, args, state, control, **kwargs):
        if self._started is None or self._mark is None:
            return  # an evaluation outside training (before it, or the final one after it): not subtracted
        now = Clocks.now()
        self.evaluation = self.evaluation + (now - self._mark)
        self.evaluations += 1
        self._mark = now  # MNLI evaluates two splits back to back: the second starts here

    def on_train_end(self, args, state, control, **kwargs):
        self.train = self._elapsed_training()
        self._started = self._mark = None

    def _elapsed_training(self) -> Clocks:
        if self._started is None:
            return self.train
        return Clocks.now() - self._started - self.evaluation

    def summary(self) -> dict[str, Any]:
        """The record's CPU-time fields for this attempt (JSON-ready)."""
        train = self._elapsed_training()
        return timing_fields(train, self.evaluation, self.evaluations, self.steps,
                             [{"epoch": e.epoch, "steps": e.steps, "cpu_seconds": round(e.train.cpu, 3),
                               "wall_seconds": round(e.train.wall, 3),
                               "cpu_seconds_per_step": _per(e.train.cpu, e.steps)} for e in self.epochs])


def timing_fields(train: Clocks, evaluation: Clocks, evaluations: int, steps: int,
                  epochs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "train_cpu_seconds": round(train.cpu, 3), "train_wall_seconds": round(train.wall, 3),
        "cpu_seconds_per_step": _per(train.cpu, steps), "wall_seconds_per_step": _per(train.wall, steps),
        "timed_steps": steps, "eval_cpu_seconds": round(evaluation.cpu, 3),
        "eval_wall_seconds": round(evaluation.wall, 3), "evaluations_timed": evaluations,
        "per_epoch": epochs,
    }


def combine_attempts(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """Timing over every attempt of a resumed run: seconds and steps add up, epochs are concatenated.

    `previous` is the timing section an earlier attempt recorded (None or without CPU fields: `current`).
    """
    if not previous or "train_cpu_seconds" not in previous:
        return current
    train = Clocks(previous["train_cpu_seconds"] + current["train_cpu_seconds"],
                   previous["train_wall_seconds"] + current["train_wall_seconds"])
    evaluation = Clocks(previous["eval_cpu_seconds"] + current["eval_cpu_seconds"],
                        previous["eval_wall_seconds"] + current["eval_wall_seconds"])
    combined = timing_fields(train, evaluation, previous["evaluations_timed"] + current["evaluations_timed"],
                             previous["timed_steps"] + current["timed_steps"],
                             previous["per_epoch"] + current["per_epoch"])
    combined["attempts"] = previous.get("attempts", 1) + 1
    return combined


def _per(seconds: float, steps: int) -> float | None:
    return round(seconds / steps, 4) if steps else None


def find_clock(trainer) -> TrainClock | None:
    """The TrainClock among a Trainer's callbacks, if any."""
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TrainClock)), None)
