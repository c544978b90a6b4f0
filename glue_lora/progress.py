"""Training progress: a tqdm bar on a terminal, one compact line per logging step in a log or pipe.

Replaces Trainer's own printers (its bar, or the raw `{'loss': '0.6903', ...}` dicts it prints when the bar
is off). The mode follows stderr: a terminal gets the bar (steps, epoch, loss, it/s, ETA), anything else a
line per `logging_steps` and per evaluation, with no control characters. `-q` shows neither;
`training.disable_tqdm: true` forces lines, `false` forces the bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback

from glue_lora.console import current_verbosity, is_terminal, number

# Trainer's end-of-training summary keys and internals that are not worth a column.
SKIPPED_KEYS = {"total_flos", "epoch", "step", "grad_norm"}


def progress_mode(disable_tqdm: bool | None = None) -> str:
    """'bar', 'lines' or 'off': off when quiet; the user's explicit disable_tqdm wins over the terminal test."""
    if current_verbosity() < 0:
        return "off"
    if disable_tqdm is not None:
        return "lines" if disable_tqdm else "bar"
    return "bar" if is_terminal(sys.stderr) else "lines"


def attach_progress(trainer: Trainer, disable_tqdm: bool | None = None) -> Trainer:
    """Swap Trainer's printers for ours (see the module docstring); returns the trainer."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    mode = progress_mode(disable_tqdm)
    if mode != "off":
        trainer.add_callback(TrainingProgress(bar=mode == "bar"))
    return trainer


class TrainingProgress(TrainerCallback):
    """Prints on the main process only; everything goes to stderr, so stdout stays the result."""

    def __init__(self, bar: bool):
        self.use_bar = bar
        self.bar = None
        self.started = time.time()
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_local_process_zero:
            return
        self.started, self.first_step = time.time(), state.global_step  # a resumed run starts mid-way
        if self.use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                            dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not state.is_local_process_zero or not logs:
            return
        if self.bar is not None and "loss" in logs:
            self.bar.set_postfix(epoch=f"{state.epoch or 0:.2f}", loss=number(logs["loss"]), refresh=False)
            return
        line = self.describe(logs, state)
        if line:
            self.write(line)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def describe(self, logs: dict[str, Any], state) -> str:
        """One line: `step 50/750 (epoch 0.13): loss 0.6903, lr 0.003; 12 s, ETA 2 min`, or the eval scores."""
        where = f"step {state.global_step}/{state.max_steps} (epoch {state.epoch or 0:.2f})"
        if "train_runtime" in logs:
            return (f"trained {state.global_step} steps in {logs['train_runtime']:.0f} s "
                    f"({number(logs.get('train_samples_per_second', 0.0))} samples/s), "
                    f"mean loss {number(logs.get('train_loss'))}")
        if any(key.startswith("eval_") for key in logs):
            return f"eval {where}: {eval_text(logs)}"
        values = ", ".join(f"{'lr' if key == 'learning_rate' else key} {number(value)}"
                           for key, value in logs.items() if key not in SKIPPED_KEYS)
        return f"{where}: {values}; {self.timing(state)}" if values else ""

    def timing(self, state) -> str:
        elapsed = time.time() - self.started
        done = state.global_step - self.first_step
        left = (state.max_steps - state.global_step) * elapsed / done if done else None
        return f"{duration(elapsed)}" + (f", ETA {duration(left)}" if left is not None else "")


def eval_text(logs: dict[str, Any]) -> str:
    """`validation_accuracy 0.8532, validation_loss 0.3456` from Trainer's `eval_*` keys (timings dropped)."""
    return ", ".join(f"{key.removeprefix('eval_')} {number(value)}" for key, value in logs.items()
                     if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")))


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
