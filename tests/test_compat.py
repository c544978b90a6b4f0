"""`compat: run_glue` reproduces the pipeline transformers' run_glue.py builds, loss for loss.

The reference pipeline is written out here from the same public Trainer pieces run_glue.py uses (AutoConfig /
AutoTokenizer / AutoModelForSequenceClassification, tokenisation padded to max_seq_length, the first N rows for
--max_*_samples, default_data_collator, TrainingArguments' defaults, Trainer's default sampler), plus PEFT's
LoraConfig for the LoRA case (run_glue has no PEFT switch; the issue's comparison patched one in).
"""

import numpy as np
import pytest
from peft import LoraConfig, get_peft_model
from sklearn.metrics import accuracy_score, f1_score
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments,
                          default_data_collator, set_seed)

import glue_lora.train as train_module
from glue_lora.config import load_config
from glue_lora.data import load_glue
from glue_lora.modeling import resolve_model_path
from glue_lora.tasks import get_task
from tests.conftest import MINILM

N_TRAIN, N_EVAL, BATCH, SEED, MAX_LENGTH = 48, 32, 8, 3, 128
LR = {"lora": 2e-3, "full": 1e-4}


def run_glue_pipeline(glue_dir, out_dir, method: str) -> tuple[list[dict], dict]:
    """What run_glue.py does for `--task_name mrpc --do_train --do_eval` with these sizes; (log, eval metrics)."""
    raw, _ = load_glue(get_task("mrpc"), str(glue_dir))
    set_seed(SEED)
    path = resolve_model_path(MINILM)
    config = AutoConfig.from_pretrained(path, num_labels=2, finetuning_task="mrpc")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16,
                                                 target_modules=["query", "value"]))

    def preprocess(examples):
        return tokenizer(examples["sentence1"], examples["sentence2"], padding="max_length", max_length=MAX_LENGTH,
                         truncation=True)

    train = raw["train"].select(range(N_TRAIN)).map(preprocess, batched=True)
    dev = raw["validation"].select(range(N_EVAL)).map(preprocess, batched=True)

    def compute_metrics(prediction):
        preds = np.argmax(prediction.predictions, axis=1)
        return {"accuracy": accuracy_score(prediction.label_ids, preds), "f1": f1_score(prediction.label_ids, preds)}

    args = TrainingArguments(output_dir=str(out_dir), seed=SEED, per_device_train_batch_size=BATCH,
                             learning_rate=LR[method], num_train_epochs=1, logging_steps=1, report_to="none",
                             label_names=["labels"])  # PeftModel hides the signature Trainer reads them from
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, compute_metrics=compute_metrics,
                      processing_class=tokenizer, data_collator=default_data_collator)
    trainer.train()
    return trainer.state.log_history, trainer.evaluate()


def harness_run(glue_dir, out_dir, method: str, monkeypatch, *extra: str) -> tuple[list[dict], dict]:
    trainers = []
    build = train_module.build_trainer
    monkeypatch.setattr(train_module, "build_trainer", lambda *a, **k: trainers.append(build(*a, **k)) or trainers[-1])
    config = load_config(None, [
        "task=mrpc", f"model={MINILM}", f"data_dir={glue_dir}", f"output_dir={out_dir}", f"method={method}",
        f"seed={SEED}", f"max_train_samples={N_TRAIN}", f"max_eval_samples={N_EVAL}", f"global_batch_size={BATCH}",
        f"training.learning_rate={LR[method]}", "training.num_train_epochs=1", "training.logging_steps=1", *extra])
    record = train_module.run(config)
    return trainers[0].state.log_history, record["final"]["metrics"]


def _train_log(history: list[dict]) -> list[tuple]:
    return [(e["step"], e["loss"], e["grad_norm"], e["learning_rate"]) for e in history if "loss" in e]


@pytest.mark.parametrize("method", ["lora", pytest.param("full", marks=pytest.mark.slow)])
def test_compat_run_glue_reproduces_run_glue_loss_for_loss(method, glue_dir, tmp_path, monkeypatch):
    ref_log, ref_eval = run_glue_pipeline(glue_dir, tmp_path / "ref", method)
    ours_log, ours_eval = harness_run(glue_dir, tmp_path / "ours", method, monkeypatch, "compat=run_glue")
    assert len(_train_log(ref_log)) == N_TRAIN // BATCH
    assert _train_log(ours_log) == _train_log(ref_log)  # every step's loss, grad norm and lr, bit for bit
    assert ours_eval["validation/loss"] == ref_eval["eval_loss"]
    assert ours_eval["validation/accuracy"] == ref_eval["eval_accuracy"]
    assert ours_eval["validation/f1"] == ref_eval["eval_f1"]


def test_compat_run_glue_settings_and_overrides():
    base = ["task=mrpc", f"model={MINILM}", "compat=run_glue"]
    config = load_config(None, base)
    assert config.pad_to_max_length is True  # run_glue's --pad_to_max_length default
    assert load_config(None, [*base, "pad_to_max_length=false"]).pad_to_max_length is False
    args = train_module.training_arguments(config, train_module.plan_batch(config, 1))
    defaults = TrainingArguments(output_dir="x")
    for key in ("train_sampling_strategy", "per_device_eval_batch_size", "logging_steps", "eval_strategy",
                "save_steps", "bf16", "fp16"):
        assert getattr(args, key) == getattr(defaults, key), key
    ours = train_module.training_arguments(load_config(None, base[:2]), train_module.plan_batch(config, 1))
    assert ours.train_sampling_strategy != defaults.train_sampling_strategy or ours.per_device_eval_batch_size != 8
    with pytest.raises(Exception, match="compat='hf' must be one of run_glue"):
        load_config(None, [*base[:2], "compat=hf"])
