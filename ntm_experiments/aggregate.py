"""ntm-aggregate: a sweep's runs, per task x model, across seeds.

Writes into ``--out`` (default ``<sweep>/aggregate``):

- ``curves.csv``: the training cost's median and quartiles across seeds on the union of logged
  steps (task, model, sequences, seeds, median, q25, q75);
- ``seeds.csv``: one row per run: sequences reached, sequences to the threshold, final cost,
  parameter counts, last evaluation of each generalisation setting;
- ``summary.csv``: one row per task x model: seeds, fraction converged (below the threshold),
  median sequences to the threshold, median final and generalisation costs;
- ``curves.png``: one panel per task, one median line and quartile band per model, on the
  paper's axes (thousands of sequences; cost per sequence in bits).
"""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .paper import PAPER_MODEL_NAMES
from .runs import (Band, Run, band, distinct, group, load_runs, median, save_figure, sequences_to_threshold,
                   write_atomic)

DEFAULT_THRESHOLD = 0.1  # bits per sequence; "converged" = some logged training cost below it
MODEL_LABELS = PAPER_MODEL_NAMES  # our model names -> the paper's legend names (paper.py)
MODEL_COLOURS = {"ntm_ff": "tab:blue", "ntm_lstm": "tab:green", "lstm": "tab:red"}
X_LABEL, Y_LABEL = "sequences seen (thousands)", "cost per sequence (bits)"


@dataclass
class Summary:
    """One task x model across its seeds."""
    task: str
    model: str
    runs: list[Run]
    band: Band
    threshold: float
    to_threshold: list[int | None]  # per run, sequences at the first logged cost below the threshold

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def budgets(self) -> list[str]:
        return sorted({r.budget for r in self.runs})

    @property
    def converged_fraction(self) -> float:
        return sum(s is not None for s in self.to_threshold) / len(self.runs)

    @property
    def final_below_fraction(self) -> float:
        """Seeds whose last logged cost is below the threshold (a run can reach it, then lose it)."""
        return sum(bool(r.curve) and r.curve[-1][1] < self.threshold for r in self.runs) / len(self.runs)

    @property
    def median_to_threshold(self) -> float | None:
        """Median over all seeds, a seed that never converged counting as infinitely slow;
        None when fewer than half converged."""
        if self.converged_fraction < 0.5:
            return None
        ordered = sorted(float("inf") if s is None else s for s in self.to_threshold)
        n = len(ordered)
        value = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        return None if value == float("inf") else value

    def generalisation(self) -> dict[str, list[float]]:
        """Per setting, the last evaluation of every seed that has one."""
        out: dict[str, list[float]] = {}
        for run in self.runs:
            for setting, cost in run.generalisation().items():
                out.setdefault(setting, []).append(cost)
        return out

    def last_scalar_median(self, tag: str) -> float | None:
        return median(r.last(tag) for r in self.runs)


def summarise(runs: list[Run], threshold: float = DEFAULT_THRESHOLD) -> list[Summary]:
    return [Summary(task, model, members, band([r.curve for r in members]), threshold,
                    [sequences_to_threshold(r.curve, threshold) for r in members])
            for (task, model), members in group(runs).items()]


# ---------------------------------------------------------------- plots
def label_axes(ax) -> None:
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)


def plot_band(ax, summary: Summary, label: str | None = None) -> None:
    """Our median (solid) and quartile band across seeds, x in thousands of sequences."""
    b, colour = summary.band, MODEL_COLOURS.get(summary.model, None)
    if len(b.x) == 0:
        return
    text = label or f"{MODEL_LABELS.get(summary.model, summary.model)} (ours, {len(summary.runs)} seed{'s' if len(summary.runs) != 1 else ''})"
    line, = ax.plot(b.x / 1000, b.median, color=colour, lw=1.5, label=text)
    ax.fill_between(b.x / 1000, b.q25, b.q75, color=line.get_color(), alpha=0.25, lw=0)


def curves_figure(summaries: list[Summary]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({s.task for s in summaries})
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7, 3.2 * len(tasks)), squeeze=False, constrained_layout=True)
    for ax, task in zip(axes[:, 0], tasks):
        for s in summaries:
            if s.task == task:
                plot_band(ax, s)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{task}: median and quartiles across seeds", fontsize=10)
        label_axes(ax)
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------- tables
def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    return str(value)


def _csv(header: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in header})
    return buffer.getvalue()


def curve_rows(summaries: list[Summary]) -> list[dict]:
    return [{"task": s.task, "model": s.model, "sequences": int(x), "seeds": int(n), "median": float(m),
             "q25": float(lo), "q75": float(hi)}
            for s in summaries for x, n, m, lo, hi in zip(s.band.x, s.band.count, s.band.median, s.band.q25, s.band.q75)]


def seed_rows(summaries: list[Summary]) -> list[dict]:
    rows = []
    for s in summaries:
        for run, reached in zip(s.runs, s.to_threshold):
            rows.append({"task": s.task, "model": s.model, "seed": run.seed, "budget": run.budget, "run": str(run.path),
                         "sequences_reached": run.sequences, "threshold_bits": s.threshold,
                         "sequences_to_threshold": reached, "final_cost": run.curve[-1][1] if run.curve else None,
                         "parameters": run.last("model/parameters"),
                         "parameters_paper": run.last("model/parameters_paper"),
                         **{f"eval/{k}": v for k, v in run.generalisation().items()}})
    return rows


def summary_rows(summaries: list[Summary]) -> list[dict]:
    return [{"task": s.task, "model": s.model, "budget": "+".join(s.budgets), "seeds": len(s.runs),
             "sequences_reached_min": min(r.sequences for r in s.runs),
             "sequences_reached_max": max(r.sequences for r in s.runs), "threshold_bits": s.threshold,
             "converged_fraction": s.converged_fraction, "final_below_fraction": s.final_below_fraction,
             "median_sequences_to_threshold": s.median_to_threshold,
             "final_cost_median": median(r.curve[-1][1] if r.curve else None for r in s.runs),
             **{f"eval/{k}": median(v) for k, v in s.generalisation().items()}}
            for s in summaries]


def _header(fixed: list[str], rows: list[dict]) -> list[str]:
    extra = sorted({k for row in rows for k in row} - set(fixed))
    return fixed + extra


def write_aggregate(summaries: list[Summary], out: Path) -> list[Path]:
    """Write the three CSVs and the PNG into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    curves = curve_rows(summaries)
    seeds = seed_rows(summaries)
    table = summary_rows(summaries)
    written = {
        "curves.csv": _csv(["task", "model", "sequences", "seeds", "median", "q25", "q75"], curves),
        "seeds.csv": _csv(_header(["task", "model", "seed", "budget", "run", "sequences_reached", "threshold_bits",
                                   "sequences_to_threshold", "final_cost", "parameters", "parameters_paper"], seeds),
                          seeds),
        "summary.csv": _csv(_header(["task", "model", "budget", "seeds", "sequences_reached_min",
                                     "sequences_reached_max", "threshold_bits", "converged_fraction", "final_below_fraction",
                                     "median_sequences_to_threshold", "final_cost_median"], table), table),
    }
    paths = []
    for name, text in written.items():
        write_atomic(out / name, text)
        paths.append(out / name)
    save_figure(curves_figure(summaries), out / "curves.png")
    paths.append(out / "curves.png")
    return paths


class OneLineParser(argparse.ArgumentParser):
    """argparse without the usage block: a bad argument is one line (ConfigError), exit 2."""

    def error(self, message: str):
        raise ConfigError(message)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of bits > 0") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number of bits > 0")
    return value


def main(argv: list[str]) -> list[Path]:
    parser = OneLineParser(prog="ntm-aggregate", description="Median and quartiles of a sweep's cost "
                                     "curves across seeds, sequences to a threshold, generalisation costs: CSVs and a PNG.")
    parser.add_argument("sweep", type=Path, nargs="+", help="sweep folder(s): any tree of run folders")
    parser.add_argument("--threshold", type=positive_float, default=DEFAULT_THRESHOLD,
                        help=f"cost in bits per sequence that counts as converged (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first sweep>/aggregate)")
    args = parser.parse_args(argv)
    runs, repeats = distinct(load_runs(args.sweep))  # a repeated run counts as one seed
    summaries = summarise(runs, args.threshold)
    out = args.out or args.sweep[0] / "aggregate"
    paths = write_aggregate(summaries, out)
    for s in summaries:
        conv = f"{s.converged_fraction:.0%} below {s.threshold:g} bits ({s.final_below_fraction:.0%} still at the end)"
        at = f", median at {s.median_to_threshold / 1000:g}k sequences" if s.median_to_threshold is not None else ""
        print(f"{s.task:>18} {s.model:>8}: {len(s.runs)} seeds, {conv}{at}")
    for repeat in repeats:
        print(f"left out {repeat.why()}")
    print(f"wrote {', '.join(p.name for p in paths)} in {out}")
    return paths
