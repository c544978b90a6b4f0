"""Console output for people: one verbosity switch, library noise hidden unless asked for, no colour codes in logs.

Verbosity: -1 quiet (`-q`: warnings, errors and the result only), 0 normal, 1 verbose (`-v`: the resolved
config, library load reports, dataset progress bars and known deprecation warnings too).
Library switches are environment variables, so they reach `datasets`/`transformers` before those are
imported, and every child process (sweep runs, `accelerate launch` workers) inherits them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import TextIO

VERBOSITY_ENV = "GLUE_LORA_VERBOSITY"
# Warnings from libraries about their own internals that a user of the harness can do nothing about.
KNOWN_WARNINGS = (
    r".*is_gradient_checkpointing.*is deprecated",
    r".*torch\.utils\._pytree\._register_pytree_node.* is deprecated",
    r".*`resume_download` is deprecated",
)
# Set (unless the user already has) when not verbose: library bars and info chatter that show nothing useful.
QUIET_LIBRARY_ENV = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # tokenising / "Saving the dataset" bars (cached anyway)
    "TRANSFORMERS_VERBOSITY": "error",  # the model load report (newly initialised head: expected)
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # the fork warning tokenizers prints once per DataLoader worker
}


def add_verbosity_arguments(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """-q/-v on a (sub)command; below the top level a missing flag leaves the top level's value alone."""
    default = 0 if top_level else argparse.SUPPRESS
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="show more: the resolved config, library load reports and progress bars")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS if not top_level else False,
                       help="show only warnings, errors and the result")


def verbosity_from(args: argparse.Namespace) -> int:
    return -1 if getattr(args, "quiet", False) else min(int(getattr(args, "verbose", 0) or 0), 2)


def current_verbosity() -> int:
    """The verbosity chosen on the command line (inherited by child processes); 0 when none was."""
    try:
        return int(os.environ.get(VERBOSITY_ENV, "0"))
    except ValueError:
        return 0


def configure(verbosity: int) -> None:
    """Set up our log format and level, and silence library noise unless verbose. Call once, early."""
    os.environ[VERBOSITY_ENV] = str(verbosity)
    if verbosity <= 0:
        for key, value in QUIET_LIBRARY_ENV.items():
            os.environ.setdefault(key, value)
        for pattern in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PlainFormatter())
    ours = logging.getLogger("glue_lora")
    ours.handlers[:] = [handler]
    ours.setLevel(level)  # still propagates: nothing of ours configures the root logger, pytest's caplog reads it
    for noisy in ("httpx", "huggingface_hub", "datasets", "filelock", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbosity > 0 else logging.WARNING)


def quiet_libraries() -> None:
    """Apply the quiet settings to libraries already imported (env variables only reach later imports)."""
    if current_verbosity() > 0:
        return
    if "datasets" in sys.modules:  # imported before configure() ran (a test, a notebook): the env var came late
        sys.modules["datasets"].disable_progress_bars()
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars: the weights load in seconds


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty()) and os.environ.get("TERM") != "dumb"


class PlainFormatter(logging.Formatter):
    """`12:03:04 message` for information, `12:03:04 WARNING: message` otherwise; no colour, no logger names."""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        self._style._fmt = ("%(asctime)s %(message)s" if record.levelno == logging.INFO
                            else "%(asctime)s %(levelname)s: %(message)s")
        return super().format(record)


def number(value: object, digits: int = 4) -> str:
    """A metric or setting as people read it: 0.8532, 3e-05, 1,234 (never a quoted string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{round(value, digits):g}"
