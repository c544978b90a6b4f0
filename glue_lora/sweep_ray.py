"""The Ray sweep backend: each run is a Ray task that runs `glue-lora train ... resume=true` in a subprocess
on the node Ray picks, with the CPUs and GPUs the run needs.

Faults are Ray's job: a task whose node (or worker) dies is retried up to `max_retries` times, and the retry
resumes from the last checkpoint in the shared run directory. A run that fails by itself (bad config, NaN)
is a *returned* non-zero exit status, not an exception, so Ray never retries it (`retry_exceptions` off) and
the sweep goes on. A run that depends on another (MNLI-init) is submitted with the dependency's ObjectRef as
an argument, so Ray starts it only once the dependency has ended, and it skips itself when that failed.

Requirements (see docs/cluster.md): glue-lora installed on every node, the output root and the directory
the sweep runs in (configs, relative data paths) visible at the same path on every node; checked before
the first run by a probe task on each node.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glue_lora.errors import UsageError
from glue_lora.sweep_local import Exit, run_logged

if TYPE_CHECKING:
    from glue_lora.sweep import PlannedRun

INSTALL_HINT = '--backend ray needs Ray on this machine and every node: pip install "glue-lora[ray]"'
RESOURCE_KEYS = ("cpus", "gpus")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def run_resources(run: PlannedRun, cpus: float, gpus: float) -> dict[str, float]:
    """What one run asks Ray for: the config's `resources` where set, else the sweep's --cpus/--gpus-per-run."""
    wanted = {"cpus": cpus, "gpus": gpus, **{k: float(v) for k, v in run.config.resources.items()}}
    if wanted["gpus"] > 1 and not float(wanted["gpus"]).is_integer():
        raise UsageError(f"{run.name}: {wanted['gpus']} GPUs per run; give a whole number above 1 "
                         "(one process per GPU) or a fraction below 1 (runs sharing a GPU)")
    return wanted


def ray_command(run: PlannedRun, gpus: float, python: str | None = sys.executable) -> list[str]:
    """`glue-lora train ... resume=true`, under torchrun with one process per GPU when it needs several;
    with `python=None`, the installed commands (`glue-lora`, `torchrun`) for people and other schedulers.

    Always resume=true: a retry after a lost node continues from the last checkpoint, and a run that
    finished meanwhile only reports its record.
    """
    train = ["train", *run.arguments(resume=True)]
    if gpus > 1:
        launcher = [python, "-m", "torch.distributed.run"] if python else ["torchrun"]
        return [*launcher, "--standalone", f"--nproc_per_node={int(gpus)}", "-m", "glue_lora.cli", *train]
    return [python, "-m", "glue_lora.cli", *train] if python else ["glue-lora", *train]


def run_task(command: list[str], env_extra: dict[str, str], log_path: str, cwd: str,
             *dependencies: dict) -> dict[str, Any]:
    """The Ray task: run one training subprocess to its end on this node; a failed dependency skips it."""
    if any(d.get("code") != 0 or d.get("blocked") for d in dependencies):
        return {"code": -1, "blocked": True}
    import ray

    node = ray.get_runtime_context().get_node_id()
    env = {**os.environ, **env_extra}  # CUDA_VISIBLE_DEVICES: set by Ray for the task's GPUs
    started = time.time()
    header = f"[ray node {node[:12]} on {socket.gethostname()}, {time.strftime('%H:%M:%S')}] "
    code = run_logged(command, env, Path(log_path), header=header, cwd=cwd)
    return {"code": code, "seconds": time.time() - started, "node": node}


def task_environment(cpus: float) -> dict[str, str]:
    """What a run's process gets besides the node's environment: its thread count, and this driver's
    verbosity and library-quieting settings (a node started by `ray start` elsewhere has none of them)."""
    from glue_lora.console import QUIET_LIBRARY_ENV, VERBOSITY_ENV

    threads = str(max(1, math.floor(cpus)))
    passed = {k: os.environ[k] for k in (VERBOSITY_ENV, *QUIET_LIBRARY_ENV) if k in os.environ}
    return {**passed, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}


def probe_task(path: str, token: str, cwd: str) -> str:
    """On one node: '' when the shared tree is visible there, else what is missing."""
    try:
        if Path(path).read_text() != token:
            return f"sees another file at {path}"
    except OSError:
        return f"cannot read {path}"
    return "" if Path(cwd).is_dir() else f"lacks the sweep's working directory {cwd}"


class RayBackend:
    """Submits runs as Ray tasks to the cluster at `address` (None: a running local cluster or a new one)."""

    chains_dependencies = True

    def __init__(self, address: str | None, cpus_per_run: float = 1.0, gpus_per_run: float | None = None,
                 max_retries: int = 3):
        self.ray = import_ray()
        self.ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                      include_dashboard=False if address is None else None)
        gpus = sum(n["Resources"].get("GPU", 0) for n in self._alive_nodes())
        self.cpus, self.gpus = cpus_per_run, (1.0 if gpus else 0.0) if gpus_per_run is None else gpus_per_run
        self.max_retries = max_retries
        self._capacity, self._capacity_at = self._fitting(self.cpus, self.gpus), time.time()
        self.cwd = os.getcwd()
        self._task = self.ray.remote(run_task)
        self._refs: dict[Any, str] = {}  # in flight: ObjectRef -> run name
        self._by_name: dict[str, Any] = {}

    @property
    def capacity(self) -> int:
        """Runs in flight at most: what fits the alive nodes, looked up again every 10 s (nodes come and go)."""
        if time.time() - self._capacity_at > 10:
            self._capacity, self._capacity_at = self._fitting(self.cpus, self.gpus), time.time()
        return self._capacity

    def check_shared_tree(self, root: Path) -> None:
        """A probe file written here must read back on every node; else one line naming the node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        root.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = (root / f".ray-probe-{token}").resolve()
        probe.write_text(token)
        try:
            task = self.ray.remote(probe_task)
            nodes = self._alive_nodes()
            refs = [task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe), token, self.cwd) for n in nodes]
            for node, problem in zip(nodes, self.ray.get(refs, timeout=300)):
                if problem:
                    raise UsageError(f"Ray node {node['NodeManagerAddress']} {problem}: the output root must be "
                                     "on a filesystem every node mounts at the same path (see docs/cluster.md)")
        finally:
            probe.unlink(missing_ok=True)

    def start(self, run: PlannedRun, resume: bool, log_path: Path, after: list[str]) -> None:
        need = run_resources(run, self.cpus, self.gpus)
        options = dict(num_cpus=need["cpus"], num_gpus=need["gpus"], max_retries=self.max_retries,
                       retry_exceptions=False, name=run.name)
        ref = self._task.options(**options).remote(ray_command(run, need["gpus"]), task_environment(need["cpus"]),
                                                   str(log_path.resolve()), self.cwd,
                                                   *[self._by_name[d] for d in after])
        self._refs[ref], self._by_name[run.name] = run.name, ref

    def wait(self, timeout: float) -> list[Exit]:
        if not self._refs:
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:  # and whatever else has ended by now
            ready, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        return [self._exit(ref) for ref in ready]

    def _exit(self, ref: Any) -> Exit:
        name = self._refs.pop(ref)
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # retries used up, or a dependency's did
            return Exit(name, -1, f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}")
        return Exit(name, result["code"], seconds=result.get("seconds"), blocked=bool(result.get("blocked")))

    def stop(self) -> None:
        """Cancel what is still going (its worker and training process die; the run stays resumable)."""
        for ref in self._refs:
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        self.ray.shutdown()

    def _alive_nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _fitting(self, cpus: float, gpus: float) -> int:
        """How many runs of this size the cluster holds at once (the driver keeps no more in flight)."""
        total = 0
        for node in self._alive_nodes():
            have = node["Resources"]
            fits = [math.floor(have.get("CPU", 0) / cpus + 1e-9)] if cpus else []
            fits += [math.floor(have.get("GPU", 0) / gpus + 1e-9)] if gpus else []
            total += min(fits) if fits else 1
        return max(1, total)
