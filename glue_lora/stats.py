"""Confidence intervals for the difference between two settings' scores (torch-free, reusable).

The harness records one score per run (the best evaluation) and no per-example predictions, so the unit of
replication is the seed. Runs of two methods with the same seed share the data order and the head's random
init (set_seed before the model is built), so the honest comparison is **paired over seeds**: the mean of the
per-seed differences with a Student-t interval (n - 1 degrees of freedom). With 3 seeds the t quantile is
4.30, so only large or very consistent differences exclude 0; that is the data speaking, not a defect. When
the two sides share fewer than two seeds, Welch's unpaired interval is used if each side has two or more runs.
A bootstrap over dev examples would need per-example predictions, which runs do not save.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    """mean(ours - reference) with a two-sided confidence interval."""

    mean: float
    low: float
    high: float
    n: int  #: pairs (paired) or the smaller side's run count (welch)
    kind: str  #: "paired" (t-interval on per-seed differences) or "welch" (unpaired)
    confidence: float = 0.95

    @property
    def degenerate(self) -> bool:
        """Every seed differs by the same amount (common with accuracies on a few hundred examples): the
        sample spread is 0, so the t-interval has no width and says nothing about the uncertainty."""
        return self.high - self.low <= 1e-9 * max(1.0, abs(self.mean))  # float noise counts as none

    @property
    def below_zero(self) -> bool:
        return not self.degenerate and self.high < 0

    @property
    def above_zero(self) -> bool:
        return not self.degenerate and self.low > 0

    @property
    def excludes_zero(self) -> bool:
        """True when a real interval lies entirely on one side of 0: a difference the seeds support."""
        return self.below_zero or self.above_zero

    def text(self, digits: int = 1) -> str:
        """'+1.2 [−0.3, +2.7]' with a trailing '*' when the interval excludes 0 ('no spread' when degenerate)."""
        mark = "*" if self.excludes_zero else " (no spread)" if self.degenerate and self.mean != 0 else ""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{mark}"


def _t_quantile(confidence: float, dof: float) -> float:
    from scipy.stats import t  # a declared dependency; imported only when an interval is computed

    return float(t.ppf((1 + confidence) / 2, dof))


def paired_difference(ours: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> Difference | None:
    """Student-t interval on the element-wise differences (same index = same seed); None with < 2 pairs."""
    if len(ours) != len(reference):
        raise ValueError(f"paired samples differ in length: {len(ours)} vs {len(reference)}")
    diffs = [a - b for a, b in zip(ours, reference)]
    if len(diffs) < 2:
        return None
    mean, n = statistics.fmean(diffs), len(diffs)
    half = _t_quantile(confidence, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Difference(mean, mean - half, mean + half, n, "paired", confidence)


def welch_difference(ours: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> Difference | None:
    """Welch's unpaired t-interval for mean(ours) - mean(reference); None unless each side has >= 2 values."""
    if len(ours) < 2 or len(reference) < 2:
        return None
    va, vb = statistics.variance(ours) / len(ours), statistics.variance(reference) / len(reference)
    mean = statistics.fmean(ours) - statistics.fmean(reference)
    if va + vb == 0:
        return Difference(mean, mean, mean, min(len(ours), len(reference)), "welch", confidence)
    dof = (va + vb) ** 2 / (va ** 2 / (len(ours) - 1) + vb ** 2 / (len(reference) - 1))
    half = _t_quantile(confidence, dof) * math.sqrt(va + vb)
    return Difference(mean, mean - half, mean + half, min(len(ours), len(reference)), "welch", confidence)


def seed_difference(ours: Mapping[int, float], reference: Mapping[int, float],
                    confidence: float = 0.95) -> Difference | None:
    """Scores keyed by seed: paired over the shared seeds when there are two or more, else Welch."""
    shared = sorted(set(ours) & set(reference))
    if len(shared) >= 2:
        return paired_difference([ours[s] for s in shared], [reference[s] for s in shared], confidence)
    return welch_difference(list(ours.values()), list(reference.values()), confidence)
