"""Report honesty: subset runs are marked and listed with their sizes; logging/tracking keys never split settings."""

from __future__ import annotations

from glue_lora.report import build_report
from tests.test_report import make_record, write


def _record(seed: int, value: float, training: dict | None = None, eval_rows: int = 277,
            max_eval_samples: int | None = None) -> dict:
    record = make_record("rte", "roberta-base", "lora", seed, [value - 0.05, value])
    record["config"]["training"].update(training or {})
    record["config"]["max_eval_samples"] = max_eval_samples
    record["data"] = {"source": "tsv:/data/RTE", "rows": {"train": 2490, "validation": eval_rows}}
    return record


def test_logging_and_tracking_keys_do_not_split_settings(tmp_path):
    write(tmp_path, _record(0, 0.80))
    write(tmp_path, _record(1, 0.82, {"report_to": "tensorboard", "disable_tqdm": False, "logging_steps": 5,
                                      "per_device_eval_batch_size": 256, "dataloader_num_workers": 4}))
    write(tmp_path, _record(2, 0.84, {"logging_strategy": "epoch", "run_name": "x", "save_total_limit": 3}))
    report = build_report(tmp_path, tmp_path / "out")
    cells = report["cells"]
    assert list(cells["setting"]) == [""] and list(cells["n"]) == [3], "one setting: only the seed differs"
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## GLUE dev results" in text and "## Subsets" not in text and "‡" not in text


def test_result_changing_keys_still_split_settings(tmp_path):
    write(tmp_path, _record(0, 0.80))
    write(tmp_path, _record(1, 0.82, {"weight_decay": 0.1}))
    assert sorted(build_report(tmp_path, tmp_path / "out")["cells"]["setting"]) == ["weight_decay=0.1",
                                                                                     "weight_decay=unset"]


def test_subset_runs_are_marked_and_listed_with_their_sizes(tmp_path):
    for seed, value in enumerate((0.70, 0.74)):
        write(tmp_path, _record(seed, value, eval_rows=64, max_eval_samples=64))
    report = build_report(tmp_path, tmp_path / "out")
    assert list(report["cells"]["subset"]) == ["validation 64 rows"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| rte | 72.0‡ (72.0 ± 2.8, n=2) |" in text
    assert "## Subsets" in text and "- rte roberta-base LoRA: validation 64 rows" in text
    assert "subset" in (tmp_path / "out" / "results.csv").read_text().splitlines()[0]


def test_a_cap_above_the_split_size_is_no_subset(tmp_path):
    write(tmp_path, _record(0, 0.80, eval_rows=277, max_eval_samples=1000))
    assert list(build_report(tmp_path, tmp_path / "out")["cells"]["subset"]) == [""]
