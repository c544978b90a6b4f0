"""Faults done for real: kill -9 at a checkpoint save, damaged checkpoints, a full disk, SIGTERM, a second
trainer on a busy run directory, and a resume in epoch 2 that must replay the uninterrupted run bit for bit.

One tiny random RoBERTa, 64 training examples, 3 epochs of 4 steps, a checkpoint every 2 steps.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import glue_lora.train as train_module
from glue_lora import lease, record as record_module
from glue_lora.checkpoints import choose_resume_checkpoint
from glue_lora.config import load_config
from glue_lora.lifecycle import Diverged
from glue_lora.record import load_record, read_record
from glue_lora.train import run
from tests.conftest import REPO, raise_after_save

BASE = ["task=rte", "max_train_samples=64", "max_eval_samples=32", "global_batch_size=16", "max_seq_length=64",
        "training.num_train_epochs=3", "training.learning_rate=1e-3", "training.save_strategy=steps",
        "training.save_steps=2", "training.logging_steps=3",
        "training.train_sampling_strategy=group_by_length"]  # the sampler whose order resume must replay


def overrides(model: str, glue_dir: Path, out: Path, *extra: str) -> list[str]:
    return [f"model={model}", f"data_dir={glue_dir}", f"output_dir={out}", *BASE, *extra]


def config(model, glue_dir, out, *extra):
    return load_config(None, overrides(model, glue_dir, out, *extra))


class Crash(Exception):
    pass


def crash_after_save_at(monkeypatch, step: int) -> None:
    """Make the next run raise right after its checkpoint at `step` is written (as a crash would)."""
    raise_after_save(monkeypatch, Crash(f"simulated crash after the step-{step} checkpoint"), step)


@pytest.fixture(scope="module")
def straight(tiny_roberta, glue_dir, tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must equal."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run(config(tiny_roberta, glue_dir, out))
    return out


@pytest.fixture(scope="module")
def crashed(tiny_roberta, glue_dir, tmp_path_factory) -> Path:
    """A run that crashed right after its step-6 checkpoint (mid epoch 2); checkpoints 4 and 6 remain."""
    out = tmp_path_factory.mktemp("crashed") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        crash_after_save_at(monkeypatch, 6)
        with pytest.raises(Crash):
            run(config(tiny_roberta, glue_dir, out))
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    return out


def copy_run(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(source, target)
    return target


def assert_same_run(resumed: Path, straight: Path) -> None:
    """Bit-identical: the same evaluations and the same trained tensors."""
    a, b = read_record(resumed), read_record(straight)
    assert a["status"] == "success" and [e["step"] for e in a["evals"]] == [4, 8, 12]
    assert a["evals"] == b["evals"]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)  # the whole run's mean, over attempts
    tensors, expected = (load_file(run_dir / "adapter_model.safetensors") for run_dir in (resumed, straight))
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[k], expected[k]) for k in tensors)


def test_resume_in_epoch_2_replays_the_uninterrupted_run_bit_for_bit(tiny_roberta, glue_dir, straight, crashed, tmp_path):
    run_dir = copy_run(crashed, tmp_path)
    before = read_record(run_dir)
    assert before["status"] == "failed" and [e["step"] for e in before["evals"]] == [4]  # kept from attempt 1
    assert before["attempts"][0]["step"] == 6 and "Crash: simulated" in before["error"]
    resumed = run(config(tiny_roberta, glue_dir, run_dir, "resume=true"))
    assert_same_run(run_dir, straight)
    assert [a["outcome"] for a in resumed["attempts"]] == ["failed", "success"]
    assert resumed["attempts"][1]["from_checkpoint"].endswith("checkpoint-6")
    assert resumed["timing"]["train_seconds"] > resumed["attempts"][1]["train_seconds"] > 0  # both attempts count
    assert resumed["timing"]["attempts"] == 2 and "error" not in resumed


DAMAGE = {
    "truncated optimizer.pt": lambda c: _truncate(c / "optimizer.pt", 0.5),
    "truncated adapter safetensors": lambda c: _truncate(c / "adapter_model.safetensors", 0.5),
    "truncated rng_state.pth": lambda c: _truncate(c / "rng_state.pth", 0.2),
    "no trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
    "half-written trainer_state.json": lambda c: _truncate(c / "trainer_state.json", 0.5),
}
REASONS = {"truncated optimizer.pt": "optimizer.pt: truncated", "truncated adapter safetensors":
           "adapter_model.safetensors: truncated", "truncated rng_state.pth": "rng_state.pth: truncated",
           "no trainer_state.json": "missing trainer_state.json",
           "half-written trainer_state.json": "trainer_state.json unreadable"}


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_latest_checkpoint_is_skipped_with_its_reason(crashed, tmp_path, caplog, damage):
    checkpoints = copy_run(crashed, tmp_path) / "checkpoints"
    DAMAGE[damage](checkpoints / "checkpoint-6")
    with caplog.at_level(logging.WARNING, logger="glue_lora.checkpoints"):
        chosen = choose_resume_checkpoint(checkpoints)
    assert chosen == checkpoints / "checkpoint-4"
    assert f"skipping checkpoint-6: {REASONS[damage]}" in caplog.text and "resuming from checkpoint-4" in caplog.text
    assert sorted(p.name for p in checkpoints.glob("*checkpoint-*")) == ["broken-checkpoint-6", "checkpoint-4"]


def test_resume_falls_back_to_the_previous_complete_checkpoint_and_still_matches(tiny_roberta, glue_dir, straight,
                                                                                 crashed, tmp_path, caplog):
    run_dir = copy_run(crashed, tmp_path)
    DAMAGE["truncated adapter safetensors"](run_dir / "checkpoints" / "checkpoint-6")
    with caplog.at_level(logging.WARNING):
        resumed = run(config(tiny_roberta, glue_dir, run_dir, "resume=true"))
    assert "skipping checkpoint-6: adapter_model.safetensors: truncated" in caplog.text
    assert resumed["attempts"][1]["from_checkpoint"].endswith("checkpoint-4")  # the start of epoch 2
    assert_same_run(run_dir, straight)


# --- real processes -----------------------------------------------------------------------------------------------

def start_training(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLUE_LORA_CACHE": str(tmp_path / "cache"),
           "HF_DATASETS_CACHE": str(tmp_path / "hf")}  # same threads as this process: same float sums
    empty = tmp_path / "empty.yaml"  # run_glue.py wants a config file; everything else is in the overrides
    empty.write_text("{}\n")
    return subprocess.Popen([sys.executable, str(REPO / "run_glue.py"), str(empty), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, child: subprocess.Popen, timeout: float = 240.0, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"training ended early ({child.returncode}): {child.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("timed out waiting for the training child")
        time.sleep(every)


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
    child.wait()


def test_kill_9_during_a_checkpoint_save_then_resume_equals_the_uninterrupted_run(tiny_roberta, glue_dir, straight,
                                                                                  tmp_path):
    run_dir = tmp_path / "run"
    child = start_training(overrides(tiny_roberta, glue_dir, run_dir), tmp_path)
    try:
        # the folder appears when the save starts writing: kill at once, most likely mid-save
        wait_for(lambda: (run_dir / "checkpoints" / "checkpoint-6").exists(), child, every=0.001)
        child.send_signal(signal.SIGKILL)
    finally:
        stop(child)
    killed = read_record(run_dir)
    assert killed["status"] == "running" and [e["step"] for e in killed["evals"]] == [4]  # measured, kept
    resumed = run(config(tiny_roberta, glue_dir, run_dir, "resume=true"))
    assert [a["outcome"] for a in resumed["attempts"]] == ["unrecorded", "success"]
    assert_same_run(run_dir, straight)


def test_sigterm_records_interrupted_and_a_second_trainer_is_refused_meanwhile(tiny_roberta, glue_dir, tmp_path):
    run_dir = tmp_path / "run"
    child = start_training(overrides(tiny_roberta, glue_dir, run_dir, "training.num_train_epochs=200"), tmp_path)
    try:
        wait_for(lambda: bool((read_record(run_dir) or {}).get("evals")), child)  # past the first evaluation
        holder = f"in use by pid {child.pid} on {socket.gethostname()}"
        with pytest.raises(lease.Busy, match=holder):  # the same run, by hand, while it trains
            run(config(tiny_roberta, glue_dir, run_dir, "resume=true", "training.num_train_epochs=200"))
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 128 + signal.SIGTERM
        stderr = child.stderr.read()
    finally:
        stop(child)
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("interrupted by SIGTERM")
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and record["error"] == "interrupted by SIGTERM"
    assert record["attempts"][-1]["step"] >= 4 and record["evals"]  # where it stopped, and what it measured
    assert lease.read_holder(run_dir) is None  # released on the way out


# --- a full disk --------------------------------------------------------------------------------------------------

def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _inject_disk_full(monkeypatch) -> None:
    """Where no small filesystem can be mounted: the checkpoint save fails with ENOSPC, and so does every later
    record write, as on a really full disk."""
    full = {"now": False}

    def save_fails(self, *args, **kwargs):
        full["now"] = True
        raise OSError(errno.ENOSPC, "No space left on device")
    mkstemp = record_module.tempfile.mkstemp

    def mkstemp_fails(*args, **kwargs):
        if full["now"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*args, **kwargs)
    monkeypatch.setattr(train_module.ResumableTrainer, "_save_checkpoint", save_fails)
    monkeypatch.setattr(record_module.tempfile, "mkstemp", mkstemp_fails)


def test_a_full_disk_fails_the_run_but_keeps_the_last_good_record(tiny_roberta, glue_dir, tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "160k")  # room for the record, not for a checkpoint (its tokenizer is ~700 KB)
    try:
        if not mounted:
            _inject_disk_full(monkeypatch)
        with pytest.raises(Exception, match="No space left on device"):  # safetensors raises a plain Exception
            run(config(tiny_roberta, glue_dir, disk / "run", "training.eval_strategy=steps", "training.eval_steps=2"))
        found = load_record(disk / "run")
        assert isinstance(found, dict), found  # never a half-written file
        assert [e["step"] for e in found["evals"]] == [2]  # measured before the failed save: kept
        assert found["status"] in ("running", "failed")  # the outcome is written only if it still fits
        assert not [p for p in (disk / "run").iterdir() if p.name.endswith(".tmp")]
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def test_a_diverging_run_fails_at_the_step_it_diverged(tiny_roberta, glue_dir, tmp_path):
    cfg = config(tiny_roberta, glue_dir, tmp_path / "run", "training.learning_rate=1e30", "training.logging_steps=1",
                 "training.max_steps=6")
    with pytest.raises(Diverged, match="diverged at step"):
        run(cfg)
    found = read_record(tmp_path / "run")
    assert found["status"] == "failed" and found["error"].startswith("diverged at step")
    text = (tmp_path / "run" / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))
