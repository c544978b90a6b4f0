"""The method registry: every method's settings, exact trainable counts, a 2-step run that saves and reloads to
identical logits, and MNLI-init carrying exactly the method's adapter tensors."""

import dataclasses
import logging

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import glue_lora.train as train_module
from glue_lora.config import RunConfig, load_config
from glue_lora.errors import UsageError
from glue_lora.methods import METHODS, SECTIONS, adapter_test, get_method, saved_weights
from glue_lora.modeling import count_parameters, init_from_run, load_model, load_trained
from glue_lora.tasks import get_task
from tests.conftest import MINILM

H, L, I = 32, 2, 64  # tiny model: hidden size, layers, FFN size (tests/conftest.py)
TINY_RUN = ["max_train_samples=32", "max_eval_samples=16", "global_batch_size=16", "max_seq_length=32",
            "training.max_steps=2", "training.learning_rate=1e-2", "training.eval_strategy=steps",
            "training.eval_steps=2", "training.save_strategy='no'",  # quoted: YAML reads a bare no as false
            "training.bf16=false"]  # fp32 on every CPU: logits are compared with a plain fp32 forward

# Hand formulas on the tiny RoBERTa (query/value targets unless the method says otherwise).
ADAPTER = {
    "full": 0,
    "lora": 4 * L * 8 * H,                      # A (8 x H) + B (H x 8) on query and value
    "loraplus": 4 * L * 8 * H,                  # LoRA's tensors, another optimizer
    "dora": 4 * L * 8 * H + 2 * L * H,          # + one magnitude per output feature of each adapted weight
    "bitfit": L * (4 * H + H + I + H + H) + H,  # q/k/v/o, attention LN, FFN in/out, output LN; embeddings LN
    "ia3": L * (H + H + I),                     # key, value, FFN activation (input of the FFN output layer)
    "vera": 2 * L * (256 + H),                  # d (r) + b (out) per adapted layer; A/B are frozen buffers
    "adalora": 2 * L * (12 * H + H * 12 + 12),  # A, B and the singular values E at init_r 12
}
HEAD = (H * H + H) + (H * 2 + 2)  # classifier.dense + classifier.out_proj


def config_for(model: str, method: str, *extra: str) -> RunConfig:
    return load_config(None, ["task=rte", f"model={model}", f"method={method}", *extra])


def test_every_settings_section_is_a_run_config_field():
    fields = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    assert set(SECTIONS) <= set(fields)
    for method in METHODS.values():
        assert set(method.sections) <= set(SECTIONS) and method.label


def test_method_typo_and_bad_settings_are_one_line_each():
    with pytest.raises(UsageError) as err:
        load_config(None, ["task=rte", "model=m", "method=dorra", "vera.r=0", "ia3.target_modules=[key]",
                           "adalora.target_r=20", "loraplus.lr_ratio=0.5", "lora.init=pisa", "vera.d_init=0.2"])
    message = str(err.value)
    assert "\n" not in message
    for part in ["method='dorra' must be one of full, lora, dora", "(did you mean: dora", "vera.r=0 must be positive",
                 "ia3.target_modules and ia3.feedforward_modules go together",
                 "adalora.target_r=20 must be in (0, init_r=12]", "loraplus.lr_ratio=0.5 must be >= 1",
                 "lora.init='pisa' must be one of", "unknown key vera.d_init (did you mean: d_initial?)"]:
        assert part in message


def test_old_head_key_still_works_with_a_deprecation_message(caplog):
    with caplog.at_level(logging.WARNING):
        config = load_config(None, ["task=rte", "model=m", "lora.modules_to_save=[classifier,pooler]"])
    assert config.head_modules == ["classifier", "pooler"] and config.lora.modules_to_save is None
    assert any("lora.modules_to_save is deprecated" in r.getMessage() and "head_modules" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(UsageError, match="disagree; keep only head_modules"):
        load_config(None, ["task=rte", "model=m", "lora.modules_to_save=[classifier]", "head_modules=[pooler]"])


@pytest.mark.parametrize("method", METHODS)
def test_exact_counts_match_the_formula_and_peft(method, tiny_roberta):
    model, head = load_model(config_for(tiny_roberta, method), get_task("rte"), steps=20)
    counts = count_parameters(model, head, method)
    assert counts["adapter"] == ADAPTER[method] and counts["head"] == HEAD
    expected_other = counts["total"] - ADAPTER[method] - HEAD if method == "full" else 0
    assert counts["other"] == expected_other
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    if isinstance(model, PeftModel):
        trainable, _ = model.get_nb_trainable_parameters()
        assert counts["trainable"] == trainable


def test_bitfit_trains_biases_and_the_head_only(tiny_roberta):
    model, head = load_model(config_for(tiny_roberta, "bitfit"), get_task("rte"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in trainable)
    assert {n for n, p in model.named_parameters() if n.endswith(".bias")} <= set(trainable)


def test_ia3_scales_keys_values_and_the_ffn_not_the_attention_output(tiny_roberta):
    model, _ = load_model(config_for(tiny_roberta, "ia3"), get_task("rte"))
    adapted = sorted({n.split(".ia3_l")[0].split("encoder.layer.0.")[-1] for n, _ in model.named_parameters()
                      if "ia3_l" in n and ".layer.0." in n})
    assert adapted == ["attention.self.key", "attention.self.value", "output.dense"]


def run_capturing_model(config: RunConfig, monkeypatch) -> tuple[dict, torch.nn.Module]:
    """train.run, keeping the trained in-memory model (for comparing with what was saved)."""
    built = {}
    original = train_module.build_trainer

    def capture(*args, **kwargs):
        built["trainer"] = original(*args, **kwargs)
        return built["trainer"]

    monkeypatch.setattr(train_module, "build_trainer", capture)
    record = train_module.run(config)
    return record, built["trainer"].model


def logits(model: torch.nn.Module, path: str) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a man is sleeping .", "two dogs run"], ["someone sleeps", "cats sit"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("method", METHODS)
def test_two_steps_save_reload_identical_logits(method, tiny_roberta, glue_dir, tmp_path, monkeypatch):
    config = config_for(tiny_roberta, method, f"data_dir={glue_dir}", f"output_dir={tmp_path / 'run'}", *TINY_RUN)
    record, trained = run_capturing_model(config, monkeypatch)
    assert record["status"] == "success" and record["timing"]["steps"] == 2
    assert record["params"]["adapter"] == ADAPTER[method] and record["params"]["head"] == HEAD
    assert (record["method_settings"] is None) == (not get_method(method).sections)
    expected = logits(trained, tiny_roberta)
    torch.manual_seed(1234)  # the reloaded base gets another random head: the saved files must restore it
    base = AutoModelForSequenceClassification.from_pretrained(tiny_roberta, num_labels=2)
    reloaded = load_trained(base, tmp_path / "run")
    assert torch.allclose(logits(reloaded, tiny_roberta), expected, atol=1e-5)
    saved = saved_weights(tmp_path / "run")
    assert saved.name == ("model.safetensors" if method == "full" else
                          "trainable_model.safetensors" if method == "bitfit" else "adapter_model.safetensors")


@pytest.mark.parametrize("init", ["pissa_niter_2", "olora"])
def test_pissa_and_olora_adapters_reload_onto_the_original_base(init, tiny_roberta, glue_dir, tmp_path, monkeypatch):
    # both rewrite the base weights at init; the saved adapter is converted back to a delta on the original ones
    config = config_for(tiny_roberta, "lora", f"lora.init={init}", f"data_dir={glue_dir}",
                        f"output_dir={tmp_path / 'run'}", *TINY_RUN)
    _, trained = run_capturing_model(config, monkeypatch)
    expected = logits(trained, tiny_roberta)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_roberta, num_labels=2)
    assert torch.allclose(logits(load_trained(base, tmp_path / "run"), tiny_roberta), expected, atol=1e-4)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "full"])
def test_mnli_init_carries_exactly_the_adapter_tensors(method, tiny_roberta, glue_dir, tmp_path, monkeypatch):
    mnli = load_config(None, ["task=mnli", f"model={tiny_roberta}", f"method={method}", f"data_dir={glue_dir}",
                              f"output_dir={tmp_path / 'mnli'}", *TINY_RUN])
    run_capturing_model(mnli, monkeypatch)
    saved = load_file(saved_weights(tmp_path / "mnli"))
    rte, head = load_model(config_for(tiny_roberta, method), get_task("rte"), steps=20)
    is_adapter = adapter_test(rte, method, head)
    loaded = init_from_run(rte, str(tmp_path / "mnli"), None, method, head)
    assert loaded and set(loaded) == {k for k in saved if is_adapter(k)}  # RoBERTa default: adapter, no head
    assert not any("classifier" in k for k in loaded)
    state = get_peft_model_state_dict(rte) if isinstance(rte, PeftModel) else rte.state_dict()  # as saved
    for key in loaded:
        assert torch.equal(state[key], saved[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_minilm_two_steps_save_reload(method, glue_dir, tmp_path, monkeypatch):
    config = load_config(None, ["task=mrpc", f"model={MINILM}", f"method={method}", f"data_dir={glue_dir}",
                                f"output_dir={tmp_path / 'run'}", "head_modules=[classifier,pooler]", *TINY_RUN])
    record, trained = run_capturing_model(config, monkeypatch)
    from glue_lora.modeling import resolve_model_path

    path = resolve_model_path(MINILM)
    expected = logits(trained, path)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    assert torch.allclose(logits(load_trained(base, tmp_path / "run"), path), expected, atol=1e-5)
    assert record["params"]["trainable"] == sum(p.numel() for n, p in trained.named_parameters()
                                                if p.requires_grad and "original_module" not in n)
