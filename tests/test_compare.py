"""Which differences are real: the interval arithmetic, and the report's method-comparison sections."""

from __future__ import annotations

import math

import pytest

from glue_lora.report import build_report
from glue_lora.stats import paired_difference, seed_difference, welch_difference
from tests.test_report import make_record, write


def test_paired_interval_is_students_t_on_the_per_seed_differences():
    found = paired_difference([3.0, 4.0, 5.0], [1.0, 2.0, 2.0])  # differences 2, 2, 3
    half = 4.302652729911275 * math.sqrt(1 / 3) / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (found.mean, found.n, found.kind) == (pytest.approx(7 / 3), 3, "paired")
    assert (found.low, found.high) == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half))
    assert found.excludes_zero and found.text() == "+2.3 [+0.9, +3.8]*"
    assert not paired_difference([1.0, 3.0], [2.0, 2.0]).excludes_zero  # +-1: centred on 0
    assert paired_difference([1.0], [2.0]) is None  # one pair says nothing about the spread
    same = paired_difference([70.7, 71.0], [70.0, 70.3])  # one dev example apart on both seeds: no spread
    assert same.degenerate and not same.excludes_zero and same.text() == "+0.7 [+0.7, +0.7] (no spread)"


def test_unshared_seeds_fall_back_to_welch():
    found = seed_difference({0: 80.0, 1: 82.0}, {2: 70.0, 3: 71.0, 4: 72.0})
    assert found.kind == "welch" and found.mean == pytest.approx(81 - 71)
    assert found == welch_difference([80.0, 82.0], [70.0, 71.0, 72.0])
    assert seed_difference({0: 1.0, 1: 2.0, 5: 9.0}, {0: 0.0, 1: 0.0}).kind == "paired"  # shared seeds 0, 1
    assert seed_difference({0: 1.0}, {1: 2.0}) is None


def test_report_marks_differences_whose_interval_excludes_zero(tmp_path):
    # rte accuracy per seed: FT 70/72/74, LoRA 71/72/75 (+1, 0, +1: not resolved), (IA)3 60/61/64 (clearly worse)
    scores = {"full": [0.70, 0.72, 0.74], "lora": [0.71, 0.72, 0.75], "ia3": [0.60, 0.61, 0.64]}
    for method, values in scores.items():
        for seed, value in enumerate(values):
            write(tmp_path, make_record("rte", "roberta-base", method, seed, [value - 0.05, value]))
    result = build_report(tmp_path, tmp_path / "report")
    diffs = result["differences"].set_index("method")
    ia3 = diffs.loc["ia3", "vs_full"]
    assert ia3.mean == pytest.approx(-10.333333) and ia3.excludes_zero and ia3.n == 3
    assert not diffs.loc["lora", "vs_full"].excludes_zero
    assert diffs.loc["ia3", "vs_lora"].mean == pytest.approx(-11.0)
    assert diffs.loc["full", "vs_full"] is None
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Which differences are real" in text
    assert f"| rte | roberta-base | (IA)³ | 3 | **{ia3.text()}** |" in text
    assert "## Cost per method" in text and "## Paper rows without runs here" in text
    assert "| roberta-base | Adpt^D (0.3M)* | 0.3M | 87.1 |" in text  # Table 2's adapter rows, still shown
    assert "| roberta-base | BitFit | 0.1M | 84.7 |" in text  # no BitFit run here: its paper row stands alone
    assert "vs-full-rte-roberta-base.png" in [p.name for p in result["plots"]]


def test_a_searched_grid_is_compared_at_each_methods_best_rate_chosen_on_shared_seeds(tmp_path):
    # stage 1: three rates at seed 0; stage 2: seeds 1 and 2 at the best one (FT 1e-4, LoRA 1e-3)
    grid = {"full": {3e-5: 0.60, 1e-4: 0.70, 3e-4: 0.65}, "lora": {3e-4: 0.62, 1e-3: 0.74, 3e-3: 0.72},
            "ia3": {1e-3: 0.50, 3e-3: 0.55, 1e-2: 0.58}}  # (IA)3's best is its largest rate
    more = {"full": [0.68, 0.69], "lora": [0.60, 0.61], "ia3": [0.57, 0.56]}  # LoRA's fall below 3e-3's seed 0
    for method, rates in grid.items():
        best = max(rates, key=rates.get)
        for lr, value in rates.items():
            write(tmp_path, make_record("rte", "roberta-base", method, 0, [value], lr=lr), f"{method}-{lr}-s0")
        for seed, value in enumerate(more[method], start=1):
            write(tmp_path, make_record("rte", "roberta-base", method, seed, [value], lr=best), f"{method}-{best}-s{seed}")
    result = build_report(tmp_path, tmp_path / "report")
    lora = result["differences"].set_index("method").loc["lora", "vs_full"]
    assert lora.n == 3 and lora.mean == pytest.approx(100 * ((0.74 - 0.70) + (0.60 - 0.68) + (0.61 - 0.69)) / 3)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## GLUE dev results at each method's best setting" in text
    assert "- rte roberta-base LoRA: lr=1e-3 (seeds 0 1 2)\n" in text  # 1e-3 wins on seed 0, the shared seed
    assert "- rte roberta-base FT: lr=1e-4 (seeds 0 1 2)\n" in text
    assert "- rte roberta-base (IA)³: lr=1e-2 (seeds 0 1 2) — the grid's smallest or largest rate" in text
    assert "## All settings" in text and "## Which differences are real" in text
    assert result["partial"] == []  # the rates not chosen have seed 0 only, by design: not a partial sweep
    (tmp_path / "lora-0.001-s2" / "results.json").unlink()  # a seed of a chosen rate missing: that is partial
    assert "rte roberta-base LoRA [lr=1e-3] lacks seed 2" in str(build_report(tmp_path, tmp_path / "r2")["partial"])
