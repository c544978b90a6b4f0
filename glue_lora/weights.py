"""Which weights a run directory holds: the best evaluation's, chosen exactly as the record's `best`.

During training `BestWeights` saves the model of every evaluation that `pick_best` (the function that fills
`results.json`'s `best`) ranks first so far, to `checkpoints/best/step-<N>/`. At the end the candidate of the
recorded best step is copied into the run directory, after checking its stored score equals the record's.
Candidates stay consistent with resumes: ones from evaluations after the resumed checkpoint (a future that
was lost) are dropped when training starts, and a candidate is deleted only once a better evaluation is in
the history of every checkpoint still on disk.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from glue_lora.config import RunConfig
from glue_lora.results import pick_best, summarise_evals
from glue_lora.tasks import TaskSpec

log = logging.getLogger(__name__)
CANDIDATES = "best"  #: folder under checkpoints/
MARKER = "best.json"  #: {step, epoch, metric, value} beside a candidate's weights
_STEP_DIR = re.compile(r"^step-(\d+)$")


class BestWeights(TrainerCallback):
    """Saves the model of each new best evaluation (by the task's primary metric; NaN never wins)."""

    def __init__(self, checkpoints: Path, task: TaskSpec, config: RunConfig):
        self.folder, self.task, self.config = Path(checkpoints) / CANDIDATES, task, config
        split, _, metric = task.primary_key.partition("/")
        self.trainer_key = f"eval_{split}_{metric}"  # Trainer's name for it with a dict of eval datasets

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # a resume: evaluations after the checkpoint did not happen
            for step, path in candidates(self.folder).items():
                if step > state.global_step:
                    shutil.rmtree(path)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not state.is_world_process_zero or self.trainer_key not in (metrics or {}):
            return  # MNLI evaluates twice per step; the primary split's call decides
        best = pick_best(summarise_evals(state.log_history, self.task.eval_splits), self.task.primary_key)
        if best is not None and best["step"] == state.global_step:
            save_candidate(model, self.config, self.folder, best, self.task.primary_key)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            prune(self.folder, Path(args.output_dir), state.log_history, self.task)


def save_model_files(model, folder: Path, config: RunConfig) -> None:
    """The trained weights as the method saves them (PEFT adapter, BitFit's tensors, or the full model)."""
    from glue_lora.modeling import save_trained

    if not save_trained(model, folder, config):
        model.save_pretrained(str(folder))


def save_candidate(model, config: RunConfig, folder: Path, evaluation: dict[str, Any], key: str) -> None:
    """Write to a temporary folder, then rename: a crash never leaves half a candidate."""
    step = evaluation["step"]
    final, tmp = folder / f"step-{step}", folder / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_files(model, tmp, config)
    marker = {"step": step, "epoch": evaluation.get("epoch"), "metric": key, "value": evaluation["metrics"][key]}
    (tmp / MARKER).write_text(json.dumps(marker))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def candidates(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): path for path in folder.iterdir() if (m := _STEP_DIR.match(path.name))}


def prune(folder: Path, checkpoints: Path, log_history: list[dict], task: TaskSpec) -> None:
    """Delete candidates beaten by an evaluation that every checkpoint on disk already has in its history."""
    steps = [int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    if not steps:
        return
    evals = [e for e in summarise_evals(log_history, task.eval_splits) if e["step"] <= min(steps)]
    settled = pick_best(evals, task.primary_key)
    for step, path in candidates(folder).items():
        if settled is not None and step < settled["step"]:
            shutil.rmtree(path)


def install_best(checkpoints: Path, run_dir: Path, best: dict[str, Any], key: str) -> Path:
    """Copy the recorded best evaluation's weights into the run directory; returns the candidate used."""
    source = Path(checkpoints) / CANDIDATES / f"step-{best['step']}"
    marker = json.loads((source / MARKER).read_text()) if (source / MARKER).is_file() else None
    if marker is None or marker["value"] != best["metrics"][key]:
        raise RuntimeError(f"the weights of the best evaluation (step {best['step']}) are not in {source} "
                           f"(found {marker}); the run directory would not hold the reported model")
    for path in source.iterdir():
        if path.is_file() and path.name not in (MARKER, "README.md"):
            shutil.copy2(path, run_dir / path.name)
    return source
