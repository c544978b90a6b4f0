"""One GLUE run: config -> data -> model -> Trainer -> results record.

Works unchanged under `python`, `accelerate launch` and `torchrun`; only the main process writes files.
"""

from __future__ import annotations

import contextlib
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
from transformers import Trainer, TrainingArguments

from glue_lora import compat, lease, pipeline
from glue_lora.checkpoints import choose_resume_checkpoint
from glue_lora.compat import RUN_GLUE
from glue_lora.config import BatchPlan, RunConfig, changed_settings, check_model_fit, check_output_dir, plan_batch
from glue_lora.data import check_local_data, require_training_splits
from glue_lora.errors import UsageError
from glue_lora.hardware import cpu_native_bf16
from glue_lora.lifecycle import Keeper, RecordCallback, check_finite, interrupts_raise, merge_evals, whole_run_loss
from glue_lora.metrics import trainer_metrics_fn
from glue_lora.methods import get_method
from glue_lora.modeling import count_parameters, head_parameters, init_from_run
from glue_lora.progress import attach_progress
from glue_lora.record import (RESULTS_FILE, SUCCESS, Malformed, end_attempt, load_record, start_attempt,
                              total_train_seconds)
from glue_lora.results import git_state, machine, peak_memory_mb, pick_best, summarise_evals, versions
from glue_lora.resumable import ResumableTrainer
from glue_lora.run_files import write_model_card, write_model_files
from glue_lora.tasks import TaskSpec, get_task
from glue_lora.timing import TrainClock, combine_attempts
from glue_lora.trackers import check_hub, check_trackers, log_summary, point_logs
from glue_lora.weights import BestWeights, install_best, save_model_files

log = logging.getLogger(__name__)


def run(config: RunConfig) -> dict[str, Any]:
    """Train and evaluate one run; returns the results record (also written to `<run_dir>/results.json`).

    The main process holds the run directory's lease for the whole run, so a second trainer refuses at once.
    """
    task = get_task(config.task)
    require_training_splits(task, config.data_dir)  # before any model loads: one clear line
    check_model_fit(config)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    plan = plan_batch(config, world_size)
    args = training_arguments(config, plan)
    check_trackers(args.report_to)  # a missing tracker package or an unreachable Hub: one line, now
    check_hub(args.push_to_hub, args.hub_model_id)
    check_output_dir(config.run_dir)
    check_local_data(task, config.data_dir)  # every data file read and checked: bad data is one line, now
    main = args.process_index == 0
    with lease.hold(config.run_dir, purpose=f"train {config.run_name}") if main else contextlib.nullcontext():
        previous = previous_record(config)
        if config.resume and previous and previous["status"] == "success":
            log.info("%s is already finished with these settings; nothing to resume", config.run_dir)
            return previous
        if main:
            prepare_run_dir(config)
        checkpoint = resume_checkpoint(config, args) if config.resume else None
        record = new_record(config, task, plan, args)
        if config.resume and previous:  # keep what earlier attempts measured; describe this attempt's setting
            record = {**previous, **{k: record[k] for k in ("status", "config", "versions", "git", "machine")}}
            record.pop("error", None)  # each attempt keeps its own error in record["attempts"]
        start_attempt(record, str(checkpoint) if checkpoint else None)
        keeper = Keeper(config.run_dir, task, record, writes=main)
        keeper.save()  # the record exists from the first second: status running, config, versions, plan
        with interrupts_raise():
            try:
                return _train_and_record(config, task, args, keeper, checkpoint)
            except BaseException as err:
                keeper.close_failed(err)
                raise


def _train_and_record(config: RunConfig, task: TaskSpec, args: TrainingArguments, keeper: Keeper,
                      checkpoint: Path | None) -> dict:
    record = keeper.record
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
    keeper.save()
    trainer = build_trainer(config, task, args, model, tokenizer, encoded, keeper)
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    evals = summarise_evals(trainer.state.log_history, task.eval_splits)
    if not evals or evals[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()  # the record needs the final model's score even when the cadence missed it
    check_finite({"loss": output.training_loss}, "loss", trainer.state.global_step)
    if args.process_index == 0:
        finish_record(keeper, trainer, task, output, encoded["train"], checkpoint)
        save_weights(config, task, trainer, tokenizer, record)
        keeper.save()
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


def previous_record(config: RunConfig) -> dict[str, Any] | None:
    """The run directory's record, after the checks that make reusing it safe; a one-line refusal otherwise."""
    found = load_record(config.run_dir)
    if isinstance(found, Malformed) and not config.overwrite:
        raise UsageError(f"{found.path} is {found}; move it away or pass overwrite=true to start the run again")
    if not isinstance(found, dict) or not config.resume:
        return found if isinstance(found, dict) else None
    changed = changed_settings(config.run_dir / "config.yaml", config)
    if changed:
        what = "a finished" if found["status"] == "success" else "an unfinished"
        raise UsageError(f"resume=true: {config.run_dir} holds {what} run with other {', '.join(changed)}; "
                         "resume it with its own settings, or start a new run (another output_dir/name, or "
                         "overwrite=true)")
    return found


def resume_checkpoint(config: RunConfig, args: TrainingArguments) -> Path | None:
    """The newest complete checkpoint (newer broken ones are logged and set aside), or None: start over."""
    checkpoint = choose_resume_checkpoint(Path(args.output_dir), args.world_size, tidy=args.process_index == 0)
    if checkpoint is None:
        log.info("no complete checkpoint in %s; training from the start", args.output_dir)
    return checkpoint


def training_arguments(config: RunConfig, plan: BatchPlan) -> TrainingArguments:
    """Our defaults, then the user's `training:` section on top, then what the harness must control."""
    on_gpu = torch.cuda.is_available()
    defaults: dict[str, Any] = {
        "eval_strategy": "epoch", "logging_strategy": "steps", "logging_steps": 50, "report_to": "none",
        # two: if the newest checkpoint is damaged after rotation deleted its predecessor (a power loss before
        # its data reached the disk, a truncated copy), resume still has a complete one; final weights go to run_dir
        "save_total_limit": 2,
        "per_device_eval_batch_size": max(64, 2 * plan.per_device),
        "train_sampling_strategy": "group_by_length",  # random mega-batches sorted by length: less padding
        # bf16 autocast where the hardware has it: Ampere+ GPUs, and CPUs with AVX512-BF16/AMX, where it is
        # 1.5x cheaper and moved no dev score in a paired 5-seed study (docs/results/sampler-study)
        "bf16": torch.cuda.is_bf16_supported(including_emulation=False) if on_gpu else cpu_native_bf16(),
        # Trainer multiplies the loss by the process count when it believes the model divides by the global
        # item count; sequence classifiers take a per-device mean, so under DDP the gradients (and logged
        # loss) came out N times too large. Off, DDP's gradient averaging gives the global-batch mean.
        "average_tokens_across_devices": False,
        "disable_tqdm": True, "log_level": "warning", "dataloader_pin_memory": on_gpu,
        "run_name": config.run_name,  # what trackers call the run
    }
    if config.compat == RUN_GLUE:
        defaults = compat.training_defaults(defaults)
    merged = {**defaults, **config.training}
    merged.setdefault("save_strategy", merged["eval_strategy"])
    if merged["save_strategy"] == "steps" and "eval_steps" in merged:
        merged.setdefault("save_steps", merged["eval_steps"])
    if merged.get("fp16"):
        merged["bf16"] = False
    if merged.get("bf16") and not on_gpu and not torch.backends.mps.is_available():
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
    previous = load_record(run_dir)
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if config.overwrite and run_dir.exists():
        clear_run_dir(run_dir)
    elif isinstance(previous, dict) and previous.get("status") == "success" and not config.resume:
        raise UsageError(f"{run_dir} already holds a finished run; pass overwrite=true to replace it, "
                         "or choose another output_dir/name")
    elif (has_checkpoints or isinstance(previous, dict) and previous.get("evals")) and not config.resume:
        # (a record without evaluations or checkpoints measured nothing: a plain rerun may replace it)
        status = previous.get("status") if isinstance(previous, dict) else "checkpoints, no record"
        raise UsageError(f"{run_dir} holds an interrupted run; pass resume=true to continue it or overwrite=true "
                         f"to start again (its status: {status})")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (config.resume and (run_dir / "config.yaml").exists()):  # a resume keeps the settings it compares with
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def clear_run_dir(run_dir: Path) -> None:
    """Delete a run directory's contents except the leases on it: this process's, and a sweep's claim (the
    harness's own bookkeeping is the dot-files)."""
    for path in run_dir.iterdir():
        if path.name == lease.OWNER_FILE or path.name.startswith("."):
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def tokenise(splits: datasets.DatasetDict, task: TaskSpec, tokenizer, config: RunConfig,
             source: str) -> datasets.DatasetDict:
    """The training splits of `splits`, tokenised (`pipeline.tokenise`); test splits are left out."""
    used = pipeline.training_splits(task)
    return pipeline.tokenise(datasets.DatasetDict({k: v for k, v in splits.items() if k in used}), task,
                             tokenizer, config, source)


def build_trainer(config: RunConfig, task: TaskSpec, args: TrainingArguments, model, tokenizer,
                  encoded: datasets.DatasetDict, keeper: Keeper | None = None) -> Trainer:
    """The harness's Trainer; with a `keeper`, it keeps the run's record current (bench runs without one)."""
    eval_sets = {name: encoded[name] for name in task.eval_splits if name in encoded}
    method = get_method(config.method)
    optimizer = method.optimizer(model, config, args) if method.optimizer else None  # e.g. LoRA+'s lr groups
    extra = method.callbacks(model, config) if method.callbacks else []  # e.g. AdaLoRA's rank allocation
    clock = TrainClock()
    if keeper:
        keeper.clock = clock  # a failed attempt records its CPU time too
    callbacks = [clock, *([RecordCallback(keeper)] if keeper else []), BestWeights(Path(args.output_dir), task, config),
                 *extra]
    trainer = ResumableTrainer(model=model, args=args, train_dataset=encoded["train"], eval_dataset=eval_sets,
                               data_collator=pipeline.make_collator(tokenizer, config, args.fp16),
                               processing_class=tokenizer, compute_metrics=trainer_metrics_fn(task),
                               callbacks=callbacks, optimizers=(optimizer, None))
    point_logs(trainer, config.run_dir)  # tracker files in <run_dir>/logs
    return attach_progress(trainer, config.training.get("disable_tqdm"))  # a bar on a terminal, else lines


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
            "precision": precision(args), "started": time.time(), "evals": []}


def precision(args: TrainingArguments) -> str:
    """The arithmetic the run trains in, as resolved from the config and the hardware: bf16, fp16 or fp32."""
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


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


def finish_record(keeper: Keeper, trainer: Trainer, task: TaskSpec, output, train_set: datasets.Dataset,
                  resumed_from: Path | None) -> None:
    """Close the attempt as a success; evaluations, loss and timing cover every attempt of the run."""
    record, state = keeper.record, trainer.state
    evals = merge_evals(record.get("evals", []), summarise_evals(state.log_history, task.eval_splits))
    first_step = int(getattr(trainer, "_initial_global_step", 0))  # where this attempt started (0, or the checkpoint's step)
    end_attempt(record, SUCCESS, state.global_step, output.metrics.get("train_runtime"))
    if keeper.clock is not None:
        record["attempts"][-1]["clock"] = keeper.clock.summary()
    seconds = total_train_seconds(record)
    samples_per_s = len(train_set) * (state.epoch or 0) / seconds if seconds else None
    mean_tokens = sum(train_set["length"]) / max(1, len(train_set))
    peft_config = getattr(trainer.model, "peft_config", {}).get("default")
    if record.get("method_settings") is not None and peft_config is not None:  # the targets PEFT resolved
        targets = peft_config.target_modules
        record["method_settings"]["targets"] = sorted(targets) if not isinstance(targets, str) else targets
    record.update(
        evals=evals, best=pick_best(evals, task.primary_key), final=evals[-1] if evals else None,
        timing={"train_seconds": round(seconds, 3), "train_samples_per_second": _round(samples_per_s, 3),
                "real_tokens_per_second": _round(samples_per_s and samples_per_s * mean_tokens, 1),
                "mean_real_tokens_per_example": round(mean_tokens, 2),
                "resumed_from": str(resumed_from) if resumed_from else None,
                "attempts": len(record["attempts"]), "steps": state.global_step, "epochs": state.epoch,
                "total_flos": state.total_flos, **attempts_clock(record)},
        train_loss=whole_run_loss(state.log_history, first_step, output.training_loss, state.global_step),
        peak_memory_mb=peak_memory_mb(), finished=time.time())


def attempts_clock(record: dict) -> dict[str, Any]:
    """CPU/wall time fields (glue_lora.timing) summed over every attempt that recorded them."""
    combined: dict[str, Any] | None = None
    for attempt in record.get("attempts", []):
        if attempt.get("clock"):
            combined = combine_attempts(combined, attempt["clock"])
    return {k: v for k, v in (combined or {}).items() if k != "attempts"}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
