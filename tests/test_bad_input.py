"""Every bad input ends in exactly one line on stderr and exit status 2: no traceback, no model loaded, and
an earlier record left byte for byte as it was.

Most cases run `glue-lora train` in this process (fast) with model loading made to fail the test if reached;
a few run as real processes to prove the single line on the real stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from glue_lora import lease, modeling
from glue_lora.cli import main as cli_main
from glue_lora.config import load_config
from tests.conftest import REPO


class Ctx:
    """One case's world: a config file, a data root (the real GLUE copy until a case edits it), a run dir."""

    def __init__(self, tmp: Path, glue_dir: Path, model: str):
        self.tmp, self.model, self.data_root = tmp, model, glue_dir
        self.run_dir = tmp / "run"
        self.protected: dict[Path, bytes] = {}
        self.cleanups: list[Callable[[], None]] = []

    def overrides(self, task: str = "rte") -> list[str]:
        return [f"task={task}", f"model={self.model}", f"data_dir={self.data_root}", f"output_dir={self.run_dir}",
                "max_train_samples=16", "max_eval_samples=16", "training.learning_rate=1e-3"]

    def args(self, *extra: str, task: str = "rte", config: bytes = b"{}\n") -> list[str]:
        path = self.tmp / "config.yaml"
        path.write_bytes(config)
        return [str(path), *self.overrides(task), *extra]

    def edit(self, task_dir: str, name: str, change: Callable[[bytes], bytes]) -> None:
        """Change one data file in a private copy of the data."""
        if self.data_root != self.tmp / "glue":
            (self.tmp / "glue").mkdir()
            shutil.copytree(self.data_root / task_dir, self.tmp / "glue" / task_dir)
            self.data_root = self.tmp / "glue"
        path = self.data_root / task_dir / name
        path.write_bytes(change(path.read_bytes()))

    def record(self, content: bytes, status_config: str | None = "rte") -> None:
        """An earlier run's results.json (and its config.yaml), which the failing command must not touch."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "results.json").write_bytes(content)
        if status_config:
            saved = load_config(None, self.overrides(status_config)).to_dict()
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
        for path in (self.run_dir / "results.json", self.run_dir / "config.yaml"):
            if path.exists():
                self.protected[path] = path.read_bytes()

    def file(self, name: str) -> Path:
        path = self.tmp / name
        path.write_text("not a directory\n")
        return path


def lines(path_text: bytes, line: int, new: bytes) -> bytes:
    rows = path_text.split(b"\n")
    rows[line - 1] = new
    return b"\n".join(rows)


def with_row(text: bytes, line: int, change: Callable[[list[bytes]], list[bytes]]) -> bytes:
    rows = text.split(b"\n")
    rows[line - 1] = b"\t".join(change(rows[line - 1].split(b"\t")))
    return b"\n".join(rows)


def read_only_dir(ctx: Ctx) -> list[str]:
    folder = ctx.tmp / "ro"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    if mounted:
        ctx.cleanups.append(lambda: subprocess.run(["umount", str(folder)], check=True))
    else:
        folder.chmod(0o555)  # not root: permissions are enough
        ctx.cleanups.append(lambda: folder.chmod(0o755))
    return ctx.args(f"output_dir={folder / 'run'}")


def busy(ctx: Ctx) -> list[str]:
    held = lease.acquire(ctx.run_dir, "another trainer")
    ctx.cleanups.append(held.release)
    return ctx.args()


BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    b"%c: &%c [%s]\n" % (ord("a") + i, ord("a") + i, b", ".join([b"*%c" % (ord("a") + i - 1)] * 9)) for i in range(1, 9))
RECORD = b'{"status": "success", "task": "rte", "evals": [{"step": 4, "metrics": {"validation/accuracy": 0.6}}]}\n'
FAILED = RECORD.replace(b'"success"', b'"failed"')

CASES: dict[str, tuple[Callable[[Ctx], list[str]], str]] = {
    # config files and overrides
    "duplicate YAML key": (lambda c: c.args(config=b"training:\n  learning_rate: 1e-3\n  learning_rate: 2e-3\n"),
                           "line 3: duplicate key 'learning_rate'"),
    "YAML alias": (lambda c: c.args(config=b"notes: &n hello\nname: *n\n"), "alias *n is not supported"),
    "YAML alias bomb": (lambda c: c.args(config=BOMB), "alias *a is not supported"),
    "config not UTF-8": (lambda c: c.args(config=b"notes: caf\xe9\n"), "not UTF-8 (byte 10)"),
    "config not YAML": (lambda c: c.args(config=b"training: [1, 2\n"), "not valid YAML"),
    "config a list": (lambda c: c.args(config=b"- 1\n- 2\n"), "a config must be a mapping"),
    "duplicate key in an override": (lambda c: c.args("training={logging_steps: 1, logging_steps: 2}"),
                                     "duplicate key 'logging_steps'"),
    "override without =": (lambda c: c.args("seed"), "is not key=value"),
    "negative learning rate": (lambda c: c.args("training.learning_rate=-1e-3"), "learning_rate=-0.001 must be positive"),
    "zero learning rate": (lambda c: c.args("training.learning_rate=0"), "learning_rate=0 must be positive"),
    "NaN learning rate": (lambda c: c.args("training.learning_rate=.nan"), "learning_rate=nan must be a finite number"),
    "infinite learning rate": (lambda c: c.args("training.learning_rate=.inf"), "learning_rate=inf must be a finite"),
    "overflowing learning rate": (lambda c: c.args("training.learning_rate=1e999"), "learning_rate=inf must be a finite"),
    "learning rate not a number": (lambda c: c.args("training.learning_rate=fast"), "should be float"),
    "NaN epochs": (lambda c: c.args("training.num_train_epochs=.nan"), "num_train_epochs=nan must be a finite"),
    "rank zero": (lambda c: c.args("lora.r=0"), "lora.r=0 must be positive"),
    "dropout above 1": (lambda c: c.args("lora.dropout=1.5"), "lora.dropout=1.5 must be in [0, 1)"),
    "unknown key": (lambda c: c.args("lora.rank=4"), "unknown key lora.rank (did you mean: lora.r?)"),
    "resume and overwrite": (lambda c: c.args("resume=true", "overwrite=true"), "contradict each other"),
    "zero batch": (lambda c: c.args("global_batch_size=0"), "global_batch_size=0 must be positive"),
    "sequence longer than the model": (lambda c: c.args("max_seq_length=1000"), "max_seq_length=1000 exceeds what"),
    "init_from config missing": (lambda c: c.args("init_from=/nowhere/mnli.yaml"), "init_from: config file"),
    "init_from run unfinished": (lambda c: c.args(f"init_from={c.tmp}"), "holds no run"),
    "unknown task": (lambda c: c.args(task="rtee"), "unknown task 'rtee'"),
    # the output folder
    "output_dir is a file": (lambda c: c.args(f"output_dir={c.file('f')}"), "is a file, not a directory"),
    "output_dir under a file": (lambda c: c.args(f"output_dir={c.file('f')}/run"), "is a file, not a directory"),
    "output_dir read-only": (read_only_dir, "is not writable"),
    # data files
    "train not UTF-8": (lambda c: (c.edit("RTE", "train.tsv", lambda t: lines(t, 5, b"5\tna\xefve\tx\tentailment")),
                                   c.args())[1], "RTE/train.tsv:5: not UTF-8 (byte 0xef)"),
    "train empty": (lambda c: (c.edit("RTE", "train.tsv", lambda t: b""), c.args())[1], "train.tsv: empty file"),
    "train header only": (lambda c: (c.edit("RTE", "train.tsv", lambda t: t.split(b"\n")[0] + b"\n"), c.args())[1],
                          "train.tsv: no data rows after the header"),
    "header column renamed": (lambda c: (c.edit("RTE", "train.tsv", lambda t: t.replace(b"\tlabel", b"\tgold", 1)),
                                         c.args())[1], "train.tsv:1: header lacks column(s) 'label'"),
    "row with an extra field": (lambda c: (c.edit("RTE", "train.tsv", lambda t: with_row(t, 3, lambda r: r + [b"x"])),
                                           c.args())[1], "train.tsv:3: 5 fields, expected 4"),
    "row missing a field": (lambda c: (c.edit("RTE", "train.tsv", lambda t: with_row(t, 4, lambda r: r[:2] + r[3:])),
                                       c.args())[1], "train.tsv:4: 3 fields, expected 4"),
    "unknown label": (lambda c: (c.edit("RTE", "train.tsv", lambda t: with_row(t, 2, lambda r: r[:3] + [b"maybe"])),
                                 c.args())[1], "train.tsv:2: label 'maybe' is not one of entailment, not_entailment"),
    "unknown label in dev": (lambda c: (c.edit("RTE", "dev.tsv", lambda t: with_row(t, 9, lambda r: r[:3] + [b"2"])),
                                        c.args())[1], "dev.tsv:9: label '2' is not one of"),
    "STS-B score not a number": (lambda c: (c.edit("STS-B", "train.tsv", lambda t: with_row(t, 6, lambda r: r[:-1] + [b"high"])),
                                            c.args(task="stsb"))[1], "train.tsv:6: score 'high' is not a number"),
    "STS-B score NaN": (lambda c: (c.edit("STS-B", "dev.tsv", lambda t: with_row(t, 2, lambda r: r[:-1] + [b"nan"])),
                                   c.args(task="stsb"))[1], "dev.tsv:2: score 'nan' is not a number"),
    "STS-B header missing": (lambda c: (c.edit("STS-B", "train.tsv", lambda t: t.split(b"\n", 1)[1]),
                                        c.args(task="stsb"))[1], "train.tsv:1: the first row looks like data"),
    "CoLA row short (no header)": (lambda c: (c.edit("CoLA", "train.tsv", lambda t: with_row(t, 7, lambda r: r[:3])),
                                              c.args(task="cola"))[1], "train.tsv:7: 3 fields, expected 4 (as the first row)"),
    "CoLA label out of range": (lambda c: (c.edit("CoLA", "dev.tsv", lambda t: with_row(t, 3, lambda r: [r[0], b"7", *r[2:]])),
                                           c.args(task="cola"))[1], "dev.tsv:3: label '7'"),
    "dev file missing": (lambda c: (c.edit("RTE", "dev.tsv", lambda t: t), (c.data_root / "RTE" / "dev.tsv").unlink(),
                                    c.args())[2], "lacks dev.tsv (validation)"),
    "data_dir missing": (lambda c: c.args(f"data_dir={c.tmp / 'nowhere'}"), "does not exist or is not a directory"),
    "train only blank lines": (lambda c: (c.edit("RTE", "train.tsv", lambda t: b"\n\n \n"), c.args())[1],
                               "train.tsv: empty file"),
    # an earlier run in the output folder
    "record is a list": (lambda c: (c.record(b"[1, 2]\n"), c.args())[1], "is malformed: not a JSON object"),
    "record not UTF-8": (lambda c: (c.record(b'{"status": "\xff"}'), c.args())[1], "is malformed: not UTF-8"),
    "record without status": (lambda c: (c.record(b'{"task": "rte"}'), c.args("resume=true"))[1],
                              "is malformed: no status key"),
    "finished run rerun": (lambda c: (c.record(RECORD), c.args())[1], "already holds a finished run"),
    "finished run resumed with another lr": (lambda c: (c.record(RECORD), c.args("resume=true", "training.learning_rate=2e-3"))[1],
                                             "holds a finished run with other training.learning_rate (0.001 -> 0.002)"),
    "failed run resumed as another task": (lambda c: (c.record(FAILED), c.args("resume=true", task="sst2"))[1],
                                           "holds an unfinished run with other task ('rte' -> 'sst2')"),
    "failed run rerun without resume": (lambda c: (c.record(FAILED), c.args())[1], "holds an interrupted run; pass resume=true"),
    "run dir in use": (busy, f"is in use by pid {os.getpid()}"),
}


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")
    monkeypatch.setattr(modeling, "load_model", refuse)  # the pipeline imports them from here when it builds
    monkeypatch.setattr(modeling, "load_tokenizer", refuse)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_before_any_model_loads(case, tiny_roberta, glue_dir, tmp_path, capsys, no_model_loads):
    build, message = CASES[case]
    ctx = Ctx(tmp_path, glue_dir, tiny_roberta)
    try:
        argv = build(ctx)
        capsys.readouterr()
        code = cli_main(["train", *argv])
        err = capsys.readouterr().err
    finally:
        for cleanup in reversed(ctx.cleanups):
            cleanup()
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err, err
    for path, content in ctx.protected.items():
        assert path.read_bytes() == content, f"{path} changed"
    if ctx.protected:
        assert sorted(p.name for p in ctx.run_dir.iterdir() if not p.name.startswith(".")) == \
            sorted(p.name for p in ctx.protected), "the failed command left files in the earlier run's folder"


@pytest.mark.parametrize("case", ["train not UTF-8"])
def test_bad_input_in_a_real_process_prints_exactly_one_line(case, tiny_roberta, glue_dir, tmp_path):
    build, message = CASES[case]
    argv = build(Ctx(tmp_path, glue_dir, tiny_roberta))
    result = subprocess.run([sys.executable, str(REPO / "run_glue.py"), *argv], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
