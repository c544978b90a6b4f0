"""The local sweep backend: each run is a `glue-lora train` subprocess, `jobs` at a time on this machine.

Children die with the sweep: each starts in its own session (Ctrl-C in the terminal reaches only the sweep,
which then stops the whole process group, torchrun's workers included) and, on Linux, with a parent-death
signal, so even `kill -9` of the sweep leaves no training process writing into a run directory that the
next invocation would resume.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glue_lora.hardware import available_memory, usable_cpus

if TYPE_CHECKING:
    from glue_lora.sweep import PlannedRun

# A runner starts one run and returns its exit status: (run, environment, log file, resume) -> int.
Runner = Callable[["PlannedRun", dict[str, str], Path, bool], int]
# The command line of one run: (run, resume) -> argv.
Command = Callable[["PlannedRun", bool], list[str]]

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class Exit:
    """How one run ended, as a backend reports it."""

    name: str
    code: int  #: the process's exit status; negative: killed by that signal, or the backend failed (detail)
    detail: str = ""
    seconds: float | None = None  #: the run's own time, when the backend knows it (else the driver measures)
    blocked: bool = False  #: not started because a run it depends on failed


def train_command(run: PlannedRun, resume: bool) -> list[str]:
    return [sys.executable, "-m", "glue_lora.cli", "train", *run.arguments(resume)]


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: get SIGTERM when the parent dies; exit now if it already has."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def spawn_child(command: list[str], env: Mapping[str, str], log, cwd: str | None = None) -> subprocess.Popen:
    """Start `command` in its own session, writing to the open file `log`, dying with this process.

    The parent-death signal fires when the *thread* that forked ends, so the caller must wait for the child
    on the same thread (both backends do).
    """
    return subprocess.Popen(command, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True, preexec_fn=functools.partial(_die_with_parent, os.getpid()))


def stop_process_group(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the child's whole process group (torchrun and its workers), SIGKILL after `grace` seconds."""
    for sig, timeout in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(command: list[str], env: Mapping[str, str], log_path: Path, header: str = "",
               on_start: Callable[[subprocess.Popen], None] | None = None, cwd: str | None = None) -> int:
    """Run `command` to the end with its output appended to `log_path`; returns the exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as handle:
        handle.write(f"\n{header}$ {shlex.join(command)}\n")
        handle.flush()
        process = spawn_child(command, env, handle, cwd)
        if on_start is not None:
            on_start(process)
        return process.wait()


class LocalBackend:
    """Runs on this machine, `jobs` at a time, each with its share of CPU threads (and of GPUs)."""

    chains_dependencies = False  # a run starts only once what it depends on has finished

    def __init__(self, jobs: int = 1, runner: Runner | None = None, cpus: int | None = None,
                 gpus: list[str] | None = None, command: Command = train_command):
        self.capacity = jobs
        self.runner = runner or self._run_subprocess
        self.command = command
        self.cpus = cpus or usable_cpus()
        self.gpus = visible_gpus() if gpus is None else gpus
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sweep-run")
        self._futures: dict[Future, tuple[str, int]] = {}  # -> (run name, job slot)
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def start(self, run: PlannedRun, resume: bool, log_path: Path, after: list[str]) -> None:
        slot = min(set(range(self.capacity)) - {s for _, s in self._futures.values()})
        env = job_environment(slot, self.capacity, self.cpus, self.gpus, os.environ)
        self._futures[self._pool.submit(self.runner, run, env, log_path, resume)] = (run.name, slot)

    def wait(self, timeout: float) -> list[Exit]:
        done, _ = wait(self._futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return [self._exit(future) for future in done]

    def _exit(self, future: Future) -> Exit:
        name, _ = self._futures.pop(future)
        try:
            return Exit(name, future.result())
        except Exception as err:  # a broken runner must not take the sweep down
            return Exit(name, -1, f"{type(err).__name__}: {err}")

    def stop(self) -> None:
        """Stop the runs still going (nothing keeps writing into a run directory) and the pool."""
        with self._lock:
            self._stopping = True
            children = list(self._children)
        threads = [threading.Thread(target=stop_process_group, args=(p,)) for p in children]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run_subprocess(self, run: PlannedRun, env: dict[str, str], log_path: Path, resume: bool) -> int:
        process: list[subprocess.Popen] = []

        def track(child: subprocess.Popen) -> None:
            process.append(child)
            with self._lock:
                self._children.add(child)
                stopping = self._stopping
            if stopping:  # started while the sweep was being stopped
                stop_process_group(child)

        try:
            return run_logged(self.command(run, resume), env, log_path, on_start=track)
        finally:
            with self._lock:
                self._children.difference_update(process)


def job_environment(slot: int, jobs: int, cpus: int, gpus: list[str], base: Mapping[str, str]) -> dict[str, str]:
    """Environment for the job in `slot`: its share of CPU threads, and of GPUs when there are any.

    Without a thread limit every job would start one thread per core and N jobs would oversubscribe the
    CPU N-fold (torch reads OMP_NUM_THREADS at start-up).
    """
    env = dict(base)
    threads = str(max(1, cpus // jobs))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")
    if gpus:
        per_job = max(1, len(gpus) // jobs)
        first = (slot * per_job) % len(gpus)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[first:first + per_job])
    return env


# A run's peak memory on CPU: MiniLM-L6 peaks at ~1.4 GiB RSS (docs/benchmarks.md); 4 GiB leaves room for a
# base-size model, so `--jobs` never defaults to more runs than the machine's memory holds.
MEMORY_PER_CPU_JOB = 4 * 2**30


def default_jobs(cpus: int, gpus: list[str], memory_bytes: int | None) -> int:
    """Runs at a time when `--jobs` is not given: one per GPU, else one single-thread run per core.

    On CPU, two 1-thread runs on 2 cores train 1.24x more samples/s together than one 2-thread run
    (docs/benchmarks.md, "2 threads"): small GEMMs scale 1.86x over 2 threads, but dropout's mask sampling
    and the Python/autograd overhead do not scale at all. Capped by memory (MEMORY_PER_CPU_JOB each).
    """
    if gpus:
        return len(gpus)
    by_memory = memory_bytes // MEMORY_PER_CPU_JOB if memory_bytes else cpus
    return max(1, min(cpus, by_memory))


def local_default_jobs() -> int:
    """`default_jobs` for this machine: its usable cores, visible GPUs and available memory."""
    return default_jobs(usable_cpus(), visible_gpus(), available_memory())


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]
