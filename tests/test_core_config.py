import pytest

from glue_lora.config import load_config, plan_batch
from glue_lora.errors import UsageError

BASE = ["task=rte", "model=some/model"]


def write(path, text):
    path.write_text(text)
    return path


def test_extends_merges_and_overrides_win(tmp_path):
    write(tmp_path / "base.yaml", "model: some/model\nlora: {r: 8, dropout: 0.1}\ntraining: {learning_rate: 1.0e-4, num_train_epochs: 3}\n")
    task = write(tmp_path / "rte.yaml", "extends: base.yaml\ntask: rte\ntraining: {learning_rate: 5e-4}\n")
    config = load_config(task, ["lora.r=16", "training.num_train_epochs=10", "seed=3"])
    assert config.task == "rte" and config.seed == 3
    assert config.lora.r == 16 and config.lora.dropout == 0.1
    assert config.training == {"learning_rate": 5e-4, "num_train_epochs": 10}  # "5e-4" read as a float


def test_empty_sections_change_nothing(tmp_path):
    write(tmp_path / "base.yaml", "model: some/model\ntraining: {learning_rate: 1.0e-4}\n")
    task = write(tmp_path / "rte.yaml", "extends: base.yaml\ntask: rte\ntraining:\n  # learning_rate: 5e-4\n"
                                        "model_config:\nlora:\n")
    config = load_config(task, ["lora.alpha=null"])
    assert config.training == {"learning_rate": 1e-4} and config.model_config == {}
    assert config.lora.alpha is None and config.lora.effective_alpha == 16
    assert load_config(write(tmp_path / "solo.yaml", "task: rte\nmodel: m\ntraining:\n")).training == {}


def test_alpha_defaults_to_two_r_and_scaling_rules():
    config = load_config(None, [*BASE, "lora.r=4"])
    assert config.lora.effective_alpha == 8 and config.lora.effective_scaling == 2.0
    rs = load_config(None, [*BASE, "lora.r=16", "lora.alpha=16", "lora.scaling=rslora"])
    assert rs.lora.effective_scaling == pytest.approx(4.0)


def test_all_errors_reported_at_once_with_closest_keys():
    with pytest.raises(UsageError) as err:
        load_config(None, ["task=sst", "model=m", "lerning_rate=1", "lora.rank=4", "method=adapter",
                           "training.evaluation_strategy=epoch", "training.num_train_epoch=3", "seed=abc"])
    message = str(err.value)
    assert "\n" not in message
    for part in ["unknown task 'sst' (did you mean: sst2", "unknown key lerning_rate (did you mean: training.learning_rate?)", "unknown key lora.rank (did you mean: lora.r?)",
                 "method='adapter' must be one of full, lora, dora", "training.evaluation_strategy no longer exists in transformers 5; use training.eval_strategy",
                 "unknown key training.num_train_epoch (did you mean: num_train_epochs", "seed='abc' should be int"]:
        assert part in message


def test_required_and_impossible_combinations():
    with pytest.raises(UsageError, match="task is required.*model is required"):
        load_config(None, [])
    with pytest.raises(UsageError, match="resume=true and overwrite=true"):
        load_config(None, [*BASE, "resume=true", "overwrite=true"])
    with pytest.raises(UsageError, match="derived from global_batch_size"):
        load_config(None, [*BASE, "global_batch_size=32", "training.gradient_accumulation_steps=2"])
    with pytest.raises(UsageError, match="set by the harness; use the top-level key output_dir"):
        load_config(None, [*BASE, "training.output_dir=x"])


def test_training_value_types_are_checked_with_everything_else():
    # TrainingArguments itself accepts learning_rate="abc" and fails only once training has started
    with pytest.raises(UsageError) as err:
        load_config(None, [*BASE, "training.learning_rate=abc", "training.num_train_epochs=three",
                           "training.max_steps=1.5", "training.bf16=maybe", "lora.alpha=0", "lora.r=four"])
    message = str(err.value)
    for part in ["training.learning_rate='abc' should be float", "training.num_train_epochs='three' should be float",
                 "training.max_steps=1.5 should be int", "training.bf16='maybe' should be bool",
                 "lora.alpha=0.0 must be positive", "lora.r='four' should be int"]:
        assert part in message
    ok = load_config(None, [*BASE, "training.learning_rate=3e-4", "training.num_train_epochs=3",
                            "training.eval_steps=null", "training.warmup_steps=0.06", "training.optim=sgd"])
    assert ok.training["num_train_epochs"] == 3 and ok.training["learning_rate"] == 3e-4


def test_a_test_only_task_cannot_be_trained():
    with pytest.raises(UsageError, match="task=ax has no train and validation splits .*for AX: mnli"):
        load_config(None, ["task=ax", "model=some/model"])


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("GLUE_DIR", "/data/glue")
    assert load_config(None, [*BASE, "data_dir=${GLUE_DIR:-x}"]).data_dir == "/data/glue"
    monkeypatch.delenv("GLUE_DIR")
    assert load_config(None, [*BASE, "data_dir=${GLUE_DIR:-../shared/data/glue}"]).data_dir == "../shared/data/glue"


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not key=value"):
        load_config(None, ["lora.r"])
    with pytest.raises(UsageError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("world, cap, expected", [
    (1, None, (32, 1)), (2, None, (16, 1)), (8, None, (4, 1)), (1, 8, (8, 4)), (2, 8, (8, 2)), (1, 12, (8, 4)),
])
def test_global_batch_is_the_same_experiment_on_any_world_size(world, cap, expected):
    overrides = [*BASE, "global_batch_size=32"] + ([f"training.per_device_train_batch_size={cap}"] if cap else [])
    plan = plan_batch(load_config(None, overrides), world)
    assert (plan.per_device, plan.accumulation) == expected
    assert plan.global_batch == 32


def test_global_batch_must_divide():
    with pytest.raises(UsageError, match="not divisible by the 3 processes"):
        plan_batch(load_config(None, [*BASE, "global_batch_size=32"]), 3)
