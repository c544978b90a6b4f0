"""One GLUE run: config -> data -> model -> Trainer -> results record.

Works unchanged under `python`, `accelerate launch` and `torchrun`; only the main process writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import datasets
import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from glue_lora import compat, pipeline
from glue_lora.compat import RUN_GLUE
from glue_lora.config import BatchPlan, RunConfig, plan_batch
from glue_lora.data import require_training_splits
from glue_lora.errors import UsageError
from glue_lora.metrics import trainer_metrics_fn
from glue_lora.methods import get_method
from glue_lora.modeling import count_parameters, head_parameters, init_from_run
from glue_lora.progress import attach_progress
from glue_lora.results import (RESULTS_FILE, git_state, machine, peak_memory_mb, pick_best, read_results,
                               summarise_evals, versions, write_json_atomic)
from glue_lora.run_files import write_model_card, write_model_files
from glue_lora.tasks import TaskSpec, get_task
from glue_lora.timing import TrainClock, find_clock
from glue_lora.trackers import check_hub, check_trackers, log_summary, point_logs
from glue_lora.weights import BestWeights, install_best, save_model_files

log = logging.getLogger(__name__)


def run(config: RunConfig) -> dict[str, Any]:
    """Train and evaluate one run; returns the results record (also written to `<run_dir>/results.json`)."""
    task = get_task(config.task)
    require_training_splits(task, config.data_dir)  # before any model loads: one clear line
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    plan = plan_batch(config, world_size)
    args = training_arguments(config, plan)
    check_trackers(args.report_to)  # a missing tracker package or an unreachable Hub: one line, now
    check_hub(args.push_to_hub, args.hub_model_id)
    run_dir = config.run_dir
    previous = read_results(run_dir)
    if config.resume and previous and previous.get("status") == "success":
        log.info("%s is already finished; nothing to resume", run_dir)
        return previous
    if args.process_index == 0:
        prepare_run_dir(config)
    record = new_record(config, task, plan, args)
    try:
        return _train_and_record(config, task, args, record)
    except BaseException as err:
        if args.process_index == 0:
            record.update(status="failed", error=f"{type(err).__name__}: {err}"[:2000], finished=time.time())
            write_json_atomic(run_dir / RESULTS_FILE, record)
        raise


def _train_and_record(config: RunConfig, task: TaskSpec, args: TrainingArguments, record: dict) -> dict:
    built = pipeline.build(config, first=lambda: args.main_process_first(desc="load and tokenise"),
                           steps=lambda n_train: total_steps(args, n_train))
    model, head, tokenizer, encoded = built.model, built.head, built.tokenizer, built.encoded
    record["data"] = {"source": built.source, "rows": {k: len(v) for k, v in encoded.items()}}
    if config.init_from:
        loaded = init_from_run(model, config.init_from, config.init_modules, config.method, head)
        record["init_from"] = {"run": config.init_from, "tensors": len(loaded)}
    record["params"] = count_parameters(model, head, config.method)
    record["head_modules"] = head_parameters(model, head)  # which modules train as the head, and their sizes
    log_plan(config, args, len(encoded["train"]), record)
    trainer = build_trainer(config, task, args, model, tokenizer, encoded, record)
    resume = last_complete_checkpoint(Path(args.output_dir)) if config.resume else None
    output = trainer.train(resume_from_checkpoint=resume)
    evals = summarise_evals(trainer.state.log_history, task.eval_splits)
    if not evals or evals[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()  # the record needs the final model's score even when the cadence missed it
    if args.process_index == 0:
        finish_record(record, trainer, task, output.metrics, encoded["train"], resume)
        save_weights(config, task, trainer, tokenizer, record)
        write_json_atomic(config.run_dir / RESULTS_FILE, record)
        log_summary(args.report_to, config.run_dir, record, trainer.state.global_step)
        if not config.keep_checkpoints:  # only now: until the record says success, resume needs them
            shutil.rmtree(args.output_dir, ignore_errors=True)
        log.debug("results: %s", config.run_dir / RESULTS_FILE)
    return record


def save_weights(config: RunConfig, task: TaskSpec, trainer: Trainer, tokenizer, record: dict) -> None:
    """The run directory gets the best evaluation's model (`final/` the last one, with save_final=true)."""
    run_dir, best = config.run_dir, record.get("best")
    if config.save_final or best is None:
        final_dir = run_dir / "final" if best is not None else run_dir
        save_model_files(trainer.model, final_dir, config)  # the model in memory is the final one
        write_model_files(final_dir, config, trainer.model, tokenizer)
    if best is not None:
        install_best(Path(trainer.args.output_dir), run_dir, best, task.primary_key)
        write_model_files(run_dir, config, trainer.model, tokenizer)
    # which evaluation the run directory's weights are (no finite primary score at all: the final model)
    record["weights"] = {"evaluation": "best" if best is not None else "final",
                         "step": (best or record.get("final") or {}).get("step"),
                         "final_dir": "final" if config.save_final and best is not None else None}
    write_model_card(run_dir, record)
    if (run_dir / "final").is_dir():
        write_model_card(run_dir / "final", {**record, "best": record.get("final")}, str(run_dir / "final"))


def training_arguments(config: RunConfig, plan: BatchPlan) -> TrainingArguments:
    """Our defaults, then the user's `training:` section on top, then what the harness must control."""
    on_gpu = torch.cuda.is_available()
    defaults: dict[str, Any] = {
        "eval_strategy": "epoch", "logging_strategy": "steps", "logging_steps": 50, "report_to": "none",
        "save_total_limit": 1,  # the latest checkpoint is what resume needs; the final weights go to run_dir
        "per_device_eval_batch_size": max(64, 2 * plan.per_device),
        "train_sampling_strategy": "group_by_length",  # random mega-batches sorted by length: less padding
        "bf16": on_gpu and torch.cuda.is_bf16_supported(including_emulation=False),
        # Trainer multiplies the loss by the process count when it believes the model divides by the global
        # item count; sequence classifiers take a per-device mean, so under DDP the gradients (and logged
        # loss) came out N times too large. Off, DDP's gradient averaging gives the global-batch mean.
        "average_tokens_across_devices": False,
        "disable_tqdm": True, "log_level": "warning", "dataloader_pin_memory": on_gpu,
        "run_name": config.run_name,  # what trackers call the run
    }
    if config.compat == RUN_GLUE:
        defaults = {**compat.training_defaults(on_gpu), "run_name": config.run_name}
    merged = {**defaults, **config.training}
    merged.setdefault("save_strategy", merged["eval_strategy"])
    if merged["save_strategy"] == "steps" and "eval_steps" in merged:
        merged.setdefault("save_steps", merged["eval_steps"])
    if merged.get("fp16"):
        merged["bf16"] = False
    if merged.get("bf16") and not on_gpu and not torch.backends.mps.is_available():
        # bf16 on CPU is opt-in (autocast; 1.3x faster on AVX512-BF16 CPUs, see docs/benchmarks.md), but
        # TrainingArguments refuses bf16 without a GPU unless the run is declared a CPU run.
        merged.setdefault("use_cpu", True)
    merged.update(
        output_dir=str(config.run_dir / "checkpoints"), seed=config.seed,
        per_device_train_batch_size=plan.per_device, gradient_accumulation_steps=plan.accumulation,
        label_names=["labels"],  # PeftModel hides the signature Trainer reads label names from
    )
    # Every trainable parameter is used in each forward pass; Trainer would otherwise assume unused ones for
    # a PeftModel and pay an extra autograd traversal per step.
    merged.setdefault("ddp_find_unused_parameters", False)
    if plan.world_size > 1 and not on_gpu:
        # Without both, accelerate sees no distributed CPU setup: torchrun then runs N independent trainings
        # that share only their logged loss.
        merged.setdefault("ddp_backend", "gloo")
        merged.setdefault("use_cpu", True)
    try:
        return TrainingArguments(**merged)
    except (TypeError, ValueError) as err:
        raise UsageError(f"training: {str(err).splitlines()[0]}") from err


def prepare_run_dir(config: RunConfig) -> None:
    """Refuse to silently overwrite: a finished or interrupted run needs overwrite=true or resume=true."""
    run_dir = config.run_dir
    previous = read_results(run_dir)
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if config.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    elif previous and previous.get("status") == "success":
        raise UsageError(f"{run_dir} already holds a finished run; pass overwrite=true to replace it, "
                         "or choose another output_dir/name")
    elif has_checkpoints and not config.resume:
        raise UsageError(f"{run_dir} holds an interrupted run; pass resume=true to continue it or overwrite=true "
                         "to start again")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def tokenise(splits: datasets.DatasetDict, task: TaskSpec, tokenizer, config: RunConfig,
             source: str) -> datasets.DatasetDict:
    """The training splits of `splits`, tokenised (`pipeline.tokenise`); test splits are left out."""
    used = pipeline.training_splits(task)
    return pipeline.tokenise(datasets.DatasetDict({k: v for k, v in splits.items() if k in used}), task,
                             tokenizer, config, source)


def build_trainer(config: RunConfig, task: TaskSpec, args: TrainingArguments, model, tokenizer,
                  encoded: datasets.DatasetDict, record: dict) -> Trainer:
    eval_sets = {name: encoded[name] for name in task.eval_splits if name in encoded}
    method = get_method(config.method)
    optimizer = method.optimizer(model, config, args) if method.optimizer else None  # e.g. LoRA+'s lr groups
    extra = method.callbacks(model, config) if method.callbacks else []  # e.g. AdaLoRA's rank allocation
    callbacks = [RecordCallback(config.run_dir, task, record), BestWeights(Path(args.output_dir), task, config), *extra]
    trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], eval_dataset=eval_sets,
                      data_collator=pipeline.make_collator(tokenizer, config, args.fp16), processing_class=tokenizer,
                      compute_metrics=trainer_metrics_fn(task), callbacks=[TrainClock(), *callbacks],
                      optimizers=(optimizer, None))
    point_logs(trainer, config.run_dir)  # tracker files in <run_dir>/logs
    return attach_progress(trainer, config.training.get("disable_tqdm"))  # a bar on a terminal, else lines


class RecordCallback(TrainerCallback):
    """Rewrites the (running) results record after every evaluation, so a crash loses nothing measured."""

    def __init__(self, run_dir: Path, task: TaskSpec, record: dict):
        self.run_dir, self.task, self.record = run_dir, task, record

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.record["evals"] = summarise_evals(state.log_history, self.task.eval_splits)
            write_json_atomic(self.run_dir / RESULTS_FILE, self.record)


def new_record(config: RunConfig, task: TaskSpec, plan: BatchPlan, args: TrainingArguments) -> dict[str, Any]:
    method = get_method(config.method)
    settings = method.record(config)  # the method's effective settings (glue_lora.methods)
    return {"status": "running", "name": config.run_name, "task": task.name, "method": config.method,
            "model": config.model, "seed": config.seed, "primary_metric": task.primary_key,
            "method_settings": settings,
            # also under the first section's name: records before method_settings had a `lora` key
            **({method.sections[0]: settings} if method.sections else {}),
            "batch": {"global": plan.global_batch, "per_device": plan.per_device, "accumulation": plan.accumulation,
                      "processes": plan.world_size},
            "config": config.to_dict(), "versions": versions(), "git": git_state(), "machine": machine(),
            "started": time.time(), "evals": []}


def total_steps(args: TrainingArguments, n_train: int) -> int:
    """Optimizer steps the run will take (AdaLoRA's schedule needs it before the model is built)."""
    batches = math.ceil(n_train / (args.per_device_train_batch_size * args.world_size))
    # Trainer counts a last partial accumulation window as a step (ceil), so the plan must too
    per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    return args.max_steps if args.max_steps > 0 else math.ceil(per_epoch * args.num_train_epochs)


def log_plan(config: RunConfig, args: TrainingArguments, n_train: int, record: dict) -> None:
    total = total_steps(args, n_train)
    record["batch"].update(total_steps=total, warmup_steps=args.get_warmup_steps(total))
    log.debug("config:\n%s", yaml.safe_dump(config.to_dict(), sort_keys=False))
    log.info("global batch %d = %d per device x %d accumulation x %d processes; %d optimizer steps, %d warmup",
             record["batch"]["global"], args.per_device_train_batch_size, args.gradient_accumulation_steps,
             args.world_size, total, record["batch"]["warmup_steps"])
    log.info("parameters: %s; head: %s", record["params"], record["head_modules"])


def finish_record(record: dict, trainer: Trainer, task: TaskSpec, train_metrics: dict,
                  train_set: datasets.Dataset, resumed_from: str | None) -> None:
    evals = summarise_evals(trainer.state.log_history, task.eval_splits)
    mean_tokens = sum(train_set["length"]) / max(1, len(train_set))
    samples_per_s = train_metrics.get("train_samples_per_second", 0.0)
    peft_config = getattr(trainer.model, "peft_config", {}).get("default")
    if record["method_settings"] is not None and peft_config is not None:  # the targets PEFT resolved
        targets = peft_config.target_modules
        record["method_settings"]["targets"] = sorted(targets) if not isinstance(targets, str) else targets
    record.update(
        status="success", evals=evals, best=pick_best(evals, task.primary_key), final=evals[-1] if evals else None,
        timing={"train_seconds": train_metrics.get("train_runtime"), "train_samples_per_second": samples_per_s,
                "real_tokens_per_second": round(samples_per_s * mean_tokens, 1),
                "mean_real_tokens_per_example": round(mean_tokens, 2), "resumed_from": resumed_from,
                "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
                **(clock.summary() if (clock := find_clock(trainer)) else {})},
        train_loss=train_metrics.get("train_loss"), peak_memory_mb=peak_memory_mb(), finished=time.time())


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was completely written, or None.

    Trainer writes `trainer_state.json` last, so a checkpoint without a readable one was cut short (its node
    died mid-save); `get_last_checkpoint` would pick it and the resume would fail. With save_total_limit the
    older, complete checkpoint is deleted only after the new one is complete, so one is always there.
    """
    found = []
    for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if folder.is_dir() else []:
        try:
            json.loads((path / TRAINER_STATE_NAME).read_text())
            found.append((int(path.name.rsplit("-", 1)[1]), path))
        except (OSError, ValueError):
            continue
    return str(max(found)[1]) if found else None
