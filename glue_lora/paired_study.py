"""Analyse a paired study: does a speed setting (length-grouped batches, bf16) change dev scores?

    python -m glue_lora.paired_study runs/sampler-study --compare sampler [--out table.md]
    python -m glue_lora.paired_study runs/sampler-study --compare bf16

Reads every finished `results.json` under the folder, pairs the runs of each (task, method) by seed (a seed
fixes the head init and the data subset; only the compared setting differs, every other config key must
match), and reports per cell the paired difference candidate - baseline of the primary dev metric (the best
evaluation, as the paper reports) with a 95 % t interval, and both settings' CPU seconds per optimizer step.
Decision rule (issue 12): if the candidate's interval lies entirely below 0 on any cell, it is not neutral.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from glue_lora.stats import Difference, paired_difference


@dataclass(frozen=True)
class Comparison:
    """Which config key a study varies: the candidate value against the baseline value."""

    key: str  #: dotted path in the run's resolved config
    candidate: Any
    baseline: Any
    absent: Any  #: the value a config without the key means (records that do not say what the run resolved)
    labels: tuple[str, str]  #: how tables name the candidate and the baseline
    two_sided: bool = False  #: neutral only if every interval contains 0 (else: only if none lies below 0)
    resolved: Callable[[dict], Any] | None = None  #: the value the run actually used, from its record


def _bf16_used(record: dict) -> Any:
    """Records since bf16 became the default on native-bf16 CPUs say which precision the run trained in."""
    return record["precision"] == "bf16" if "precision" in record else None


COMPARISONS = {
    "sampler": Comparison("training.train_sampling_strategy", "group_by_length", "random", None,
                          ("grouped", "random")),
    # a default must not move scores either way (issue 12): bf16 is neutral only if every interval holds 0
    "bf16": Comparison("training.bf16", True, False, False, ("bf16", "fp32"), two_sided=True, resolved=_bf16_used),
}


@dataclass(frozen=True)
class StudyRun:
    cell: tuple[str, str, str]  #: task, method, and the rest of the config (minus the compared key and seed)
    seed: int
    setting: Any
    score: float  #: the primary metric of the best evaluation
    cpu_per_step: float | None


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    metric: str
    seeds: list[int]
    candidate: list[float]
    baseline: list[float]
    difference: Difference | None  #: candidate - baseline (issue 9's paired t interval); None below 2 pairs
    cpu_per_step: tuple[float | None, float | None]  #: mean CPU-s per step, candidate and baseline


def _lookup(config: dict, dotted: str, absent: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return absent
        config = config[part]
    return config


def _rest_of_config(config: dict, dotted: str) -> str:
    """The config without the compared key and the per-run keys: runs pair only when this matches."""
    rest = json.loads(json.dumps(config))
    for key in ("seed", "name", "output_dir", "resume", "overwrite"):
        rest.pop(key, None)
    *parents, leaf = dotted.split(".")
    section = rest
    for part in parents:
        section = section.get(part) or {}
    if isinstance(section, dict):
        section.pop(leaf, None)
    return json.dumps(rest, sort_keys=True)


def finished_records(root: Path) -> Iterator[tuple[Path, dict]]:
    """(results.json path, record) of every successful run under `root` that has a best evaluation."""
    for path in sorted(root.rglob("results.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "success" and record.get("best"):
            yield path, record


def read_runs(root: Path, comparison: Comparison) -> tuple[list[StudyRun], dict[str, str]]:
    """Finished runs under `root` with either compared value; also the primary metric of each task."""
    runs, metrics = [], {}
    for _, record in finished_records(root):
        config = record.get("config", {})
        used = comparison.resolved(record) if comparison.resolved else None
        setting = used if used is not None else _lookup(config, comparison.key, comparison.absent)
        if setting not in (comparison.candidate, comparison.baseline):
            continue
        metric = record["primary_metric"]
        metrics[record["task"]] = metric
        cell = (record["task"], record["method"], _rest_of_config(config, comparison.key))
        cpu = (record.get("timing") or {}).get("cpu_seconds_per_step")
        runs.append(StudyRun(cell, record["seed"], setting, record["best"]["metrics"][metric], cpu))
    return runs, metrics


def pair_cells(runs: list[StudyRun], metrics: dict[str, str], comparison: Comparison) -> list[Cell]:
    by_cell: dict[tuple, dict[Any, dict[int, StudyRun]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        by_cell[run.cell][run.setting][run.seed] = run
    cells = []
    for (task, method, _), settings in sorted(by_cell.items()):
        cand, base = settings[comparison.candidate], settings[comparison.baseline]
        seeds = sorted(set(cand) & set(base))
        if not seeds:
            continue  # e.g. the sampler study's fp32 runs seen by the bf16 comparison, without a bf16 partner
        a, b = [cand[s].score for s in seeds], [base[s].score for s in seeds]
        cpu = (_mean([cand[s].cpu_per_step for s in seeds]), _mean([base[s].cpu_per_step for s in seeds]))
        cells.append(Cell(task, method, metrics[task], seeds, a, b, paired_difference(a, b), cpu))
    return cells


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def decision(cells: list[Cell], comparison: Comparison) -> str:
    name = comparison.labels[0]
    against = [c for c in cells if c.difference and c.difference.below_zero]
    if against:
        return f"{name}'s interval lies below 0 on {_names(against)}: it lowers scores"
    if comparison.two_sided:
        above = [c for c in cells if c.difference and c.difference.above_zero]
        if above:
            return f"{name}'s interval lies above 0 on {_names(above)}: it changes scores (upwards)"
        return f"every interval contains 0: no evidence that {name} changes scores"
    return f"no interval lies below 0: no evidence that {name} lowers scores"


def _names(cells: list[Cell]) -> str:
    return ", ".join(f"{c.task} {c.method}" for c in cells)


def format_markdown(cells: list[Cell], comparison: Comparison) -> str:
    cand, base = comparison.labels
    lines = [f"| task | method | metric | pairs (seeds) | {cand} mean | {base} mean | {cand} - {base}, 95 % CI "
             f"(points) | CPU-s/step {cand} | {base} | {base}/{cand} |", "|" + "---|" * 10]
    for c in cells:
        diff = _points(c.difference) if c.difference else "n/a (< 2 pairs)"
        a, b = c.cpu_per_step
        lines.append(f"| {c.task} | {c.method} | {c.metric} | {len(c.seeds)} ({' '.join(map(str, c.seeds))}) | "
                     f"{100 * statistics.fmean(c.candidate):.2f} | {100 * statistics.fmean(c.baseline):.2f} | "
                     f"{diff} | {_fmt(a)} | {_fmt(b)} | {_fmt(b / a if a and b else None, 'x')} |")
    lines += ["", f"Decision rule: {decision(cells, comparison)}."]
    return "\n".join(lines)


def _points(d: Difference) -> str:
    return f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"


def _fmt(value: float | None, suffix: str = "") -> str:
    return f"{value:.3f}{suffix}" if value is not None else "n/a"


RUN_COLUMNS = ("name", "task", "method", "seed", "sampler", "precision", "metric", "best", "steps",
               "train_cpu_seconds", "train_wall_seconds", "cpu_seconds_per_step", "eval_cpu_seconds",
               "eval_wall_seconds", "train_rows", "git", "torch")


def write_runs_csv(root: Path, path: Path) -> int:
    """Every finished run under `root`, one CSV row each: what the tables are computed from."""
    rows = []
    for found, record in finished_records(root):
        training, timing = record["config"].get("training", {}), record.get("timing") or {}
        metric = record["primary_metric"]
        rows.append({
            "name": record.get("name") or found.parent.name, "task": record["task"], "method": record["method"], "seed": record["seed"],
            "sampler": training.get("train_sampling_strategy", "group_by_length"),
            "precision": record.get("precision") or ("bf16" if training.get("bf16") else "fp32"),
            "metric": metric, "best": record["best"]["metrics"][metric], "steps": timing.get("steps"),
            **{k: timing.get(k) for k in ("train_cpu_seconds", "train_wall_seconds", "cpu_seconds_per_step",
                                          "eval_cpu_seconds", "eval_wall_seconds")},
            "train_rows": (record.get("data") or {}).get("rows", {}).get("train"),
            "git": (record.get("git") or {}).get("sha", "")[:10], "torch": (record.get("versions") or {}).get("torch")})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glue_lora.paired_study", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a study's output_root (e.g. runs/sampler-study)")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="sampler")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    parser.add_argument("--runs-csv", type=Path, help="also write every finished run (score, CPU and wall time) here")
    args = parser.parse_args(argv)
    if args.runs_csv:
        try:
            print(f"{write_runs_csv(args.root, args.runs_csv)} runs -> {args.runs_csv}", file=sys.stderr)
        except OSError as err:
            print(f"error: cannot write {args.runs_csv}: {err.strerror}; give --runs-csv a writable path", file=sys.stderr)
            return 2
    comparison = COMPARISONS[args.compare]
    cells = pair_cells(*read_runs(args.root, comparison), comparison)
    if not cells:
        print(f"no paired finished runs under {args.root} for --compare {args.compare}; run the study's sweep "
              "first (configs/sweeps/sampler-study.yaml)", file=sys.stderr)
        return 1
    text = format_markdown(cells, comparison)
    print(text)
    if args.out:
        try:
            args.out.write_text(text + "\n")
        except OSError as err:
            print(f"error: cannot write {args.out}: {err.strerror}; give --out a writable path", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
