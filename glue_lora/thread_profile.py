"""Where does a second CPU thread go? Profile the same training steps at 1 and at 2 torch threads.

    python -m glue_lora.thread_profile configs/demo.yaml [--steps 20] [--threads 1 2] [--json out.json]

Builds the config's Trainer exactly as a run does (`glue_lora.bench.harness_trainer`), trains a few warm-up
steps, then profiles `--steps` optimizer steps with `torch.profiler` at each thread count and prints, per op
group, the self CPU time per step and the speed-up from 1 to N threads. Ops that do not speed up (elementwise
work, Python and autograd bookkeeping) bound what a second thread can give (Amdahl); the matmuls show how
much OpenMP splitting of small GEMMs returns. The profiler's own overhead is the same at each thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

GROUPS = {  # op name prefix -> group (first match wins)
    "aten::mm": "matmul", "aten::addmm": "matmul", "aten::bmm": "matmul", "aten::linear": "matmul",
    "aten::_scaled_dot_product": "attention", "aten::bernoulli": "dropout", "aten::native_dropout": "dropout",
    "aten::native_layer_norm": "layer norm", "aten::gelu": "gelu", "aten::softmax": "softmax",
    "aten::_softmax": "softmax", "aten::embedding": "embedding", "aten::copy_": "copies", "aten::to": "copies",
    "aten::_foreach": "optimizer", "aten::add": "elementwise", "aten::mul": "elementwise", "aten::div": "elementwise",
}


def group_of(name: str) -> str:
    return next((group for prefix, group in GROUPS.items() if name.startswith(prefix)), "other ops")


def profile_steps(config_path: str, overrides: list[str], threads: int, steps: int, warmup: int,
                  workdir: Path) -> dict[str, Any]:
    """Self CPU seconds per optimizer step by op group, plus wall and process CPU seconds per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    from glue_lora.bench import harness_trainer
    from glue_lora.config import load_config
    from glue_lora.timing import cpu_seconds

    torch.set_num_threads(threads)
    config = load_config(config_path, [*overrides, f"output_dir={workdir / f't{threads}'}",
                                       "training.eval_strategy='no'", "training.save_strategy='no'",
                                       f"training.max_steps={warmup + steps}"])
    built = harness_trainer(config)
    marks: dict[str, Any] = {}
    prof = profile(activities=[ProfilerActivity.CPU])

    class Window(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                marks["start"] = (time.perf_counter(), cpu_seconds())
                prof.__enter__()
            elif state.global_step == warmup + steps:
                prof.__exit__(None, None, None)
                marks["stop"] = (time.perf_counter(), cpu_seconds())

    built.trainer.add_callback(Window())
    built.trainer.train()
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        groups[group_of(event.key)] = groups.get(group_of(event.key), 0.0) + event.self_cpu_time_total / 1e6 / steps
    (w0, c0), (w1, c1) = marks["start"], marks["stop"]
    return {"threads": threads, "steps": steps, "wall_seconds_per_step": (w1 - w0) / steps,
            "cpu_seconds_per_step": (c1 - c0) / steps, "self_seconds_per_step": groups}


def format_profiles(results: list[dict[str, Any]]) -> str:
    base = results[0]
    names = sorted(base["self_seconds_per_step"], key=lambda g: -base["self_seconds_per_step"][g])
    header = "| op group | " + " | ".join(f"{r['threads']} thr ms/step" for r in results) + " | speed-up |"
    lines = [header, "|" + "---|" * (len(results) + 2)]
    for name in names:
        values = [r["self_seconds_per_step"].get(name, 0.0) for r in results]
        speedup = values[0] / values[-1] if values[-1] else float("nan")
        lines.append(f"| {name} | " + " | ".join(f"{1000 * v:.1f}" for v in values) + f" | {speedup:.2f}x |")
    for key in ("wall_seconds_per_step", "cpu_seconds_per_step"):
        values = [r[key] for r in results]
        lines.append(f"| **{key.replace('_', ' ')}** | " + " | ".join(f"{1000 * v:.1f}" for v in values)
                     + f" | {values[0] / values[-1]:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m glue_lora.thread_profile", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="glue-lora-profile-") as tmp:
        results = [profile_steps(args.config, args.overrides, n, args.steps, args.warmup, Path(tmp))
                   for n in args.threads]
    print(format_profiles(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
