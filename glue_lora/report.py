"""`glue-lora report RUNS_DIR`: tables and plots from every results.json under a directory.

Protocol (LoRA paper, App. D): each run contributes its best evaluation by the task's primary metric; a cell
is the median over seeds (with mean ± sample std and the seed count beside it). MNLI-mismatched is read at
the evaluation that matched selected, never maximised separately. Runs that are not `success` with at least
one evaluation are listed apart and enter no number. Metrics are in percent, as in the paper.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from glue_lora import paper
from glue_lora.methods import COMPARED_WITH, SECTIONS
from glue_lora.methods import label as method_label
from glue_lora.config import model_short_name as _short_model
from glue_lora.errors import UsageError
from glue_lora.record import RESULTS_FILE, Malformed, load_record
from glue_lora.sweep import format_value

log = logging.getLogger(__name__)

HELP = "summarise every results.json under a directory: Markdown + CSV tables and PNG plots"
MM_KEY = "validation_mismatched/accuracy"
# Config keys that never distinguish settings: identity, bookkeeping, or where the data came from.
IGNORED_KEYS = {"seed", "name", "output_dir", "resume", "overwrite", "notes", "init_from", "data_dir", "task"}
# Trainer options that cannot change a result (output, tracking, evaluation batching, data loading workers):
# runs that differ only in these are one setting.
NON_RESULT_KEYS = {f"training.{key}" for key in (
    "report_to", "run_name", "disable_tqdm", "log_level", "log_level_replica", "logging_steps", "logging_strategy",
    "logging_first_step", "logging_nan_inf_filter", "per_device_eval_batch_size", "eval_accumulation_steps",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "save_total_limit", "save_strategy", "save_steps", "save_safetensors", "save_only_model", "push_to_hub",
    "hub_model_id", "hub_strategy", "hub_private_repo", "hub_token", "include_num_input_tokens_seen")}
SUBSET_MARK = "‡"
HYPER_KEYS = ("lr", "r", "alpha", "scaling_rule")  # the axes the rank / learning-rate analysis reads
SHORT = {"training.learning_rate": "lr"}
REFERENCE = COMPARED_WITH[0]  # the glue table's difference columns: every other method minus this one (FT)


# --- reading ------------------------------------------------------------------------------------------------

def load_records(runs_dir: Path) -> list[tuple[Path, dict[str, Any] | Malformed]]:
    """(path, record) for every results.json below `runs_dir`; a Malformed (saying why) for a file that is
    not a run record, so it is listed apart instead of crashing the report."""
    if not runs_dir.is_dir():
        raise UsageError(f"{runs_dir} is not a directory; pass the folder a sweep wrote its runs to")
    found = [(path, load_record(path)) for path in sorted(runs_dir.rglob(RESULTS_FILE))]
    found = [(path, data) for path, data in found if data is not None]  # vanished since the listing
    if not found:
        raise UsageError(f"no {RESULTS_FILE} under {runs_dir}; run a sweep first (glue-lora sweep SWEEP.yaml)")
    return found


def problem(record: dict[str, Any] | Malformed) -> str | None:
    """Why a record cannot be averaged in, or None when it can."""
    if isinstance(record, Malformed):
        return str(record)
    if record.get("status") == "running":
        return "status running: not finished (still going, or stopped before it could record an outcome)"
    if record.get("status") != "success":
        return f"status {record.get('status')}" + (f": {str(record['error'])[:120]}" if record.get("error") else "")
    missing = [key for key in ("task", "model", "method", "seed", "primary_metric") if key not in record]
    if missing:
        return f"not a glue-lora run record (no {', '.join(missing)})"
    best = record.get("best") or {}
    if record.get("primary_metric") not in best.get("metrics", {}):
        return "no evaluation of the primary metric"
    if not isinstance(best["metrics"][record["primary_metric"]], (int, float)):
        return "the best primary metric is not a number"
    return None


def run_rows(records: Iterable[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """One row per successful run: identity, hyperparameters, best scores (percent), parameter counts."""
    rows = []
    for path, record in records:
        best = record["best"]["metrics"]
        settings = method_settings(record)
        params = record.get("params") or {}
        rows.append({
            "path": str(path.parent), "name": record.get("name", path.parent.name), "task": record["task"],
            "model": record["model"], "method": record["method"], "seed": record["seed"],
            "score": 100 * best[record["primary_metric"]],
            "score_mm": 100 * best[MM_KEY] if MM_KEY in best else math.nan,
            "lr": (record.get("config") or {}).get("training", {}).get("learning_rate", math.nan),
            "r": settings.get("r", math.nan), "alpha": settings.get("alpha", math.nan),
            "scaling_rule": settings.get("scaling_rule", ""),
            "adapter": params.get("adapter"), "head": params.get("head"), "other": params.get("other"),
            "trainable": params.get("trainable"), "total": params.get("total"),
            "train_seconds": (record.get("timing") or {}).get("train_seconds"),
            "peak_rss_mb": (record.get("peak_memory_mb") or {}).get("rss"),
            "curve": [(e.get("epoch") or e["step"], 100 * e["metrics"][record["primary_metric"]])
                      for e in record.get("evals", []) if record["primary_metric"] in e["metrics"]],
            "flat": _flat_config(record), "subset": subset_text(record),
        })
    return pd.DataFrame(rows)


def method_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The method's recorded settings; records written before `method_settings` kept them under the method's
    name (`lora`)."""
    return record.get("method_settings") or record.get(record.get("method", "")) or {}


def _flat_config(record: dict[str, Any]) -> dict[str, Any]:
    """Dotted config keys that could distinguish settings; the method's as effective values (none for full FT)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}{key}.", sub)
        else:
            flat[prefix[:-1]] = json.dumps(value, sort_keys=True)

    walk("", {k: v for k, v in (record.get("config") or {}).items() if k not in IGNORED_KEYS | set(SECTIONS)})
    for key, value in method_settings(record).items():
        if key not in ("targets", "scaling"):  # resolved by PEFT / derived from r and alpha: not an axis
            flat[f"method.{key}"] = json.dumps(value, sort_keys=True)
    return {key: value for key, value in flat.items() if key not in NON_RESULT_KEYS}


def subset_text(record: dict[str, Any]) -> str:
    """'train 12000 of max_train_samples=12000, ...' when the run trained or evaluated on a subset, else ''."""
    config, rows = record.get("config") or {}, (record.get("data") or {}).get("rows") or {}
    parts = []
    for split, count in rows.items():
        limit = config.get("max_train_samples" if split == "train" else "max_eval_samples")
        if limit is not None and count >= limit:  # the cap bit (a cap above the split size changes nothing)
            parts.append(f"{split} {count} rows")
    return ", ".join(parts)


def label_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `setting`: the config values that vary within a (task, model, method) group, e.g. 'lr=1e-3, r=8'.

    Empty when only the seed varies, which is the case the paper table is about.
    """
    runs = runs.copy()
    runs["setting"] = ""
    for _, group in runs.groupby(["task", "model", "method"]):
        keys = sorted({k for flat in group["flat"] for k in flat})
        varying = [k for k in keys if len({flat.get(k) for flat in group["flat"]}) > 1]
        for index in group.index:
            flat = runs.at[index, "flat"]
            runs.at[index, "setting"] = ", ".join(f"{_short(k)}={_show(flat.get(k))}" for k in varying)
    return runs


def best_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, model, method) the runs of its best setting, with that setting moved to `chosen`.

    Best = highest mean score on the seeds that every setting of the group has run (a grid's first seed), so
    a setting rerun with more seeds (stage 2 of a grid search, `glue_lora.sweep_best`) competes on the same
    seeds as the rest. Without common seeds, the mean over each setting's own seeds decides. `setting`
    becomes "" so the selected runs read as one cell per method.
    """
    keep = []
    for _, group in runs.groupby(["task", "model", "method"], sort=False):
        by_setting = dict(list(group.groupby("setting", sort=True)))
        common = set.intersection(*(set(g["seed"]) for g in by_setting.values()))

        def mean_score(item: tuple[str, pd.DataFrame]) -> float:
            part = item[1][item[1]["seed"].isin(common)] if common else item[1]
            return float(part["score"].mean())

        setting, chosen = max(by_setting.items(), key=mean_score)
        rates = sorted(set(group["lr"].dropna()))
        lr = chosen["lr"].iloc[0]
        edge = len(rates) >= 3 and lr in (rates[0], rates[-1])  # the optimum may lie outside the grid
        keep.append(chosen.assign(chosen=setting, setting="", lr_at_edge=edge))
    return pd.concat(keep, ignore_index=True)


def chosen_text(chosen: pd.DataFrame) -> str:
    """Which setting each (task, method) is reported at, when a grid was searched."""
    lines = []
    for (task, model, method), group in chosen.groupby(["task", "model", "method"], sort=True):
        if group["chosen"].iloc[0]:
            edge = " — the grid's smallest or largest rate: the best may lie beyond it" \
                if group["lr_at_edge"].iloc[0] else ""
            lines.append(f"- {task} {_short_model(model)} {method_label(method)}: {group['chosen'].iloc[0]} "
                         f"(seeds {' '.join(str(s) for s in sorted(group['seed']))}){edge}")
    return "\n".join(lines)


def _short(key: str) -> str:
    return SHORT.get(key, key.removeprefix("method.").removeprefix("training."))


def _show(value: str | None) -> str:
    parsed = None if value is None else json.loads(value)
    return "unset" if parsed is None else format_value(parsed)


# --- aggregation --------------------------------------------------------------------------------------------

def scores_long(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, reported row): the task's primary score, plus `mnli-mm` for MNLI runs."""
    main = runs.assign(row=runs["task"], value=runs["score"])
    mm = runs[runs["score_mm"].notna()]
    mm = mm.assign(row=mm["task"] + "-mm", value=mm["score_mm"])
    return pd.concat([main, mm], ignore_index=True)


def summary_stats(values: list[float]) -> dict[str, float]:
    """Median, mean, sample standard deviation (n-1; NaN for one seed), min and max."""
    return {"n": len(values), "median": statistics.median(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else math.nan, "min": min(values), "max": max(values)}


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells: one row per (row, model, method, setting) with seed statistics, paper number and parameters."""
    cells = []
    keys = ["row", "task", "model", "method", "setting"]
    for (row, task, model, method, setting), group in scores_long(runs).groupby(keys, sort=False):
        first = group.iloc[0]
        cell = {"row": row, "task": task, "model": model, "method": method, "setting": setting,
                **summary_stats(list(group["value"])), "seeds": " ".join(str(s) for s in sorted(group["seed"])),
                **{k: first[k] for k in HYPER_KEYS},
                **{k: _one_or_range(group[k]) for k in ("adapter", "head", "trainable", "total")}}
        cell["subset"] = "; ".join(sorted(set(group["subset"]) - {""}))
        cell["paper"] = paper.paper_value(model, method, row) if not setting else None
        cell["paper_delta"] = cell["median"] - cell["paper"] if cell["paper"] is not None else None
        cells.append(cell)
    cells_df = pd.DataFrame(cells)
    for reference in COMPARED_WITH:
        cells_df[f"minus_{reference}"] = _minus(cells_df, reference)
    return cells_df.sort_values(["model", "method", "setting", "row"], key=_row_order, ignore_index=True)


def _one_or_range(values: pd.Series) -> str:
    unique = sorted({int(v) for v in values.dropna()})
    if not unique:
        return ""
    return str(unique[0]) if len(unique) == 1 else f"{unique[0]}-{unique[-1]}"


def _minus(cells: pd.DataFrame, reference: str) -> list[float | None]:
    """Median of each method minus the reference method's median for the same task and model, where each has a
    single setting (None for the reference itself)."""
    single = cells[cells["setting"] == ""].set_index(["row", "model", "method"])["median"]
    out: list[float | None] = []
    for _, cell in cells.iterrows():
        pair = [(cell["row"], cell["model"], cell["method"]), (cell["row"], cell["model"], reference)]
        ok = cell["setting"] == "" and cell["method"] != reference and all(p in single.index for p in pair)
        out.append(single[pair[0]] - single[pair[1]] if ok else None)
    return out


def _row_order(column: pd.Series) -> pd.Series:
    if column.name != "row":
        return column
    order = {t: i for i, t in enumerate(paper.TASK_ORDER)}
    return column.map(lambda row: (order.get(row.removesuffix("-mm"), 99), row.endswith("-mm"), row))


def averages(cells: pd.DataFrame) -> pd.DataFrame:
    """GLUE average per (model, method): mean of the task medians (MNLI-matched counts, -mm does not)."""
    rows = []
    primary = cells[(cells["setting"] == "") & ~cells["row"].str.endswith("-mm")]
    for (model, method), group in primary.groupby(["model", "method"], sort=False):
        tasks = list(group["row"])
        paper_values = [paper.paper_value(model, method, t) for t in tasks]
        paper_avg = statistics.fmean(paper_values) if None not in paper_values else None
        avg = statistics.fmean(group["median"])
        rows.append({"row": "average", "model": model, "method": method, "setting": "", "n": len(tasks),
                     "tasks": " ".join(tasks), "median": avg, "paper": paper_avg,
                     "paper_delta": avg - paper_avg if paper_avg is not None else None})
    out = pd.DataFrame(rows)
    if not out.empty:
        for reference in COMPARED_WITH:
            out[f"minus_{reference}"] = [_average_gap(out, model, method, reference)
                                         for model, method in zip(out["model"], out["method"])]
    return out


def _average_gap(avgs: pd.DataFrame, model: str, method: str, reference: str) -> float | None:
    """A method's average minus the reference method's for a model, only when both average the same tasks."""
    by = avgs.set_index(["model", "method"])
    if method == reference or (model, method) not in by.index or (model, reference) not in by.index:
        return None
    ours, ref = by.loc[(model, method)], by.loc[(model, reference)]
    return ours["median"] - ref["median"] if ours["tasks"] == ref["tasks"] else None


# --- Markdown -----------------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def cell_text(cell: pd.Series) -> str:
    """'81.2 (80.9 ± 0.7, n=3)': the median, then mean ± std over seeds and the seed count; ‡: on a subset."""
    mark = SUBSET_MARK if cell.get("subset") else ""
    if cell["n"] == 1:
        return f"{fmt(cell['median'])}{mark} (n=1)"
    return f"{fmt(cell['median'])}{mark} ({fmt(cell['mean'])} ± {fmt(cell['std'])}, n={cell['n']})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def columns_of(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, method) columns in a stable order: model, then the registry's order (FT first, as in Table 2)."""
    from glue_lora.methods import METHODS

    order = {name: i for i, name in enumerate(METHODS)}
    pairs = {(m, k) for m, k in zip(cells["model"], cells["method"])}
    return sorted(pairs, key=lambda p: (p[0], order.get(p[1], len(order)), p[1]))


def glue_table(cells: pd.DataFrame, avgs: pd.DataFrame) -> str:
    """Task rows x (model, method) columns, each with the paper's number and our difference when it exists."""
    columns = columns_of(cells)
    # every method minus the reference (FT), per model where both ran
    gaps = [(m, k) for m, k in columns if k != REFERENCE and (m, REFERENCE) in columns]
    header = ["task"]
    for model, method in columns:
        header.append(f"{_short_model(model)} {method_label(method)}")
        if paper.paper_model(model):
            header += ["paper", "Δ"]
    header += [f"{_short_model(m)} {method_label(k)} − {method_label(REFERENCE)}" for m, k in gaps]
    index = cells.set_index(["row", "model", "method"])
    rows = []
    for row in sorted(cells["row"].unique(), key=lambda r: _row_order(pd.Series([r], name="row"))[0]):
        line = [row]
        for model, method in columns:
            cell = index.loc[(row, model, method)] if (row, model, method) in index.index else None
            line.append(cell_text(cell) if cell is not None else "")
            if paper.paper_model(model):
                line += [fmt(cell["paper"]) if cell is not None else fmt(paper.paper_value(model, method, row)),
                         fmt(cell["paper_delta"], signed=True) if cell is not None else ""]
        line += [fmt(_get(index, (row, m, k), f"minus_{REFERENCE}"), signed=True) for m, k in gaps]
        rows.append(line)
    rows.append(_average_line(avgs, columns, gaps))
    return markdown_table(header, rows)


def _get(index: pd.DataFrame, key: tuple, column: str) -> Any:
    return index.at[key, column] if key in index.index else None


def _average_line(avgs: pd.DataFrame, columns: list[tuple[str, str]], gaps: list[tuple[str, str]]) -> list[str]:
    by = avgs.set_index(["model", "method"]) if not avgs.empty else pd.DataFrame()
    line = ["**average**"]
    for model, method in columns:
        avg = by.loc[(model, method)] if (model, method) in by.index else None
        tasks = f"{avg['n']} task{'s' if avg['n'] > 1 else ''}" if avg is not None else ""
        line.append(f"**{fmt(avg['median'])}** ({tasks})" if avg is not None else "")
        if paper.paper_model(model):
            line += [fmt(avg["paper"]) if avg is not None else "",
                     fmt(avg["paper_delta"], signed=True) if avg is not None else ""]
    line += [fmt(_get(by, (m, k), f"minus_{REFERENCE}"), signed=True) if not by.empty else "" for m, k in gaps]
    return line


def settings_table(cells: pd.DataFrame) -> str:
    """Every cell in long form (used when settings vary, e.g. a rank or learning-rate sweep)."""
    rows = [[c["row"], _short_model(c["model"]), method_label(c["method"]), c["setting"] or "-",
             str(c["n"]), fmt(c["median"]) + (SUBSET_MARK if c["subset"] else ""), fmt(c["mean"]), fmt(c["std"]), c["adapter"], c["head"]]
            for _, c in cells.iterrows()]
    return markdown_table(["task", "model", "method", "setting", "seeds", "median", "mean", "std", "adapter params",
                           "head params"], rows)


def params_table(cells: pd.DataFrame) -> str:
    """Trainable parameters per (model, method): adapter and head apart (the paper's count excludes the head)."""
    rows = []
    for model, method in columns_of(cells):
        group = cells[(cells["model"] == model) & (cells["method"] == method) & ~cells["row"].str.endswith("-mm")]
        heads = ", ".join(f"{t} {h}" for t, h in zip(group["row"], group["head"]))
        rows.append([_short_model(model), method_label(method), _span(group["adapter"]), heads,
                     _span(group["trainable"]), _span(group["total"]),
                     paper.TRAINABLE.get((paper.paper_model(model) or "", method), "")])
    return markdown_table(["model", "method", "adapter", "head (per task)", "trainable (all)", "total",
                           "paper # trainable (no head)"], rows)


def _span(values: Iterable[str]) -> str:
    numbers = sorted({int(x) for v in values if v for x in str(v).split("-")})
    if not numbers:
        return ""
    return f"{numbers[0]:,}" if len(numbers) == 1 else f"{numbers[0]:,}–{numbers[-1]:,}"


def problems_table(bad: list[tuple[Path, dict[str, Any] | None, str]], runs_dir: Path) -> str:
    rows = [[(r or {}).get("name", p.parent.name), str((r or {}).get("task", "")), str((r or {}).get("method", "")),
             str((r or {}).get("seed", "")), reason, str(p.parent.relative_to(runs_dir))] for p, r, reason in bad]
    return markdown_table(["run", "task", "method", "seed", "why left out", "directory"], rows)


def completeness(cells: pd.DataFrame, bad: list[tuple[Path, dict[str, Any] | None, str]],
                 verdicts: list[dict[str, Any]], chosen: pd.DataFrame | None = None) -> list[str]:
    """What the records show is missing, one line each; empty when nothing is.

    The report reads only results.json files, and a run writes its record at its first evaluation, so a run
    that has not got that far leaves no trace. An unfinished sweep still shows: records that are not
    `success`, cells short of seeds that other cells have, (task, model, method) cells absent beside present
    ones, and holes in a (rank, lr) grid. A seed counted twice in one cell (one run in two folders) is flagged.
    """
    lines = []
    readable = [r for _, r, _ in bad if r]
    running = sum(r.get("status") == "running" for r in readable)
    if running:
        lines.append(f"{running} run{'s' if running > 1 else ''} not finished (status running: still going, or "
                     "stopped before recording an outcome)")
    if len(bad) > running:
        lines.append(f"{len(bad) - running} run{'s' if len(bad) - running > 1 else ''} failed or unusable")
    primary = cells[~cells["row"].str.endswith("-mm")]
    if chosen is not None and (cells["setting"] != "").any():
        # a searched grid reruns only each method's best setting with more seeds (glue_lora.sweep_best): the
        # other settings are short of seeds by design, so only the chosen ones must have them all
        best = set(zip(chosen["task"], chosen["model"], chosen["method"], chosen["chosen"]))
        keep = [(c["task"], c["model"], c["method"], c["setting"]) in best or not c["setting"]
                for _, c in primary.iterrows()]
        primary = primary[keep]
    seeds_of = {i: [int(s) for s in str(c["seeds"]).split()] for i, c in primary.iterrows()}
    every_seed = set().union(*seeds_of.values()) | {r["seed"] for r in readable if isinstance(r.get("seed"), int)}
    short = [f"{_cell_label(c)} lacks seed {' '.join(map(str, sorted(every_seed - set(seeds_of[i]))))}"
             for i, c in primary.iterrows() if every_seed - set(seeds_of[i])]
    if short:
        lines.append(f"cells short of seeds other runs here have: {_listing(short)}")
    tasks = set(primary["row"]) | {r["task"] for r in readable if r.get("task")}
    columns = set(zip(primary["model"], primary["method"])) | {
        (r["model"], r["method"]) for r in readable if r.get("model") and r.get("method")}
    present = set(zip(primary["row"], primary["model"], primary["method"]))
    order = {t: i for i, t in enumerate(paper.TASK_ORDER)}
    absent = [f"{t} {_short_model(m)} {method_label(k)}"
              for t in sorted(tasks, key=lambda t: (order.get(t, 99), t)) for m, k in sorted(columns)
              if (t, m, k) not in present]
    if absent:
        lines.append(f"no finished run at all for: {_listing(absent)}")
    doubled = [f"{_cell_label(c)} seed {s}" for i, c in primary.iterrows()
               for s in sorted(set(seeds_of[i])) if seeds_of[i].count(s) > 1]
    if doubled:
        lines.append(f"the same seed counted twice in a cell (one run in two folders?): {_listing(doubled)}")
    holes = [f"{v['task']} {v['family']}: {v['points']} of {v['expected_points']}" for v in verdicts
             if v["points"] < v["expected_points"]]
    if holes:
        lines.append(f"(rank, lr) grids with holes: {_listing(holes)}")
    return lines


def completeness_text(partial: list[str], cells: pd.DataFrame) -> str:
    """The report's opening verdict on whether it covers a whole sweep."""
    if partial:
        return ("**PARTIAL: these records are not a finished sweep; the numbers cover finished runs only.**\n\n"
                + "\n".join(f"- {line}" for line in partial))
    seeds = sorted({int(s) for text in cells["seeds"] for s in str(text).split()})
    return (f"Complete as far as the records show: every results.json says success and every cell has seeds "
            f"{' '.join(map(str, seeds))} (a run that never reached its first evaluation leaves no record).")


def _cell_label(cell: pd.Series) -> str:
    text = f"{cell['row']} {_short_model(cell['model'])} {method_label(cell['method'])}"
    return text + (f" [{cell['setting']}]" if cell["setting"] else "")


def _listing(items: list[str], limit: int = 12) -> str:
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def method_differences(runs: pd.DataFrame) -> list[str]:
    """Per (task, model, method) beside the reference (FT): the config values that differ from the reference
    runs besides the method itself, which the difference then includes (e.g. another learning rate)."""
    lines = []
    for (task, model), group in runs.groupby(["task", "model"]):
        if REFERENCE not in set(group["method"]):
            continue
        ref = group[group["method"] == REFERENCE].iloc[0]["flat"]
        for method in sorted(set(group["method"]) - {REFERENCE}):
            ours = group[group["method"] == method].iloc[0]["flat"]
            keys = sorted(k for k in set(ours) | set(ref)
                          if k != "method" and not k.startswith("method.") and ours.get(k) != ref.get(k))
            diffs = ", ".join(f"{_short(k)} {_show(ours.get(k))} vs {_show(ref.get(k))}" for k in keys)
            lines.append(f"- {task}, {_short_model(model)}, {method_label(method)}: {diffs or 'nothing else'}")
    return lines


# --- learning rate x rank -----------------------------------------------------------------------------------

def scaling_families(cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Group LoRA cells into rank series that follow one alpha rule, found from the data.

    A family is a scaling rule with either a fixed alpha, or alpha proportional to r (alpha = k r); it needs at
    least two ranks. One cell can belong to two families (r=8, alpha=16 is both 'alpha=2r' and 'alpha=16').
    """
    families: dict[str, pd.DataFrame] = {}
    ranked = cells[cells["r"].notna() & cells["alpha"].notna()]  # methods with a rank and an alpha (LoRA family)
    several = ranked["method"].nunique() > 1
    for (method, rule), part in ranked.groupby(["method", "scaling_rule"]):
        rule_text = "alpha/sqrt(r) (rsLoRA)" if rule == "rslora" else "alpha/r"
        rule_text += f", {method_label(method)}" if several else ""
        ratio = (part["alpha"] / part["r"]).round(6)
        for k, sub in part.groupby(ratio):
            if sub["r"].nunique() > 1 and sub["alpha"].nunique() > 1:
                families[f"alpha={k:g}r, scaling {rule_text}"] = sub
        for alpha, sub in part.groupby("alpha"):
            if sub["r"].nunique() > 1:
                families[f"alpha={alpha:g}, scaling {rule_text}"] = sub
    return families


def best_lr_by_rank(family: pd.DataFrame) -> pd.DataFrame:
    """Per rank: the learning rate with the highest median score (ties: the smaller lr) and that score."""
    rows = []
    for r, group in family.sort_values("lr").groupby("r"):
        best = group.loc[group["median"].idxmax()]
        rows.append({"r": int(r), "best_lr": best["lr"], "score": best["median"], "n": best["n"]})
    return pd.DataFrame(rows)


def lr_verdict(best: pd.DataFrame, grid: list[float]) -> tuple[str, float]:
    """Whether the best learning rate stays put across ranks, from the measurements; also the log-log slope.

    Slope = least-squares fit of log2(best lr) on log2(r): 0 means rank-invariant, +0.5 means the best lr
    grows like sqrt(r).
    """
    steps = [grid.index(lr) for lr in best["best_lr"]]
    spread = max(steps) - min(steps)
    logs_r = [math.log2(r) for r in best["r"]]
    logs_lr = [math.log2(lr) for lr in best["best_lr"]]
    slope = statistics.linear_regression(logs_r, logs_lr).slope if len(set(logs_r)) > 1 else math.nan
    lo, hi = best.iloc[0], best.iloc[-1]  # the smallest and the largest rank
    if spread == 0:
        return f"stays put: the best learning rate is {format_value(lo['best_lr'])} at every rank", slope
    moves = (f"best lr {format_value(lo['best_lr'])} at r={int(lo['r'])}, "
             f"{format_value(hi['best_lr'])} at r={int(hi['r'])}; "
             f"range {format_value(min(best['best_lr']))} to {format_value(max(best['best_lr']))}, {spread} grid "
             f"step{'s' if spread > 1 else ''}; slope of log2(best lr) on log2(r) {slope:+.2f}")
    if spread == 1:
        return f"nearly stays put (moves by one grid step): {moves}", slope
    return f"moves: {moves}", slope


def lr_rank_section(cells: pd.DataFrame) -> tuple[str, list[dict[str, Any]]]:
    """Markdown for every (task, model) whose LoRA runs vary both rank and learning rate, and the verdicts."""
    parts, verdicts = [], []
    for (task, model), group in cells[~cells["row"].str.endswith("-mm")].groupby(["row", "model"]):
        if group["r"].nunique() < 2 or group["lr"].nunique() < 2:
            continue
        grid = sorted(group["lr"].dropna().unique())
        for label, family in scaling_families(group).items():
            best = best_lr_by_rank(family)
            text, slope = lr_verdict(best, grid)
            measured, expected = len(family[["r", "lr"]].drop_duplicates()), family["r"].nunique() * len(grid)
            if measured < expected:  # a partial sweep: the verdict may change when the rest arrives
                text += f" (from {measured} of {expected} (rank, lr) points: the grid is incomplete)"
            verdicts.append({"task": task, "model": model, "family": label, "verdict": text, "slope": slope,
                             "points": measured, "expected_points": expected})
            parts.append(f"#### {task}, {_short_model(model)}: {label}\n\n**Verdict: {text}.**\n\n"
                         + _pivot_markdown(family, best))
    if verdicts:  # one line per rule up front, so the answer does not hide below the grids
        summary = markdown_table(["task", "model", "alpha rule", "does the best lr stay put across ranks?",
                                  "slope"], [[v["task"], _short_model(v["model"]), v["family"], v["verdict"],
                                              fmt(v["slope"], 2, signed=True)] for v in verdicts])
        parts.insert(0, summary)
    return "\n\n".join(parts), verdicts


def _pivot_markdown(family: pd.DataFrame, best: pd.DataFrame) -> str:
    pivot = family.pivot_table(index="r", columns="lr", values="median")
    best_at = dict(zip(best["r"], best["best_lr"]))
    header = ["r \\ lr", *[format_value(lr) for lr in pivot.columns], "best lr"]
    rows = []
    for r, values in pivot.iterrows():
        row = [f"**{fmt(v)}**" if lr == best_at[int(r)] else fmt(v) for lr, v in values.items()]
        rows.append([str(int(r)), *row, format_value(best_at[int(r)])])
    return markdown_table(header, rows)


# --- plots --------------------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # an optional extra: the base install stays lighter without it
        raise UsageError("glue-lora report draws its plots with matplotlib: pip install 'glue-lora[report]'") from err

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def plot_curves(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Per task: the primary metric at each evaluation, one line per run, one colour per (model, method)."""
    plt = _pyplot()
    written = []
    for task, group in runs.groupby("task"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        keys = sorted({(m, k) for m, k in zip(group["model"], group["method"])})
        colours = dict(zip(keys, plt.cm.tab10.colors))
        for key in keys:
            members = group[(group["model"] == key[0]) & (group["method"] == key[1])]
            for i, (_, run) in enumerate(members.iterrows()):
                xs, ys = zip(*run["curve"]) if run["curve"] else ((), ())
                ax.plot(xs, ys, marker="o", ms=3, lw=1, alpha=0.7, color=colours[key],
                        label=f"{_short_model(key[0])} {method_label(key[1])}" if i == 0 else None)
        ax.set(xlabel="epoch", ylabel=f"{task} dev (primary metric, %)",
               title=f"{task}: learning curves, one line per run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out / f"curves-{_slug(task)}.png"))
    return written


def plot_lr_rank(cells: pd.DataFrame, out: Path) -> list[Path]:
    """Per (task, model) with a rank x lr grid: best score vs lr per rank, and vs rank per lr; a panel per family."""
    written = []
    for (task, model), group in cells[~cells["row"].str.endswith("-mm")].groupby(["row", "model"]):
        families = scaling_families(group) if group["r"].nunique() > 1 else {}
        if families and group["lr"].nunique() > 1:
            stem = f"{_slug(task)}-{_slug(_short_model(model))}"
            written.append(_family_panels(families, "lr", "r", f"{task}: best dev score vs learning rate, per rank",
                                          out / f"lr-by-rank-{stem}.png"))
            written.append(_family_panels(families, "r", "lr", f"{task}: best dev score vs rank, per learning rate",
                                          out / f"rank-by-lr-{stem}.png"))
        else:
            written += _plot_single_axis(task, model, group, out)
    return written


def _plot_single_axis(task: str, model: str, group: pd.DataFrame, out: Path) -> list[Path]:
    """Best score vs lr (or vs rank), one line per method, when some method varies only that axis."""
    varies = {axis for axis in ("lr", "r") for _, m in group.groupby("method") if m[axis].nunique() > 1}
    written = []
    for x in sorted(varies):
        panel = {_short_model(model): group[group[x].notna()].assign(line=group["method"])}
        written.append(_family_panels(panel, x, "method", f"{task}: best dev score vs {x}",
                                      out / f"{x}-{_slug(task)}-{_slug(_short_model(model))}.png"))
    return written


def _family_panels(families: dict[str, pd.DataFrame], x: str, line: str, title: str, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(families), figsize=(4.6 * len(families), 4), sharey=True, squeeze=False)
    for ax, (label, family) in zip(axes[0], families.items()):
        values = sorted(family[line].unique(), key=str) if line == "method" else sorted(family[line].unique())
        colours = plt.cm.viridis([i / max(1, len(values) - 1) for i in range(len(values))])
        for value, colour in zip(values, colours):
            points = family[family[line] == value].sort_values(x)
            ax.plot(points[x], points["median"], marker="o", ms=4, color=colour, label=f"{line}={format_value(value)}")
            top = points.loc[points["median"].idxmax()]
            ax.plot([top[x]], [top["median"]], marker="*", ms=12, color=colour, mec="black", mew=0.5)
        ax.set_xscale("log", base=2 if x == "r" else 10)
        ax.set(title=label, xlabel=x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("best dev score, median over seeds (%)")
    fig.suptitle(title + " (star: best)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


# --- the report ---------------------------------------------------------------------------------------------

def build_report(runs_dir: Path, out: Path, title: str | None = None) -> dict[str, Any]:
    """Read, aggregate, write report.md, results.csv and plots/*.png; returns what was computed (for tests)."""
    loaded = load_records(runs_dir)
    reasons = {p: problem(r) for p, r in loaded}
    records = [(p, r if isinstance(r, dict) else None) for p, r in loaded]  # a malformed one is listed apart
    bad = [(p, r, reasons[p]) for p, r in records if reasons[p]]
    good = [(p, r) for p, r in records if reasons[p] is None]
    out.mkdir(parents=True, exist_ok=True)
    if not good:
        (out / "report.md").write_text(f"# {title or runs_dir.name}\n\nNo finished runs.\n\n"
                                       + problems_table(bad, runs_dir) + "\n")
        return {"cells": pd.DataFrame(), "averages": pd.DataFrame(), "verdicts": [], "plots": [], "bad": bad,
                "partial": [f"no finished run among {len(bad)}"]}
    runs = label_settings(run_rows(good))
    chosen = best_settings(runs)  # = runs when only seeds vary
    cells = aggregate(runs)
    avgs = averages(cells)
    lr_rank_text, verdicts = lr_rank_section(cells)
    partial = completeness(cells, bad, verdicts, chosen)
    from glue_lora import compare  # the method comparison builds on this module's helpers

    diffs = compare.differences(chosen)
    plots = plot_curves(runs, out / "plots") + plot_lr_rank(cells, out / "plots")
    plots += compare.plot_differences(diffs, out / "plots")
    write_csv(cells, avgs, out / "results.csv")
    text = render(title or runs_dir.name, runs, cells, avgs, lr_rank_text, bad, plots, runs_dir, out,
                  completeness_text(partial, cells), compare.sections(chosen, diffs), chosen)
    text += "\n" + provenance([r for _, r in records if r]) + "\n"
    (out / "report.md").write_text(text)
    log.info("wrote %s, %s and %d plots", out / "report.md", out / "results.csv", len(plots))
    return {"cells": cells, "averages": avgs, "verdicts": verdicts, "plots": plots, "bad": bad, "partial": partial,
            "differences": diffs}


CSV_COLUMNS = ["row", "model", "method", "setting", "n", "seeds", "median", "mean", "std", "min", "max", "paper",
               "paper_delta", *(f"minus_{m}" for m in COMPARED_WITH), "lr", "r", "alpha", "scaling_rule", "adapter", "head", "trainable",
               "total", "tasks", "subset"]


def write_csv(cells: pd.DataFrame, avgs: pd.DataFrame, path: Path) -> None:
    table = pd.concat([cells, avgs], ignore_index=True).reindex(columns=CSV_COLUMNS)
    table.rename(columns={"row": "task", "n": "n_seeds_or_tasks"}).to_csv(path, index=False)


def render(title: str, runs: pd.DataFrame, cells: pd.DataFrame, avgs: pd.DataFrame, lr_rank_text: str,
           bad: list, plots: list[Path], runs_dir: Path, out: Path, status: str = "",
           comparison: list[str] = (), chosen: pd.DataFrame | None = None) -> str:
    varied = (cells["setting"] != "").any()
    parts = [f"# {title}", *([status] if status else []), _protocol_text(runs, bad)]
    if varied and chosen is not None and chosen["method"].nunique() > 1:
        best_cells = aggregate(chosen)
        parts += ["## GLUE dev results at each method's best setting\n\nA grid was searched: each (task, method) "
                  "is shown at its best setting, chosen by the mean score on the seeds all its settings ran "
                  "(`glue_lora.report.best_settings`); every setting is in \"All settings\" below. Each cell: "
                  "median over seeds (mean ± sample std, n seeds), in percent. Chosen settings:\n\n"
                  + chosen_text(chosen), glue_table(best_cells, averages(best_cells))]
    if not varied:
        parts += ["## GLUE dev results\n\nEach cell: median over seeds (mean ± sample std, n seeds), in percent. "
                  f"`paper`: {paper.SOURCE} (MNLI-mm: {paper.SOURCE_MNLI_MM}); Δ = ours − paper. The average is "
                  "the mean of the task medians over the tasks present (MNLI-matched only), compared with the "
                  "paper's mean over the same tasks.", glue_table(cells, avgs)]
    if varied:
        parts += ["## All settings\n\nOne row per setting (the config values that vary besides the seed).",
                  settings_table(cells)]
    if lr_rank_text:
        parts += ["## Learning rate × rank\n\nFor each alpha rule (found from the runs' recorded r, alpha and "
                  "scaling), the median best score per (rank, learning rate); bold: the best learning rate for "
                  "that rank. The verdict is computed from this table.", lr_rank_text]
    if (cells["subset"] != "").any():
        parts += [subsets_text(cells)]
    parts += list(comparison)  # glue_lora.compare: which differences are real, cost, paper-only rows
    differences = method_differences(runs)
    if differences:
        parts += [f"## What else differs from {method_label(REFERENCE)} (method value vs {method_label(REFERENCE)} value)\n\n"
                  + "\n".join(differences)]
    parts += ["## Trainable parameters\n\nAdapter (the method's own tensors, e.g. LoRA A/B) and head (task "
              "classifier, plus DeBERTa's pooler) "
              "are counted apart; the paper's column excludes the head.", params_table(cells)]
    parts += ["## Runs left out\n\n" + (problems_table(bad, runs_dir) if bad else "None: every run finished.")]
    parts += ["## Plots\n\n" + "\n".join(f"![{p.stem}]({p.relative_to(out)})" for p in plots)]
    return "\n\n".join(parts) + "\n"


def subsets_text(cells: pd.DataFrame) -> str:
    """The rows marked ‡, with the sizes they ran on: not GLUE dev results in the paper's sense."""
    lines = [f"- {cell['row']} {_short_model(cell['model'])} {method_label(cell['method'])}"
             f"{' (' + cell['setting'] + ')' if cell['setting'] else ''}: {cell['subset']}"
             for _, cell in cells[cells["subset"] != ""].iterrows()]
    return (f"## Subsets\n\n{SUBSET_MARK} marks cells whose runs trained or evaluated on a fixed random subset "
            "(`max_train_samples`, `max_eval_samples`), not the full GLUE split: they are not comparable with the "
            "paper's numbers.\n\n" + "\n".join(lines))


def _protocol_text(runs: pd.DataFrame, bad: list) -> str:
    return (f"{len(runs)} finished runs ({runs['task'].nunique()} tasks, seeds {sorted(set(runs['seed']))}); "
            f"{len(bad)} left out. Each run contributes its best evaluation by the task's primary metric "
            "(MNLI/SST-2/MRPC/QNLI/QQP/RTE accuracy, CoLA MCC, STS-B Pearson); MNLI-mm is read at the evaluation "
            "MNLI-matched selected.")


def provenance(records: list[dict[str, Any]]) -> str:
    """Library versions, commits and machines as the records state them (they can differ between runs)."""
    seen: dict[str, set[str]] = {"versions": set(), "git": set(), "machine": set()}
    for record in records:
        if record:
            v = record.get("versions") or {}
            seen["versions"].add(", ".join(f"{k} {val}" for k, val in v.items() if val))
            g = record.get("git") or {}
            seen["git"].add(f"{(g.get('sha') or 'unknown')[:10]}{' (dirty)' if g.get('dirty') else ''}")
            m = record.get("machine") or {}
            seen["machine"].add(f"{m.get('cpus')} CPUs, {m.get('torch_threads')} torch threads, GPU {m.get('gpu')}")
    lines = [f"- {key}: " + "; ".join(sorted(values)) for key, values in seen.items()]
    started = [r["started"] for r in records if r and r.get("started")]
    finished = [r["finished"] for r in records if r and r.get("finished")]
    if started and finished:
        lines.append(f"- dates: first run started {_utc(min(started))}, last finished {_utc(max(finished))}")
    return "## Provenance (from the records)\n\n" + "\n".join(lines)


def _utc(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- command line -------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", help="folder to search for results.json files (e.g. runs/minilm-glue)")
    parser.add_argument("--out", help="where report.md, results.csv and plots/ go (default: RUNS_DIR)")
    parser.add_argument("--title", help="report title (default: the folder name)")


def main(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir)
    result = build_report(runs_dir, Path(args.out or runs_dir), args.title)
    out = Path(args.out or runs_dir)
    print(f"report: {out / 'report.md'}; table: {out / 'results.csv'}; {len(result['plots'])} plots; "
          f"{len(result['bad'])} runs left out")
    if result["partial"]:
        print("PARTIAL: " + "; ".join(result["partial"]))
    for verdict in result["verdicts"]:
        print(f"  {verdict['task']} {verdict['family']}: {verdict['verdict']}")
    return 0
