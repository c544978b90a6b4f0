"""Sweep pre-flight: before any run starts, each distinct model loads (config and tokenizer only) and each
task's data is there and readable, so an unreachable model stops the sweep at once with one line instead of
failing its runs one by one (measured before this check: a dry run said "80 new", the real run then failed
13 runs in 226 s with the same Hub error)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glue_lora.errors import UsageError

if TYPE_CHECKING:
    from glue_lora.sweep import PlannedRun


def preflight(runs: list[PlannedRun]) -> str:
    """Check every distinct model and data source of `runs`; one-line UsageError on the first problem,
    else a one-line summary of what was checked."""
    models = list(dict.fromkeys(r.config.model for r in runs))
    sources = list(dict.fromkeys((r.config.task, r.config.data_dir) for r in runs))
    for model in models:
        check_model(model)
    for task, data_dir in sources:
        check_data(task, data_dir)
    return f"pre-flight: {len(models)} model(s) load, data of {len(sources)} task source(s) readable"


def check_model(model: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from glue_lora.modeling import resolve_model_path

    path = resolve_model_path(model)  # a missing package or directory, or an unreachable Hub: one line
    try:
        AutoConfig.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"sweep pre-flight: cannot load model {model!r} ({first[:200]}); fix `model:` in the "
                         "sweep's configs before any run starts") from err


def check_data(task_name: str, data_dir: str | None) -> None:
    from glue_lora.data import locate, require_training_splits
    from glue_lora.errors import require_hub
    from glue_lora.tasks import get_task

    task = get_task(task_name)
    if data_dir is None:
        require_hub(f"task {task.name} (no data_dir)", "set data_dir to a local GLUE copy")
        return
    require_training_splits(task, data_dir)
    kind, folder = locate(task, data_dir)
    if kind == "tsv":
        path = folder / task.tsv[task.train_split].file
        try:
            with path.open(encoding="utf-8") as handle:
                handle.readline()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"sweep pre-flight: cannot read {path} ({err}); fix its permissions or data_dir") from err
