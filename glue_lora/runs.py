"""Trained run directories as things to load: check one, read its config, load its model anywhere.

A run directory holds the model of its *best* evaluation: a PEFT adapter (`adapter_config.json`,
`adapter_model.safetensors`) plus `config.json` (the base model's config with the task's labels), or a full
model (`config.json`, `model.safetensors`). `glue-lora export --merge` writes the second kind from the first.
`adapter_config.json` names the base as the run config did (`roberta-base`, a local path, or
`pypi:<package>`); `resolve_model_path` turns a `pypi:` spec into the installed package's `model/` folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from glue_lora.config import RunConfig, build_config
from glue_lora.errors import UsageError

ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
RUN_CONFIG = "config.yaml"


def is_adapter_dir(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def check_run_dir(folder: Path) -> dict[str, Any]:
    """The finished run's record; anything else (missing, running, failed, another layout) is one clear error."""
    from glue_lora.record import RESULTS_FILE, Malformed, load_record

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a directory; give a run directory (runs/<name>) or an exported model")
    record = load_record(folder / RESULTS_FILE)
    if record is None and folder.name == "final":  # save_final's subfolder: the parent run's record
        parent = load_record(folder.parent / RESULTS_FILE)
        if isinstance(parent, dict):
            record = {**parent, "weights": {"evaluation": "final", "step": (parent.get("final") or {}).get("step")}}
    if isinstance(record, Malformed):
        raise UsageError(f"{folder}/{RESULTS_FILE} is {record}: not a glue-lora run record")
    if record is None:
        raise UsageError(f"{folder} has no {RESULTS_FILE}: not a glue-lora run directory")
    status = record.get("status")
    if status != "success":
        why = f" ({record['error']})" if record.get("error") else ""
        raise UsageError(f"{folder} holds a {status} run{why}, not a finished one; finish it first "
                         "(resume=true) or pick a finished run")
    weights = ["adapter_model.safetensors", "model.safetensors", "trainable_model.safetensors"]
    if not (folder / MODEL_CONFIG).is_file() or not any((folder / w).is_file() for w in weights):
        raise UsageError(f"{folder} lacks config.json or model weights (adapter_model.safetensors / model.safetensors):"
                         " a run directory from an older glue-lora layout; re-run it with this version")
    return record


def run_config(folder: Path, record: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run's resolved config (from its record), with e.g. `data_dir` overridden."""
    raw = dict(record.get("config") or {})
    if not raw:
        raise UsageError(f"{folder}/results.json has no config: a run directory from an older glue-lora layout")
    raw.update(overrides or {})
    raw.update(resume=False, overwrite=False, init_from=None)  # only loading: nothing trains or writes
    return build_config(raw)


def load_trained_model(folder: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The model a run (or exported) directory holds, in eval mode, with its labels."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from glue_lora.modeling import load_trained

    folder = Path(folder)
    base_spec = base_model_spec(folder)
    if base_spec is None:  # a full model: config.json + model.safetensors
        return AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).eval()
    from glue_lora.modeling import resolve_model_path

    hf_config = AutoConfig.from_pretrained(folder)  # num_labels, id2label, problem_type of the task
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(base_spec), config=hf_config,
                                                              dtype=dtype)
    return load_trained(base, folder).eval()


def base_model_spec(folder: Path) -> str | None:
    """The base model an adapter (or BitFit-style) directory applies to, as its config named it; None for a
    directory that holds a whole model."""
    from glue_lora.methods import TRAINABLE_CONFIG

    folder = Path(folder)
    if (folder / ADAPTER_CONFIG).is_file():
        return json.loads((folder / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    if (folder / TRAINABLE_CONFIG).is_file():
        return json.loads((folder / TRAINABLE_CONFIG).read_text())["base_model"]
    return None


def load_run(folder: str | Path) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) of a run or exported directory: the documented way to load one in Python.

    Works for every base spec, `pypi:` included, and every task (STS-B's single regression output too).
    """
    from transformers import AutoTokenizer

    return load_trained_model(Path(folder)), AutoTokenizer.from_pretrained(folder)
