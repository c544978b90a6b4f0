import pytest

from glue_lora.errors import UsageError
from glue_lora.tasks import TASKS, get_task


def test_registry_has_all_nine_tasks_and_ax():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"}


@pytest.mark.parametrize("name, labels, primary", [
    ("cola", ("unacceptable", "acceptable"), "validation/matthews_correlation"),
    ("sst2", ("negative", "positive"), "validation/accuracy"),
    ("mrpc", ("not_equivalent", "equivalent"), "validation/accuracy"),
    ("stsb", (), "validation/pearson"),
    ("qqp", ("not_duplicate", "duplicate"), "validation/accuracy"),
    ("mnli", ("entailment", "neutral", "contradiction"), "validation_matched/accuracy"),
    ("qnli", ("entailment", "not_entailment"), "validation/accuracy"),
    ("rte", ("entailment", "not_entailment"), "validation/accuracy"),
    ("wnli", ("not_entailment", "entailment"), "validation/accuracy"),
])
def test_labels_in_hub_order_and_primary_metric(name, labels, primary):
    task = get_task(name)
    assert task.label_names == labels
    assert task.primary_key == primary
    assert task.num_labels == (1 if name == "stsb" else len(labels))


def test_mnli_evaluates_matched_and_mismatched():
    mnli = get_task("mnli")
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    assert mnli.test_splits == ("test_matched", "test_mismatched")


def test_two_metric_tasks():
    assert get_task("mrpc").metrics == ("accuracy", "f1")
    assert get_task("qqp").metrics == ("accuracy", "f1")
    assert get_task("stsb").metrics == ("pearson", "spearmanr")
    assert get_task("stsb").is_regression


def test_ax_is_test_only():
    ax = get_task("ax")
    assert ax.splits == ("test",) and ax.eval_splits == ()
    # predicted with an MNLI model, so it shares MNLI's columns and label ids
    assert ax.text_columns == ("premise", "hypothesis") and ax.label_names == get_task("mnli").label_names


@pytest.mark.parametrize("name, columns", [
    ("cola", ("sentence",)), ("sst2", ("sentence",)), ("mrpc", ("sentence1", "sentence2")),
    ("stsb", ("sentence1", "sentence2")), ("qqp", ("question1", "question2")), ("mnli", ("premise", "hypothesis")),
    ("qnli", ("question", "sentence")), ("rte", ("sentence1", "sentence2")), ("wnli", ("sentence1", "sentence2")),
    ("ax", ("premise", "hypothesis")),
])
def test_text_columns_are_the_hub_names(name, columns):
    assert get_task(name).text_columns == columns


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_split_has_a_tsv_layout_that_names_every_column(name):
    task = TASKS[name]
    assert set(task.tsv) == set(task.splits)
    for split, layout in task.tsv.items():
        labelled = split not in task.test_splits
        assert set(layout.columns) == set(task.text_columns) | ({"label"} if labelled else set())


def test_aliases_and_unknown_task():
    assert get_task("SST-2").name == "sst2"
    with pytest.raises(UsageError, match="did you mean: mnli"):
        get_task("mnlii")
