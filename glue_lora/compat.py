"""`compat: run_glue`: train exactly as transformers' `examples/pytorch/text-classification/run_glue.py` does.

The harness's speed defaults change the run (length-grouped batch order, a larger evaluation batch, dynamic
padding, bf16 on recent GPUs, evaluation every epoch). With `compat: run_glue` a run instead uses run_glue's
choices, so with the same hyperparameters it reproduces run_glue's numbers, loss for loss:

- inputs padded to `max_seq_length` (run_glue's `--pad_to_max_length` default True; `pad_to_max_length=false`
  gives its dynamic-padding mode) and collated as run_glue collates them;
- `TrainingArguments`' own defaults for everything the harness would otherwise set: random batch order,
  evaluation batch 8, fp32, logging and checkpoints every 500 steps, no evaluation during training (the
  harness still evaluates the final model, as `--do_eval` does);
- `max_train_samples` / `max_eval_samples` take the first N rows (the harness default: a seeded random subset).

Kept from the harness, because they change no number of a single-process run: no reporting backends, quiet
logs, checkpoint rotation, and the DDP loss-scaling fix (`average_tokens_across_devices=False`).
"""

from __future__ import annotations

from typing import Any

RUN_GLUE = "run_glue"
COMPAT_MODES = (RUN_GLUE,)


def config_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """The config-level defaults of a compat mode, under what the user set (`raw` is the merged YAML)."""
    if raw.get("compat") != RUN_GLUE:
        return raw
    return {"pad_to_max_length": True, **raw}


# Harness defaults that change a run's numbers (batch order, eval batch, precision) or its cadence (logging,
# evaluation, saving); a run_glue-compatible run leaves them at TrainingArguments' own defaults.
HARNESS_ONLY = ("train_sampling_strategy", "per_device_eval_batch_size", "bf16", "logging_strategy",
                "logging_steps")


def training_defaults(harness: dict[str, Any]) -> dict[str, Any]:
    """The harness's `TrainingArguments` defaults made run_glue's: what changes numbers or cadence is dropped.

    What stays changes no number of a single-process run (reporting, quiet logs, checkpoint rotation, the DDP
    loss-scaling fix, the run name).
    """
    kept = {key: value for key, value in harness.items() if key not in HARNESS_ONLY}
    # run_glue evaluates only after training (--do_eval) and saves every 500 steps: TrainingArguments' defaults,
    # spelled out because the harness derives save_strategy from eval_strategy
    return {**kept, "eval_strategy": "no", "save_strategy": "steps"}


def data_collator(pad_to_max_length: bool, fp16: bool, tokenizer) -> Any:
    """run_glue's collator: plain stacking for padded inputs, else dynamic padding (to a multiple of 8 in fp16)."""
    from transformers import DataCollatorWithPadding, default_data_collator

    if pad_to_max_length:
        return default_data_collator
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if fp16 else None)
