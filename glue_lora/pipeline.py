"""One builder for every command: config -> data -> tokenised splits -> model, for the splits asked for.

`train`, `predict`, `export` and `bench` are a few lines over `build()`: it loads the tokenizer, the chosen
splits (test splits included on request, unlabelled with label -1), tokenises them once (cached on disk) and
loads either a fresh model for training or the trained weights of a run directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import datasets
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, set_seed

from glue_lora.config import RunConfig
from glue_lora.data import load_glue
from glue_lora.errors import UsageError
from glue_lora.tasks import TaskSpec, get_task

CACHE_DIR = Path(os.environ.get("GLUE_LORA_CACHE", Path.home() / ".cache" / "glue_lora"))
#: bump when `tokenise`'s output changes, so cached datasets of the old shape are not reused
TOKENISED_FORMAT = 2
#: columns a model's forward takes; everything else (idx, length) is bookkeeping
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass
class Pipeline:
    """The built pieces: everything a command needs besides its own loop."""

    config: RunConfig
    task: TaskSpec
    tokenizer: PreTrainedTokenizerBase
    encoded: datasets.DatasetDict  #: tokenised splits; `labels`, `idx` and `length` kept
    source: str  #: where the data came from (`tsv:<dir>`, `parquet:<dir>`, `hub:<name>`)
    model: torch.nn.Module | None = None
    head: list[str] = field(default_factory=list)  #: trained head modules (fresh models only)

    def collator(self, fp16: bool = False):
        return make_collator(self.tokenizer, self.config, fp16)


def training_splits(task: TaskSpec) -> tuple[str, ...]:
    return tuple(s for s in (task.train_split, *task.eval_splits) if s)


def build(config: RunConfig, splits: Iterable[str] | None = None, *, model: str | Path | None = "fresh",
          first: Callable[[], ContextManager] = contextlib.nullcontext,
          steps: Callable[[int], int] | None = None) -> Pipeline:
    """Build the pieces of `config`'s run for `splits` (default: train + evaluation splits).

    `model="fresh"`: the pretrained encoder with a new head and the method's trainable set (seeded);
    a path: the trained model of that run (or merged model) directory; None: no model.
    `first` wraps loading and tokenising (Trainer's `main_process_first` under DDP); `steps(n_train)` gives
    the run's optimizer steps, for methods whose model needs them (AdaLoRA's schedule).
    """
    from glue_lora.modeling import load_model, load_tokenizer

    task = get_task(config.task)
    tokenizer = load_tokenizer(config)
    with first():
        raw, source = load_splits(task, config.data_dir, list(splits or training_splits(task)))
        encoded = tokenise(raw, task, tokenizer, config, source)
    built = Pipeline(config, task, tokenizer, encoded, source)
    if model == "fresh":
        set_seed(config.seed)  # the head's random init depends on it
        n_train = len(encoded[task.train_split]) if task.train_split in encoded else None
        built.model, built.head = load_model(config, task, steps(n_train) if steps and n_train else None)
    elif model is not None:
        from glue_lora.runs import load_trained_model

        built.model = load_trained_model(Path(model))
    return built


def load_splits(task: TaskSpec, data_dir: str | None, splits: list[str]) -> tuple[datasets.DatasetDict, str]:
    """The named splits of `task`'s data; a split the data lacks is one clear error.

    `ax` (the diagnostic test set) is predicted by MNLI models: for an MNLI task it is the `ax` task's test split.
    """
    raw, source = load_glue(task, data_dir)
    if "ax" in splits and task.name == "mnli":
        raw["ax"] = load_glue(get_task("ax"), data_dir)[0]["test"]
    missing = [s for s in splits if s not in raw]
    if missing:
        valid = [*raw, *(["ax"] if task.name == "mnli" else [])]
        raise UsageError(f"{task.name} data ({source}) has no {', '.join(missing)} split; it has: "
                         f"{', '.join(dict.fromkeys(valid))}")
    return datasets.DatasetDict({name: raw[name] for name in splits}), source


def make_collator(tokenizer: PreTrainedTokenizerBase, config: RunConfig | None = None, fp16: bool = False):
    """Dynamic padding; multiples of 8 on GPUs (tensor cores), none on CPU (padding is pure cost there).

    `compat: run_glue` runs use run_glue's collator instead (glue_lora.compat).
    """
    from glue_lora import compat

    if config is not None and config.compat == compat.RUN_GLUE:
        return compat.data_collator(config.pad_to_max_length, fp16, tokenizer)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)


def model_inputs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Only the columns a model takes (the collator cannot pad `idx`/`length` bookkeeping away)."""
    return dataset.select_columns([c for c in MODEL_INPUTS if c in dataset.column_names])


def tokenise(splits: datasets.DatasetDict, task: TaskSpec, tokenizer, config: RunConfig,
             source: str) -> datasets.DatasetDict:
    """Subset, tokenise and truncate once; cached on disk, keyed by everything that changes the result.

    Keeps `idx` (the example's index in its split, what predictions and GLUE submissions are keyed by) and
    adds `length` (real tokens, read by group_by_length); `label` becomes `labels` (-1 on test splits).
    """
    splits = datasets.DatasetDict({name: _subset(split, name, task, config) for name, split in splits.items()})
    key = _cache_key(splits, task, tokenizer, config, source)
    cached = CACHE_DIR / "tokenized" / key
    if (cached / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(cached))

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[col] for col in task.text_columns]
        out = tokenizer(*texts, truncation=True, max_length=config.max_seq_length,
                        padding="max_length" if config.pad_to_max_length else False)
        out["length"] = [sum(mask) for mask in out["attention_mask"]]
        return out

    # our own cache key fingerprints the result: datasets would otherwise hash `encode` by pickling the
    # tokenizer it closes over, which costs more than tokenising a small split
    encoded = datasets.DatasetDict({
        name: split.map(encode, batched=True, remove_columns=list(task.text_columns), desc="tokenising",
                        num_proc=min(4, os.cpu_count() or 1) if len(split) > 50_000 else None,
                        new_fingerprint=f"{key}-{name}")
        for name, split in splits.items()})
    encoded = encoded.rename_column("label", "labels")
    encoded.save_to_disk(str(cached))
    return encoded


def _subset(split: datasets.Dataset, name: str, task: TaskSpec, config: RunConfig) -> datasets.Dataset:
    if name in task.test_splits or name == "ax":
        return split  # test predictions are for the GLUE server: always every row
    limit = config.max_train_samples if name == task.train_split else config.max_eval_samples
    if limit is None or limit >= len(split):
        return split
    from glue_lora import compat

    if config.compat == compat.RUN_GLUE:
        return split.select(range(limit))  # run_glue's --max_*_samples: the first rows
    return split.shuffle(seed=0).select(range(limit))  # the same subset for every seed and method


def _cache_key(splits: datasets.DatasetDict, task: TaskSpec, tokenizer, config: RunConfig, source: str) -> str:
    parts: list[Any] = [TOKENISED_FORMAT, task.name, source, tokenizer.name_or_path, len(tokenizer),
                        config.max_seq_length, config.pad_to_max_length, config.max_train_samples,
                        config.max_eval_samples,
                        {name: (len(split), split[0], split[-1]) for name, split in splits.items()}]
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:20]
