"""The run record (strict JSON, validated reads, attempts) and the run-directory lease."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glue_lora import lease
from glue_lora.record import (FAILED, SUCCESS, Malformed, end_attempt, load_record, read_record, start_attempt,
                              status_of, total_train_seconds, write_json_atomic, write_record)

ROOT = Path(__file__).resolve().parent.parent


def test_non_finite_numbers_are_written_as_null_and_flagged(tmp_path):
    write_record(tmp_path, {"status": SUCCESS, "train_loss": math.nan,
                            "evals": [{"metrics": {"validation/pearson": math.inf}}]})
    text = (tmp_path / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))  # strict JSON
    record = read_record(tmp_path)
    assert record["train_loss"] is None and record["evals"][0]["metrics"]["validation/pearson"] is None
    assert record["non_finite"] == ["evals[0].metrics.validation/pearson", "train_loss"]


@pytest.mark.parametrize("content, reason", [
    (b"[1, 2]", "not a JSON object (a JSON array)"),
    (b'"done"', "not a JSON object (a JSON string)"),
    (b"\xff\xfe{}", "not UTF-8 (byte 0)"),
    (b'{"status": "success",', "not valid JSON (line 1 column 22: Expecting property name enclosed in double quotes)"),
    (b"", "not valid JSON (line 1 column 1: Expecting value)"),
    (b'{"task": "rte"}', "no status key"),
    (b'{"status": "done"}', "unknown status 'done' (expected one of running, success, failed, interrupted)"),
    (b'{"status": "running", "attempts": {}}', "attempts/evals is not a list"),
])
def test_a_malformed_record_is_reported_not_raised(tmp_path, content, reason):
    (tmp_path / "results.json").write_bytes(content)
    found = load_record(tmp_path)
    assert isinstance(found, Malformed) and found.reason == reason and str(found) == f"malformed: {reason}"
    assert read_record(tmp_path) is None and status_of(tmp_path) == "malformed"


def test_old_records_with_bare_nan_still_load(tmp_path):
    (tmp_path / "results.json").write_text('{"status": "success", "train_loss": NaN}')
    assert load_record(tmp_path / "results.json") == {"status": "success", "train_loss": None}
    assert load_record(tmp_path / "missing") is None and status_of(tmp_path / "missing") is None


def test_attempts_accumulate_and_the_last_one_sets_the_status():
    record = {"status": "running"}
    start_attempt(record, None)
    end_attempt(record, FAILED, step=4, train_seconds=2.5, error="RuntimeError: boom")
    start_attempt(record, "checkpoints/checkpoint-4")
    end_attempt(record, SUCCESS, step=8, train_seconds=3.0)
    assert [a["outcome"] for a in record["attempts"]] == [FAILED, SUCCESS]
    assert record["attempts"][1]["from_checkpoint"] == "checkpoints/checkpoint-4"
    assert record["status"] == SUCCESS and "error" not in record and total_train_seconds(record) == 5.5


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    write_json_atomic(tmp_path / "results.json", {"status": SUCCESS})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        write_json_atomic(tmp_path / "results.json", {"status": FAILED})
    assert read_record(tmp_path) == {"status": SUCCESS}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# --- lease ------------------------------------------------------------------------------------------------------

HOLD = "import sys, time; from glue_lora.lease import acquire; acquire(sys.argv[1], 'test'); print('held', flush=True); time.sleep(60)"


def _holder_process(directory: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_owner_is_refused_with_the_holders_host_and_pid_until_the_holder_dies(tmp_path):
    child = _holder_process(tmp_path)
    try:
        with pytest.raises(lease.Busy, match=f"in use by pid {child.pid} on {socket.gethostname()} \\(test\\)"):
            lease.acquire(tmp_path)
        assert lease.read_holder(tmp_path).pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)  # dies without releasing anything: the kernel drops the flock
        child.wait()
    with lease.hold(tmp_path, "second") as held:
        assert lease.read_holder(tmp_path) == held.holder
    assert lease.read_holder(tmp_path) is None  # released: owner file gone


def test_a_stale_owner_is_taken_over_even_if_a_child_kept_the_lock(tmp_path):
    # the dead owner's forked child still holds the old lock file; the owner file names a dead pid
    keeper = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a');"
                               "fcntl.flock(f, fcntl.LOCK_EX); print('x', flush=True); time.sleep(60)",
                               str(tmp_path / lease.LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        keeper.stdout.readline()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        owner = {"host": socket.gethostname(), "pid": int(dead), "started": 0, "heartbeat": time.time()}
        (tmp_path / lease.OWNER_FILE).write_text(json.dumps(owner))
        with lease.hold(tmp_path) as held:
            assert held.holder.pid == os.getpid()
    finally:
        keeper.kill()
        keeper.wait()


def test_a_live_owner_on_another_host_is_respected_until_its_heartbeat_is_stale(tmp_path):
    owner = {"host": "other-machine", "pid": 1, "started": 0, "heartbeat": time.time()}
    (tmp_path / lease.OWNER_FILE).write_text(json.dumps(owner))
    with pytest.raises(lease.Busy, match="pid 1 on other-machine"):
        lease.acquire(tmp_path)
    owner["heartbeat"] = time.time() - lease.STALE_AFTER_S - 1
    (tmp_path / lease.OWNER_FILE).write_text(json.dumps(owner))
    lease.acquire(tmp_path).release()


def test_the_heartbeat_advances(tmp_path):
    with lease.hold(tmp_path, heartbeat_s=0.05) as held:
        first = lease.read_holder(tmp_path).heartbeat
        time.sleep(0.3)
        assert lease.read_holder(tmp_path).heartbeat > first and held.holder.pid == os.getpid()
