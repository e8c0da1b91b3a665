"""ntm-report: our runs beside the paper's figures and tables, as PNGs and a Markdown summary.

``ntm-report <run or sweep folder>... [--out outputs/report]`` writes into ``--out``:

- ``fig03_copy.png``, ``fig07_repeat_copy.png``, ``fig10_associative_recall.png``,
  ``fig13_ngrams.png``, ``fig18_priority_sort.png``: our median curve and quartile band across
  seeds over the paper's curve, on the paper's axes (the N-gram figure with both optima);
- ``fig11_associative_recall_generalisation.png``: cost at 6/10/15/20 items, ours and the paper's;
- ``fig04_*``, ``fig05_*``, ``fig08_*``: example pictures (copy with an NTM / the LSTM, repeat copy)
  from one run per task x model (the seed with the lowest final training cost);
- ``aggregate/``: what ``ntm-aggregate`` writes for the same runs;
- ``REPORT.md``: per figure x model, the curve-level figure and agreement or disagreement with
  the paper's landmarks in numbers, both by compare.py's rule (the paper's 10k windows), the budget, seeds and sequences of the runs, the Fig 11 table and the parameter counts.

A figure whose runs are missing is listed as missing. Every file is written atomically.
"""

from __future__ import annotations

import math
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


def landmark_line(summary: Summary, landmark: tuple, comp: Comparison | None = None) -> str:
    """One sentence comparing our binned median curve with one of the paper's landmarks, in numbers
    (compare.py's rule: 10k windows, reached = below and staying below)."""
    kind, a, b = landmark
    name = f"{summary.task}, {MODEL_LABELS.get(summary.model, summary.model)}"
    comp = comp or comparison(summary)
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
            verdict = ("agrees" if ours <= REACH_FACTOR * paper_end and ours * REACH_FACTOR >= paper_end else
                       "disagrees: slower" if ours > paper_end else "disagrees: faster")
            return (f"{head} from the window ending at {k(ours)} sequences (paper: {_paper_window(paper_k)}); "
                    f"{verdict} ({per_seed})")
        if ours_end < paper_end:
            verdict = f"inconclusive: {stop}, before the paper's landmark"
        else:
            verdict = "disagrees: slower" if median_reach.status == NOT_REACHED else "disagrees: did not stay below"
        return f"{head}: {median_reach.text()} (paper: {_paper_window(paper_k)}); {verdict} ({per_seed})"
    if kind == "at":
        at_k, paper_cost = a, b
        ours = comp.median.at(at_k * 1000)
        where = f"in the window ending at {window_end(at_k * 1000) // 1000:g}k sequences"
        paper_where = f"at {at_k:g}k sequences"
    else:
        (lo, hi), paper_cost = a, b
        ends = range(window_end(lo * 1000 + 1), window_end(hi * 1000) + 1, WINDOW)
        values = [comp.median.at(end) for end in ends]
        ours = None if any(v is None for v in values) else sum(values) / len(values)
        where = f"mean over the windows from {lo:g}k to {hi:g}k sequences"
        paper_where = f"mean over {lo:g}k-{hi:g}k sequences"
    if ours is None:
        return f"{name}: {paper_where} the paper has {paper_cost:g} bits; inconclusive: {stop}"
    close = abs(ours - paper_cost) <= max(COST_TOLERANCE * paper_cost, COST_FLOOR)
    verdict = "agrees" if close else ("disagrees: higher" if ours > paper_cost else "disagrees: lower")
    return f"{name}: {ours:.3g} bits {where} (paper: {paper_cost:g} {paper_where}); {verdict}"


def curve_line(summary: Summary, comp: Comparison) -> str:
    """The curve-level figure (compare.py's rule): median curve, then per seed."""
    name = f"{summary.task}, {MODEL_LABELS.get(summary.model, summary.model)}"
    per_seed = ", ".join(f"{'n/a' if d.value is None else f'{d.value:.3f}'} over {d.used} (seed {s})"
                         for d, s in zip(comp.seed_distances, comp.seeds))
    return (f"{name}, whole curve: median |log2((ours + {PLUS_BITS:g}) / (paper + {PLUS_BITS:g}))| "
            f"{comp.distance.text()} (median curve); per seed {per_seed}")


# ---------------------------------------------------------------- the Markdown summary
def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def build_report(runs: list[Run], out: Path, sources: list[Path], threshold: float = DEFAULT_THRESHOLD,
                 note: str = "") -> list[Path]:
    """Write every figure, the aggregate tables and REPORT.md into ``out``; return the paths written.
    A run repeating another (the same task, model, seed and settings) counts once (runs.distinct);
    REPORT.md lists what it left out."""
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

    for figure in FIGURES:
        md += [f"## Fig {figure.number}: {figure.title.lower()} ({figure.task})", ""]
        if figure.task not in by_task:
            md += [f"Missing: no runs of task `{figure.task}` in the given folders.", ""]
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
                continue
            comp = comparison(summary, figure, paper)
            md.append(f"- {curve_line(summary, comp)}")
            md += [f"- {landmark_line(summary, lm, comp)}" for lm in LANDMARKS[figure.task].get(model, [])]
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
            rows.append([MODEL_LABELS[model]] + [
                f"{_num(median(gen.get(f'items_{n}', [])))} ({PAPER_FIG11[model][i]:g})" if s else
                f"missing ({PAPER_FIG11[model][i]:g})" for i, n in enumerate(FIG11_ITEMS)])
        md += [f"![Fig 11]({path.name})", "", "Ours, median across seeds of each run's last evaluation (paper in "
               "brackets):", "", _table(["model"] + [f"{n} items" for n in FIG11_ITEMS], rows), ""]

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
    write_atomic(out / "REPORT.md", "\n".join(md))
    written.append(out / "REPORT.md")
    return written


def main(argv: list[str]) -> list[Path]:
    parser = OneLineParser(prog="ntm-report", description="Build the paper-reproduction report (figures over the "
                           "paper's, tables, REPORT.md) from run or sweep folders.")
    parser.add_argument("folders", type=Path, nargs="+", help="run or sweep folders (any tree of run folders)")
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="report folder (default outputs/report)")
    parser.add_argument("--threshold", type=positive_float, default=DEFAULT_THRESHOLD,
                        help=f"cost in bits per sequence that counts as converged (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--note", default="", help="a paragraph for the top of REPORT.md, e.g. which machine and "
                        "budget made the runs")
    args = parser.parse_args(argv)
    runs = load_runs(args.folders)
    written = build_report(runs, args.out, args.folders, args.threshold, args.note)
    kept, repeats = distinct(runs)
    left = f" ({len(repeats)} more left out as repeats of these, listed in REPORT.md)" if repeats else ""
    print(f"{len(kept)} runs{left}; wrote {len(written)} files in {args.out} (summary: {args.out / 'REPORT.md'})")
    return written
