"""Experiment trackers (`training.report_to`) and the Hub (`training.push_to_hub`), checked before any model loads.

Trainer's own integrations do the logging. The harness adds what a run needs around them: each run's name
as the tracker's run name, its logs in `<run_dir>/logs/` (TensorBoard event files; wandb's local files),
the final results as summary values, and one line naming the extra to install (or the Hub problem) instead
of a traceback halfway through loading.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from glue_lora.errors import UsageError

# report_to name -> (module the integration imports, glue-lora extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow"), "trackio": ("trackio", "trackio")}
LOGS_DIR = "logs"


def requested(report_to: Any) -> list[str]:
    """`training.report_to` as a list of integration names ("none" and unset: none)."""
    if report_to in (None, "none", [], ["none"]):
        return []
    return [report_to] if isinstance(report_to, str) else list(report_to)


def check_trackers(report_to: Any) -> None:
    """One line per missing tracker package, naming the extra that installs it."""
    missing = [name for name in requested(report_to) if name in TRACKERS and not installed(TRACKERS[name][0])]
    if missing:
        extras = ",".join(TRACKERS[name][1] for name in missing)
        raise UsageError(f"training.report_to={','.join(missing)} needs {', '.join(TRACKERS[n][0] for n in missing)}: "
                         f"pip install 'glue-lora[{extras}]' (or remove report_to)")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_hub(push_to_hub: bool, hub_model_id: str | None) -> None:
    """push_to_hub needs the Hub and a token: find out now, in one line, not after training."""
    if not push_to_hub:
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import LocalTokenNotFoundError

    fix = "log in with `hf auth login`, or unset training.push_to_hub"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise UsageError("training.push_to_hub=true but HF_HUB_OFFLINE is set; unset one of them")
    try:
        HfApi().whoami()
    except LocalTokenNotFoundError as err:
        raise UsageError(f"training.push_to_hub=true needs a Hugging Face token; {fix}") from err
    except Exception as err:  # offline, DNS, proxy, 401: all mean the push would fail after training
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise UsageError(f"training.push_to_hub=true but the Hugging Face Hub is not reachable ({reason}); "
                         f"check the network, or {fix}") from err


def tracker_defaults(run_name: str) -> dict[str, Any]:
    """TrainingArguments defaults: trackers name the run as the harness does."""
    return {"run_name": run_name}


def point_logs(trainer, run_dir: Path) -> None:
    """Send tracker files to `<run_dir>/logs/` (TensorBoard events; wandb's local folder unless WANDB_DIR)."""
    from transformers.integrations import TensorBoardCallback

    logs = run_dir / LOGS_DIR
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
            callback.logging_dir = str(logs)
    if "wandb" in requested(trainer.args.report_to):
        logs.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_DIR", str(logs))


def summary_values(record: dict[str, Any]) -> dict[str, float]:
    """`best/<split>/<metric>` and `final/...` from the results record, plus the train loss and time."""
    values: dict[str, float] = {}
    for which in ("best", "final"):
        for key, value in ((record.get(which) or {}).get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                values[f"{which}/{key}"] = float(value)
    if isinstance(record.get("train_loss"), (int, float)):
        values["train_loss"] = float(record["train_loss"])
    seconds = (record.get("timing") or {}).get("train_seconds")
    if isinstance(seconds, (int, float)):
        values["train_seconds"] = float(seconds)
    return values


def log_summary(report_to: Any, run_dir: Path, record: dict[str, Any], step: int) -> None:
    """The final results.json numbers as summary values in every tracker that has a summary."""
    names, values = requested(report_to), summary_values(record)
    if not values:
        return
    if "tensorboard" in names:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(run_dir / LOGS_DIR)
        with SummaryWriter(log_dir=log_dir) as writer:
            for key, value in values.items():
                writer.add_scalar(f"summary/{key}", value, step)
    if "wandb" in names:
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update(values)
    if "mlflow" in names:
        import mlflow

        run = mlflow.last_active_run()
        if run is not None:
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=[
                mlflow.entities.Metric(f"summary/{k}", v, int(time.time() * 1000), step) for k, v in values.items()])
