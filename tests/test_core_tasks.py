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


def test_aliases_and_unknown_task():
    assert get_task("SST-2").name == "sst2"
    with pytest.raises(UsageError, match="did you mean: mnli"):
        get_task("mnlii")
