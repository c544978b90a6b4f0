"""The GLUE task table: the one place that knows how the nine tasks (and AX) differ.

Label names are in the `nyu-mll/glue` id order; the classic-TSV readers map string labels by name, never by
position (legacy transformers processors used a different MNLI order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glue_lora.errors import UsageError, closest


@dataclass(frozen=True)
class TsvLayout:
    """Where a classic `glue_data/<DIR>/<file>.tsv` keeps its columns.

    `columns` maps an HF column name to a header name (str) or a 0-based position (int; negative counts
    from the end, which is how STS-B and MNLI rows with extra fields are read correctly).
    """

    file: str
    columns: dict[str, str | int]
    has_header: bool = True


@dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific: data columns, labels, splits and metrics."""

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]  # empty for regression (STS-B)
    metrics: tuple[str, ...]
    primary_metric: str
    eval_splits: tuple[str, ...]
    test_splits: tuple[str, ...]
    tsv_dir: str
    tsv: dict[str, TsvLayout] = field(default_factory=dict)  # layout per split
    train_split: str | None = "train"
    skip_malformed_rows: bool = False  # QQP ships a few rows with missing fields

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def splits(self) -> tuple[str, ...]:
        train = (self.train_split,) if self.train_split else ()
        return train + self.eval_splits + self.test_splits

    @property
    def primary_key(self) -> str:
        """Metric key that picks the best evaluation: `<first eval split>/<metric>`."""
        return f"{self.eval_splits[0]}/{self.primary_metric}" if self.eval_splits else ""


def _layout(files: dict[str, str], train_dev: dict[str, str | int], test: dict[str, str | int],
            has_header: bool = True) -> dict[str, TsvLayout]:
    """Build per-split layouts; train/dev share one column map, test files (no labels) another."""
    out = {}
    for split, filename in files.items():
        cols = test if split.startswith("test") else train_dev
        out[split] = TsvLayout(filename, cols, has_header)
    return out


_PAIR_TSV = {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}
_PAIR_TSV_TEST = {"sentence1": "sentence1", "sentence2": "sentence2"}
_STD_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_NLI = ("entailment", "neutral", "contradiction")

TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",),
        "matthews_correlation", ("validation",), ("test",), "CoLA",
        tsv={
            # train/dev: no header; columns are source, label, original-label marker, sentence
            **_layout({"train": "train.tsv", "validation": "dev.tsv"}, {"label": 1, "sentence": 3}, {},
                      has_header=False),
            "test": TsvLayout("test.tsv", {"sentence": "sentence"}),
        }),
    "sst2": TaskSpec(
        "sst2", ("sentence",), ("negative", "positive"), ("accuracy",), "accuracy",
        ("validation",), ("test",), "SST-2",
        tsv=_layout(_STD_FILES, {"sentence": "sentence", "label": "label"}, {"sentence": "sentence"})),
    "mrpc": TaskSpec(
        "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1"),
        "accuracy", ("validation",), ("test",), "MRPC",
        tsv=_layout(_STD_FILES, {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
                    {"sentence1": "#1 String", "sentence2": "#2 String"})),
    "stsb": TaskSpec(
        "stsb", ("sentence1", "sentence2"), (), ("pearson", "spearmanr"), "pearson",
        ("validation",), ("test",), "STS-B",
        # 10 columns, score last; positions as in the legacy processor
        tsv=_layout(_STD_FILES, {"sentence1": 7, "sentence2": 8, "label": -1}, {"sentence1": 7, "sentence2": 8})),
    "qqp": TaskSpec(
        "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"), "accuracy",
        ("validation",), ("test",), "QQP",
        tsv=_layout(_STD_FILES,
                    {"question1": "question1", "question2": "question2", "label": "is_duplicate"},
                    {"question1": "question1", "question2": "question2"}),
        skip_malformed_rows=True),
    "mnli": TaskSpec(
        "mnli", ("premise", "hypothesis"), _NLI, ("accuracy",), "accuracy",
        ("validation_matched", "validation_mismatched"), ("test_matched", "test_mismatched"), "MNLI",
        tsv=_layout({"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                     "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
                     "test_mismatched": "test_mismatched.tsv"},
                    {"premise": 8, "hypothesis": 9, "label": -1}, {"premise": 8, "hypothesis": 9})),
    "qnli": TaskSpec(
        "qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",), "accuracy",
        ("validation",), ("test",), "QNLI",
        tsv=_layout(_STD_FILES, {"question": "question", "sentence": "sentence", "label": "label"},
                    {"question": "question", "sentence": "sentence"})),
    "rte": TaskSpec(
        "rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",), "accuracy",
        ("validation",), ("test",), "RTE", tsv=_layout(_STD_FILES, _PAIR_TSV, _PAIR_TSV_TEST)),
    "wnli": TaskSpec(
        "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",), "accuracy",
        ("validation",), ("test",), "WNLI", tsv=_layout(_STD_FILES, _PAIR_TSV, _PAIR_TSV_TEST)),
    # AX: diagnostic test set only, predicted with an MNLI model and scored by the GLUE server.
    "ax": TaskSpec(
        "ax", ("premise", "hypothesis"), _NLI, (), "", (), ("test",), "diagnostic",
        tsv={"test": TsvLayout("diagnostic.tsv", {"premise": "sentence1", "hypothesis": "sentence2"})},
        train_split=None),
}


def task_key(name: str) -> str:
    """A task name as the registry spells it: case-insensitive, `sst-2`/`sts-b` accepted."""
    return name.lower().replace("-", "")


def get_task(name: str) -> TaskSpec:
    """Look a task up by its `nyu-mll/glue` config name (case-insensitive; `sst-2`/`sts-b` accepted)."""
    key = task_key(name)
    if key not in TASKS:
        raise UsageError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}{closest(name, TASKS)}")
    return TASKS[key]
