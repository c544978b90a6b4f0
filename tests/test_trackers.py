"""Trackers: TensorBoard events in <run_dir>/logs with the run's name and the final results as summary values;
a missing tracker package or an unreachable Hub is one line before any model loads."""

from __future__ import annotations

import json

import pytest

from glue_lora import cli, trackers
from glue_lora.config import load_config
from glue_lora.train import run
from tests.conftest import REPO

DEMO = str(REPO / "configs" / "demo.yaml")

TINY = ["task=rte", "max_train_samples=32", "max_eval_samples=16", "global_batch_size=16", "max_seq_length=64",
        "training.max_steps=2", "training.logging_steps=1", "training.report_to=tensorboard"]


def test_tensorboard_logs_land_in_the_run_directory_with_summary(tiny_roberta, glue_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the dev extra installs tensorboard")  # make test has it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "my-run"
    record = run(load_config(None, [f"model={tiny_roberta}", f"data_dir={glue_dir}", f"output_dir={run_dir}",
                                    "name=my-run", *TINY]))
    events = EventAccumulator(str(run_dir / "logs"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    best = record["best"]["metrics"]["validation/accuracy"]
    assert events.Scalars("summary/best/validation/accuracy")[-1].value == pytest.approx(best)
    assert {"summary/final/validation/accuracy", "summary/train_loss", "eval/validation_accuracy"} <= scalars
    args = json.loads(events.Tensors("args/text_summary")[0].tensor_proto.string_val[0])
    assert args["run_name"] == "my-run"
    assert not (run_dir / "checkpoints" / "runs").exists(), "no events under checkpoints/runs any more"


def test_missing_tracker_package_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(trackers, "installed", lambda module: module != "mlflow")
    assert cli.main(["train", DEMO, "training.report_to=[tensorboard,mlflow]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "training.report_to=mlflow needs mlflow: pip install 'glue-lora[mlflow]'" in err


def test_push_to_hub_offline_is_one_line(monkeypatch, capsys, tmp_path, glue_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["train", DEMO, f"data_dir={glue_dir}", f"output_dir={tmp_path / 'run'}",
                     "training.push_to_hub=true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "push_to_hub" in err and "HF_HUB_OFFLINE" in err
    assert not (tmp_path / "run").exists(), "refused before the run directory was made"


def test_push_to_hub_without_network_is_one_line(monkeypatch, capsys, tmp_path, glue_dir):
    import huggingface_hub

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", unreachable)
    assert cli.main(["train", DEMO, f"data_dir={glue_dir}", f"output_dir={tmp_path / 'run'}",
                     "training.push_to_hub=true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Hub is not reachable (Failed to resolve 'huggingface.co')" in err
