"""ntm-report: our runs beside the paper's figures and tables, as PNGs and a Markdown summary.

``ntm-report <run or sweep folder>... [--out outputs/report]`` writes into ``--out``:

- ``fig03_copy.png``, ``fig07_repeat_copy.png``, ``fig10_associative_recall.png``,
  ``fig13_ngrams.png``, ``fig18_priority_sort.png``: our median curve and quartile band across
  seeds over the paper's curve, on the paper's axes (the N-gram figure with both optima);
- ``fig11_associative_recall_generalisation.png``: cost at 6/10/15/20 items, ours and the paper's;
- ``fig04_*``, ``fig05_*``, ``fig08_*``: example pictures (copy with an NTM / the LSTM, repeat copy)
  from one run per task x model (the seed with the lowest final training cost);
- ``aggregate/``: what ``ntm-aggregate`` writes for the same runs;
- ``REPORT.md``: the verdicts counted (agree / disagree by direction / inconclusive); per figure x
  model, the curve-level figure, the seeds at the paper's level and agreement or disagreement with
  the paper's landmarks in numbers, both by compare.py's rule (the paper's 10k windows), with the
  measured facts behind each disagreement (and ``--explain``'s lines); the budget, seeds and
  sequences of the runs, the Fig 11 table (median and range over seeds) and the parameter counts.

A figure whose runs are missing is listed as missing. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .aggregate import (DEFAULT_THRESHOLD, MODEL_COLOURS, MODEL_LABELS, OneLineParser, Summary, label_axes,
                        plot_band, positive_float, summarise, write_aggregate)
from .compare import NOT_REACHED, PLUS_BITS, REACHED, WINDOW, Comparison, compare, window_end
from .errors import RunError
from .paper import FIGURES, Figure, load_paper_curves  # noqa: F401 - Figure, load_paper_curves re-exported
from .runs import OPTIMAL_SUFFIX, Run, distinct, load_runs, median, save_figure, write_atomic

PAPER_NGRAM_OPTIMUM = 131.6  # bits per sequence, Fig 13's "Optimal" line (its own 1000-sequence set)
# Fig 11: bits per sequence at 6 / 10 / 15 / 20 items, read off the paper's figure
PAPER_FIG11 = {"lstm": (2.27, 36.6, 39.9, 38.1), "ntm_lstm": (0.08, 1.80, 4.74, 6.99), "ntm_ff": (0.02, 0.14, 1.47, 8.00)}
FIG11_ITEMS = (6, 10, 15, 20)
# Choice: how close counts as agreement, on curves binned by compare.py's rule. Sequences to a cost
# (the end of the window from which our curve stays below it, against the end of the paper's
# window): within a factor of 1.5; a cost in a window: within 25 % of the paper's or 0.1 bits,
# whichever is larger.
REACH_FACTOR = 1.5
COST_TOLERANCE, COST_FLOOR = 0.25, 0.1


# The paper's landmarks, read off its learning curves (Figs 3, 7, 10, 13, 18; §4.1-4.5):
# ("below", bits, k sequences): first below that cost at k;
# ("at", k sequences, bits): the cost at that point; ("mean", (k_lo, k_hi), bits): its mean over a range.
LANDMARKS = {
    "copy": {"ntm_lstm": [("below", 0.1, 25)], "ntm_ff": [("at", 45, 0.5), ("below", 0.1, 55)],
             "lstm": [("at", 200, 1.9), ("at", 300, 1.06), ("at", 1000, 0.5)]},
    "repeat_copy": {"ntm_lstm": [("below", 15, 25), ("below", 1, 245)], "ntm_ff": [("at", 200, 1.0)],
                    "lstm": [("below", 0.1, 285)]},
    "associative_recall": {"ntm_ff": [("at", 45, 0.22)], "ntm_lstm": [("at", 95, 0.87), ("at", 205, 0.25)],
                           "lstm": [("at", 505, 1.95), ("at", 1000, 0.74)]},
    "ngrams": {"ntm_ff": [("mean", (900, 1000), 133.35)], "ntm_lstm": [("mean", (900, 1000), 133.5)],
               "lstm": [("mean", (900, 1000), 135.7)]},
    "priority_sort": {"lstm": [("at", 1000, 56)], "ntm_ff": [("at", 1000, 20)], "ntm_lstm": [("at", 1000, 18)]},
}
EXAMPLE_FIGURES = {("copy", "ntm_ff"): 4, ("copy", "ntm_lstm"): 4, ("copy", "lstm"): 5, ("repeat_copy", "ntm_ff"): 8,
                   ("repeat_copy", "ntm_lstm"): 8, ("repeat_copy", "lstm"): 8}


def k(sequences: float) -> str:
    """Sequences as the paper writes them: thousands with a k."""
    return f"{sequences / 1000:.3g}k" if sequences < 100_000 else f"{sequences / 1000:.0f}k"


# ---------------------------------------------------------------- figures
def learning_curve_figure(figure: Figure, summaries: list[Summary], paper: dict, optimum: float | None = None):
    """Our bands over the paper's curves, x in thousands of sequences, on the paper's axes
    (widened only to show our runs' last points, or runs longer than the paper's)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [s for s in summaries if s.task == figure.task]
    reach = max((float(s.band.x[-1]) / 1000 for s in ours if len(s.band.x)), default=0.0)
    zoom = 0 < reach < figure.xmax / 2  # our runs cover under half the paper's axis: add a panel on them
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12.5 if zoom else 8.5, 4.2), constrained_layout=True,
                             squeeze=False)
    ylo, yhi = figure.ylim
    xmax = max(figure.xmax, reach)
    for s in ours:
        if len(s.band.x):
            # the paper's y axis cuts off early costs too; widen it only so our last point shows
            yhi = max(yhi, float(s.band.median[-1]) * 1.05)
            ylo = min(ylo, float(s.band.median[-1]) - 1) if figure.ylim[0] > 0 else ylo
    if figure.task == "ngrams" and optimum is not None:
        ylo = min(ylo, optimum - 1)
    for ax, right in zip(axes[0], (xmax, reach)):
        for model, paper_name in MODEL_LABELS.items():
            points = paper.get((figure.key, paper_name))
            if points:
                ax.plot([x for x, _ in points], [c for _, c in points], color=MODEL_COLOURS[model], lw=1.2, ls="--",
                        alpha=0.8, label=f"{paper_name} (paper)")
        for s in ours:
            plot_band(ax, s, f"{MODEL_LABELS.get(s.model, s.model)} (ours, {len(s.runs)} seed{'s' if len(s.runs) != 1 else ''}, "
                             f"to {k(max(r.sequences for r in s.runs))})")
        if figure.task == "ngrams":
            ax.axhline(PAPER_NGRAM_OPTIMUM, color="black", ls="--", lw=1, label=f"optimal (paper: {PAPER_NGRAM_OPTIMUM})")
            if optimum is not None:
                ax.axhline(optimum, color="black", ls=":", lw=1, label=f"optimal (ours: {optimum:.1f})")
        ax.set_xlim(0, right)
        ax.set_ylim(ylo, yhi)
        label_axes(ax)
    axes[0][0].set_title(f"Fig {figure.number}: {figure.title}" + (" (the paper's axes)" if zoom else ""), fontsize=10)
    if zoom:
        axes[0][1].set_title(f"the same, 0 to {k(reach * 1000)} sequences (our runs)", fontsize=10)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a curve
    return fig


def fig11_figure(summaries: list[Summary], paper: dict):
    """Fig 11: cost per sequence against the number of items, paper (dashed) and ours (median, quartiles)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    for model, paper_name in MODEL_LABELS.items():
        points = paper.get(("fig11_assoc_gen", paper_name))
        if points:
            ax.plot([x for x, _ in points], [c for _, c in points], "o--", color=MODEL_COLOURS[model], ms=3,
                    label=f"{paper_name} (paper)")
    for s in summaries:
        if s.task != "associative_recall":
            continue
        gen = s.generalisation()
        items = [n for n in FIG11_ITEMS if gen.get(f"items_{n}")]
        if not items:
            continue
        values = [np.array(gen[f"items_{n}"]) for n in items]
        med = [float(np.median(v)) for v in values]
        lo = [m - float(np.percentile(v, 25)) for m, v in zip(med, values)]
        hi = [float(np.percentile(v, 75)) - m for m, v in zip(med, values)]
        ax.errorbar(items, med, yerr=[lo, hi], fmt="s-", color=MODEL_COLOURS.get(s.model), ms=4, capsize=3,
                    label=f"{MODEL_LABELS.get(s.model, s.model)} (ours, {len(s.runs)} seed{'s' if len(s.runs) != 1 else ''})")
    ax.set_xlabel("number of items")
    ax.set_ylabel("cost per sequence (bits)")
    ax.set_xticks(FIG11_ITEMS)
    ax.set_ylim(bottom=0)
    ax.set_title("Fig 11: associative recall generalisation", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def example_pictures(summary: Summary, out: Path) -> list[Path]:
    """Figs 4, 5, 8: ``evaluate.example_figure`` for every generalisation setting, from the
    checkpoint of the seed with the lowest final training cost."""
    from . import checkpoint
    from .evaluate import eval_suite, example_figure

    with_checkpoint = [r for r in summary.runs if r.checkpoint() and r.curve]
    if not with_checkpoint:
        return []
    run = min(with_checkpoint, key=lambda r: r.curve[-1][1])
    # only what the pictures need: keys added to the config later do not stop an older schema
    model, task, cfg, saved = checkpoint.load_model(run.checkpoint(), keys=("task", "model", "eval"))
    number = EXAMPLE_FIGURES[(summary.task, summary.model)]
    paths = []
    for setting in eval_suite(task, cfg.eval):
        fig = example_figure(model, task, setting, int(cfg.eval.seed), "cpu")
        caption = fig._suptitle.get_text() + "\n" if fig._suptitle is not None else ""  # keep example_figure's
        fig.suptitle(f"{caption}{summary.model}, seed {run.seed}, after {k(saved['sequences_seen'])} sequences",
                     fontsize=8)
        width = fig.get_figwidth()
        path = out / f"fig{number:02d}_{summary.task}_{summary.model}_{setting.name}.png"
        save_figure(fig, path, dpi=min(100, int(1600 / width)))  # wide pictures at lower dpi: small files
        paths.append(path)
    return paths


# ---------------------------------------------------------------- landmarks
def comparison(summary: Summary, figure: Figure | None = None, paper: dict | None = None) -> Comparison:
    """The summary's seeds on the paper's 10k grid (compare.py's rule), against the figure's curve of its model."""
    points = (paper or {}).get((figure.key, MODEL_LABELS.get(summary.model, summary.model)), []) if figure else []
    return compare([r.curve for r in summary.runs], summary.seeds, points, figure.ylim[1] if figure else None)


def _paper_window(k_sequences: float) -> str:
    return f"{k_sequences:g}k, in the window ending at {window_end(k_sequences * 1000) // 1000:g}k"


def landmark_id(landmark: tuple) -> str:
    """A landmark's short name: "below 0.1 bits at 25k", "0.5 bits at 45k", "mean 900k-1000k"."""
    kind, a, b = landmark
    if kind == "below":
        return f"below {a:g} bits at {b:g}k"
    if kind == "at":
        return f"{b:g} bits at {a:g}k"
    return f"mean {a[0]:g}k-{a[1]:g}k"


def landmark_key(task: str, model: str, landmark: tuple) -> str:
    """task/model/landmark: how ``--explain`` names a landmark."""
    return f"{task}/{model}/{landmark_id(landmark)}"


@dataclass(frozen=True)
class Verdict:
    """One landmark of the paper against our seeds, by compare.py's rule and this module's tolerances."""
    task: str
    model: str
    landmark: tuple
    line: str                # the sentence REPORT.md prints (landmark_line)
    verdict: str             # "agrees", "disagrees: <faster | slower | higher | lower | did not stay below>", "inconclusive: ..."
    at_level: int | None     # seeds that reach the paper's level (see seed_levels); None when no seed covers it
    covering: int            # seeds whose curve covers the landmark's window(s)
    seeds: int               # seeds in all
    why: tuple[str, ...]     # measured facts behind a disagreement (empty otherwise)

    @property
    def outcome(self) -> str:
        """agrees, disagrees or inconclusive."""
        return self.verdict.split(":")[0]

    @property
    def key(self) -> str:
        """task/model/landmark: how ``--explain`` names it."""
        return landmark_key(self.task, self.model, self.landmark)


def _reach_agrees(ours_end: int, paper_end: int) -> bool:
    """Sequences to a cost (window ends) within REACH_FACTOR of the paper's, either way."""
    return ours_end <= REACH_FACTOR * paper_end and ours_end * REACH_FACTOR >= paper_end


def _cost_agrees(ours: float, paper_cost: float) -> bool:
    return abs(ours - paper_cost) <= max(COST_TOLERANCE * paper_cost, COST_FLOOR)


def _window_cost(binned, landmark: tuple) -> float | None:
    """A curve's cost where an "at" or "mean" landmark reads it (None when it does not cover it)."""
    kind, a, _ = landmark
    if kind == "at":
        return binned.at(a * 1000)
    lo, hi = a
    values = [binned.at(end) for end in range(window_end(lo * 1000 + 1), window_end(hi * 1000) + 1, WINDOW)]
    return None if any(v is None for v in values) else sum(values) / len(values)


def _judge(summary: Summary, landmark: tuple, comp: Comparison) -> tuple[str, str]:
    """(sentence, verdict) for one landmark: our binned median curve against the paper's, in numbers
    (compare.py's rule: 10k windows, reached = below and staying below)."""
    kind, a, b = landmark
    name = f"{summary.task}, {MODEL_LABELS.get(summary.model, summary.model)}"
    ours_end = comp.median.last_end
    stop = (f"our median curve covers no whole {WINDOW // 1000:g}k window" if not ours_end else
            f"our median curve's last whole window ends at {k(ours_end)}")
    if kind == "below":
        threshold, paper_k = a, b
        paper_end = window_end(paper_k * 1000)
        median_reach, seeds = comp.reach(threshold)
        per_seed = "per seed: " + ", ".join(f"{r.text()} (seed {s})" for r, s in zip(seeds, comp.seeds))
        head = f"{name}: below {threshold:g} bits and staying below"
        if median_reach.status == REACHED:
            ours = median_reach.at
            verdict = ("agrees" if _reach_agrees(ours, paper_end) else
                       "disagrees: slower" if ours > paper_end else "disagrees: faster")
            return (f"{head} from the window ending at {k(ours)} sequences (paper: {_paper_window(paper_k)}); "
                    f"{verdict} ({per_seed})"), verdict
        if ours_end < paper_end:
            verdict = f"inconclusive: {stop}, before the paper's landmark"
        else:
            verdict = "disagrees: slower" if median_reach.status == NOT_REACHED else "disagrees: did not stay below"
        return f"{head}: {median_reach.text()} (paper: {_paper_window(paper_k)}); {verdict} ({per_seed})", verdict
    if kind == "at":
        at_k, paper_cost = a, b
        where = f"in the window ending at {window_end(at_k * 1000) // 1000:g}k sequences"
        paper_where = f"at {at_k:g}k sequences"
    else:
        (lo, hi), paper_cost = a, b
        where = f"mean over the windows from {lo:g}k to {hi:g}k sequences"
        paper_where = f"mean over {lo:g}k-{hi:g}k sequences"
    ours = _window_cost(comp.median, landmark)
    if ours is None:
        verdict = f"inconclusive: {stop}"
        return f"{name}: {paper_where} the paper has {paper_cost:g} bits; {verdict}", verdict
    verdict = "agrees" if _cost_agrees(ours, paper_cost) else ("disagrees: higher" if ours > paper_cost else
                                                                 "disagrees: lower")
    return f"{name}: {ours:.3g} bits {where} (paper: {paper_cost:g} {paper_where}); {verdict}", verdict


def landmark_line(summary: Summary, landmark: tuple, comp: Comparison | None = None) -> str:
    """One sentence comparing our binned median curve with one of the paper's landmarks, in numbers
    (compare.py's rule: 10k windows, reached = below and staying below)."""
    return _judge(summary, landmark, comp or comparison(summary))[0]


def seed_levels(landmark: tuple, comp: Comparison) -> tuple[int | None, int]:
    """How typical the paper's run is among our seeds: (seeds at the paper's level, seeds covering
    the landmark). At the paper's level: for "below", the seed's own binned curve
    reaches the cost and stays below it to the end of the run (at any time); for "at" and "mean", the
    seed's cost there is at most the paper's plus this module's tolerance (25 % or 0.1 bits)."""
    kind, a, b = landmark
    if kind == "below":
        _, reaches = comp.reach(a)
        covering = sum(binned.last_end >= window_end(b * 1000) for binned in comp.per_seed)
        return sum(r.status == REACHED for r in reaches), covering
    costs = [c for c in (_window_cost(binned, landmark) for binned in comp.per_seed) if c is not None]
    return (sum(c <= b or _cost_agrees(c, b) for c in costs) if costs else None), len(costs)


def _why(landmark: tuple, verdict: str, comp: Comparison) -> tuple[str, ...]:
    """Measured facts behind a disagreement: how many seeds agree on their own, and how far off the
    median curve is in the paper's 10k windows."""
    if not verdict.startswith("disagrees"):
        return ()
    kind, a, b = landmark
    facts = []
    if kind == "below":
        paper_end = window_end(b * 1000)
        median_reach, reaches = comp.reach(a)
        alone = [s for r, s in zip(reaches, comp.seeds) if r.status == REACHED and _reach_agrees(r.at, paper_end)]
        facts.append(f"{len(alone)} of {len(comp.seeds)} seeds agree on their own"
                     + (f" (seed{'s' if len(alone) > 1 else ''} {', '.join(map(str, alone))})" if alone else ""))
        if median_reach.status == REACHED:
            windows = abs(median_reach.at - paper_end) // WINDOW
            facts.append(f"the median curve is {windows} of the paper's {WINDOW // 1000:g}k windows "
                         f"{'later' if median_reach.at > paper_end else 'earlier'} than the paper's")
        else:
            never = [s for r, s in zip(reaches, comp.seeds) if r.status != REACHED]
            facts.append(f"seed{'s' if len(never) > 1 else ''} {', '.join(map(str, never))} never stay below "
                         f"{a:g} bits within the run")
    else:
        costs = [(c, s) for bn, s in zip(comp.per_seed, comp.seeds) if (c := _window_cost(bn, landmark)) is not None]
        alone = [s for c, s in costs if _cost_agrees(c, b)]
        facts.append(f"{len(alone)} of {len(costs)} seeds agree on their own"
                     + (f" (seed{'s' if len(alone) > 1 else ''} {', '.join(map(str, alone))})" if alone else "")
                     + "; seeds' costs there: " + ", ".join(f"{c:.3g} (seed {s})" for c, s in costs))
    return tuple(facts)


def _no_runs(task: str, model: str, landmark: tuple) -> Verdict:
    """A landmark of a task x model the report has no runs of: inconclusive, and counted as such."""
    line = f"{task}, {MODEL_LABELS.get(model, model)}: {landmark_id(landmark)}: inconclusive: no runs"
    return Verdict(task, model, landmark, line, "inconclusive: no runs", None, 0, 0, ())


def judge(summary: Summary, landmark: tuple, comp: Comparison | None = None) -> Verdict:
    """The landmark's sentence, verdict, seeds at the paper's level and, for a disagreement, the measured why."""
    comp = comp or comparison(summary)
    line, verdict = _judge(summary, landmark, comp)
    at_level, covering = seed_levels(landmark, comp)
    return Verdict(summary.task, summary.model, landmark, line, verdict, at_level, covering, len(comp.seeds),
                   _why(landmark, verdict, comp))


def curve_line(summary: Summary, comp: Comparison) -> str:
    """The curve-level figure (compare.py's rule): median curve, then per seed."""
    name = f"{summary.task}, {MODEL_LABELS.get(summary.model, summary.model)}"
    per_seed = ", ".join(f"{'n/a' if d.value is None else f'{d.value:.3f}'} over {d.used} (seed {s})"
                         for d, s in zip(comp.seed_distances, comp.seeds))
    return (f"{name}, whole curve: median |log2((ours + {PLUS_BITS:g}) / (paper + {PLUS_BITS:g}))| "
            f"{comp.distance.text()} (median curve); per seed {per_seed}")


# ---------------------------------------------------------------- the Markdown summary
OUTCOMES = ("agrees", "disagrees: faster", "disagrees: slower", "disagrees: lower", "disagrees: higher",
            "disagrees: did not stay below", "inconclusive")


def count_verdicts(verdicts: list[Verdict]) -> dict[str, int]:
    """Verdicts per outcome (OUTCOMES; "inconclusive" whatever its reason)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for v in verdicts:
        counts["inconclusive" if v.outcome == "inconclusive" else v.verdict] += 1
    return counts


def verdict_table(verdicts: list[Verdict]) -> str:
    """Counts of agree / disagree (by direction) / inconclusive: the NTM landmarks of Figs 3, 7 and 10, then all."""
    core = [v for v in verdicts if v.model != "lstm" and v.task in ("copy", "repeat_copy", "associative_recall")]
    rows = []
    for name, group in (("NTM landmarks of Figs 3, 7, 10", core), ("all landmarks", verdicts)):
        counts = count_verdicts(group)
        rows.append([name, str(len(group))] + [str(counts[o]) for o in OUTCOMES])
    return _table(["landmarks", "total", "agree", "faster", "slower", "lower", "higher", "did not stay below",
                   "inconclusive"], rows)


def _spread(values: list[float]) -> str:
    """median (min-max) of the seeds' values; n/a when there are none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    return _num(median(values)) + (f" ({_num(min(values))}-{_num(max(values))})" if len(values) > 1 else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def build_report(runs: list[Run], out: Path, sources: list[Path], threshold: float = DEFAULT_THRESHOLD,
                 note: str = "", explain: dict[str, str] | None = None) -> list[Path]:
    """Write every figure, the aggregate tables and REPORT.md into ``out``; return the paths written.
    A run repeating another (the same task, model, seed and settings) counts once (runs.distinct);
    REPORT.md lists what it left out. ``explain``: landmark key (Verdict.key) -> a line on why, printed
    under that landmark beside the measured facts."""
    runs, repeats = distinct(runs)
    summaries = summarise(runs, threshold)
    paper = load_paper_curves()
    out.mkdir(parents=True, exist_ok=True)
    written = write_aggregate(summaries, out / "aggregate")
    by_task = {s.task for s in summaries}
    md = ["# Reproduction report: Neural Turing Machines (Graves et al. 2014)", "",
          "Built by `ntm-report " + " ".join(str(p) for p in sources) + "`. Paper values: "
          "`ntm_experiments/data/figure_curves.csv` (points read off the paper's figures) and the landmarks read off its Figs 3, 7, 10, 13 and 18. "
          f"Comparison (README, \"Comparison with the paper's curves\"): each seed's training cost averaged, "
          f"sequence-weighted, over the paper's {WINDOW // 1000:g}k-sequence windows (only whole windows), the median "
          "over seeds per window, the paper's point compared with our window containing it; a landmark cost is "
          "reached at the first window from which the curve stays below it; the whole curve: the median over the "
          f"paper's points of |log2((ours + {PLUS_BITS:g}) / (paper + {PLUS_BITS:g}))|. Agreement: sequences to a "
          f"cost within a factor of {REACH_FACTOR:g} of the paper's; a cost within {COST_TOLERANCE:.0%} of the "
          f"paper's or {COST_FLOOR:g} bits. Figures: our median across seeds (solid) with the quartile band on "
          "the logged points; the paper's: dashed.", ""]
    if note:  # e.g. which machine and budget made the runs
        md += [note.strip(), ""]
    md += ["## Runs", ""]
    md.append(_table(["task", "model", "budget", "seeds", "sequences reached", f"seeds below {threshold:g} bits"],
                     [[s.task, s.model, ", ".join(s.budgets), f"{len(s.runs)} ({', '.join(map(str, s.seeds))})",
                       ", ".join(sorted({k(r.sequences) for r in s.runs})),
                       f"{sum(t is not None for t in s.to_threshold)}/{len(s.runs)}"] for s in summaries]))
    md.append("")
    if repeats:
        md += [f"Left out, {len(repeats)} run{'s' if len(repeats) != 1 else ''} repeating one above (the same task, "
               "model, seed and settings count as one seed; the run that reached the most sequences is kept):", ""]
        md += [f"- {repeat.why()}" for repeat in repeats] + [""]

    explain = dict(explain or {})
    head, md = md, []  # the verdict counts and the per-figure table go above the figures: built after them
    verdicts: list[Verdict] = []
    cells: list[list[str]] = []
    for figure in FIGURES:
        md += [f"## Fig {figure.number}: {figure.title.lower()} ({figure.task})", ""]
        if figure.task not in by_task:
            md += [f"Missing: no runs of task `{figure.task}` in the given folders.", ""]
            verdicts += [_no_runs(figure.task, model, lm) for model, lms in LANDMARKS[figure.task].items() for lm in lms]
            continue
        optimum = None
        if figure.task == "ngrams":
            optimum = median(r.last(f"eval/validation{OPTIMAL_SUFFIX}") for s in summaries if s.task == "ngrams"
                             for r in s.runs)
        path = out / f"fig{figure.number:02d}_{figure.task}.png"
        save_figure(learning_curve_figure(figure, summaries, paper, optimum), path)
        written.append(path)
        md += [f"![Fig {figure.number}]({path.name})", ""]
        for model, label in MODEL_LABELS.items():
            summary = next((s for s in summaries if s.task == figure.task and s.model == model), None)
            if summary is None:
                md.append(f"- {figure.task}, {label}: missing (no runs)")
                verdicts += [_no_runs(figure.task, model, lm) for lm in LANDMARKS[figure.task].get(model, [])]
                continue
            comp = comparison(summary, figure, paper)
            md.append(f"- {curve_line(summary, comp)}")
            levels = []
            for lm in LANDMARKS[figure.task].get(model, []):
                v = judge(summary, lm, comp)
                verdicts.append(v)
                md.append(f"- {v.line}")
                level = "n/a" if v.at_level is None else f"{v.at_level}/{v.seeds}"
                partly = lm[0] != "below" and v.at_level is not None and v.covering < v.seeds
                md.append(f"  - seeds at the paper's level: {level}" + (f" ({v.covering} covering its window)" if partly else ""))
                md += [f"  - why: {fact}" for fact in v.why]
                if v.key in explain:
                    md.append(f"  - why: {explain.pop(v.key)}")
                levels.append(f"{landmark_id(lm)}: {level}")
            per_seed = [d.value for d in comp.seed_distances if d.value is not None]
            cells.append([f"Fig {figure.number}", label, f"{len(summary.runs)}", _num(comp.distance.value),
                          f"{_num(median(per_seed))} ({_num(min(per_seed))}-{_num(max(per_seed))})" if per_seed else "n/a",
                          "; ".join(levels) or "none"])
        if figure.task == "ngrams":
            md.append(f"- optimal estimator (eq. 10) on our validation set: {_num(optimum, 4)} bits (paper: "
                      f"{PAPER_NGRAM_OPTIMUM}; we score all 200 bits, where the optimum is about 133.3)")
        md.append("")

    md += ["## Fig 11: associative recall generalisation (bits per sequence)", ""]
    recall = [s for s in summaries if s.task == "associative_recall"]
    if not recall:
        md += ["Missing: no runs of task `associative_recall` in the given folders.", ""]
    else:
        path = out / "fig11_associative_recall_generalisation.png"
        save_figure(fig11_figure(summaries, paper), path)
        written.append(path)
        rows = []
        for model in ("lstm", "ntm_lstm", "ntm_ff"):
            s = next((s for s in recall if s.model == model), None)
            gen = s.generalisation() if s else {}
            rows.append([MODEL_LABELS[model], f"{len(s.runs)}" if s else "0"] + [
                _spread(gen.get(f"items_{n}", [])) + f" ({PAPER_FIG11[model][i]:g})" if s else
                f"missing ({PAPER_FIG11[model][i]:g})" for i, n in enumerate(FIG11_ITEMS)])
        md += [f"![Fig 11]({path.name})", "", "Ours, each run's last evaluation: the median across seeds, their range "
               "in brackets after it, then the paper's:", "",
               _table(["model", "seeds"] + [f"{n} items" for n in FIG11_ITEMS], rows), ""]

    md += ["## Other generalisation results (ours; the paper shows these as pictures)", ""]
    other = [s for s in summaries if s.task != "associative_recall" and s.generalisation()]
    if other:
        md.append(_table(["task", "model", "setting: median bits per sequence (seeds)"],
                         [[s.task, s.model, "; ".join(f"{name}: {_num(median(v))} ({len(v)})"
                                                      for name, v in sorted(s.generalisation().items()))]
                          for s in other]))
    else:
        md.append("None in these runs.")
    md.append("")

    md += ["## Figs 4, 5, 8: example outputs", ""]
    for task, number in (("copy", "4 (NTM) and 5 (LSTM)"), ("repeat_copy", "8")):
        groups = [s for s in summaries if s.task == task]
        if not groups:
            md += [f"- Fig {number}, {task}: missing (no runs)"]
            continue
        for s in groups:
            try:
                paths = example_pictures(s, out)
            except RunError as error:  # e.g. an unreadable checkpoint: the rest of the report still stands
                md += [f"- {task}, {s.model}: missing ({error})"]
                continue
            written += paths
            md += [f"- {task}, {s.model}: " + (", ".join(f"[{p.stem.split(s.model + '_', 1)[1]}]({p.name})"
                                                        for p in paths) or "missing (no checkpoint)")]
    md.append("")

    md += ["## Parameter counts beside Tables 1-3", ""]
    md.append(_table(["task", "model", "ours", "paper"],
                     [[s.task, s.model, _count(s.last_scalar_median("model/parameters")),
                       _count(s.last_scalar_median("model/parameters_paper")
                              or median(r.config.get("paper", {}).get("params") for r in s.runs))]
                      for s in summaries]))
    md += ["", "Aggregate tables of the same runs: [aggregate/summary.csv](aggregate/summary.csv), "
           "[aggregate/seeds.csv](aggregate/seeds.csv), [aggregate/curves.csv](aggregate/curves.csv).", ""]
    head += ["## Verdicts", "", "Every landmark above, counted (agree: within the tolerances of the first paragraph; "
             "disagree, with the direction; inconclusive: the runs do not cover it):", "",
             verdict_table(verdicts), ""]
    head += ["## Per figure and model", "", "The curve-level figure (0 is the paper's curve; 1 is a factor of two in "
             f"cost + {PLUS_BITS:g} bit) of the median curve and of each seed alone, and for each landmark how many seeds "
             "reach the paper's level (a cost: reach it and stay below to the end of the run, at any time; a cost at "
             "a point: at most the paper's plus the tolerance). The paper shows one run; our seeds show how typical "
             "it is.", "",
             _table(["figure", "model", "seeds", "curve-level figure (median curve)", "seeds' figures: median (range)",
                     "seeds at the paper's level"], cells), ""]
    project = Path(__file__).resolve().parents[1]
    study = project / "outputs" / "batch_study" / "batch_study.png"
    if study.exists() and out.resolve().is_relative_to(project):  # a report inside a source checkout: link the
        # regime study that chose the batch size and learning rate
        head += [f"The defaults' batch size and learning rate were chosen by the batch-size study: "
                 f"[its figure]({Path(os.path.relpath(study, out.resolve())).as_posix()}).", ""]
    if explain:
        head += ["Explanations given for landmarks not in this report (`--explain`): "
                 + ", ".join(sorted(explain)), ""]
    md = head + md
    write_atomic(out / "REPORT.md", "\n".join(md))
    written.append(out / "REPORT.md")
    return written


def _read_explanations(path: Path) -> dict[str, str]:
    """--explain's file: a JSON object of landmark key -> one line; a clear error otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunError(f"--explain {path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise RunError(f"--explain {path}: expected a JSON object of landmark key -> one line of text")
    return data


def main(argv: list[str]) -> list[Path]:
    parser = OneLineParser(prog="ntm-report", description="Build the paper-reproduction report (figures over the "
                           "paper's, tables, REPORT.md) from run or sweep folders.")
    parser.add_argument("folders", type=Path, nargs="+", help="run or sweep folders (any tree of run folders)")
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="report folder (default outputs/report)")
    parser.add_argument("--threshold", type=positive_float, default=DEFAULT_THRESHOLD,
                        help=f"cost in bits per sequence that counts as converged (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--explain", type=Path, default=None, help="a JSON file: landmark key (e.g. "
                        "\"repeat_copy/ntm_lstm/below 15 bits at 25k\") -> a line on why it disagrees, printed under it")
    parser.add_argument("--note", default="", help="a paragraph for the top of REPORT.md, e.g. which machine and "
                        "budget made the runs")
    args = parser.parse_args(argv)
    explain = _read_explanations(args.explain) if args.explain else None
    runs = load_runs(args.folders)
    written = build_report(runs, args.out, args.folders, args.threshold, args.note, explain)
    kept, repeats = distinct(runs)
    left = f" ({len(repeats)} more left out as repeats of these, listed in REPORT.md)" if repeats else ""
    print(f"{len(kept)} runs{left}; wrote {len(written)} files in {args.out} (summary: {args.out / 'REPORT.md'})")
    return written
