"""Stage 2 of a grid search: a sweep file that reruns each config's best setting with more seeds.

    python -m glue_lora.sweep_best configs/sweeps/minilm-methods.yaml --key training.learning_rate \\
        --seeds 0 1 2 --out configs/sweeps/minilm-methods-seeds.yaml

Reads the finished runs of the stage-1 sweep (its plan names every run, so no guessing from directory names),
groups them by config and by every override except `--key` and the seed (e.g. per task and method), picks the
`--key` value with the highest mean primary dev metric (the best evaluation of each run, as the report counts
it), and writes a sweep whose variants pin that value on that config only. Seeds already run keep their run
names, so the new sweep skips them. Every group must be complete: a missing or failed run is an error, since
a best value over a partial grid is not the grid's best.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from glue_lora.errors import UsageError
from glue_lora.record import RESULTS_FILE, load_record, write_text_atomic
from glue_lora.sweep import PlannedRun, load_sweep, plan_sweep


def best_settings(runs: list[PlannedRun], key: str) -> list[tuple[Path, dict[str, Any], float]]:
    """Per (config, other overrides): (config path, overrides with the best `key` value, its mean score)."""
    scores: dict[tuple, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if key not in run.overrides:
            raise UsageError(f"run {run.name} does not vary {key}; give the key the stage-1 sweep varies")
        record = load_record(run.run_dir / RESULTS_FILE)
        if not isinstance(record, dict) or record.get("status") != "success":
            raise UsageError(f"run {run.name} has not finished successfully ({run.run_dir}); "
                             "finish the stage-1 sweep first (run it again: finished runs are skipped)")
        rest = {k: v for k, v in run.overrides.items() if k not in (key, "seed")}
        group = (run.config_path, tuple(sorted(rest.items(), key=lambda item: item[0])))
        scores[group][run.overrides[key]].append(record["best"]["metrics"][record["primary_metric"]])
    best = []
    for (config_path, rest), by_value in scores.items():
        value, values = max(by_value.items(), key=lambda item: statistics.fmean(item[1]))
        best.append((config_path, {**dict(rest), key: value}, statistics.fmean(values)))
    return best


def stage_two(stage_one: Path, key: str, seeds: list[int], out: Path) -> str:
    """The stage-2 sweep file's text: config paths relative to `out`'s folder, stage 1's output root."""
    spec = load_sweep(stage_one)
    chosen = best_settings(plan_sweep(spec), key)
    relative = lambda p: os.path.relpath(Path(p).resolve(), out.resolve().parent)  # noqa: E731
    sweep = {
        "configs": sorted({relative(config) for config, _, _ in chosen}),
        "grid": {"seed": seeds},
        "variants": [{"configs": [relative(config)], **overrides} for config, overrides, _ in chosen],
        "output_root": str(spec.output_root),
    }
    lines = [f"# Stage 2 of {os.path.relpath(stage_one, out.parent)}: each config's best {key} (highest mean",
             "# primary dev metric over the stage-1 seeds) with seeds " + ", ".join(map(str, seeds)) + ".",
             f"# Written by: python -m glue_lora.sweep_best {stage_one} --key {key} "
             f"--seeds {' '.join(map(str, seeds))} --out {out}",
             "# Stage-1 means per chosen setting:"]
    lines += [f"#   {Path(config).stem:12s} {overrides}: {100 * score:.2f}" for config, overrides, score in chosen]
    return "\n".join(lines) + "\n" + yaml.safe_dump(sweep, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glue_lora.sweep_best", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", type=Path, help="the stage-1 sweep file (its runs must have finished)")
    parser.add_argument("--key", default="training.learning_rate", help="the override whose best value to keep")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of stage 2")
    parser.add_argument("--out", type=Path, required=True, help="the stage-2 sweep file to write")
    args = parser.parse_args(argv)
    try:
        text = stage_two(args.sweep, args.key, args.seeds, args.out)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        write_text_atomic(args.out, text)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err.strerror}; give --out a writable path", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
