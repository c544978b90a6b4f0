"""Paired differences with t intervals, and the paired studies' pairing (sampler, bf16) and decision rule."""

import json
import math

import pytest

from glue_lora.paired import paired_difference
from glue_lora.paired_study import COMPARISONS, decision, main, pair_cells, read_runs

SAMPLER, BF16 = COMPARISONS["sampler"], COMPARISONS["bf16"]


def test_paired_difference_matches_a_hand_computed_t_interval():
    diff = paired_difference([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])  # differences 1, 2, 3: mean 2, sd 1
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 df)
    assert (diff.n, diff.mean, diff.sd) == (3, 2.0, 1.0)
    assert diff.low == pytest.approx(2 - half) and diff.high == pytest.approx(2 + half)
    assert not diff.excludes_zero  # [-0.48, 4.48]
    assert paired_difference([3.0, 5.0, 7.0, 9.0], [2.0, 3.0, 4.0, 5.0]).excludes_zero
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_difference([1.0], [0.0])


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
    assert "lies below 0 on sst2 lora" in decision(list(cells.values()), SAMPLER)
    assert "no interval lies below 0" in decision([cells["mrpc"]], SAMPLER)
    assert main([str(tmp_path), "--compare", "sampler", "--out", str(tmp_path / "table.md")]) == 0
    assert "| sst2 | lora | validation/accuracy | 5 (0 1 2 3 4) |" in (tmp_path / "table.md").read_text()
    assert "1.500x" in capsys.readouterr().out


def test_bf16_study_pairs_bf16_runs_with_the_fp32_runs_of_the_same_config(tmp_path):
    for seed in range(3):
        _write_run(tmp_path, "mrpc", "group_by_length", seed, 0.70 + 0.01 * seed, cpu=1.0)  # fp32: no bf16 key
        _write_run(tmp_path, "mrpc", "group_by_length", seed, 0.71 + 0.01 * seed, cpu=0.5, bf16=True)
        _write_run(tmp_path, "mrpc", "random", seed, 0.60, cpu=2.0)  # another sampler: another cell, no bf16 pair
    [cell] = pair_cells(*read_runs(tmp_path, BF16), BF16)
    assert cell.seeds == [0, 1, 2] and cell.cpu_per_step == (0.5, 1.0)
    assert cell.difference.mean == pytest.approx(0.01)
