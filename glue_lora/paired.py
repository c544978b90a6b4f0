"""Paired differences with a t confidence interval: the statistic for "does setting A change the score vs B".

Two settings run with the same seeds form pairs (same head init, same data subset); the per-seed difference
removes the seed-to-seed spread the two settings share, which is usually most of it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over n pairs, with its two-sided confidence interval (Student t, n - 1 degrees of freedom)."""

    n: int
    mean: float
    sd: float  #: standard deviation of the per-pair differences
    low: float
    high: float
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def describe(self, scale: float = 1.0, digits: int = 2) -> str:
        """`+0.41 [-0.62, +1.44]` (values times `scale`, e.g. 100 for points)."""
        return (f"{self.mean * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, "
                f"{self.high * scale:+.{digits}f}]")


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """CI of mean(a_i - b_i); `a` and `b` are aligned by pair (e.g. by seed). Needs at least 2 pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a confidence interval needs at least 2 pairs, got {len(a)}")
    diffs = [x - y for x, y in zip(a, b)]
    n, mean, sd = len(diffs), statistics.fmean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedDifference(n, mean, sd, mean - half, mean + half, confidence)
