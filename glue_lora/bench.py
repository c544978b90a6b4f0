"""`glue-lora bench`: training and evaluation throughput of the real harness path, settings side by side.

For one config it trains a fixed number of optimizer steps and runs full evaluation passes with the harness's
own pieces (`load_config`, `load_glue`, `tokenise`, `load_model`, `training_arguments`, `build_trainer`, i.e.
the real `Trainer`), in one process, for:

- (a) ``ours``: the harness defaults (dynamic padding, length-grouped batches, large eval batch, bf16 on
  Ampere+ GPUs);
- (b) ``run_glue``: transformers' run_glue defaults (every example padded to 128 tokens, random batches,
  eval batch 8, fp32);
- (c) ``dynamic``: our defaults without length grouping (dynamic padding of random batches);
- ``full``: (a) with ``method=full``, for the LoRA vs full fine-tuning memory comparison.

It also times a square GEMM (fp32 and bf16) in the same run, as the machine's matmul roofline.

FLOP model (model FLOPs, counted on real, non-pad tokens; 2 FLOPs per multiply-add)::

    step FLOPs = sum over linear weights W of |W| * n(W) * (4 + 2 * [W trains]) + 12 * L * d * sum_i l_i^2

- ``n(W)`` is the number of real tokens T in the batch for encoder weights, the number of sequences B for
  the head (pooler, classifier), which reads one token per sequence.
- Each application costs 2|W| in the forward pass and 2|W| for the activation gradient; a weight that trains
  costs another 2|W| for its own gradient. So full fine-tuning is the familiar 6 * N * T, and LoRA with a
  frozen base is 4 * N_base * T + 6 * N_lora * T (LoRA A/B are linear layers that train).
- Attention: per layer QK^T and A.V cost 2 * l^2 * d each in the forward pass for a sequence of l tokens and
  width d (= hidden size); both operands are activations, so training is 3x forward: 12 * L * d * l^2.
- Not counted: embeddings (lookups), biases, layer norm, softmax, GELU, dropout, the optimizer, DeBERTa's
  relative-position projections; and the activation gradient below the first adapted layer, which a frozen
  base never needs (so LoRA is overcounted by at most 1/L of its base term).

The same formula with every sequence at its padded length gives the work the hardware actually did.
Fraction of roofline (MFU) = model FLOPs on real tokens / train seconds / measured GEMM FLOP/s.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glue_lora.methods import label as method_label

HELP = ("throughput of the real training path: samples/s, tokens/s, memory and fraction of matmul roofline "
        "for our defaults vs run_glue's vs no length grouping, and LoRA vs full fine-tuning memory")

HEAD_MODULES = {"classifier", "pooler"}  # applied to one token per sequence, not to every token
FLOP_FORMULA = ("sum_W |W|*n(W)*(4 + 2*[W trains]) + 12*L*d*sum(l^2); n(W)=real tokens (encoder) or sequences "
                "(head); full FT = 6*N*T, LoRA = 4*N_base*T + 6*N_lora*T, plus attention")

# Real dimensions of the LoRA paper's models, for GPU numbers without downloading weights (--random-init).
ROBERTA_SHAPES: dict[str, dict[str, int]] = {
    "roberta-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072},
    "roberta-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096},
}
ROBERTA_VOCAB, ROBERTA_POSITIONS = 50265, 514


# --- settings ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One column of the comparison: config overrides applied on top of the user's."""

    key: str
    label: str
    overrides: tuple[str, ...]


def bench_settings(pad_length: int) -> dict[str, Setting]:
    return {s.key: s for s in (
        Setting("ours", "(a) ours: dynamic padding, length-grouped", ()),
        # run_glue exactly (glue_lora.compat): --pad_to_max_length True, --max_seq_length 128, random batches,
        # eval batch 8, fp32
        Setting("run_glue", f"(b) run_glue: pad to {pad_length}, random", ("compat=run_glue", f"max_seq_length={pad_length}")),
        Setting("dynamic", "(c) dynamic padding, random", ("training.train_sampling_strategy=random",)),
        Setting("full", "(a) with method=full", ("method=full",)),
    )}


# --- FLOP model ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MatmulWeights:
    """Weight elements of the linear layers one forward pass applies, by how often and whether they train."""

    per_token_frozen: int
    per_token_trainable: int
    per_sequence_frozen: int
    per_sequence_trainable: int
    layers: int
    width: int  #: attention width d (hidden size)


def matmul_weights(model) -> MatmulWeights:
    """Classify every `nn.Linear` weight of a (PEFT or plain) sequence classifier; see the module docstring."""
    import torch

    counts = {"token": [0, 0], "sequence": [0, 0]}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".")
        # PEFT keeps an unused frozen copy of each modules_to_save module; DeBERTa's pos_*_proj act on the
        # relative-position table, not on tokens (not counted, like the rest of its relative attention).
        if "original_module" in parts or parts[-1].startswith("pos_"):
            continue
        where = "sequence" if HEAD_MODULES & set(parts) else "token"
        counts[where][int(module.weight.requires_grad)] += module.weight.numel()
    config = model.config
    return MatmulWeights(counts["token"][0], counts["token"][1], counts["sequence"][0], counts["sequence"][1],
                         config.num_hidden_layers, config.hidden_size)


def training_flops(weights: MatmulWeights, tokens: int, sequences: int, sum_sq_lengths: int) -> int:
    """Model FLOPs of one training pass (forward + backward) over `sequences` examples holding `tokens` tokens."""
    per_token = 4 * weights.per_token_frozen + 6 * weights.per_token_trainable
    per_sequence = 4 * weights.per_sequence_frozen + 6 * weights.per_sequence_trainable
    attention = 12 * weights.layers * weights.width * sum_sq_lengths
    return per_token * tokens + per_sequence * sequences + attention


def flops_of_lengths(weights: MatmulWeights, lengths: Sequence[int]) -> int:
    return training_flops(weights, sum(lengths), len(lengths), sum(n * n for n in lengths))


# --- what the model sees -------------------------------------------------------------------------------------

@dataclass
class BatchStats:
    """Totals over a span of forward passes."""

    samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    real_sq: int = 0  #: sum of squared real lengths (attention FLOPs)
    padded_sq: int = 0

    def add(self, other: BatchStats) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class BatchRecorder:
    """Forward pre-hook on the model: the shape and real lengths of every batch it is called with.

    Lengths stay device tensors until read, so recording adds no GPU synchronisation to a step.
    `keep_ids` also keeps each batch's input ids on the CPU (tests use it to follow examples).
    """

    def __init__(self, model, keep_ids: bool = False):
        self.batches: list[tuple[int, int, Any]] = []  # (batch size, padded length, real lengths)
        self.ids: list[Any] = []
        self.keep_ids = keep_ids
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None and args:
            ids = args[0]
        lengths = mask.sum(-1) if mask is not None else None
        self.batches.append((ids.shape[0], ids.shape[1], lengths))
        if self.keep_ids:
            self.ids.append(ids.detach().cpu())

    def stats(self, start: int = 0, stop: int | None = None) -> BatchStats:
        out = BatchStats()
        for size, padded, lengths in self.batches[start:stop]:
            real = lengths.tolist() if lengths is not None else [padded] * size
            out.add(BatchStats(size, sum(real), size * padded, sum(n * n for n in real), size * padded * padded))
        return out

    def close(self) -> None:
        self._handle.remove()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _clock_callback(recorder: BatchRecorder, warmup: int, window: int):
    from transformers import TrainerCallback

    from glue_lora.timing import cpu_seconds

    class StepClock(TrainerCallback):
        """Marks (wall time, process CPU seconds, batches seen) at the end of the last warm-up step and of
        every timed window."""

        def __init__(self):
            self.marks: list[tuple[float, float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            done = state.global_step - warmup
            if done >= 0 and done % window == 0:
                _sync()
                self.marks.append((time.perf_counter(), cpu_seconds(), len(recorder.batches)))

    return StepClock()


# --- memory --------------------------------------------------------------------------------------------------

def _rss_kib(field_name: str) -> int | None:
    try:
        match = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_memory() -> bool:
    """Free what earlier settings left and restart peak tracking; False when the peak is process-wide."""
    import torch

    gc.collect()
    try:  # hand freed heap pages back to the OS, or they would count towards the next setting's RSS
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM (peak RSS) := current RSS
        return True
    except OSError:
        return False


def peak_memory_mib() -> dict[str, float | None]:
    import resource

    import torch

    hwm = _rss_kib("VmHWM")
    rss = hwm / 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"rss": round(rss, 1), "gpu": round(gpu, 1) if gpu is not None else None}


# --- matmul roofline -----------------------------------------------------------------------------------------

def matmul_roofline(dtype_name: str, size: int, repeats: int) -> list[float]:
    """GFLOP/s of `repeats` timed square GEMMs (each repeat >= ~0.2 s of back-to-back matmuls)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def timed(n: int) -> float:
        _sync()
        start = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b, out=out)
        _sync()
        return time.perf_counter() - start

    first = timed(2)  # warm-up: thread pool, kernel selection
    per_repeat = max(1, math.ceil(0.2 / max(first / 2, 1e-6)))
    return [round(2 * size**3 * per_repeat / timed(per_repeat) / 1e9, 2) for _ in range(repeats)]


# --- one setting ---------------------------------------------------------------------------------------------

def megabatch_steps(n_train: int, batch: int) -> int:
    """Optimizer steps per length-grouped mega-batch.

    transformers' `get_length_grouped_indices` sorts mega-batches of 50 batches (or a quarter of the data when
    that is less) by length, longest first; a timed span of whole mega-batches sees a representative mix of
    lengths, a shorter one sees mostly long or mostly short examples.
    """
    return max(1, min(n_train // (batch * 4), 50))


@dataclass
class Plan:
    """What every setting runs: the same number of steps, in the same windows."""

    warmup: int
    steps: int  #: timed optimizer steps per repeat
    repeats: int


@dataclass
class HarnessTrainer:
    """A Trainer built exactly as `glue_lora.train.run` builds it, and what went into it."""

    trainer: Any
    model: Any
    args: Any
    encoded: Any
    tokenise_seconds: float


def harness_trainer(config) -> HarnessTrainer:
    """Tokeniser, data, tokenisation (cached), model and Trainer through the harness's own functions."""
    from transformers import set_seed

    from glue_lora.config import plan_batch
    from glue_lora.data import load_glue
    from glue_lora.modeling import load_model, load_tokenizer
    from glue_lora.tasks import get_task
    from glue_lora.train import build_trainer, tokenise, training_arguments

    task = get_task(config.task)
    args = training_arguments(config, plan_batch(config, 1))
    tokenizer = load_tokenizer(config)
    start = time.perf_counter()
    splits, source = load_glue(task, config.data_dir)
    encoded = tokenise(splits, task, tokenizer, config, source)
    tokenise_seconds = time.perf_counter() - start
    set_seed(config.seed)  # as run(): the head's random init depends on it
    model, _ = load_model(config, task)
    trainer = build_trainer(config, task, args, model, tokenizer, encoded)
    return HarnessTrainer(trainer, model, args, encoded, tokenise_seconds)


def measure_setting(setting: Setting, config_path: str | None, overrides: list[str], plan: Plan,
                    workdir: Path, merged_eval: bool) -> dict[str, Any]:
    """Train `plan` steps and time full evaluation passes through the harness's own Trainer."""
    from glue_lora.config import load_config

    exact_peak = reset_peak_memory()
    rss_start = _rss_kib("VmRSS")  # the process before this setting loads anything: the baseline of its peak
    total_steps = plan.warmup + plan.steps * plan.repeats
    config = load_config(config_path, [
        *overrides, *setting.overrides, f"output_dir={workdir / setting.key}",
        # timing only: no evaluation or checkpoint inside the timed steps
        "training.eval_strategy='no'", "training.save_strategy='no'",  # quoted: YAML reads a bare no as false
        "training.load_best_model_at_end=false", f"training.max_steps={total_steps}"])
    built = harness_trainer(config)
    trainer, model, args, encoded = built.trainer, built.model, built.args, built.encoded
    weights = matmul_weights(model)
    recorder = BatchRecorder(trainer.model)
    clock = _clock_callback(recorder, plan.warmup, plan.steps)
    trainer.add_callback(clock)
    trainer.train()

    windows = []
    for (t0, c0, b0), (t1, c1, b1) in zip(clock.marks, clock.marks[1:]):
        windows.append(_window(t1 - t0, c1 - c0, plan.steps, recorder.stats(b0, b1), weights))
    evals = timed_evaluations(trainer, recorder, plan.repeats)
    merged = None
    if merged_eval and hasattr(trainer.model, "merge_and_unload"):  # a PEFT adapter that can fold into the weights
        merged = merged_evaluation(trainer, recorder, plan.repeats, evals["metrics"])
    memory = peak_memory_mib()
    recorder.close()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    row = {
        "setting": setting.key, "label": setting.label, "method": config.method, "model": config.model,
        "task": config.task, "per_device_batch": args.per_device_train_batch_size,
        "accumulation": args.gradient_accumulation_steps, "max_seq_length": config.max_seq_length,
        "pad_to_max_length": config.pad_to_max_length, "sampling": args.train_sampling_strategy,
        "eval_batch": args.per_device_eval_batch_size, "bf16": bool(args.bf16),
        "attn_implementation": getattr(base.config, "_attn_implementation", None),
        "n_train": len(encoded["train"]), "n_eval": evals["samples"],
        "tokenise_seconds": round(built.tokenise_seconds, 2),
        "matmul_weights": vars(weights), "windows": windows,
        "eval": {k: v for k, v in evals.items() if k != "metrics"}, "eval_metrics": evals["metrics"],
        "merged_eval": merged, "peak_memory_mib": memory, "peak_is_per_setting": exact_peak,
        "rss_at_start_mib": round(rss_start / 1024, 1) if rss_start is not None else None,
        **{key: statistics.median(w[key] for w in windows) for key in (
            "train_samples_per_s", "real_tokens_per_s", "padded_tokens_per_s", "model_tflops_per_s",
            "hardware_tflops_per_s", "cpu_seconds_per_step", "wall_seconds_per_step")},
    }
    real, padded = sum(w["real_tokens"] for w in windows), sum(w["padded_tokens"] for w in windows)
    row["padding_fraction"] = round(1 - real / padded, 4)
    row["epoch_seconds"] = round(row["n_train"] / row["train_samples_per_s"] + evals["seconds"], 1)
    return row


def _window(seconds: float, cpu: float, steps: int, stats: BatchStats, weights: MatmulWeights) -> dict[str, float]:
    real = training_flops(weights, stats.real_tokens, stats.samples, stats.real_sq)
    padded = training_flops(weights, stats.padded_tokens, stats.samples, stats.padded_sq)
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "cpu_seconds_per_step": cpu / steps,
            "wall_seconds_per_step": seconds / steps, "samples": stats.samples, "real_tokens": stats.real_tokens,
            "padded_tokens": stats.padded_tokens, "model_flops": real, "hardware_flops": padded,
            "train_samples_per_s": stats.samples / seconds, "real_tokens_per_s": stats.real_tokens / seconds,
            "padded_tokens_per_s": stats.padded_tokens / seconds, "model_tflops_per_s": real / seconds / 1e12,
            "hardware_tflops_per_s": padded / seconds / 1e12}


def timed_evaluations(trainer, recorder: BatchRecorder, repeats: int) -> dict[str, Any]:
    """`repeats` full evaluation passes over every eval split after a short warm-up pass; medians."""
    from glue_lora.timing import cpu_seconds

    warm = {name: ds.select(range(min(len(ds), 2 * trainer.args.eval_batch_size)))
            for name, ds in trainer.eval_dataset.items()}
    trainer.evaluate(eval_dataset=warm)
    seconds, cpu, samples, metrics = [], [], 0, {}
    for _ in range(repeats):
        first = len(recorder.batches)
        _sync()
        start, cpu_start = time.perf_counter(), cpu_seconds()
        metrics = trainer.evaluate()
        _sync()
        seconds.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - cpu_start)
        samples = recorder.stats(first).samples
    median = statistics.median(seconds)
    quality = {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second")) and k != "epoch"}
    return {"seconds": round(median, 3), "all_seconds": [round(s, 3) for s in seconds], "samples": samples,
            "cpu_seconds": round(statistics.median(cpu), 3),
            "samples_per_s": samples / median, "metrics": quality}


def merged_evaluation(trainer, recorder: BatchRecorder, repeats: int, unmerged: dict[str, float]) -> dict[str, Any]:
    """The same evaluation with LoRA folded into the base weights (W + s*BA): faster, and the same metrics?"""
    trainer.model.merge_adapter()
    try:
        result = timed_evaluations(trainer, recorder, repeats)
    finally:
        trainer.model.unmerge_adapter()
    same = {k: result["metrics"].get(k) == v for k, v in unmerged.items() if not k.endswith("_loss")}
    loss_diff = max((abs(result["metrics"][k] - v) for k, v in unmerged.items() if k.endswith("_loss")), default=0.0)
    return {"seconds": result["seconds"], "samples_per_s": result["samples_per_s"], "metrics": result["metrics"],
            "metrics_identical": all(same.values()), "max_loss_difference": loss_diff}


# --- random-weight models with real shapes ------------------------------------------------------------------

def random_roberta_config(shape: str, tokenizer):
    """RoBERTa's real dimensions for `shape`, sized for `tokenizer` (see `build_random_model`)."""
    from transformers import RobertaConfig

    return RobertaConfig(**ROBERTA_SHAPES[shape], vocab_size=max(ROBERTA_VOCAB, len(tokenizer)),
                         max_position_embeddings=ROBERTA_POSITIONS, type_vocab_size=2, layer_norm_eps=1e-5,
                         pad_token_id=tokenizer.pad_token_id)


def build_random_model(shape: str, config_path: str | None, overrides: list[str], folder: Path) -> str:
    """Save a RoBERTa encoder with `shape`'s real dimensions and random weights, as a base checkpoint.

    Offline stand-in for the pretrained weights (throughput does not depend on their values). The tokenizer
    is the config's model's, so sequence lengths are its tokenizer's; the embedding table keeps RoBERTa's
    50265 rows, and type_vocab_size is 2 (+d parameters) because that tokenizer emits segment ids for pairs.
    """
    import torch
    from transformers import RobertaModel

    from glue_lora.config import load_config
    from glue_lora.modeling import load_tokenizer

    tokenizer = load_tokenizer(load_config(config_path, overrides))
    torch.manual_seed(0)
    target = folder / f"random-{shape}"
    RobertaModel(random_roberta_config(shape, tokenizer), add_pooling_layer=False).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


# --- the command ---------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (e.g. configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for train")
    parser.add_argument("--steps", type=int, default=50,
                        help="timed optimizer steps per repeat, rounded up to whole length-grouped mega-batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocations, kernel choice)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed windows of --steps steps and full evaluation passes; the table shows medians")
    parser.add_argument("--settings", default="ours,run_glue,dynamic,full",
                        help="comma-separated subset of: ours, run_glue, dynamic, full")
    parser.add_argument("--pad-length", type=int, default=128, help="run_glue's --max_seq_length (setting b)")
    parser.add_argument("--random-init", choices=sorted(ROBERTA_SHAPES),
                        help="replace the model with random weights in this model's real shape (no download)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads for the roofline and every setting (default: torch's, one per core)")
    parser.add_argument("--gemm-size", type=int, help="square GEMM size for the roofline (default 2048 CPU, 8192 GPU)")
    parser.add_argument("--gemm-repeats", type=int, default=7, help="timed GEMMs per roofline measurement (default 7)")
    parser.add_argument("--no-merged-eval", dest="merged_eval", action="store_false",
                        help="skip timing evaluation with LoRA merged into the base weights")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--to-accuracy", type=float, metavar="TARGET",
                        help="instead: train the config as a run would until its primary dev metric first "
                             "reaches TARGET; print the CPU and wall seconds of training (evaluation excluded)")
    parser.add_argument("--eval-steps", type=int, default=50, help="with --to-accuracy: evaluate every N steps")


def main(args: argparse.Namespace) -> int:
    import torch

    from glue_lora.config import load_config, plan_batch
    from glue_lora.errors import UsageError
    from glue_lora.record import write_json_atomic
    from glue_lora.results import machine, versions

    if min(args.steps, args.warmup, args.repeats, args.gemm_repeats) < 1:
        raise UsageError("--steps, --warmup, --repeats and --gemm-repeats must be at least 1")
    available = bench_settings(args.pad_length)
    chosen = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in available]
    if unknown or not chosen:
        raise UsageError(f"--settings: unknown {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(available)}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.to_accuracy is not None:
        return to_accuracy_command(args)
    base = load_config(args.config, args.overrides)  # every config error before minutes of work
    n_train = _train_rows(base)
    batch = plan_batch(base, 1)
    mega = megabatch_steps(n_train, batch.per_device * batch.accumulation)
    plan = Plan(args.warmup, math.ceil(args.steps / mega) * mega, args.repeats)
    on_gpu = torch.cuda.is_available()
    gemm = args.gemm_size or (8192 if on_gpu else 2048)
    roofline = {dt: matmul_roofline(dt, gemm, args.gemm_repeats) for dt in ("float32", "bfloat16")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="glue-lora-bench-") as tmp:
        overrides = list(args.overrides)
        if args.random_init:
            overrides.append(f"model={build_random_model(args.random_init, args.config, overrides, Path(tmp))}")
        for key in chosen:
            print(f"bench: {available[key].label} ...", file=sys.stderr, flush=True)
            rows.append(measure_setting(available[key], args.config, overrides, plan, Path(tmp), args.merged_eval))
    peaks = {dt: statistics.median(v) for dt, v in roofline.items()}
    if args.random_init:  # the temporary checkpoint path means nothing once the run is over
        for row in rows:
            row["model"] = f"{args.random_init} shape, random weights"
    for row in rows:
        for dt, peak in peaks.items():
            row[f"fraction_of_{dt}_peak"] = round(row["model_tflops_per_s"] * 1e3 / peak, 4)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv), "config": args.config,
        "overrides": args.overrides, "random_init": args.random_init, "device": _device(),
        "machine": machine(), "versions": versions(), "load_average": _load_average(),
        "plan": vars(plan), "megabatch_steps": mega, "flop_formula": FLOP_FORMULA,
        "roofline_gflops": {"gemm_size": gemm, **roofline, "median": peaks}, "settings": rows,
        "summary": summarise(rows),
    }
    print(format_report(report))
    if args.json:
        write_json_atomic(args.json, report)
        print(f"json: {args.json}")
    return 0


def to_accuracy_command(args: argparse.Namespace) -> int:
    """`bench --to-accuracy`: see `glue_lora.time_to_accuracy`."""
    from glue_lora.config import load_config
    from glue_lora.errors import UsageError
    from glue_lora.results import machine, versions, write_json_atomic
    from glue_lora.time_to_accuracy import format_time_to_accuracy, measure_time_to_accuracy

    if args.eval_steps < 1:
        raise UsageError("--eval-steps must be at least 1")
    load_config(args.config, args.overrides)  # every config error before minutes of work
    with tempfile.TemporaryDirectory(prefix="glue-lora-bench-") as tmp:
        result = measure_time_to_accuracy(args.config, list(args.overrides), args.to_accuracy, args.eval_steps,
                                          Path(tmp))
    result.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), command=" ".join(sys.argv), device=_device(),
                  load_average=_load_average(), machine=machine(), versions=versions())
    print(f"device: {result['device']}; load average {result['load_average']}")
    print(format_time_to_accuracy(result))
    if args.json:
        write_json_atomic(args.json, result)
        print(f"json: {args.json}")
    return 0 if result["reached"] else 1


def _train_rows(config) -> int:
    """Training rows the settings will see (the harness's max_train_samples subset, if any)."""
    from glue_lora.data import load_glue
    from glue_lora.tasks import get_task

    task = get_task(config.task)
    splits, _ = load_glue(task, config.data_dir)
    rows = len(splits[task.train_split])
    return min(rows, config.max_train_samples) if config.max_train_samples else rows


def _device() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    from glue_lora.hardware import cpu_model

    model = cpu_model()
    return (f"CPU {model or platform.processor()}, {torch.get_num_threads()} torch threads, "
            f"capability {torch.backends.cpu.get_cpu_capability()} (torch {torch.__version__})")


def _load_average() -> list[float] | None:
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --- report --------------------------------------------------------------------------------------------------

def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {row["setting"]: row for row in rows}
    out: dict[str, Any] = {}
    ours = by.get("ours")
    if ours:
        for key, name in (("run_glue", "vs_run_glue"), ("dynamic", "vs_dynamic")):
            if key in by:
                out[f"real_tokens_{name}"] = round(ours["real_tokens_per_s"] / by[key]["real_tokens_per_s"], 2)
                out[f"cpu_per_step_{name}"] = round(by[key]["cpu_seconds_per_step"] / ours["cpu_seconds_per_step"], 2)
        out["fraction_of_float32_peak"] = ours["fraction_of_float32_peak"]
        if "full" in by and by["full"]["method"] != ours["method"]:
            mem = "gpu" if ours["peak_memory_mib"]["gpu"] is not None else "rss"
            out["peak_memory"] = {"kind": mem, "method": ours["method"], "ours": ours["peak_memory_mib"][mem],
                                  "full": by["full"]["peak_memory_mib"][mem]}
        if ours.get("merged_eval"):
            merged = ours["merged_eval"]
            out["merged_eval_speedup"] = round(merged["samples_per_s"] / ours["eval"]["samples_per_s"], 3)
            out["merged_eval_metrics_identical"] = merged["metrics_identical"]
    return out


def format_report(report: dict[str, Any]) -> str:
    rows = report["settings"]
    gpu = any(r["peak_memory_mib"]["gpu"] is not None for r in rows)
    header = ["setting", "CPU-s/step", "wall-s/step", "train samp/s", "real tok/s", "padded tok/s", "pad %",
              "eval CPU-s", "eval samp/s",
              "peak GPU MiB" if gpu else "peak RSS MiB", "epoch s", "model TFLOP/s", "% fp32 peak", "% bf16 peak"]
    table = [header]
    for r in rows:
        table.append([r["label"], f"{r['cpu_seconds_per_step']:.3f}", f"{r['wall_seconds_per_step']:.3f}",
                      f"{r['train_samples_per_s']:.1f}", f"{r['real_tokens_per_s']:.0f}",
                      f"{r['padded_tokens_per_s']:.0f}", f"{100 * r['padding_fraction']:.0f}",
                      f"{r['eval']['cpu_seconds']:.1f}", f"{r['eval']['samples_per_s']:.1f}",
                      f"{r['peak_memory_mib']['gpu' if gpu else 'rss']:.0f}", f"{r['epoch_seconds']:.0f}",
                      f"{r['model_tflops_per_s']:.4f}", f"{100 * r['fraction_of_float32_peak']:.1f}",
                      f"{100 * r['fraction_of_bfloat16_peak']:.1f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    plan, roof = report["plan"], report["roofline_gflops"]
    lines = [f"device: {report['device']}; load average {report['load_average']}",
             f"plan: {plan['warmup']} warm-up steps, then {plan['repeats']} x {plan['steps']} timed steps "
             f"(mega-batch = {report['megabatch_steps']} steps); medians",
             "roofline: " + ", ".join(f"{dt} {roof['median'][dt]:.1f} GFLOP/s" for dt in ("float32", "bfloat16"))
             + f" (median of {len(roof['float32'])} GEMMs, n={roof['gemm_size']})",
             f"FLOPs: {report['flop_formula']}",
             "CPU-s/step: process CPU seconds (all threads) per optimizer step, the measure that survives a "
             "shared machine; eval CPU-s: one full evaluation pass", ""]
    for i, row in enumerate(table):
        cells = [cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    first = rows[0]
    lines += ["", f"model {first['model']} ({first['attn_implementation']} attention), task {first['task']}, "
              f"{first['n_train']} train rows, batch {first['per_device_batch']} x {first['accumulation']}, "
              f"epoch s = train rows / train samples/s + one full evaluation pass"]
    lines += _summary_lines(report["summary"])
    return "\n".join(lines)


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    """Plain ratios for people; whether they are good enough is for docs/benchmarks.md, not the tool."""
    lines = []
    for name, label in (("vs_run_glue", "(a)/(b)"), ("vs_dynamic", "(a)/(c)")):
        if f"real_tokens_{name}" in summary:
            lines.append(f"real tokens/s {label}: {summary[f'real_tokens_{name}']:.2f}x; CPU-s per step "
                         f"{label.split('/')[1]}/(a): {summary[f'cpu_per_step_{name}']:.2f}x")
    if "fraction_of_float32_peak" in summary:
        lines.append(f"(a) model FLOP/s on real tokens: {100 * summary['fraction_of_float32_peak']:.1f}% "
                     "of the fp32 GEMM roofline")
    if "peak_memory" in summary:
        mem = summary["peak_memory"]
        lines.append(f"peak {mem['kind'].upper()} {method_label(mem['method'])} {mem['ours']:.0f} MiB vs "
                     f"full FT {mem['full']:.0f} MiB")
    if "merged_eval_speedup" in summary:
        lines.append(f"eval with merged LoRA weights: {summary['merged_eval_speedup']:.3f}x samples/s; "
                     f"metrics identical: {summary['merged_eval_metrics_identical']}")
    return lines
