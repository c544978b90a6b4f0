"""`glue-lora bench --to-accuracy 0.85 CONFIG`: training seconds (CPU and wall) until the dev score first
reaches a target.

The config trains as a run would (the harness's own Trainer, `training_arguments`, data and model), except
that it evaluates every `--eval-steps` optimizer steps, saves no checkpoints and stops at the first evaluation
whose primary metric reaches the target. Evaluation time is measured but excluded from the training clocks
(`glue_lora.timing.TrainClock`), so a finer evaluation cadence changes the resolution, not the figure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from glue_lora.timing import Clocks, find_clock


class StopAtTarget(TrainerCallback):
    """After each evaluation: has the primary metric reached the target? If so, note the clocks and stop."""

    def __init__(self, metric_key: str, target: float):
        self.metric_key, self.target = metric_key, target
        self.curve: list[dict[str, Any]] = []  #: every evaluation: step, score, training CPU/wall seconds so far
        self.reached: dict[str, Any] | None = None
        self.clock = None  # the Trainer's TrainClock, set by `measure_time_to_accuracy`

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get(self.metric_key)
        if score is None:
            return  # a second split's evaluation (MNLI mismatched): the primary split decides
        train = self.clock._elapsed_training() if self.clock else Clocks()
        point = {"step": state.global_step, "epoch": state.epoch, "score": score,
                 "train_cpu_seconds": round(train.cpu, 2), "train_wall_seconds": round(train.wall, 2)}
        self.curve.append(point)
        if self.reached is None and score >= self.target:
            self.reached = point
            control.should_training_stop = True


def measure_time_to_accuracy(config_path: str, overrides: list[str], target: float, eval_steps: int,
                             workdir: Path) -> dict[str, Any]:
    """Train until the primary dev metric first reaches `target`; the clocks at that evaluation, and the curve."""
    from glue_lora.bench import harness_trainer
    from glue_lora.config import load_config
    from glue_lora.tasks import get_task

    config = load_config(config_path, [
        *overrides, f"output_dir={workdir / 'to-accuracy'}", "training.eval_strategy=steps",
        f"training.eval_steps={eval_steps}", "training.save_strategy='no'", "training.load_best_model_at_end=false"])
    task = get_task(config.task)
    split, metric = task.primary_key.split("/", 1)
    built = harness_trainer(config)
    stop = StopAtTarget(f"eval_{split}_{metric}", target)
    stop.clock = find_clock(built.trainer)
    built.trainer.add_callback(stop)
    start = time.perf_counter()
    built.trainer.train()
    clock = stop.clock.summary() if stop.clock else {}
    return {"target": target, "metric": task.primary_key, "eval_steps": eval_steps, "reached": stop.reached,
            "best": max(stop.curve, key=lambda p: p["score"], default=None), "curve": stop.curve,
            "steps_run": built.trainer.state.global_step, "total_wall_seconds": round(time.perf_counter() - start, 1),
            "eval_cpu_seconds": clock.get("eval_cpu_seconds"), "eval_wall_seconds": clock.get("eval_wall_seconds"),
            "cpu_seconds_per_step": clock.get("cpu_seconds_per_step"), "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def format_time_to_accuracy(result: dict[str, Any]) -> str:
    reached, best = result["reached"], result["best"]
    head = (f"time to {result['metric']} >= {result['target']} (evaluating every {result['eval_steps']} steps, "
            f"{result['threads']} torch threads; evaluation excluded from the training clocks):")
    if reached:
        body = (f"  reached {reached['score']:.4f} at step {reached['step']} (epoch {reached['epoch']:.2f}): "
                f"{reached['train_cpu_seconds']:.1f} CPU s, {reached['train_wall_seconds']:.1f} wall s of training")
    else:
        body = (f"  NOT reached in {result['steps_run']} steps; best {best['score']:.4f} at step {best['step']}"
                if best else "  NOT reached: no evaluation ran")
    cost = (f"  {result['cpu_seconds_per_step']} CPU s per step; evaluations took {result['eval_cpu_seconds']} CPU s "
            f"/ {result['eval_wall_seconds']} wall s; whole command {result['total_wall_seconds']} wall s")
    return "\n".join([head, body, cost])
