"""The paired studies (sampler, bf16): pairing by seed within one config, CPU-time ratios, the decision rule."""

import json

import pytest

from glue_lora.paired_study import COMPARISONS, decision, main, pair_cells, read_runs

SAMPLER, BF16 = COMPARISONS["sampler"], COMPARISONS["bf16"]


def _write_run(root, task, sampler, seed, score, cpu=1.0, status="success", **training):
    folder = root / f"{task}-{sampler}-{training}-s{seed}"
    folder.mkdir(parents=True)
    key = "validation/accuracy"
    record = {"status": status, "task": task, "method": "lora", "seed": seed, "primary_metric": key,
              "config": {"seed": seed, "task": task, "training": {"train_sampling_strategy": sampler, **training}},
              "best": {"metrics": {key: score}}, "timing": {"cpu_seconds_per_step": cpu}}
    (folder / "results.json").write_text(json.dumps(record))


def test_study_pairs_by_seed_and_switches_the_default_only_on_evidence(tmp_path, capsys):
    for seed in range(5):
        _write_run(tmp_path, "mrpc", "group_by_length", seed, 0.70 + 0.01 * seed, cpu=1.0)
        _write_run(tmp_path, "mrpc", "random", seed, 0.70 + 0.01 * seed + (0.001 if seed % 2 else -0.001), cpu=1.5)
        _write_run(tmp_path, "sst2", "group_by_length", seed, 0.80 + 0.01 * seed - 0.02 - 0.001 * seed)
        _write_run(tmp_path, "sst2", "random", seed, 0.80 + 0.01 * seed)
    _write_run(tmp_path, "sst2", "random", 9, 0.99)  # unpaired: ignored
    _write_run(tmp_path, "sst2", "group_by_length", 8, 0.0, status="failed")  # unfinished: ignored
    _write_run(tmp_path, "sst2", "random", 0, 0.5, learning_rate=1.0)  # another config: never paired with these
    cells = {c.task: c for c in pair_cells(*read_runs(tmp_path, SAMPLER), SAMPLER)}
    assert cells["mrpc"].seeds == [0, 1, 2, 3, 4] and not cells["mrpc"].difference.excludes_zero
    assert cells["mrpc"].cpu_per_step == (1.0, 1.5)
    assert cells["sst2"].difference.high < 0  # grouping costs ~2 points on every seed
    assert "grouped's interval lies below 0 on sst2 lora" in decision(list(cells.values()), SAMPLER)
    assert "no interval lies below 0" in decision([cells["mrpc"]], SAMPLER)
    assert main([str(tmp_path), "--compare", "sampler", "--out", str(tmp_path / "table.md")]) == 0
    assert "| sst2 | lora | validation/accuracy | 5 (0 1 2 3 4) |" in (tmp_path / "table.md").read_text()
    assert "1.500x" in capsys.readouterr().out


def test_bf16_study_pairs_bf16_runs_with_the_fp32_runs_of_the_same_config(tmp_path):
    for seed in range(3):
        _write_run(tmp_path, "mrpc", "group_by_length", seed, 0.70 + 0.01 * seed, cpu=1.0)  # fp32: no bf16 key
        _write_run(tmp_path, "mrpc", "group_by_length", seed, 0.71 + 0.011 * seed, cpu=0.5, bf16=True)
        _write_run(tmp_path, "mrpc", "random", seed, 0.60, cpu=2.0)  # another sampler: another cell, no bf16 pair
    [cell] = pair_cells(*read_runs(tmp_path, BF16), BF16)
    assert cell.seeds == [0, 1, 2] and cell.cpu_per_step == (0.5, 1.0)
    assert cell.difference.mean == pytest.approx(0.011)
    assert "bf16's interval lies above 0 on mrpc lora: it changes scores" in decision([cell], BF16)  # +1.0 to +1.2 on every seed


def test_bf16_study_reads_the_precision_a_run_resolved_when_its_record_says(tmp_path):
    # since bf16 is the default on native-bf16 CPUs, a config without `bf16` may have trained in either
    for seed in range(3):
        _write_run(tmp_path, "mrpc", "group_by_length", seed, 0.70 + 0.001 * (-1) ** seed, cpu=0.5)
        _write_run(tmp_path, "mrpc", "group_by_length", seed, 0.70, cpu=1.0, bf16=False)
    for path in tmp_path.glob("*{}*/results.json"):  # the runs without a bf16 key trained in bf16 (the default)
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "precision": "bf16"}))
    [cell] = pair_cells(*read_runs(tmp_path, BF16), BF16)
    assert cell.seeds == [0, 1, 2] and cell.cpu_per_step == (0.5, 1.0)
    assert "every interval contains 0" in decision([cell], BF16)


def test_runs_csv_lists_every_finished_run_with_its_times(tmp_path):
    import csv

    for seed in range(2):
        _write_run(tmp_path, "mrpc", "random", seed, 0.7, cpu=1.5)
    _write_run(tmp_path, "mrpc", "random", 5, 0.7, status="failed")
    assert main([str(tmp_path), "--compare", "sampler", "--runs-csv", str(tmp_path / "runs.csv")]) == 1  # no pairs
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert [(r["seed"], r["sampler"], r["precision"], r["cpu_seconds_per_step"]) for r in rows] == [
        ("0", "random", "fp32", "1.5"), ("1", "random", "fp32", "1.5")]


def test_an_unwritable_output_is_one_error_line(tmp_path, capsys, monkeypatch):
    _write_run(tmp_path, "mrpc", "random", 0, 0.7)

    original = type(tmp_path).open

    def refuse(self, mode="r", *args, **kwargs):  # reads work (the records), writes fail (a full or ro disk)
        if "w" in mode:
            raise OSError(30, "Read-only file system")
        return original(self, mode, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "open", refuse)
    assert main([str(tmp_path), "--runs-csv", str(tmp_path / "runs.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "Read-only file system" in err and "Traceback" not in err
