"""How each registered method (glue_lora.methods) makes its trainable set, plus its Trainer hooks.

PEFT does the work wherever it has the method; BitFit (no PEFT tuner) sets `requires_grad` by hand.
Every builder takes (model, config, head modules, total optimizer steps or None) and returns the model to train.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

import torch
from peft import AdaLoraConfig, IA3Config, LoraConfig, PeftModel, VeraConfig, get_peft_model
from transformers import TrainerCallback

from glue_lora.config import RunConfig
from glue_lora.errors import UsageError
from glue_lora.methods import get_method
from glue_lora.modeling import check_modules, family_of


def full(model: torch.nn.Module, config: RunConfig, head: list[str], steps: int | None) -> torch.nn.Module:
    return model.requires_grad_(True)


def lora(model: torch.nn.Module, config: RunConfig, head: list[str], steps: int | None) -> PeftModel:
    return add_lora(config, model, head)


def add_lora(config: RunConfig, model: torch.nn.Module, head: list[str]) -> PeftModel:
    """LoRA through PEFT, with the method's pins applied (dora: use_dora) to its settings section."""
    method = get_method(config.method)
    section = method.sections[0]
    settings = method.settings(config, section)
    targets = settings.target_modules or list(family_of(model.config.model_type).targets)
    check_modules(config, model, targets, head, section)
    lora_config = LoraConfig(
        task_type="SEQ_CLS", r=settings.r, lora_alpha=settings.effective_alpha,
        lora_dropout=settings.dropout, target_modules=targets, modules_to_save=list(head),  # PEFT extends this list in place
        use_rslora=settings.scaling == "rslora", use_dora=settings.use_dora,
        init_lora_weights=True if settings.init == "default" else settings.init)
    model = get_peft_model(model, lora_config)
    if settings.init.startswith(("pissa", "olora")):
        keep_initial_adapter(model)
    return model


# PiSSA and OLoRA move the principal part of each adapted weight into A/B and leave the base weight as the
# residual, so an adapter saved as-is only fits that modified base. PEFT's remedy: keep the initial adapter
# and convert at save time into a plain LoRA delta (rank 2r) that fits the original checkpoint.
INITIAL_ADAPTER = "glue_lora_initial_adapter"


def keep_initial_adapter(model: PeftModel) -> None:
    folder = tempfile.mkdtemp(prefix="glue-lora-initial-adapter-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config = model.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True  # saved as a plain-LoRA starting point
    model.save_pretrained(folder)
    config.init_lora_weights = init
    setattr(model, INITIAL_ADAPTER, folder)


def bitfit(model: torch.nn.Module, config: RunConfig, head: list[str], steps: int | None) -> torch.nn.Module:
    """Biases + head (Ben Zaken et al. 2021; microsoft/LoRA's --apply_bitfit): every other weight is frozen."""
    check_modules(config, model, [], head, "bitfit")
    for name, param in model.named_parameters():
        parts = name.split(".")
        param.requires_grad_(name.endswith(".bias") or any(module in parts for module in head))
    return model


# (IA)^3 rescales keys, values and the FFN's inner activation (the input of its output layer). PEFT's default
# list for BERT/RoBERTa ("output.dense") also matches attention.output.dense by suffix, so use exact patterns.
IA3_KEY_VALUE = {"bert": ("key", "value"), "roberta": ("key", "value"), "xlm-roberta": ("key", "value"),
                 "camembert": ("key", "value"), "electra": ("key", "value"),
                 "deberta-v2": ("key_proj", "value_proj")}


def ia3(model: torch.nn.Module, config: RunConfig, head: list[str], steps: int | None) -> PeftModel:
    settings = config.ia3
    if settings.target_modules is not None:
        check_modules(config, model, settings.target_modules, head, "ia3")
        targets, feedforward = settings.target_modules, settings.feedforward_modules
    else:
        key_value = IA3_KEY_VALUE.get(model.config.model_type)
        if key_value is None:
            raise UsageError(f"no (IA)^3 defaults for model type {model.config.model_type!r}; set "
                             "ia3.target_modules and ia3.feedforward_modules")
        check_modules(config, model, [], head, "ia3")
        feedforward = r".*\.layer\.\d+\.output\.dense"
        targets = rf".*\.layer\.\d+\.(attention\.self\.({'|'.join(key_value)})|output\.dense)"
    ia3_config = IA3Config(task_type="SEQ_CLS", target_modules=targets, feedforward_modules=feedforward,
                           modules_to_save=list(head))
    return get_peft_model(model, ia3_config)


def _targets(config: RunConfig, model: torch.nn.Module, section: str, head: list[str]) -> list[str]:
    settings = getattr(config, section)
    targets = settings.target_modules or list(family_of(model.config.model_type).targets)
    check_modules(config, model, targets, head, section)
    return targets


def vera(model: torch.nn.Module, config: RunConfig, head: list[str], steps: int | None) -> PeftModel:
    settings = config.vera
    vera_config = VeraConfig(
        task_type="SEQ_CLS", r=settings.r, target_modules=_targets(config, model, "vera", head),
        vera_dropout=settings.dropout, d_initial=settings.d_initial,
        projection_prng_key=settings.projection_prng_key, save_projection=True,  # reload needs no regeneration
        modules_to_save=list(head))
    return get_peft_model(model, vera_config)


def adalora(model: torch.nn.Module, config: RunConfig, head: list[str], steps: int | None) -> PeftModel:
    """AdaLoRA's rank schedule needs the run's total optimizer steps (from the batch plan)."""
    settings = config.adalora
    total = steps or 100  # a model built without a plan (bench, counting) never trains through the schedule
    alpha = settings.alpha if settings.alpha is not None else 2.0 * settings.target_r
    tinit, tfinal = int(settings.tinit * total), int(settings.tfinal * total)
    if tinit >= total - tfinal:  # very short runs (tests): keep one budgeting step
        tinit, tfinal = 0, max(0, total - 1 - tinit)
    ada_config = AdaLoraConfig(
        task_type="SEQ_CLS", init_r=settings.init_r, target_r=settings.target_r, lora_alpha=alpha,
        lora_dropout=settings.dropout, target_modules=_targets(config, model, "adalora", head),
        total_step=total, tinit=tinit, tfinal=tfinal, deltaT=settings.delta_t,
        orth_reg_weight=settings.orth_reg_weight, modules_to_save=list(head))
    return get_peft_model(model, ada_config)


class AdaLoraAllocation(TrainerCallback):
    """AdaLoRA prunes ranks from the gradients' sensitivity: after each optimizer step, before they are zeroed."""

    def __init__(self, model: PeftModel):
        self.model = model

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.model.base_model.update_and_allocate(state.global_step)


def adalora_callbacks(model: PeftModel, config: RunConfig) -> list[TrainerCallback]:
    return [AdaLoraAllocation(model)]


def loraplus_optimizer(model: PeftModel, config: RunConfig, args) -> torch.optim.Optimizer:
    """PEFT's LoRA+ optimizer: AdamW with Trainer's lr/betas/eps/decay; B matrices at lr_ratio x lr."""
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=args.learning_rate, loraplus_lr_ratio=config.loraplus.lr_ratio,
        weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
