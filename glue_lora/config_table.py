"""`glue-lora configs`: the resolved hyperparameters of every shipped config, as a Markdown table or JSON.

Each file is resolved exactly as a run would resolve it (`extends:`, `${VAR:-default}`, validation), so the
table doubles as a check that every config loads. Nothing is downloaded and no model is loaded: LoRA target
defaults come from the model family, read from a local config.json or guessed from the model id.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from glue_lora.config import RunConfig, UsageError, config_dependencies, load_config, plan_batch
from glue_lora.methods import ADAPTER_TOKENS, get_method

HELP = "list every shipped config with its resolved hyperparameters (Markdown or JSON)"
SKIPPED_DIRS = ("accelerate", "sweeps")  # launcher topologies and sweep grids: not run configs
PARTIAL = "base.yaml"  # shared settings that task files extend; not runnable on their own
TRAINER_DEFAULTS = {"learning_rate": 5e-5, "num_train_epochs": 3.0, "weight_decay": 0.0, "warmup_steps": 0}
COLUMNS = ("file", "model", "method", "task", "lr", "global batch", "per-device batch", "epochs", "max length",
           "warmup", "weight decay", "r", "alpha", "scaling", "target modules", "init_from")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="folder to scan recursively (default: ./configs, else the configs shipped with glue-lora)")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown",
                        help="markdown table for people (default), json for scripts")


def main(args: argparse.Namespace) -> int:
    root = _find_root(args.root)
    rows = [describe(path, root.parent) for path in config_files(root)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(markdown(rows))
    return 0


def _find_root(root: Path | None) -> Path:
    from glue_lora.shipped import configs_root

    candidates = [root] if root else [Path("configs"), configs_root()]
    for candidate in candidates:
        if candidate is not None and candidate.is_dir():
            return candidate
    raise UsageError(f"no configs folder at {candidates[0]}; pass --root DIR")


def config_files(root: Path) -> list[Path]:
    """Every runnable config under `root`, sorted; skips topology/sweep folders and `base.yaml` partials."""
    return sorted(path for path in root.rglob("*.yaml")
                  if path.name != PARTIAL and path.relative_to(root).parts[0] not in SKIPPED_DIRS)


def describe(path: Path, relative_to: Path) -> dict[str, Any]:
    """One table row: the config's resolved values (training defaults filled in from TrainingArguments)."""
    try:
        config = load_config(path)
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from err
    training = {**TRAINER_DEFAULTS, **config.training}
    method = get_method(config.method)
    settings = method.record(config) or {}  # the method's effective settings; {} for full FT and BitFit
    targets = settings.get("targets") or settings.get("target_modules")
    if method.family_targets and not targets:
        targets = family_default(config.model, "targets")
    dependencies = config_dependencies(config)
    return {
        "file": _shown(path, relative_to), "model": config.model, "method": config.method, "task": config.task,
        "lr": float(training["learning_rate"]), "global_batch": config.global_batch_size,
        "per_device_rule": batch_rule(config), "epochs": float(training["num_train_epochs"]),
        "max_seq_length": config.max_seq_length, "warmup": warmup_text(training["warmup_steps"]),
        "weight_decay": float(training["weight_decay"]),
        "r": settings.get("r"), "alpha": settings.get("alpha"),
        "scaling": f"{settings['scaling']:g} ({settings['scaling_rule']})" if "scaling_rule" in settings else None,
        "target_modules": targets,
        "init_from": _shown(dependencies[0], relative_to) if dependencies else config.init_from,
        "init_modules": (config.init_modules or family_default(config.model, "init_modules"))
        if config.init_from else None,
    }


def _shown(path: Path, relative_to: Path) -> str:
    path, base = path.resolve(), relative_to.resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def batch_rule(config: RunConfig) -> str:
    """How the per-device batch is derived, with the plan on 1 and on 8 processes."""
    cap = config.training.get("per_device_train_batch_size")
    if not config.global_batch_size:
        return f"{cap or 8} per device x processes (no global_batch_size)"
    plans = []
    for world in (1, 8):
        try:
            plan = plan_batch(config, world)
        except UsageError:
            continue  # global batch not divisible by this process count
        plans.append(f"{world} proc: {plan.per_device} x {plan.accumulation} acc")
    limit = f"<= {cap} per device" if cap else "global / processes"
    return f"{limit} ({'; '.join(plans)})"


def warmup_text(value: float | int) -> str:
    # transformers 5: a float in [0, 1) is a ratio of the total steps, an int a step count
    return f"ratio {value:g}" if isinstance(value, float) and 0 < value < 1 else f"{int(value)} steps"


def family_default(model: str, attribute: str) -> list[str] | None:
    """A model family's default (LoRA targets or MNLI-init modules) without loading or downloading the model."""
    from glue_lora.modeling import FAMILIES

    model_type = _local_model_type(model) or _guess_model_type(model, list(FAMILIES))
    return list(getattr(FAMILIES[model_type], attribute)) if model_type in FAMILIES else None


def _local_model_type(model: str) -> str | None:
    folder = Path(model)
    if model.startswith("pypi:"):
        import importlib.util

        spec = importlib.util.find_spec(model.removeprefix("pypi:").replace("-", "_"))
        folder = Path(spec.origin).parent / "model" if spec and spec.origin else Path("/nonexistent")
    config_file = folder / "config.json"
    return json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None


def _guess_model_type(model: str, known: list[str]) -> str | None:
    name = model.lower().rsplit("/", 1)[-1]
    if "deberta-v3" in name:
        return "deberta-v2"  # DeBERTa-v3 checkpoints use the deberta-v2 architecture
    matches = [family for family in known if family in name]
    return max(matches, key=len) if matches else None  # "roberta" over "bert", "deberta-v2" over "deberta"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [row["file"], row["model"], row["method"], row["task"], f"{row['lr']:g}", _cell(row["global_batch"]),
                 row["per_device_rule"], f"{row['epochs']:g}", str(row["max_seq_length"]), row["warmup"],
                 f"{row['weight_decay']:g}", _cell(row["r"]), _cell(row["alpha"]), _cell(row["scaling"]),
                 ", ".join(row["target_modules"] or []) or "-",
                 f"{row['init_from']} ({_carried(row)})" if row["init_from"] else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _carried(row: dict[str, Any]) -> str:
    # a full run carries every encoder tensor; "adapter" names the method's adapter tensors otherwise
    full = get_method(row["method"]).carries_encoder
    modules = ["encoder" if m in ADAPTER_TOKENS and full else m for m in row["init_modules"] or []]
    return "+".join(modules)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
