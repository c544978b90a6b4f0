"""The method comparison in `glue-lora report` (imported by it when it renders): which differences are real, what each method costs, and the
paper's rows that no run here reproduces. Generic over methods: a method appears by being in the registry
(glue_lora.methods) and in the runs; none is named here.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from glue_lora import paper
from glue_lora.methods import COMPARED_WITH, METHODS
from glue_lora.methods import label as method_label
from glue_lora.report import _pyplot, _save, _short_model, _slug, _span
from glue_lora.report import markdown_table as _markdown
from glue_lora.stats import seed_difference

DIFFERENCES_TEXT = (
    "Per task and method: mean over seeds of (method − reference) with a 95 % confidence interval, in points. "
    "Runs are paired by seed (same data order and head init), and the interval is Student's t on the per-seed "
    "differences (`glue_lora.stats.seed_difference`; Welch's unpaired interval when fewer than two seeds are "
    "shared). **Bold** and `*`: the interval excludes 0. Runs save no per-example predictions, so a bootstrap "
    "over dev examples is not possible; the t quantile is 12.7 with 2 seeds and 4.30 with 3, so small "
    "differences stay unresolved. Each run's score is its best evaluation (the paper's protocol), which favours no method.")


def method_order(names: Iterable[str]) -> list[str]:
    """Registry order (FT, LoRA, then the others); names no longer registered last."""
    order = {name: i for i, name in enumerate(METHODS)}
    return sorted(set(names), key=lambda n: (order.get(n, len(order)), n))


def differences(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, model, method) cell with a single setting: the difference to every COMPARED_WITH method."""
    rows = []
    single = runs[runs["setting"] == ""]
    for (task, model), group in single.groupby(["task", "model"], sort=True):
        scores = {m: dict(zip(g["seed"], g["score"])) for m, g in group.groupby("method")}
        for method in method_order(scores):
            row = {"task": task, "model": model, "method": method, "n": len(scores[method])}
            for reference in COMPARED_WITH:
                known = reference in scores and reference != method
                row[f"vs_{reference}"] = seed_difference(scores[method], scores[reference]) if known else None
            rows.append(row)
    return pd.DataFrame(rows)


def differences_table(diffs: pd.DataFrame) -> str:
    header = ["task", "model", "method", "seeds", *(f"− {method_label(m)} (95 % CI)" for m in COMPARED_WITH)]
    rows = []
    for _, d in diffs.iterrows():
        cells = [_interval(d[f"vs_{m}"]) for m in COMPARED_WITH]
        rows.append([d["task"], _short_model(d["model"]), method_label(d["method"]), str(d["n"]), *cells])
    return _markdown(header, rows)


def _interval(found) -> str:
    if found is None:
        return ""
    return f"**{found.text()}**" if found.excludes_zero else found.text()


def cost_table(runs: pd.DataFrame) -> str:
    """Per (model, method): trainable parameters, then per task the median score, train time and peak memory."""
    tasks = sorted(runs["task"].unique())
    header = ["model", "method", "adapter params", "head params",
              *(f"{t}: score / train s / peak RSS MB" for t in tasks)]
    rows = []
    for model, by_model in runs.groupby("model", sort=True):
        for method in method_order(by_model["method"]):
            part = by_model[(by_model["method"] == method) & (by_model["setting"] == "")]
            if part.empty:
                continue
            cells = [_cost_cell(part[part["task"] == t]) for t in tasks]
            rows.append([_short_model(model), method_label(method), _span(part["adapter"]), _span(part["head"]),
                         *cells])
    return _markdown(header, rows)


def _cost_cell(part: pd.DataFrame) -> str:
    if part.empty:
        return ""
    values = [statistics.median(part[k].dropna()) if part[k].notna().any() else None
              for k in ("score", "train_seconds", "peak_rss_mb")]
    return " / ".join("?" if v is None else f"{v:.1f}" if i == 0 else f"{v:.0f}" for i, v in enumerate(values))


def paper_only_table(runs: pd.DataFrame) -> str:
    """Table 2 rows for the models present that no run here reproduces (e.g. the adapter baselines)."""
    rows = []
    for model in sorted(runs["model"].unique()):
        key = paper.paper_model(model)
        ran = set(runs[runs["model"] == model]["method"])
        for (pmodel, method), values in paper.TABLE2.items():
            if pmodel == key and method not in ran:
                name = paper.PAPER_ONLY.get(method) or method_label(method)
                rows.append([_short_model(model), name, paper.TRAINABLE.get((pmodel, method), ""),
                             *(f"{values[t]:.1f}" for t in paper.TASK_ORDER),
                             f"{paper.TABLE2_AVERAGE[(pmodel, method)]:.1f}"])
    if not rows:
        return ""
    return _markdown(["model", "paper row", "# trainable", *paper.TASK_ORDER, "avg"], rows)


def plot_differences(diffs: pd.DataFrame, out: Path) -> list[Path]:
    """Per task: each method's difference to the first reference (FT) with its 95 % interval."""
    reference = COMPARED_WITH[0]
    column = f"vs_{reference}"
    if diffs.empty or diffs[column].isna().all():
        return []
    plt = _pyplot()
    written = []
    for (task, model), group in diffs.groupby(["task", "model"], sort=True):
        found = [(d["method"], d[column]) for _, d in group.iterrows() if d[column] is not None]
        if not found:
            continue
        fig, ax = plt.subplots(figsize=(6, 0.5 * len(found) + 1.5))
        for y, (method, diff) in enumerate(found):
            colour = "tab:red" if diff.excludes_zero else "tab:blue"
            ax.errorbar(diff.mean, y, xerr=[[diff.mean - diff.low], [diff.high - diff.mean]], fmt="o", color=colour)
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(range(len(found)), [method_label(m) for m, _ in found])
        ax.set(xlabel=f"{task}: score − {method_label(reference)} (points, 95 % CI over seeds)",
               title=f"{task}, {_short_model(model)}: difference to {method_label(reference)}")
        ax.grid(alpha=0.3, axis="x")
        written.append(_save(fig, out / f"vs-{_slug(reference)}-{_slug(task)}-{_slug(_short_model(model))}.png"))
    return written


def sections(runs: pd.DataFrame, diffs: pd.DataFrame) -> list[str]:
    """The report's method-comparison sections (empty when there is nothing to compare)."""
    parts = []
    if not diffs.empty and diffs[[f"vs_{m}" for m in COMPARED_WITH]].notna().any().any():
        parts += ["## Which differences are real\n\n" + DIFFERENCES_TEXT, differences_table(diffs)]
    if runs["method"].nunique() > 1 and (runs["setting"] == "").any():
        parts += ["## Cost per method\n\nTrainable parameters (adapter = the method's own tensors; head = the "
                  "trained task head), then per task the median over seeds of the score (%), the training time "
                  "(s) and the process's peak resident memory (MB).", cost_table(runs)]
    others = paper_only_table(runs)
    if others:
        parts += ["## Paper rows without runs here\n\nTable 2 rows for these models that no run here reproduces "
                  "(the adapter baselines need the `adapters` package, which requires transformers 4.57: "
                  f"docs/configs.md). Source: {paper.SOURCE}.", others]
    return parts
