"""The local loaders on every real task directory in ../shared, plus the MNLI/QQP format fixtures."""

import http.server
import json
import socket
import threading
import time

import datasets
import pytest

import glue_lora.data as data_module
from glue_lora.cli import main as cli_main
from glue_lora.data import HUB_DATASET, describe_splits, features, load_glue, require_training_splits
from glue_lora.errors import UsageError, require_hub
from glue_lora.tasks import TASKS, get_task
from tests.conftest import SHARED_GLUE

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


def test_every_shared_task_directory_is_checked():
    by_dir = {task.tsv_dir: name for name, task in TASKS.items()}
    shared = sorted(d.name for d in SHARED_GLUE.iterdir() if d.is_dir())
    assert shared and all(by_dir.get(d) in EXPECTED for d in shared), shared


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


def hub_typed(split: datasets.Dataset, task) -> datasets.Dataset:
    """The same rows as the Hub serves them: idx first here (column order must not matter), text as
    large_string, labels as ClassLabel or float32, idx int32."""
    feats = features(task)
    hub = datasets.Features({"idx": feats["idx"], "label": feats["label"],
                             **{col: datasets.Value("large_string") for col in task.text_columns}})
    return split.select_columns(list(hub)).cast(hub)


def assert_same_splits(got: datasets.DatasetDict, want: datasets.DatasetDict) -> None:
    assert set(got) == set(want)
    for split in want:
        assert got[split].features == want[split].features  # same columns, order and types
        assert got[split].to_dict() == want[split].to_dict()  # same rows and label ids


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parquet_in_hub_layout_matches_tsv(name, glue_dir, tmp_path):
    task = get_task(name)
    from_tsv, _ = load_glue(task, str(glue_dir))
    folder = tmp_path / task.name
    for split, data in from_tsv.items():
        hub = hub_typed(data, task)
        if split == task.train_split:  # large Hub splits come in shards: write this one as two
            half = len(hub) // 2
            hub.select(range(half)).to_parquet(str(folder / f"{split}-00000-of-00002.parquet"))
            hub.select(range(half, len(hub))).to_parquet(str(folder / f"{split}-00001-of-00002.parquet"))
        else:
            hub.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    from_parquet, source = load_glue(task, str(tmp_path))
    assert source == f"parquet:{folder}"
    assert_same_splits(from_parquet, from_tsv)


@pytest.mark.parametrize("name", ["cola", "mnli", "qqp", "stsb", "ax"])
def test_hub_source_matches_tsv(name, glue_dir, monkeypatch):
    task = get_task(name)
    from_tsv, _ = load_glue(task, str(glue_dir))
    calls = []

    def fake_load_dataset(path, config_name):  # what nyu-mll/glue returns, without the network
        calls.append((path, config_name))
        return datasets.DatasetDict({split: hub_typed(data, task) for split, data in from_tsv.items()})

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # skip the reachability probe
    monkeypatch.setattr(data_module.datasets, "load_dataset", fake_load_dataset)
    from_hub, source = load_glue(task, None)
    assert calls == [(HUB_DATASET, task.name)] and source == f"hub:{HUB_DATASET}/{task.name}"
    assert_same_splits(from_hub, from_tsv)


def test_hub_load_failure_is_one_line_with_the_local_alternative(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(data_module.datasets, "load_dataset", offline)
    with pytest.raises(UsageError, match=r"could not load nyu-mll/glue/rte .*\(ConnectionError\); point data_dir at"):
        load_glue(get_task("rte"), None)


def test_parquet_without_a_hub_column_is_one_line(glue_dir, tmp_path):
    cola, _ = load_glue(get_task("cola"), str(glue_dir))
    cola["validation"].remove_columns("idx").to_parquet(str(tmp_path / "cola" / "validation-00000-of-00001.parquet"))
    with pytest.raises(UsageError, match=r"cola validation has no column\(s\) idx \(found: sentence, label\)"):
        load_glue(get_task("cola"), str(tmp_path))


def test_unlabelled_rows_in_a_labelled_split_are_not_counted_as_the_last_class():
    task = get_task("cola")
    split = datasets.Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, -1, 1], "idx": [0, 1, 2]},
                                       features=features(task))
    described = describe_splits(task, datasets.DatasetDict({"validation": split}))
    assert described[0]["labels"] == {"unlabelled": 1, "unacceptable": 1, "acceptable": 1}


def test_training_needs_train_and_every_evaluation_split(glue_dir, tmp_path):
    require_training_splits(get_task("mnli"), str(glue_dir))  # the fixture has all of them
    require_training_splits(get_task("rte"), None)  # the Hub serves every split: nothing to check offline
    # ../shared holds QNLI dev/test only
    with pytest.raises(UsageError, match=r"QNLI lacks train.tsv \(train\), which training needs; .*glue-lora data qnli"):
        require_training_splits(get_task("qnli"), str(glue_dir))
    (tmp_path / "mnli").mkdir()
    (tmp_path / "mnli" / "train-00000-of-00001.parquet").touch()
    with pytest.raises(UsageError, match=r"lacks validation_matched-00000-of-00001.parquet \(validation_matched\), "
                                         r"validation_mismatched-00000-of-00001.parquet \(validation_mismatched\)"):
        require_training_splits(get_task("mnli"), str(tmp_path))


def test_blank_lines_are_not_rows(glue_dir, tmp_path):
    rte = tmp_path / "RTE"
    rte.mkdir()
    lines = (glue_dir / "RTE" / "dev.tsv").read_text().splitlines()
    (rte / "dev.tsv").write_text("\n".join(lines[:3] + [""] + lines[3:6]) + "\n\n")
    splits, _ = load_glue(get_task("rte"), str(tmp_path))
    assert len(splits["validation"]) == 5 and splits["validation"]["idx"] == [0, 1, 2, 3, 4]


def test_missing_data_dir_names_paths_tried(tmp_path):
    with pytest.raises(UsageError, match=r"tried .*CoLA/ \(classic TSV\) and .*cola/\*\.parquet"):
        load_glue(get_task("cola"), str(tmp_path))
    with pytest.raises(UsageError, match=r"data_dir .*nope does not exist .*point data_dir at a classic GLUE copy"):
        load_glue(get_task("cola"), str(tmp_path / "nope"))


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(UsageError, match="unreachable.*data_dir"):
        load_glue(get_task("rte"), None)
    assert time.monotonic() - start < 10  # the libraries' own retry loop takes ~23 s


@pytest.fixture
def local_endpoint():
    """A local HTTP server standing in for HF_ENDPOINT (a mirror); answers every request with 404."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_hub_probe_uses_the_configured_endpoint(local_endpoint, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", local_endpoint)
    require_hub("nyu-mll/glue/rte", "use data_dir")  # reachable: any HTTP answer will do
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", closed)
    with pytest.raises(UsageError, match=f"unreachable \\({closed}: .*\\); use data_dir, or set HF_HUB_OFFLINE=1"):
        require_hub("nyu-mll/glue/rte", "use data_dir")


def test_data_command_prints_source_rows_and_labels_per_split(glue_dir, capsys):
    assert cli_main(["data", "sts-b", f"data_dir={glue_dir}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"stsb: tsv:{glue_dir / 'STS-B'}"
    assert lines[1].split() == ["train", "5749", "rows", "mean", "2.701,", "min", "0.0,", "max", "5.0",
                                f"({glue_dir / 'STS-B' / 'train.tsv'})"]
    assert lines[2].split()[:2] == ["validation", "1500"] and lines[2].endswith("dev.tsv)")
    assert lines[3].split()[:5] == ["test", "1379", "rows", "unlabelled", "1379"]
    assert cli_main(["data", "mnli", f"data_dir={glue_dir}", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    matched = report["splits"][1]
    assert matched == {"split": "validation_matched", "rows": 9, "source": str(glue_dir / "MNLI" / "dev_matched.tsv"),
                       "labels": {"entailment": 3, "neutral": 3, "contradiction": 3}}


@pytest.mark.parametrize("args, message", [
    (["data", "rtee"], "error: unknown task 'rtee'; valid tasks: "),
    (["data", "rte", "data_dir=/nonexistent/glue"], "error: data_dir /nonexistent/glue does not exist"),
    (["data", "rte", "max_seq_length=3"], "error: glue-lora data takes only data_dir=..."),
])
def test_data_command_bad_input_is_one_line(args, message, capsys):
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_features_match_hub_types(glue_dir):
    stsb, _ = load_glue(get_task("stsb"), str(glue_dir))
    assert stsb["train"].features["label"] == datasets.Value("float32")
    cola, _ = load_glue(get_task("cola"), str(glue_dir))
    assert cola["train"].features["label"].names == ["unacceptable", "acceptable"]
