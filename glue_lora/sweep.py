"""`glue-lora sweep`: expand a sweep file into named runs and execute them, skipping finished ones.

A sweep file (YAML; paths in it are relative to the file):

    configs:                        # config files, run in this order within each grid point
      - ../minilm/lora/cola.yaml
      - ../minilm/full/cola.yaml
    grid:                           # dotted overrides; lists are crossed (Cartesian product), scalars fixed
      seed: [0, 1, 2]
      training.learning_rate: [3.0e-4, 1.0e-3]
    variants:                       # optional: each entry is crossed with the grid; lists *inside* one entry
      - {lora.r: [1, 8], lora.alpha: [2, 16]}     # are zipped element-wise, which ties values together
      - {lora.r: [1, 8], lora.alpha: 16}          # (here: alpha = 2r, then a fixed alpha); a variant's own
      - {configs: [../minilm/lora/cola.yaml], training.learning_rate: 2.0e-3}  # `configs` limits it to those
    output_root: runs/my-sweep      # relative to the current directory, like a config's output_dir

Each run is `python -m glue_lora.cli train CONFIG OVERRIDES name=NAME output_dir=ROOT/NAME` in its own
subprocess (a crash or a leak stays in that run), with a deterministic name built from the model, method,
task, config stem when it adds information, every sweep override and the seed, e.g.
`roberta-base--lora--rte--lr5e-4--r8--s0`. A run whose results.json says success is skipped; any other
existing run directory is resumed (`resume=true`). Runs whose config declares `init_from: other.yaml`
(MNLI-init) wait for that config's run with the same overrides, which the sweep adds when missing.

This module plans and keeps the books (names, grid, dependencies, skip-done, stale configs, per-run claims,
progress, status file, summary); where runs execute is a `Backend`: this machine (`sweep_local`) or a Ray
cluster (`sweep_ray`). A driver claims each run before starting it (`sweep_claims`), so two sweeps over one
output root, on one machine or several, never run the same run twice and never block each other's other runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from glue_lora.config import (RunConfig, config_dependencies, load_config, model_short_name, parse_override,
                              read_yaml_mapping)
from glue_lora.console import current_verbosity
from glue_lora.errors import UsageError, closest
from glue_lora.record import RESULTS_FILE, Malformed, load_record, write_json_atomic
from glue_lora.sweep_claims import Claims
from glue_lora.sweep_preflight import preflight
from glue_lora.sweep_ray import RESOURCE_KEYS, import_ray, ray_command, run_resources
from glue_lora.sweep_local import (Exit, LocalBackend, Runner, job_environment, local_default_jobs,  # noqa: F401 (API)
                                   visible_gpus)

log = logging.getLogger(__name__)

HELP = "run a grid of configs x overrides (seeds, lr, rank, ...) as separate runs, skipping finished ones"
SWEEP_KEYS = ("configs", "grid", "variants", "output_root", "description")
ONLY_CONFIGS = "configs"  # inside a variant: the configs it applies to (default: all of the sweep's)
STATUS_FILE = "sweep-status.json"
# Keys that never appear as a name tag: they have their own slot in the name or are set by the sweep.
UNTAGGED = {"seed", "method", "task", "model", "name", "output_dir", "init_from", "resume", "overwrite"}
# Short tags for the overrides sweeps vary most; others use their last dotted component.
TAGS = {"training.learning_rate": "lr", "lora.r": "r", "lora.alpha": "a", "lora.scaling": "",
        "global_batch_size": "bs", "training.num_train_epochs": "ep", "max_train_samples": "n",
        "lora.dropout": "drop", "training.weight_decay": "wd", "max_seq_length": "len",
        "training.train_sampling_strategy": ""}


# --- the sweep file -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file: what to run (configs x variants x grid) and where."""

    path: Path
    configs: tuple[Path, ...]
    grid: dict[str, list[Any]]
    variants: tuple[dict[str, Any], ...]
    output_root: Path
    description: str = ""


def load_sweep(path: str | os.PathLike, output_root: str | None = None) -> SweepSpec:
    """Read and check a sweep file; every problem is a one-line UsageError."""
    path = Path(path)
    data = read_yaml_mapping(path, "sweep file", "the shipped ones are in configs/sweeps/",
                             f"a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    for key in data:
        if key not in SWEEP_KEYS:
            raise UsageError(f"{path}: unknown key {key!r}{closest(key, SWEEP_KEYS)} (valid: {', '.join(SWEEP_KEYS)})")
    return SweepSpec(path=path, configs=_config_paths(path, data.get("configs")), grid=_grid(path, data.get("grid")),
                     variants=_variants(path, data.get("variants")),
                     output_root=Path(output_root or data.get("output_root") or Path("runs") / path.stem),
                     description=str(data.get("description") or ""))


def _config_paths(path: Path, configs: Any) -> tuple[Path, ...]:
    if not configs or not isinstance(configs, list) or not all(isinstance(c, str) for c in configs):
        raise UsageError(f"{path}: `configs` must be a non-empty list of config paths (relative to the sweep file)")
    out = []
    for entry in configs:
        found = (path.parent / entry)
        if not found.is_file():
            raise UsageError(f"{path}: config {entry} not found (looked for {found}); fix the path, "
                             "which is relative to the sweep file")
        out.append(Path(os.path.relpath(found.resolve())))
    return tuple(out)


def _grid(path: Path, grid: Any) -> dict[str, list[Any]]:
    if grid is None:
        return {}
    if not isinstance(grid, dict):
        raise UsageError(f"{path}: `grid` must map dotted keys to a value or a list of values (e.g. seed: [0, 1])")
    out = {}
    for key, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise UsageError(f"{path}: grid key {key} has an empty list; give at least one value or remove it")
        out[str(key)] = values
    return out


def _variants(path: Path, variants: Any) -> tuple[dict[str, Any], ...]:
    if variants is None:
        return ({},)
    if not isinstance(variants, list) or not all(isinstance(v, dict) and v for v in variants):
        raise UsageError(f"{path}: `variants` must be a list of non-empty mappings of dotted overrides")
    out: list[dict[str, Any]] = []
    for index, variant in enumerate(variants):
        only = _variant_configs(path, index, variant.get(ONLY_CONFIGS))
        variant = {k: v for k, v in variant.items() if k != ONLY_CONFIGS}
        lengths = {len(v) for v in variant.values() if isinstance(v, list)}
        if len(lengths) > 1:
            raise UsageError(f"{path}: variant {index + 1} zips lists of different lengths {sorted(lengths)}; "
                             "give every list in one variant the same length")
        count = lengths.pop() if lengths else 1
        expanded = [{k: (v[i] if isinstance(v, list) else v) for k, v in variant.items()} for i in range(count)]
        out += [{**one, ONLY_CONFIGS: only} if only else one for one in expanded]
    return tuple(out)


def _variant_configs(path: Path, index: int, configs: Any) -> tuple[Path, ...] | None:
    """A variant's own `configs:` (e.g. stage 2 of a grid: each task's best rate on that task only)."""
    if configs is None:
        return None
    if isinstance(configs, str):
        configs = [configs]
    try:
        return _config_paths(path, configs)
    except UsageError as err:
        raise UsageError(f"variant {index + 1}: {err}") from None


def override_sets(spec: SweepSpec, extra: Mapping[str, Any] = {}) -> Iterator[dict[str, Any]]:
    """Every grid point crossed with every variant (grid keys in file order, first key slowest)."""
    keys = list(spec.grid)
    for values in itertools.product(*spec.grid.values()):
        point = dict(zip(keys, values))
        for variant in spec.variants:
            clash = (set(point) | set(extra)) & set(variant)
            if clash:
                raise UsageError(f"{spec.path}: {', '.join(sorted(clash))} set both by a variant and by the grid "
                                 "or command line; set each key in one place")
            yield {**point, **variant, **extra}


# --- planning -----------------------------------------------------------------------------------------------

@dataclass
class PlannedRun:
    """One run of the sweep: a config file, the sweep's overrides for it, and its place on disk."""

    name: str
    config_path: Path
    overrides: dict[str, Any]
    run_dir: Path
    config: RunConfig
    depends_on: list[str] = field(default_factory=list)  #: names of runs that must succeed first

    def arguments(self, resume: bool = False) -> list[str]:
        """Command-line arguments after `train`: config, overrides, and what the sweep controls."""
        items = [f"{k}={_yaml_value(v)}" for k, v in self.overrides.items()]
        if self.depends_on:
            items.append(f"init_from={self.config.init_from}")
        items += [f"name={self.name}", f"output_dir={self.run_dir}"]
        return [str(self.config_path), *items, *(["resume=true"] if resume else [])]


def _yaml_value(value: Any) -> str:
    """Render an override value so that `parse_override` reads back the same value and type."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def plan_sweep(spec: SweepSpec, extra: Mapping[str, Any] = {}) -> list[PlannedRun]:
    """Expand, name, de-duplicate and order the runs; dependencies (MNLI-init) come before their dependents."""
    runs: dict[str, PlannedRun] = {}
    for overrides in override_sets(spec, extra):
        only = overrides.pop(ONLY_CONFIGS, None)
        for config_path in only or spec.configs:
            _add_run(runs, spec, config_path, overrides, ())
    return _topological(list(runs.values()))


def _add_run(runs: dict[str, PlannedRun], spec: SweepSpec, config_path: Path, overrides: dict[str, Any],
             chain: tuple[Path, ...]) -> PlannedRun:
    if config_path in chain:
        raise UsageError(f"init_from cycle: {' -> '.join(map(str, (*chain, config_path)))}; break the loop")
    config = load_config(config_path, [f"{k}={_yaml_value(v)}" for k, v in overrides.items()])
    _check_resources(config_path, config)
    name = run_name(config, config_path, overrides)
    planned = PlannedRun(name, config_path, dict(overrides), spec.output_root / name, config)
    existing = runs.get(name)
    if existing is not None:
        if _comparable(existing.config) != _comparable(config):
            raise UsageError(f"{existing.config_path} and {config_path} give different runs the same name {name}; "
                             "give the configs distinct file names or models")
        return existing  # the same run reached twice (e.g. two variants meeting at r=8, alpha=16)
    for dependency in config_dependencies(config):
        parent = _add_run(runs, spec, Path(os.path.relpath(dependency)), overrides, (*chain, config_path))
        planned.depends_on.append(parent.name)
        planned.config.init_from = str(parent.run_dir)  # the sweep's name for that run, not the default one
    runs[name] = planned
    return planned


def _check_resources(path: Path, config: RunConfig) -> None:
    unknown = set(config.resources) - set(RESOURCE_KEYS)
    bad = [k for k, v in config.resources.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0]
    if unknown or bad:
        raise UsageError(f"{path}: resources takes {' and '.join(RESOURCE_KEYS)} as numbers >= 0 "
                         f"(e.g. resources: {{gpus: 8}}), not {', '.join(sorted(unknown | set(bad)))}")


def _comparable(config: RunConfig) -> dict[str, Any]:
    data = config.to_dict()
    # init_from: set by the sweep; resources: where it runs, not what it computes
    for key in ("name", "output_dir", "resume", "overwrite", "init_from", "resources"):
        data.pop(key, None)
    return data


def run_name(config: RunConfig, config_path: Path, overrides: Mapping[str, Any]) -> str:
    """`<model>--<method>--<task>[--<config stem>]--<override tags>--s<seed>`, filesystem-safe.

    The config stem is kept only when it says more than the task (e.g. `alpha-r-sst2`), so the paper's
    `<model>/<method>/<task>.yaml` layout gives `roberta-base--lora--rte--s0`.
    """
    parts = [model_short_name(config.model), config.method, config.task]
    if config_path.stem not in (config.task, config.method):
        parts.append(config_path.stem)
    parts += [_tag(key, value) for key, value in overrides.items() if key not in UNTAGGED]
    parts.append(f"s{config.seed}")
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", "--".join(parts))


def _tag(key: str, value: Any) -> str:
    prefix = TAGS.get(key, key.split(".")[-1])
    return f"{prefix}{format_value(value)}".replace("/", "-")


def format_value(value: Any) -> str:
    """Short, exact text for a tag: 0.0003 -> 3e-4, 0.01 -> 1e-2, 1.5e-05 -> 1.5e-5, 16.0 -> 16, 0.5 -> 0.5."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    if 0.1 <= abs(value) < 1e6:
        return f"{value:g}"
    mantissa, exponent = f"{value:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _topological(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Stable order: each run as early as the file order allows, after everything it depends on."""
    by_name = {r.name: r for r in runs}
    ordered: list[PlannedRun] = []
    placed: set[str] = set()

    def place(run: PlannedRun) -> None:
        if run.name in placed:
            return
        for parent in run.depends_on:
            place(by_name[parent])
        placed.add(run.name)
        ordered.append(run)

    for run in runs:
        place(run)
    return ordered


# --- state on disk ------------------------------------------------------------------------------------------

def run_state(run_dir: Path) -> str:
    """'done' (results.json says success), 'resume' (something is there: interrupted, failed or a malformed
    record, which the trainer then refuses in one line) or 'new'."""
    found = load_record(run_dir)
    if isinstance(found, dict) and found["status"] == "success":
        return "done"
    return "resume" if found is not None or (run_dir / "checkpoints").is_dir() else "new"


def stale_keys(run: PlannedRun) -> list[str]:
    """Config keys where a finished run's recorded config differs from the plan (its config file was edited
    after it ran); such a run is still skipped, but the sweep says so."""
    found = load_record(run.run_dir)
    if not isinstance(found, dict):
        return []
    recorded = found.get("config") if isinstance(found.get("config"), dict) else {}
    planned = _comparable(run.config)
    recorded = {k: v for k, v in recorded.items() if k in planned}
    return sorted(k for k in planned if json.dumps(planned[k], default=str) != json.dumps(recorded.get(k), default=str))


# --- execution: the driver, backend-free ----------------------------------------------------------------

class Backend(Protocol):
    """Where runs execute (local processes, a Ray cluster). The driver plans, claims and records; a backend
    only starts runs, reports how they ended, and stops everything."""

    capacity: int  #: runs it takes at once (the driver starts no more; the ETA divides by it)
    chains_dependencies: bool  #: accepts a run whose dependencies are still going in it, and orders them itself

    def start(self, run: PlannedRun, resume: bool, log_path: Path, after: list[str]) -> None:
        """Start `run` (after the runs named in `after`, which this backend is running)."""

    def wait(self, timeout: float) -> list[Exit]:
        """Block up to `timeout` seconds; the runs that ended meanwhile."""

    def stop(self) -> None:
        """Stop every run still going, leaving each resumable; also called at the normal end."""


@dataclass
class Outcome:
    """What happened to one run in this invocation."""

    name: str
    status: str  #: skipped (already done), success, failed, blocked (a dependency failed)
    seconds: float = 0.0
    detail: str = ""


def execute(runs: list[PlannedRun], backend: Backend | None = None, *, jobs: int = 1, runner: Runner | None = None,
            log_root: Path | None = None, cpus: int | None = None, gpus: list[str] | None = None,
            claims: Claims | None = None) -> list[Outcome]:
    """Run everything not yet done on `backend` (default: local, `jobs` at a time), honouring dependencies and
    other drivers' claims; never stops at a failure. Ctrl-C or kill stops the runs, leaving them resumable."""
    backend = backend or LocalBackend(jobs, runner, cpus, gpus)
    driver = _Driver(runs, backend, claims or Claims(), log_root)
    try:
        driver.loop()
    finally:  # also on Ctrl-C: stop the runs before the claims on them go
        backend.stop()
        driver.claims.release_all()
    return [driver.outcomes[r.name] for r in runs]


class _Driver:
    """The sweep's bookkeeping: pending, running here, running under another driver's claim, finished."""

    POLL_SECONDS = 1.0  # the main thread wakes this often, so a signal (Ctrl-C, kill) is handled promptly

    def __init__(self, runs: list[PlannedRun], backend: Backend, claims: Claims, log_root: Path | None):
        self.backend, self.claims, self.log_root = backend, claims, log_root
        self.outcomes = {r.name: _skipped(r) for r in runs if run_state(r.run_dir) == "done"}
        self.pending = [r for r in runs if r.name not in self.outcomes]
        self.running: dict[str, tuple[PlannedRun, float]] = {}
        self.elsewhere: dict[str, PlannedRun] = {}  # claimed by another driver: wait for its end
        self.progress = Progress(len(self.pending), backend.capacity)
        self.started = time.time()
        # Datasets some finished run has tokenised into the shared on-disk cache. The first run of a dataset
        # writes that cache entry; a second process writing it at the same moment could corrupt it.
        self.warm = {_data_key(r) for r in runs if r.name in self.outcomes}
        if self.outcomes:
            print(f"sweep: {len(runs)} runs, {len(self.outcomes)} already done, {len(self.pending)} to run",
                  flush=True)

    def loop(self) -> None:
        while self.pending or self.running or self.elsewhere:
            started = self._start_ready()
            self._check_elsewhere()
            if self.running:
                for ended in self.backend.wait(self.POLL_SECONDS):
                    self._finish(ended)
            elif self.elsewhere:
                time.sleep(self.POLL_SECONDS)
            elif self.pending and not started:
                raise RuntimeError(f"sweep scheduler stuck on {[r.name for r in self.pending]}")

    def _start_ready(self) -> int:
        started = 0
        for run in list(self.pending):
            if self._blocked(run):
                self.pending.remove(run)
            elif len(self.running) < self.backend.capacity and self._ready(run):
                self.pending.remove(run)
                started += self._claim_and_start(run)
        return started

    def _claim_and_start(self, run: PlannedRun) -> int:
        holder = self.claims.acquire(run.run_dir)
        if holder is not None:
            log.info("%s is being run by another sweep (%s); waiting for it", run.name, holder.describe())
            self.elsewhere[run.name] = run
            return 0
        state = run_state(run.run_dir)
        if state == "done":  # finished by another sweep since we planned
            self.claims.release(run.run_dir)
            self._record(run, Outcome(run.name, "skipped", detail="finished by another sweep"))
            return 0
        log_path = (self.log_root or run.run_dir.parent / "_logs") / f"{run.name}.log"
        log.info("start %s%s (log: %s)", run.name, " [resume]" if state == "resume" else "", log_path)
        after = [d for d in run.depends_on if d in self.running]
        self.backend.start(run, state == "resume", log_path, after)
        self.running[run.name] = (run, time.time())
        return 1

    def _check_elsewhere(self) -> None:
        """A run another driver held is free again: take its outcome, or take it over when it was abandoned."""
        for name, run in list(self.elsewhere.items()):
            if self.claims.holder(run.run_dir) is not None:
                continue
            del self.elsewhere[name]
            record = _read_record(run.run_dir)
            if record.get("status") == "success":
                self._record(run, Outcome(name, "skipped", detail="finished by another sweep"))
            elif record.get("status") == "failed" and (record.get("finished") or 0) > self.started:
                self._record(run, Outcome(name, "failed", detail=f"in another sweep: {_recorded_error(run.run_dir)}"))
            else:  # its driver died: resume it here
                self.pending.insert(0, run)

    def _finish(self, ended: Exit) -> None:
        run, start = self.running.pop(ended.name)
        self.claims.release(run.run_dir)
        seconds = ended.seconds if ended.seconds is not None else time.time() - start
        if ended.blocked or any(self.outcomes[d].status in ("failed", "blocked") for d in run.depends_on
                                if d in self.outcomes):
            outcome = Outcome(run.name, "blocked", seconds, "a dependency did not finish")
        else:
            outcome = _finished(run, ended.code, ended.detail, seconds)
        self._record(run, outcome)

    def _record(self, run: PlannedRun, outcome: Outcome) -> None:
        self.outcomes[run.name] = outcome
        self.warm.add(_data_key(run))
        failed = sum(o.status in ("failed", "blocked") for o in self.outcomes.values())
        self.progress.report(run, outcome, len(self.running), failed)

    def _blocked(self, run: PlannedRun) -> bool:
        """Record the run as blocked when something it depends on failed (or was itself blocked)."""
        failed = [d for d in run.depends_on if d in self.outcomes and self.outcomes[d].status in ("failed", "blocked")]
        if failed:
            log.warning("%s: blocked, dependency %s did not finish", run.name, failed[0])
            self._record(run, Outcome(run.name, "blocked", detail=f"dependency {failed[0]} did not finish"))
        return bool(failed)

    def _ready(self, run: PlannedRun) -> bool:
        """Dependencies finished (or going in a backend that orders them), no first user of the same data going."""
        chains = self.backend.chains_dependencies
        if not all(d in self.outcomes or (chains and d in self.running) for d in run.depends_on):
            return False
        key = _data_key(run)
        return key in self.warm or not any(_data_key(other) == key for other, _ in self.running.values())


class Progress:
    """`[k/N] name: score, time; m running, f failed, ETA` as each run ends (ETA from the runs' durations)."""

    def __init__(self, total: int, slots: int):
        self.total, self.slots, self.done, self.durations = total, max(1, slots), 0, []

    def report(self, run: PlannedRun, outcome: Outcome, running: int, failed: int) -> None:
        self.done += 1
        if outcome.status in ("success", "failed") and outcome.seconds > 0:
            self.durations.append(outcome.seconds)
        if current_verbosity() >= 0:  # -q: the summary only
            print(f"[{self.done}/{self.total}] {run.name}: {self._result(run, outcome)}; {running} running, "
                  f"{failed} failed{self._eta()}", flush=True)

    @staticmethod
    def _result(run: PlannedRun, outcome: Outcome) -> str:
        took = f", {outcome.seconds:.0f} s" if outcome.seconds else ""
        if outcome.status != "success":
            return f"{outcome.status} ({outcome.detail[:120]}){took}" if outcome.detail else outcome.status + took
        record = _read_record(run.run_dir)
        key = record.get("primary_metric")
        score = ((record.get("best") or {}).get("metrics") or {}).get(key)
        return (f"{score:.4f} ({key}){took}" if isinstance(score, (int, float)) else f"success{took}")

    def _eta(self) -> str:
        left = self.total - self.done
        if not left or not self.durations:
            return ""
        seconds = sum(self.durations) / len(self.durations) * left / self.slots
        return f", ETA {seconds / 60:.0f} min" if seconds >= 120 else f", ETA {seconds:.0f} s"


def _data_key(run: PlannedRun) -> tuple:
    c = run.config
    return (c.task, c.data_dir, c.model, c.max_seq_length, c.pad_to_max_length, c.max_train_samples, c.max_eval_samples)


def _skipped(run: PlannedRun) -> Outcome:
    stale = stale_keys(run)
    if stale:
        log.warning("%s is done but was run with other values of %s; delete its directory to run it again",
                    run.name, ", ".join(stale))
    detail = "results.json says success" + (f"; stale: {', '.join(stale)}" if stale else "")
    return Outcome(run.name, "skipped", detail=detail)


def _finished(run: PlannedRun, code: int, detail: str, seconds: float) -> Outcome:
    detail = detail or f"exit status {code}"
    if code == 0 and run_state(run.run_dir) == "done":
        log.info("done %s in %.0f s", run.name, seconds)
        return Outcome(run.name, "success", seconds)
    error = _recorded_error(run.run_dir)
    log.error("FAILED %s (%s)%s", run.name, detail, f": {error}" if error else "")
    return Outcome(run.name, "failed", seconds, error or detail)


def _read_record(run_dir: Path) -> dict[str, Any]:
    """The record, or {} when there is none or it is malformed (`_recorded_error` says why)."""
    found = load_record(run_dir)
    return found if isinstance(found, dict) else {}


def _recorded_error(run_dir: Path) -> str:
    found = load_record(run_dir)
    if isinstance(found, Malformed):
        return f"{RESULTS_FILE} {found}"
    return str((found or {}).get("error") or "")[:300]


# --- command line -------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep YAML (see configs/sweeps/)")
    parser.add_argument("overrides", nargs="*",
                        help="extra dotted overrides for every run, right after SWEEP (they become name tags)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (name, state, command) and exit")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text",
                        help="--dry-run output: text, or jsonl (one run per line, for Slurm arrays and other schedulers)")
    parser.add_argument("--output-root", help="where run directories go (default: the sweep file's output_root)")
    parser.add_argument("--no-preflight", action="store_true",
                        help="skip loading each model's config and tokenizer and checking each task's data first")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: subprocesses on this machine (--jobs); ray: Ray tasks on a cluster "
                             "(docs/cluster.md)")
    parser.add_argument("--jobs", type=int,
                        help="local: runs at a time, each with cores/N threads (default: one per GPU; without GPUs "
                             "one 1-thread run per core, at most one per 4 GiB of memory)")
    parser.add_argument("--address", help="ray: the cluster (auto, or HOST:PORT; default: a running local one, "
                                          "else a new one on this machine)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: CPUs per run (default 1)")
    parser.add_argument("--gpus-per-run", type=float,
                        help="ray: GPUs per run; a fraction packs runs on one GPU, N > 1 runs torchrun with N "
                             "processes (default: 1 if the cluster has GPUs, else 0); a config's `resources` wins")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="ray: retries of a run whose node or worker died (it resumes); a failing run is never retried")


def main(args: argparse.Namespace) -> int:
    check_arguments(args)
    spec = load_sweep(args.sweep, args.output_root)
    extra = dict(parse_override(item) for item in args.overrides)
    runs = plan_sweep(spec, extra)
    if args.backend == "ray":
        import_ray()  # without Ray: one line on how to install it, before anything slow
    if not args.no_preflight:
        checked = preflight(runs)
        if current_verbosity() >= 0:
            print(checked, file=sys.stderr if args.format == "jsonl" else sys.stdout, flush=True)
    if args.dry_run:
        print_plan_jsonl(runs, args) if args.format == "jsonl" else print_plan(spec, runs)
        return 0
    started = time.time()
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the runs too, as Ctrl-C does
    try:
        outcomes = execute(runs, make_backend(args, spec.output_root))
    except KeyboardInterrupt:
        print("sweep stopped; run the same command again to continue (finished runs are skipped)", file=sys.stderr)
        return 130
    write_status(spec, runs, outcomes)
    return summarise(outcomes, time.time() - started)


def check_arguments(args: argparse.Namespace) -> None:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: give at least 1")
    if args.format != "text" and not args.dry_run:
        raise UsageError("--format jsonl prints the plan: add --dry-run")
    if args.backend == "local" and args.address:
        raise UsageError("--address is for --backend ray; add --backend ray, or drop --address to run here")
    if args.cpus_per_run <= 0 or (args.gpus_per_run or 0) < 0 or args.max_retries < 0:
        raise UsageError("--cpus-per-run must be > 0, --gpus-per-run and --max-retries >= 0")


def make_backend(args: argparse.Namespace, output_root: Path) -> Backend:
    if args.backend == "local":
        return LocalBackend(args.jobs or local_default_jobs())
    from glue_lora.sweep_ray import RayBackend

    backend = RayBackend(args.address, args.cpus_per_run, args.gpus_per_run, args.max_retries)
    try:
        backend.check_shared_tree(output_root)  # one clear line, not 80 failed runs
    except BaseException:
        backend.stop()
        raise
    return backend


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def print_plan(spec: SweepSpec, runs: list[PlannedRun]) -> None:
    states = {r.name: run_state(r.run_dir) for r in runs}
    for index, run in enumerate(runs, 1):
        after = f"  (after {', '.join(run.depends_on)})" if run.depends_on else ""
        stale = stale_keys(run) if states[run.name] == "done" else []
        after += f"  [done with other {', '.join(stale)}: delete to rerun]" if stale else ""
        resume = states[run.name] == "resume"
        print(f"{index:>4} {states[run.name]:<6} {run.name}{after}")
        print(f"       python -m glue_lora.cli train {' '.join(run.arguments(resume))}")
    counts = {s: list(states.values()).count(s) for s in ("done", "resume", "new")}
    print(f"{len(runs)} runs under {spec.output_root}: {counts['done']} done, {counts['resume']} to resume, "
          f"{counts['new']} new")


def print_plan_jsonl(runs: list[PlannedRun], args: argparse.Namespace) -> None:
    """One JSON object per run, in dependency order: what a scheduler needs to run it itself."""
    for run in runs:
        need = run_resources(run, args.cpus_per_run, args.gpus_per_run or 0.0)
        argv = ray_command(run, need["gpus"], python=None)
        print(json.dumps({"name": run.name, "state": run_state(run.run_dir), "config": str(run.config_path),
                          "overrides": run.overrides, "dependencies": run.depends_on, "resources": need,
                          "run_dir": str(run.run_dir), "command": shlex.join(argv), "argv": argv}, default=str))


def write_status(spec: SweepSpec, runs: list[PlannedRun], outcomes: list[Outcome]) -> None:
    """`<output_root>/sweep-status.json`: this invocation's outcome per run (the report reads results.json)."""

    write_json_atomic(spec.output_root / STATUS_FILE, {
        "sweep": str(spec.path), "finished": time.time(),
        "runs": [{"name": r.name, "status": o.status, "seconds": round(o.seconds, 1), "detail": o.detail,
                  "command": ["python", "-m", "glue_lora.cli", "train", *r.arguments()]}
                 for r, o in zip(runs, outcomes)]})


def summarise(outcomes: list[Outcome], seconds: float) -> int:
    """Print one line per problem and a count; exit status 1 when any run failed or was blocked."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("success", "skipped", "failed", "blocked")}
    for outcome in outcomes:
        if outcome.status in ("failed", "blocked"):
            print(f"{outcome.status.upper()}: {outcome.name}: {outcome.detail}")
    print(f"sweep: {counts['success']} ran, {counts['skipped']} already done, {counts['failed']} failed, "
          f"{counts['blocked']} blocked, in {seconds:.0f} s")
    return 1 if counts["failed"] or counts["blocked"] else 0
