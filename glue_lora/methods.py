"""The fine-tuning methods glue_lora compares, as one registry.

A method is a name, the config sections that hold its settings (small dataclasses, validated by
`glue_lora.config` with the same closest-key errors as every other key), how it makes the trainable set,
how its adapter tensors are recognised, what it records, and optional Trainer hooks (an optimizer, callbacks).
Counting, MNLI-init, the record, the report, bench and `glue-lora configs` ask this module; none of them
compares method names. Adding a method is one `Method` entry (plus a settings dataclass when it has settings).

Importing this module is cheap (no torch): config validation uses it. Builders import torch/PEFT when called.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch
    from transformers import TrainingArguments

    from glue_lora.config import RunConfig

SCALINGS = ("alpha/r", "rslora")
#: PEFT `init_lora_weights` values: "default" is PEFT's True (B = 0); "pissa_niter_<n>" is fast PiSSA.
LORA_INITS = ("default", "gaussian", "pissa", "olora", "orthogonal")
#: `init_modules` tokens that mean "every adapter tensor of this run's method" ("lora" kept for old configs)
ADAPTER_TOKENS = ("adapter", "lora")
#: BitFit's adapter-only save (biases + head): PEFT has no bias-only tuner, so the file is ours.
TRAINABLE_FILE, TRAINABLE_CONFIG = "trainable_model.safetensors", "trainable_config.json"


# --- settings sections ---------------------------------------------------------------------------------------

@dataclass
class LoraSettings:
    """LoRA hyperparameters (PEFT LoraConfig); also used by dora and loraplus."""

    r: int = 8  #: rank; higher adds capacity and parameters linearly
    alpha: float | None = None  #: None means 2*r, as the released scripts (scaling alpha/r = 2)
    dropout: float = 0.0  #: the released scripts use none
    target_modules: list[str] | None = None  #: None: per model family (query/value projections)
    scaling: str = "alpha/r"  #: "alpha/r" (LoRA paper) or "rslora" (alpha/sqrt(r))
    use_dora: bool = False  #: DoRA (Liu et al. 2024): a trained magnitude vector per adapted weight
    init: str = "default"  #: PEFT init_lora_weights: default (B=0) | gaussian | pissa | pissa_niter_<n> | olora
    modules_to_save: list[str] | None = None  #: deprecated: use the top-level head_modules

    @property
    def effective_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r

    @property
    def effective_scaling(self) -> float:
        divisor = self.r ** 0.5 if self.scaling == "rslora" else self.r
        return self.effective_alpha / divisor

    def check(self) -> list[str]:
        errors = []
        if self.scaling not in SCALINGS:
            errors.append(f"lora.scaling={self.scaling!r} must be one of {', '.join(SCALINGS)}")
        if self.r <= 0:
            errors.append(f"lora.r={self.r} must be positive")
        if self.alpha is not None and self.alpha <= 0:
            errors.append(f"lora.alpha={self.alpha} must be positive (it scales the update; leave it unset for 2*r)")
        if not 0 <= self.dropout < 1:
            errors.append(f"lora.dropout={self.dropout} must be in [0, 1)")
        if self.init not in LORA_INITS and not re.fullmatch(r"pissa_niter_\d+", self.init):
            errors.append(f"lora.init={self.init!r} must be one of {', '.join(LORA_INITS)} or pissa_niter_<n>")
        return errors

    def record(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.effective_alpha, "scaling_rule": self.scaling,
                "scaling": self.effective_scaling, "dropout": self.dropout, "targets": self.target_modules,
                "use_dora": self.use_dora, "init": self.init}


@dataclass
class LoraPlusSettings:
    """LoRA+ (Hayou et al. 2024): B's learning rate = lr_ratio x A's (PEFT create_loraplus_optimizer)."""

    lr_ratio: float = 16.0  #: the paper's recommended ratio for RoBERTa GLUE is 2^4

    def check(self) -> list[str]:
        return [] if self.lr_ratio >= 1 else [f"loraplus.lr_ratio={self.lr_ratio} must be >= 1 (B learns faster)"]


@dataclass
class IA3Settings:
    """(IA)^3 (Liu et al. 2022, PEFT IA3Config): learned vectors rescaling keys, values and the FFN activation."""

    target_modules: list[str] | None = None  #: None: the family's key, value and FFN output layers
    feedforward_modules: list[str] | None = None  #: None: the FFN output layer (its input is scaled)

    def check(self) -> list[str]:
        if (self.target_modules is None) != (self.feedforward_modules is None):
            return ["ia3.target_modules and ia3.feedforward_modules go together: set both or neither"]
        return []


@dataclass
class VeraSettings:
    """VeRA (Kopiczko et al. 2024, PEFT VeraConfig): frozen shared random A/B, trained scaling vectors."""

    r: int = 256  #: rank of the shared projections (only d and b train: r + out per adapted layer)
    target_modules: list[str] | None = None  #: None: per model family (query/value; must share a shape)
    dropout: float = 0.0
    d_initial: float = 0.1  #: initial value of the d vector (paper: 0.1)
    projection_prng_key: int = 0  #: seed of the shared random projections

    def check(self) -> list[str]:
        errors = [f"vera.r={self.r} must be positive"] if self.r <= 0 else []
        return errors + ([f"vera.dropout={self.dropout} must be in [0, 1)"] if not 0 <= self.dropout < 1 else [])


@dataclass
class AdaLoraSettings:
    """AdaLoRA (Zhang et al. 2023, PEFT AdaLoraConfig): SVD-shaped LoRA whose ranks are pruned to a budget.

    The schedule's total step count is derived from the batch plan; tinit/tfinal are fractions of it.
    """

    init_r: int = 12  #: starting rank of every adapted matrix
    target_r: int = 8  #: average rank after budget allocation (compare with lora.r)
    alpha: float | None = None  #: None means 2*target_r, like lora.alpha
    dropout: float = 0.0
    target_modules: list[str] | None = None  #: None: per model family (query/value, as LoRA)
    tinit: float = 0.1  #: fraction of steps before pruning starts
    tfinal: float = 0.2  #: fraction of steps at the end with the final ranks fixed
    delta_t: int = 10  #: steps between two budget allocations
    orth_reg_weight: float = 0.5  #: weight of the orthogonality regulariser added to the loss

    def check(self) -> list[str]:
        errors = []
        if not 0 < self.target_r <= self.init_r:
            errors.append(f"adalora.target_r={self.target_r} must be in (0, init_r={self.init_r}]")
        if not (0 <= self.tinit and 0 <= self.tfinal and self.tinit + self.tfinal < 1):
            errors.append(f"adalora.tinit={self.tinit} + adalora.tfinal={self.tfinal} must leave a budgeting "
                          "phase (fractions of the total steps, summing below 1)")
        return errors


# --- the registry --------------------------------------------------------------------------------------------

Builder = Callable[["torch.nn.Module", "RunConfig", list[str], int | None], "torch.nn.Module"]


@dataclass(frozen=True)
class Method:
    """One fine-tuning method: everything the harness needs to know about it."""

    name: str
    label: str  #: how tables and plots name it (the paper's "FT" for full fine-tuning)
    summary: str  #: one line for tables and --help
    build: Builder  #: (model, config, head modules, total optimizer steps or None) -> model with its trainable set
    sections: tuple[str, ...] = ()  #: RunConfig sections holding its settings (validated by glue_lora.config)
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)  #: settings the method pins, e.g. use_dora
    #: for methods without a PEFT tuner: is this (state-dict) key one of its adapter tensors? (head excluded)
    own_adapter: Callable[[str], bool] | None = None
    #: (model, config, TrainingArguments) -> an optimizer, or None for Trainer's default
    optimizer: Callable[..., Any] | None = None
    callbacks: Callable[..., list] | None = None  #: (model, config) -> extra TrainerCallbacks
    family_targets: bool = False  #: unset target_modules means the family's low-rank targets (query/value)
    carries_encoder: bool = False  #: MNLI-init from such a run carries every encoder tensor (full FT)

    def settings(self, config: RunConfig, section: str) -> Any:
        """The section's settings with what this method pins applied (dora: lora.use_dora=True)."""
        value = getattr(config, section)
        pinned = {k: v for k, v in self.fixed.items() if hasattr(value, k)}
        return dataclasses.replace(value, **pinned) if pinned else value

    def record(self, config: RunConfig) -> dict[str, Any] | None:
        """The record's `method_settings`: every section's settings (LoRA adds its effective alpha/scaling)."""
        out: dict[str, Any] = {}
        for section in self.sections:
            value = self.settings(config, section)
            fields = value.record() if hasattr(value, "record") else dataclasses.asdict(value)
            out.update({k: v for k, v in fields.items() if k != "modules_to_save"})
        return out or None


# Settings sections a RunConfig carries: section name -> dataclass.
SECTIONS: dict[str, type] = {"lora": LoraSettings, "loraplus": LoraPlusSettings, "ia3": IA3Settings,
                             "vera": VeraSettings, "adalora": AdaLoraSettings}


def _build(kind: str) -> Builder:
    """A builder that imports torch/PEFT only when a model is built."""
    def build(model, config, head, steps):
        from glue_lora import method_builders
        return getattr(method_builders, kind)(model, config, head, steps)
    build.__name__ = kind
    return build


def _hook(kind: str) -> Callable[..., Any]:
    def hook(*args):
        from glue_lora import method_builders
        return getattr(method_builders, kind)(*args)
    hook.__name__ = kind
    return hook


def is_bias(key: str) -> bool:
    return key.endswith(".bias")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("full", "FT", "full fine-tuning: every parameter trains", _build("full"), carries_encoder=True),
    Method("lora", "LoRA", "LoRA (Hu et al. 2021), PEFT LoraConfig", _build("lora"), ("lora",), family_targets=True),
    Method("dora", "DoRA", "DoRA (Liu et al. 2024): LoRA + a trained magnitude vector", _build("lora"), ("lora",),
           fixed={"use_dora": True}, family_targets=True),
    Method("loraplus", "LoRA+", "LoRA+ (Hayou et al. 2024): B learns lr_ratio x faster than A", _build("lora"),
           ("lora", "loraplus"), optimizer=_hook("loraplus_optimizer"), family_targets=True),
    Method("bitfit", "BitFit", "BitFit (Ben Zaken et al. 2021): every bias + the head", _build("bitfit"), own_adapter=is_bias),
    Method("ia3", "(IA)³", "(IA)^3 (Liu et al. 2022): rescaled keys, values and FFN activations", _build("ia3"), ("ia3",)),
    Method("vera", "VeRA", "VeRA (Kopiczko et al. 2024): shared frozen random A/B, trained scaling vectors",
           _build("vera"), ("vera",), family_targets=True),
    Method("adalora", "AdaLoRA", "AdaLoRA (Zhang et al. 2023): LoRA ranks pruned to a budget during training",
           _build("adalora"), ("adalora",), callbacks=_hook("adalora_callbacks"), family_targets=True),
)}


#: The methods every other method is compared with in reports, in this order (the paper's FT, then LoRA).
COMPARED_WITH = ("full", "lora")


def label(name: str) -> str:
    """A method's display name; a name no longer registered (an old record) shows as itself."""
    return METHODS[name].label if name in METHODS else name


def get_method(name: str) -> Method:
    """The registry entry; config validation has already refused unknown names with a suggestion."""
    return METHODS[name]


# --- recognising adapter tensors ----------------------------------------------------------------------------

def peft_prefix(model: Any) -> str | None:
    """The tensor-name prefix PEFT's tuner class declares (`lora_`, `ia3_`, `vera_lambda_`, ...), if a PeftModel."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    return PEFT_TYPE_TO_PREFIX_MAPPING[next(iter(configs.values())).peft_type]


def adapter_test(model: Any, method: str | None, head: list[str]) -> Callable[[str], bool]:
    """A test on (parameter or state-dict) names: is this one of the method's adapter tensors?

    PEFT tuners are recognised by their class's prefix on any dotted part (DoRA's `lora_magnitude_vector`
    is a `lora_` tensor); methods without a tuner by their own rule (BitFit: a bias outside the head).
    """
    prefix = peft_prefix(model)
    if prefix:
        return lambda key: any(part.startswith(prefix) for part in key.split("."))
    own = METHODS[method].own_adapter if method in METHODS else None
    if own is None:
        return lambda key: False
    return lambda key: own(key) and not any(part in head for part in key.split("."))


def saved_weights(run_dir: str | Path) -> Path | None:
    """The weights file a finished run saved: PEFT adapter, BitFit's trainable tensors, or the full model."""
    for name in ("adapter_model.safetensors", TRAINABLE_FILE, "model.safetensors"):
        if (Path(run_dir) / name).exists():
            return Path(run_dir) / name
    return None
