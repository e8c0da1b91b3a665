"""The rule by which a training curve of ours is compared with one of the paper's, fixed before any run.

Shared by ``ntm-report`` and any study script; the README names it ("Comparison with the paper's
curves"). Its constants are guarded by tests (tests/test_compare.py): do not change them after
seeing results.

1. Binning. The paper plots one point per ``WINDOW`` = 10k sequences. A run's logged training
   cost points (step = sequences seen, value = mean bits per sequence over the sequences since the
   previous point; the first point's since 0) are averaged, weighted by sequences, into the windows
   (0, 10k], (10k, 20k], ...: a logged point straddling a window boundary is split between the
   two in proportion to its sequences. A window is reported only when the run's points cover all
   of it with finite costs: the window a run stops inside is not reported, nor is any window that
   a non-finite point touches.
2. Across seeds: the median over seeds of each window's cost, over the windows every seed covers
   (the median curve stops where the shortest seed's does).
3. The paper's point at x (thousands of sequences; ``data/figure_curves.csv``) is compared with
   our window containing it, (10k (ceil(x / 10) - 1), 10k ceil(x / 10)]: no interpolation. The
   points read off the paper's figures sit 5-6k past each multiple of 10k, mid-window, far from any
   boundary. Points at or above the figure's y-axis top are left out: there the paper's curve is
   off its axes and the value read is only a lower bound.
4. A landmark cost is *reached* at the first window whose binned cost is below it and stays below
   it in every later window of the run; "reached but did not stay" when some window is below it
   but the run's last window is not; "not reached within the run" when no window is.
5. The curve-level figure: the median, over the paper's points whose window the run covers, of
   |log2((ours + 1) / (paper + 1))|, ``PLUS_BITS`` = 1 bit added to both so that near-zero costs
   (0.003 against 0.0001 bits) do not dominate. 0 is identical; 1 is a factor of two in cost + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

WINDOW = 10_000    # sequences per paper point
PLUS_BITS = 1.0    # added to both costs in the curve-level figure's log ratio

REACHED, DID_NOT_STAY, NOT_REACHED = "reached", "reached but did not stay", "not reached within the run"


def window_end(sequences: float) -> int:
    """The end of the window containing ``sequences`` (> 0): windows are (end - WINDOW, end]."""
    if not sequences > 0:
        raise ValueError(f"{sequences}: a window position must be > 0 sequences")
    return int(math.ceil(sequences / WINDOW)) * WINDOW


@dataclass(frozen=True)
class Binned:
    """A curve on the paper's grid: the covered windows' ends (multiples of WINDOW, ascending) and
    the sequence-weighted mean cost over each."""
    ends: np.ndarray
    cost: np.ndarray

    def at(self, sequences: float) -> float | None:
        """Our cost in the window containing ``sequences``; None when the run does not cover it."""
        if sequences <= 0:
            return None
        hit = np.nonzero(self.ends == window_end(sequences))[0]
        return float(self.cost[hit[0]]) if len(hit) else None

    @property
    def last_end(self) -> int:
        """The end of the last covered window (0 when none is)."""
        return int(self.ends[-1]) if len(self.ends) else 0


def bin_curve(curve: Sequence[tuple[int, float]]) -> Binned:
    """Average a run's logged (sequences, bits per sequence) points into the covered windows."""
    points = sorted((int(s), float(v)) for s, v in curve)
    if not points or points[-1][0] < WINDOW:
        return Binned(np.array([], dtype=np.int64), np.array([]))
    n = points[-1][0] // WINDOW  # whole windows up to the last point
    weight, total, bad = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
    start = 0
    for step, value in points:
        if step <= start:
            continue  # a repeated step carries no sequences
        first, last = start // WINDOW, min((step - 1) // WINDOW, n - 1)
        for w in range(first, last + 1):
            overlap = min(step, (w + 1) * WINDOW) - max(start, w * WINDOW)
            if overlap <= 0:
                continue
            if math.isfinite(value):
                weight[w] += overlap
                total[w] += overlap * value
            else:
                bad[w] = True
        start = step
    covered = (weight == WINDOW) & ~bad
    ends = (np.nonzero(covered)[0].astype(np.int64) + 1) * WINDOW
    return Binned(ends, total[covered] / WINDOW)


def median_binned(curves: Iterable[Binned]) -> Binned:
    """The median over seeds per window, over the windows every seed covers."""
    curves = list(curves)
    if not curves:
        return Binned(np.array([], dtype=np.int64), np.array([]))
    ends = curves[0].ends
    for c in curves[1:]:
        ends = np.intersect1d(ends, c.ends)
    if not len(ends):
        return Binned(np.array([], dtype=np.int64), np.array([]))
    cost = np.median(np.stack([c.cost[np.isin(c.ends, ends)] for c in curves]), axis=0)
    return Binned(ends.astype(np.int64), cost)


@dataclass(frozen=True)
class Reach:
    """Where a binned curve reaches a landmark cost under the rule."""
    status: str              # REACHED, DID_NOT_STAY or NOT_REACHED
    at: int | None           # REACHED: the end of the first window from which it stays below
    first_below: int | None  # the end of the first window below (REACHED or DID_NOT_STAY)
    run_end: int             # the end of the curve's last covered window

    def text(self) -> str:
        if self.status == REACHED:
            return f"reached at {self.at // 1000:g}k"
        if self.status == DID_NOT_STAY:
            return f"reached at {self.first_below // 1000:g}k but did not stay"
        if not self.run_end:
            return f"not reached within the run (no whole {WINDOW // 1000:g}k window)"
        return f"not reached within the run (to {self.run_end // 1000:g}k)"


def reach(binned: Binned, cost: float) -> Reach:
    below = binned.cost < cost
    if not below.any():
        return Reach(NOT_REACHED, None, None, binned.last_end)
    first = int(binned.ends[np.argmax(below)])
    if not below[-1]:
        return Reach(DID_NOT_STAY, None, first, binned.last_end)
    above = np.nonzero(~below)[0]  # the last window not below is followed by windows all below
    stays = int(binned.ends[above[-1] + 1]) if len(above) else int(binned.ends[0])
    return Reach(REACHED, stays, first, binned.last_end)


@dataclass(frozen=True)
class Distance:
    """The curve-level figure and the paper's points it used."""
    value: float | None  # median |log2((ours + 1) / (paper + 1))|; None when no paper point was usable
    used: int            # the paper's points inside the run's covered windows
    total: int           # the paper's points on its axes (below its y-axis top)

    def text(self) -> str:
        if self.value is None:
            return f"n/a (none of the paper's {self.total} points inside the run)"
        return f"{self.value:.3f} over {self.used} of the paper's {self.total} points"


def on_axes(paper: Sequence[tuple[float, float]], y_top: float | None = None) -> list[tuple[float, float]]:
    """The paper's (x in thousands, bits) points that are real readings: x > 0 and below its y-axis top."""
    return [(x, c) for x, c in paper if x > 0 and (y_top is None or c < y_top)]


def distance(binned: Binned, paper: Sequence[tuple[float, float]], y_top: float | None = None) -> Distance:
    """The curve-level figure of ``binned`` against the paper's (x in thousands, bits) points."""
    points = on_axes(paper, y_top)
    terms = []
    for x, c in points:
        ours = binned.at(x * 1000)
        if ours is not None:
            terms.append(abs(math.log2((ours + PLUS_BITS) / (c + PLUS_BITS))))
    return Distance(float(np.median(terms)) if terms else None, len(terms), len(points))


@dataclass(frozen=True)
class Comparison:
    """A task x model's seeds against one of the paper's curves."""
    seeds: list[int]
    per_seed: list[Binned]
    median: Binned
    distance: Distance
    seed_distances: list[Distance]

    def reach(self, cost: float) -> tuple[Reach, list[Reach]]:
        """The landmark on the median curve, and per seed."""
        return reach(self.median, cost), [reach(b, cost) for b in self.per_seed]


def compare(curves: Sequence[Sequence[tuple[int, float]]], seeds: Sequence[int],
            paper: Sequence[tuple[float, float]], y_top: float | None = None) -> Comparison:
    """Bin every seed's curve, take the median curve, and measure each against the paper's points."""
    per_seed = [bin_curve(c) for c in curves]
    med = median_binned(per_seed)
    return Comparison(list(seeds), per_seed, med, distance(med, paper, y_top),
                      [distance(b, paper, y_top) for b in per_seed])
