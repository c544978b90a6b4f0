"""Trainable-parameter policy on tiny RoBERTa / DeBERTa-v2 and the real MiniLM: exact counts, save -> reload."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from glue_lora.config import load_config
from glue_lora.errors import UsageError
from glue_lora.modeling import count_parameters, head_parameters, load_model, resolve_model_path
from glue_lora.tasks import get_task
from tests.conftest import MINILM

H, L = 32, 2  # tiny model size (tests/conftest.py)


def build(model: str, task: str = "rte", *overrides: str):
    config = load_config(None, [f"task={task}", f"model={model}", *overrides])
    return load_model(config, get_task(task))


def test_minilm_lora_r8_counts_match_the_formula():
    model, head = build(MINILM, "mrpc")
    counts = count_parameters(model, head)
    assert counts["adapter"] == 4 * 6 * 8 * 384 == 73_728
    assert counts["head"] == 384 * 2 + 2 == 770
    assert counts["other"] == 0 and counts["trainable"] == 73_728 + 770
    assert head_parameters(model, head) == {"classifier": 770}


def test_minilm_proxy_head_adds_the_pooler():
    # configs/minilm/base.yaml trains BERT's pooler too (its checkpoint's pooler is stale; see that file)
    model, head = build(MINILM, "mrpc", "lora.modules_to_save=[classifier,pooler]")
    counts = count_parameters(model, head)
    assert counts["adapter"] == 73_728
    assert head_parameters(model, head) == {"classifier": 770, "pooler": 384 * 384 + 384}
    assert counts["head"] == 770 + 147_840 and counts["trainable"] == 73_728 + 770 + 147_840


@pytest.mark.parametrize("fixture, head_params", [
    ("tiny_roberta", (H * H + H) + (H * 2 + 2)),   # classifier.dense + classifier.out_proj
    ("tiny_deberta", (H * H + H) + (H * 2 + 2)),   # pooler.dense + classifier
])
def test_tiny_lora_counts_and_trainable_names(fixture, head_params, request):
    model, head = build(request.getfixturevalue(fixture))
    counts = count_parameters(model, head)
    assert counts["adapter"] == 4 * L * 8 * H
    assert counts["head"] == head_params and counts["other"] == 0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    targets = ("query_proj", "value_proj") if fixture == "tiny_deberta" else ("query", "value")
    lora = [n for n in trainable if "lora_" in n]
    assert len(lora) == L * 2 * 2 and all(any(f".{t}." in n for t in targets) for n in lora)
    assert all("modules_to_save" in n for n in trainable if "lora_" not in n)
    if fixture == "tiny_deberta":
        assert any(".pooler." in n for n in trainable)  # new in the checkpoint: it must train


def test_full_finetuning_trains_everything(tiny_roberta):
    model, head = build(tiny_roberta, "rte", "method=full")
    counts = count_parameters(model, head)
    assert counts["trainable"] == counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["adapter"] == 0 and counts["head"] == (H * H + H) + (H * 2 + 2)


def test_regression_head_has_one_output(tiny_roberta):
    model, _ = build(tiny_roberta, "stsb")
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"


def test_unknown_target_module_lists_linear_layers(tiny_roberta):
    with pytest.raises(UsageError, match=r"\['qkv'\] are not linear layers .* its linear layers are: .*query.*value"):
        build(tiny_roberta, "rte", "lora.target_modules=[qkv]")


def test_missing_model_directory_is_named_as_such(tmp_path):
    with pytest.raises(UsageError, match=r"model directory .*/nope does not exist"):
        resolve_model_path(str(tmp_path / "nope"))


def test_dotted_target_suffix_is_accepted_like_peft(tiny_roberta):
    model, head = build(tiny_roberta, "rte", "lora.target_modules=[attention.self.query]")
    assert count_parameters(model, head)["adapter"] == 2 * L * 8 * H  # query only: half of query+value


def test_unknown_head_module_is_an_error_not_a_frozen_head(tiny_roberta):
    message = r"head_modules \['clasifier'\] are not modules .*top-level modules are: roberta, classifier"
    with pytest.raises(UsageError, match=message):
        build(tiny_roberta, "rte", "head_modules=[clasifier]")


@pytest.mark.parametrize("overrides, scaling", [([], 2.0), (["lora.alpha=8"], 1.0),
                                                (["lora.scaling=rslora"], 16 / 8 ** 0.5)])
def test_recorded_scaling_is_what_peft_applies(tiny_roberta, overrides, scaling):
    config = load_config(None, ["task=rte", f"model={tiny_roberta}", *overrides])
    model, _ = load_model(config, get_task("rte"))
    applied = [m.scaling["default"] for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "scaling")]
    assert len(applied) == 2 * L and applied == [pytest.approx(scaling)] * len(applied)
    assert config.lora.effective_scaling == pytest.approx(scaling)


def test_model_config_reaches_the_model_even_when_the_config_class_lacks_the_key(tiny_deberta, caplog):
    # DeBERTa reads cls_dropout with getattr; AutoConfig.from_pretrained(cls_dropout=...) would drop it silently
    model, _ = build(tiny_deberta, "rte", "model_config.cls_dropout=0.15", "model_config.hidden_dropout_prob=0.0",
                     "model_config.hiden_dropout_prob=0.3")
    base = model.get_base_model()
    assert base.config.cls_dropout == 0.15 and base.dropout.p == 0.15
    assert base.config.hidden_dropout_prob == 0.0
    warnings = [r.getMessage() for r in caplog.records if "is not a field" in r.getMessage()]
    assert len(warnings) == 1 and "model_config.hiden_dropout_prob is not a field of DebertaV2Config" in warnings[0]
    assert "did you mean: hidden_dropout_prob" in warnings[0]


@pytest.mark.parametrize("fixture", ["tiny_roberta", "tiny_deberta"])
def test_save_reload_gives_identical_logits(fixture, request, tmp_path):
    path = request.getfixturevalue(fixture)
    model, _ = build(path, "mnli")
    with torch.no_grad():  # stand-in for training: move every trainable tensor away from its init
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a man is sleeping .", "two dogs run"], ["someone sleeps", "cats sit"], padding=True,
                      return_tensors="pt")
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    torch.manual_seed(1234)  # the reloaded base gets a different random head/pooler; the adapter must restore it
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    assert torch.allclose(reloaded(**batch).logits, expected, atol=1e-6)
