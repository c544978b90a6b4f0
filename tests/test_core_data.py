"""The local loaders on every real task directory in ../shared, plus the MNLI/QQP format fixtures."""

import time

import datasets
import pytest

from glue_lora.data import describe_splits, load_glue
from glue_lora.errors import UsageError
from glue_lora.tasks import get_task

# Rows per split and label distribution, from the files themselves (SOURCES.md lists the row counts;
# the distributions match the nyu-mll/glue parquet files row by row, per SOURCES.md).
EXPECTED = {
    "cola": {"train": (8551, {"unacceptable": 2528, "acceptable": 6023}),
             "validation": (1043, {"unacceptable": 322, "acceptable": 721}), "test": (1063, None)},
    "sst2": {"train": (67349, {"negative": 29780, "positive": 37569}),
             "validation": (872, {"negative": 428, "positive": 444}), "test": (1821, None)},
    "mrpc": {"train": (3668, {"not_equivalent": 1194, "equivalent": 2474}),
             "validation": (408, {"not_equivalent": 129, "equivalent": 279}), "test": (1725, None)},
    "stsb": {"train": (5749, {"mean": 2.701, "min": 0.0, "max": 5.0}),
             "validation": (1500, {"mean": 2.3639, "min": 0.0, "max": 5.0}), "test": (1379, None)},
    "qnli": {"validation": (5463, {"entailment": 2702, "not_entailment": 2761}), "test": (5463, None)},
    "rte": {"train": (2490, {"entailment": 1249, "not_entailment": 1241}),
            "validation": (277, {"entailment": 146, "not_entailment": 131}), "test": (3000, None)},
    "wnli": {"train": (635, {"not_entailment": 323, "entailment": 312}),
             "validation": (71, {"not_entailment": 40, "entailment": 31}), "test": (146, None)},
    "ax": {"test": (1104, None)},
    # format fixtures (tests/fixtures/glue): QQP has one malformed row that must be skipped
    "mnli": {"train": (24, {"entailment": 8, "neutral": 8, "contradiction": 8}),
             "validation_matched": (9, {"entailment": 3, "neutral": 3, "contradiction": 3}),
             "validation_mismatched": (9, {"entailment": 3, "neutral": 3, "contradiction": 3}),
             "test_matched": (6, None), "test_mismatched": (6, None)},
    "qqp": {"train": (20, {"not_duplicate": 14, "duplicate": 6}),
            "validation": (10, {"not_duplicate": 8, "duplicate": 2}), "test": (6, None)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_tsv_rows_and_labels(name, glue_dir):
    task = get_task(name)
    splits, source = load_glue(task, str(glue_dir))
    assert source.startswith("tsv:")
    described = {row["split"]: row for row in describe_splits(task, splits)}
    assert set(described) == set(EXPECTED[name])
    for split, (rows, labels) in EXPECTED[name].items():
        assert described[split]["rows"] == rows
        assert described[split]["labels"] == (labels or {"unlabelled": rows})
        assert list(splits[split].features) == [*task.text_columns, "label", "idx"]


def test_quirks_bom_quotes_and_string_labels(glue_dir):
    mrpc, _ = load_glue(get_task("mrpc"), str(glue_dir))
    # the BOM must not leak into the header; the dev row below starts with a lone quote in sentence2
    first = mrpc["validation"][0]
    assert first["sentence2"].startswith('" The foodservice pie business')
    assert first["label"] == 1
    rte, _ = load_glue(get_task("rte"), str(glue_dir))
    assert rte["validation"][0]["label"] == 1  # "not_entailment" -> id 1 in the Hub order
    qnli, _ = load_glue(get_task("qnli"), str(glue_dir))
    # read with quoting off: these fields start with a lone quote and must not swallow the next fields
    assert qnli["validation"][658]["sentence"].startswith('"')
    assert sum(s.startswith('"') for s in qnli["validation"]["sentence"]) >= 3


def test_mnli_reads_columns_by_position_and_maps_labels_by_name(glue_dir):
    mnli, _ = load_glue(get_task("mnli"), str(glue_dir))
    row = mnli["validation_matched"][1]
    assert row["hypothesis"].endswith("with a friend .") and row["label"] == 1  # neutral
    assert mnli["test_matched"][0]["label"] == -1


def test_qqp_malformed_row_is_skipped_and_logged(glue_dir, caplog):
    qqp, _ = load_glue(get_task("qqp"), str(glue_dir))
    assert 1000 not in qqp["train"]["idx"] and len(qqp["train"]) == 20
    assert "skipped 1 malformed rows" in caplog.text


@pytest.mark.parametrize("name", ["cola", "stsb", "rte", "mnli"])
def test_parquet_in_hub_layout_matches_tsv(name, glue_dir, tmp_path):
    task = get_task(name)
    from_tsv, _ = load_glue(task, str(glue_dir))
    for split, data in from_tsv.items():
        # the Hub stores labels as ClassLabel/float and text as (large_)string; write it that way
        data.to_parquet(str(tmp_path / task.name / f"{split}-00000-of-00001.parquet"))
    from_parquet, source = load_glue(task, str(tmp_path))
    assert source.startswith("parquet:")
    assert set(from_parquet) == set(from_tsv)
    for split in from_tsv:
        assert from_parquet[split].features == from_tsv[split].features
        assert from_parquet[split].to_dict() == from_tsv[split].to_dict()


def test_missing_data_dir_names_paths_tried(tmp_path):
    with pytest.raises(UsageError, match=r"tried .*CoLA/ \(classic TSV\) and .*cola/\*\.parquet"):
        load_glue(get_task("cola"), str(tmp_path))


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(UsageError, match="unreachable.*data_dir"):
        load_glue(get_task("rte"), None)
    assert time.monotonic() - start < 10  # the libraries' own retry loop takes ~23 s


def test_features_match_hub_types(glue_dir):
    stsb, _ = load_glue(get_task("stsb"), str(glue_dir))
    assert stsb["train"].features["label"] == datasets.Value("float32")
    cola, _ = load_glue(get_task("cola"), str(glue_dir))
    assert cola["train"].features["label"].names == ["unacceptable", "acceptable"]
