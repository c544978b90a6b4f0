"""CPU time in the run record: training clocks exclude evaluation, per step and per epoch; resumed attempts add."""

import time

from glue_lora.timing import Clocks, TrainClock, combine_attempts, cpu_seconds, timing_fields
from glue_lora.train import run
from tests.test_core_train import tiny_config


class _State:
    def __init__(self):
        self.global_step = 0


def _spin(seconds: float) -> None:
    """Burn CPU for `seconds` of process CPU time."""
    end = cpu_seconds() + seconds
    while cpu_seconds() < end:
        sum(range(1000))


def test_clock_subtracts_evaluation_from_training():
    clock, state = TrainClock(), _State()
    clock.on_train_begin(None, state, None)
    clock.on_epoch_begin(None, state, None)
    for _ in range(2):
        _spin(0.1)
        state.global_step += 1
        clock.on_step_end(None, state, None)
    _spin(0.3)  # an evaluation, three steps' worth
    clock.on_evaluate(None, state, None)
    time.sleep(0.05)  # wall time without CPU time
    clock.on_epoch_end(None, state, None)
    clock.on_train_end(None, state, None)
    summary = clock.summary()
    assert 0.19 <= summary["train_cpu_seconds"] < 0.29  # the two steps, not the evaluation
    assert 0.29 <= summary["eval_cpu_seconds"] < 0.39
    assert summary["train_wall_seconds"] >= summary["train_cpu_seconds"] + 0.04  # the sleep is wall only
    assert summary["timed_steps"] == 2 and summary["evaluations_timed"] == 1
    assert summary["cpu_seconds_per_step"] == round(summary["train_cpu_seconds"] / 2, 4)
    assert [e["steps"] for e in summary["per_epoch"]] == [2]


def test_resumed_attempts_add_up():
    first = timing_fields(Clocks(10.0, 20.0), Clocks(1.0, 2.0), 1, 5, [{"epoch": 0, "steps": 5}])
    second = timing_fields(Clocks(6.0, 7.0), Clocks(1.0, 1.0), 2, 3, [{"epoch": 1, "steps": 3}])
    both = combine_attempts(first, second)
    assert both["train_cpu_seconds"] == 16.0 and both["timed_steps"] == 8 and both["attempts"] == 2
    assert both["cpu_seconds_per_step"] == 2.0 and both["eval_wall_seconds"] == 3.0
    assert [e["epoch"] for e in both["per_epoch"]] == [0, 1]
    assert combine_attempts(None, second) == second


def test_run_record_has_cpu_time_per_step_and_epoch(tiny_roberta, glue_dir, tmp_path):
    timing = run(tiny_config(tiny_roberta, glue_dir, tmp_path))["timing"]  # 2 epochs x 4 steps, eval each epoch
    assert timing["timed_steps"] == 8 and timing["evaluations_timed"] == 2
    assert timing["train_cpu_seconds"] > 0 and timing["eval_cpu_seconds"] > 0
    assert [e["steps"] for e in timing["per_epoch"]] == [4, 4]
    assert sum(e["cpu_seconds"] for e in timing["per_epoch"]) <= timing["train_cpu_seconds"] + 1e-3
    assert timing["cpu_seconds_per_step"] > 0 and timing["wall_seconds_per_step"] > 0
