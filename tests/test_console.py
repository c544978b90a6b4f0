"""What people see: a progress bar on a terminal, one line per logging step in a pipe, no library noise,
a fast `--help`, `--version`, `--print-config` and shipped config names."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from glue_lora import cli, console
from glue_lora.progress import duration, eval_text

REPO = Path(__file__).resolve().parent.parent
STEPS, LOGGING_STEPS = 4, 2


def _demo_command(glue_dir: Path, run_dir: Path) -> list[str]:
    """The demo config cut to 4 optimizer steps on 64 examples: the real user path, in seconds."""
    return [sys.executable, "run_glue.py", "configs/demo.yaml", f"data_dir={glue_dir}", "max_train_samples=64",
            "max_eval_samples=32", "global_batch_size=16", f"training.max_steps={STEPS}",
            f"training.logging_steps={LOGGING_STEPS}", f"output_dir={run_dir}"]


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.pop(console.VERBOSITY_ENV, None)
    return {**env, "PYTHONPATH": str(REPO), "GLUE_LORA_CACHE": str(tmp_path / "cache"),
            "HF_DATASETS_CACHE": str(tmp_path / "hf"), "TERM": "xterm", "OMP_NUM_THREADS": "1"}


def _read_pty(master: int, proc: subprocess.Popen, timeout: float) -> bytes:
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks)


def test_terminal_run_shows_a_progress_bar(tmp_path, glue_dir):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(_demo_command(glue_dir, tmp_path / "run"), cwd=REPO, env=_environment(tmp_path),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        text = _read_pty(master, proc, timeout=300).decode(errors="replace")
        assert proc.wait(timeout=60) == 0, text[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    # tqdm's bar: steps done/total, rate and the postfix with epoch and loss, redrawn in place with \r
    assert re.search(rf"train: +100%\|.+\| {STEPS}/{STEPS} \[\d\d:\d\d<00:00, +[\d.]+ ?(step/s|s/step), "
                     r"epoch=[\d.]+, loss=[\d.]+\]", text), text[-3000:]
    assert "\r" in text
    assert not re.search(r"^step \d+/\d+ \(epoch", text, re.M), "a terminal gets the bar, not log lines"
    assert re.search(r"^best validation/accuracy = [\d.]+ \(step 4", text, re.M)


def test_piped_run_prints_one_line_per_logging_step_and_no_noise(tmp_path, glue_dir):
    proc = subprocess.run(_demo_command(glue_dir, tmp_path / "run"), cwd=REPO, env=_environment(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    lines = re.findall(r"^step (\d+)/(\d+) \(epoch [\d.]+\): loss [\d.]+, lr [\d.e-]+; \d+ s, ETA \d+ s$", out, re.M)
    assert lines == [(str(step), str(STEPS)) for step in range(LOGGING_STEPS, STEPS + 1, LOGGING_STEPS)], out
    assert re.search(r"^eval step 4/4 \(epoch [\d.]+\): validation_loss [\d.]+, validation_accuracy [\d.]+$", out, re.M)
    assert "\x1b[" not in out and "\r" not in out, "no colour codes or bar redraws in a pipe"
    for noise in ("LOAD REPORT", "FutureWarning", "Saving the dataset", "tokenising", "Loading weights",
                  "{'loss'", "'0.", "config:\n", "INFO"):
        assert noise not in out, f"{noise!r} in piped output:\n{out}"
    assert out.strip().splitlines()[-1].startswith("best validation/accuracy = ")
    assert len(out.strip().splitlines()) <= 10, out


def test_help_and_version_load_no_heavy_library():
    """`glue-lora --help` (and every subcommand's) must not pay for torch/transformers: it stays well under 1 s."""
    commands = [[], *([name] for name in [*cli.COMMANDS, *cli.TOOL_MODULES])]
    script = textwrap.dedent(f"""
        import contextlib, io, sys, time
        start = time.perf_counter()
        from glue_lora.cli import main
        for command in {commands!r}:
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
                main([*command, "--help"])
            assert "usage: glue-lora" in out.getvalue(), command
            heavy = sorted({{"torch", "transformers", "datasets", "peft"}} & set(sys.modules))
            assert not heavy, f"glue-lora {{' '.join(command)}} --help imported {{heavy}}"
        print(f"{{time.perf_counter() - start:.2f}}")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_version(capsys):
    from glue_lora import __version__

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"glue-lora {__version__}"


def test_top_level_help_lists_every_tool_without_importing_it(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in [*cli.COMMANDS, *cli.TOOL_MODULES]:
        assert re.search(rf"^ +{name} +\S", out, re.M), f"{name} missing from --help:\n{out}"


def test_every_argument_has_help_text():
    parser = cli.build_parser("*")
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"glue-lora {name}: {action.dest} has no help text"


def test_print_config_resolves_a_shipped_config_by_name(capsys):
    assert cli.main(["train", "roberta-base/lora/rte", "--print-config", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^task: rte$", out, re.M) and re.search(r"^seed: 3$", out, re.M)
    init = re.search(r"^init_from: (\S+)$", out, re.M).group(1)
    assert Path(init).is_file() and init.endswith("roberta-base/lora/mnli.yaml")  # relative to the config file


def test_print_config_reports_trainer_option_errors_before_any_model(capsys):
    assert cli.main(["train", "configs/demo.yaml", "--print-config", "training.learning_rate=fast"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.learning_rate='fast' should be float" in err


def test_unknown_config_name_is_one_line(capsys):
    assert cli.main(["train", "roberta-base/lora/nosuchtask"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "glue-lora configs" in err


def test_verbosity_flags_on_every_subcommand():
    for command in (["train", "x.yaml"], ["data", "rte"], ["configs"], ["report", "runs"]):
        parser = cli.build_parser(command[0])
        assert console.verbosity_from(parser.parse_args([*command, "-q"])) == -1
        assert console.verbosity_from(parser.parse_args(["-q", *command])) == -1
    parser = cli.build_parser("train")
    assert console.verbosity_from(parser.parse_args(["-v", "train", "x.yaml"])) == 1
    assert console.verbosity_from(parser.parse_args(["train", "x.yaml", "-v"])) == 1
    assert console.verbosity_from(parser.parse_args(["train", "x.yaml"])) == 0


def test_log_lines_are_plain(monkeypatch):
    monkeypatch.setenv(console.VERBOSITY_ENV, "0")
    record = logging.LogRecord("glue_lora.train", logging.INFO, __file__, 1, "global batch %d", (32,), None)
    assert re.fullmatch(r"\d\d:\d\d:\d\d global batch 32", console.PlainFormatter().format(record))
    record.levelno, record.levelname = logging.WARNING, "WARNING"
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING: global batch 32", console.PlainFormatter().format(record))


def test_numbers_print_as_numbers():
    assert console.number(0.853211) == "0.8532"
    assert console.number(3e-05) == "3e-05"
    assert console.number(1234567) == "1,234,567"
    assert eval_text({"eval_validation_accuracy": 0.5, "eval_validation_runtime": 1.2, "epoch": 1.0}) == \
        "validation_accuracy 0.5"
    assert [duration(s) for s in (12, 600, 7200)] == ["12 s", "10 min", "2.0 h"]
