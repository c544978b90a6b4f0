"""Best weights in the run directory, self-contained run directories, and `glue-lora predict`."""

import json

import pytest
import torch

from glue_lora.cli import main
from glue_lora.config import load_config
from glue_lora.predict import predict_run
from glue_lora.results import read_results
from glue_lora.runs import load_run
from glue_lora.train import run

# a high learning rate on a tiny subset: the scores jump around, so the best evaluation is not the last
# (with this seed: Pearson peaks at step 12 of 16; the first test asserts it, so a change of trajectory shows)
NOISY = ["max_train_samples=64", "max_eval_samples=32", "global_batch_size=8", "max_seq_length=64",
         "training.max_steps=16", "training.eval_strategy=steps", "training.eval_steps=4",
         "training.learning_rate=3e-2", "seed=1", "save_final=true",
         "training.bf16=false"]  # fp32 on every CPU: the tests compare with plain fp32 forwards of the loaded model


@pytest.fixture(scope="module")
def stsb_run(tiny_roberta, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stsb") / "run"
    record = run(load_config(None, ["task=stsb", f"model={tiny_roberta}", f"data_dir={glue_dir}",
                                    f"output_dir={out}", *NOISY]))
    return out, record


def test_run_dir_holds_the_best_evaluation_and_predict_reproduces_it_exactly(stsb_run):
    out, record = stsb_run
    key = record["primary_metric"]
    assert record["best"]["step"] != record["final"]["step"]  # the case that used to keep the wrong weights
    assert record["weights"] == {"evaluation": "best", "step": record["best"]["step"], "final_dir": "final"}
    [best] = predict_run(out)
    assert best.metrics["pearson"] == record["best"]["metrics"][key]  # exactly, not approximately
    assert best.metrics["spearmanr"] == record["best"]["metrics"]["validation/spearmanr"]
    [final] = predict_run(out / "final")
    assert final.metrics["pearson"] == record["final"]["metrics"][key]
    assert not (out / "checkpoints").exists()  # deleted after success (keep_checkpoints=false)


def test_predictions_are_in_split_order(stsb_run, glue_dir):
    out, _ = stsb_run
    [result] = predict_run(out)
    model, tokenizer = load_run(out)
    rows = read_results(out)["data"]["rows"]["validation"]
    assert len(result.index) == rows
    from glue_lora.data import load_glue
    from glue_lora.tasks import get_task
    dev = load_glue(get_task("stsb"), str(glue_dir))[0]["validation"]
    for position in (0, 7, rows - 1):
        example = dev[int(result.index[position])]
        batch = tokenizer(example["sentence1"], example["sentence2"], truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            score = model(**batch).logits.item()
        assert score == pytest.approx(float(result.predictions[position]), abs=1e-5)


def test_run_dir_is_self_contained(stsb_run):
    out, record = stsb_run
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(out)
    assert config.num_labels == 1 and config.problem_type == "regression"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == record["model"]  # as the config named it
    card = (out / "README.md").read_text()
    assert "stsb" in card and f"{record['best']['metrics']['validation/pearson']:.4f}" in card
    model, tokenizer = load_run(out)
    assert model.config.num_labels == 1
    scope: dict = {}
    exec(card.split("```python\n")[1].split("```")[0], scope)  # noqa: S102 - the card's own loading code
    batch = tokenizer("A man plays.", "A man is playing.", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(scope["model"](**batch).logits, model(**batch).logits)


def test_predict_cli_writes_files_and_checks_the_record(stsb_run, tmp_path, capsys):
    out, _ = stsb_run
    assert main(["predict", str(out), "--split", "all", "--out", str(tmp_path / "p"), "--format", "tsv"]) == 0
    assert "equal to the recorded step-" in capsys.readouterr().out
    test_rows = (tmp_path / "p" / "test.tsv").read_text().splitlines()
    assert test_rows[0] == "index\tprediction" and len(test_rows) == 1 + 1379  # every test row, never a subset
    assert [int(r.split("\t")[0]) for r in test_rows[1:]] == list(range(1379))


@pytest.mark.parametrize("problem, message", [
    ("failed", "holds a failed run"),
    ("running", "holds a running run"),
    ("old-layout", "older glue-lora layout"),
    ("split", "has no test_matched split; it has: train, validation, test"),
])
def test_predict_bad_input_is_one_line_and_writes_nothing(stsb_run, tmp_path, problem, message, capsys):
    import shutil
    out, _ = stsb_run
    broken = tmp_path / "run"
    shutil.copytree(out, broken)
    record = read_results(broken)
    split = "test_matched" if problem == "split" else "validation"
    if problem in ("failed", "running"):
        record.update(status=problem, error="ValueError: boom" if problem == "failed" else None)
        (broken / "results.json").write_text(json.dumps(record))
    if problem == "old-layout":
        (broken / "config.json").unlink()
    assert main(["predict", str(broken), "--split", split, "--out", str(tmp_path / "p")]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], stderr[-1500:]
    assert not (tmp_path / "p").exists()


def test_predict_exits_non_zero_when_the_weights_no_longer_reproduce_the_record(stsb_run, tmp_path, capsys):
    import shutil
    out, _ = stsb_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    record = read_results(copy)
    best = next(e for e in record["evals"] if e["step"] == record["weights"]["step"])
    best["metrics"]["validation/pearson"] += 0.01  # as if the data or the libraries had changed since training
    (copy / "results.json").write_text(json.dumps(record))
    assert main(["predict", str(copy), "--split", "validation", "--out", str(tmp_path / "p")]) == 1
    captured = capsys.readouterr()
    assert "DIFFERS from the recorded step-" in captured.out
    assert [line for line in captured.err.splitlines() if line.startswith("error: ")] == [
        "error: validation: metrics differ from the run's record; check data_dir and the library versions in "
        "results.json"]


def test_export_merge_gives_a_plain_model_with_the_same_logits(stsb_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out, record = stsb_run
    merged_dir = tmp_path / "merged"
    assert main(["export", str(out), "--merge", str(merged_dir)]) == 0
    assert not (merged_dir / "adapter_config.json").exists() and (merged_dir / "model.safetensors").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()  # transformers alone
    unmerged, tokenizer = load_run(out)
    batch = tokenizer(["A man is playing a guitar.", "Two dogs run."], ["A man plays guitar.", "A cat sleeps."],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        diff = (merged(**batch).logits - unmerged(**batch).logits).abs().max().item()
    assert diff < 1e-4
    assert merged.config.num_labels == 1 and merged.config.problem_type == "regression"
    [result] = predict_run(merged_dir)  # predict takes a merged directory too
    assert result.metrics["pearson"] == pytest.approx(record["best"]["metrics"]["validation/pearson"], abs=1e-4)


def test_autopeft_loads_a_run_dir_given_its_labels(stsb_run):
    """AutoPeft reads only adapter_config.json, so it needs the labels from the run's config.json."""
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoConfig

    out, _ = stsb_run
    labels = AutoConfig.from_pretrained(out)
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        out, num_labels=labels.num_labels, id2label=labels.id2label, label2id=labels.label2id,
        problem_type=labels.problem_type)
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"


def test_predict_reproduces_a_bf16_run_exactly(tiny_roberta, glue_dir, tmp_path):
    # bf16 autocast is the default on CPUs with native bf16; predict must score in the precision the run used
    # (emulated on CPUs without it: slower, same rounding)
    out = tmp_path / "run"
    overrides = [o for o in NOISY if not o.startswith("training.bf16")] + ["training.bf16=true"]
    record = run(load_config(None, ["task=rte", f"model={tiny_roberta}", f"data_dir={glue_dir}", f"output_dir={out}",
                                    *overrides]))
    assert record["precision"] == "bf16"
    [best] = predict_run(out)
    assert best.metrics["accuracy"] == record["best"]["metrics"]["validation/accuracy"]


def test_an_undefined_metric_prints_as_n_a():
    from glue_lora.predict import _format_metrics

    assert _format_metrics({"pearson": None, "spearmanr": 0.5}) == "pearson n/a, spearmanr 0.5000"
