"""The paper's learning curves as data: its figures (Figs 3, 7, 10, 13, 18: task, axes) and the points
read off them (``data/figure_curves.csv``), for the report, the batch-size study and each run's
TensorBoard (``paper_curve``: the curve a run of a task x model is compared with)."""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

# our model names -> the paper's legend names (the names of its curves in data/figure_curves.csv)
PAPER_MODEL_NAMES = {"ntm_ff": "NTM-FF", "ntm_lstm": "NTM-LSTM", "lstm": "LSTM"}


@dataclass(frozen=True)
class Figure:
    number: int
    key: str      # the figure's name in figure_curves.csv
    task: str
    title: str
    xmax: float   # the paper's x axis, thousands of sequences
    ylim: tuple[float, float]  # the paper's y axis, bits per sequence


FIGURES = [
    Figure(3, "fig3_copy", "copy", "Copy learning curves", 1000, (0, 10)),
    Figure(7, "fig7_repeatcopy", "repeat_copy", "Repeat copy learning curves", 500, (0, 200)),
    Figure(10, "fig10_assoc", "associative_recall", "Associative recall learning curves", 1000, (0, 20)),
    Figure(13, "fig13_ngram", "ngrams", "Dynamic N-grams learning curves", 1000, (130, 160)),
    Figure(18, "fig18_sort", "priority_sort", "Priority sort learning curves", 1000, (0, 140)),
]


@functools.cache
def _curves() -> dict[tuple[str, str], tuple[tuple[float, float], ...]]:
    text = resources.files("ntm_experiments.data").joinpath("figure_curves.csv").read_text()
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        curves.setdefault((row["figure"], row["model"]), []).append((float(row["x"]), float(row["cost_bits"])))
    return {key: tuple(sorted(points)) for key, points in curves.items()}


def load_paper_curves() -> dict[tuple[str, str], list[tuple[float, float]]]:
    """The points read off the paper's figures, by (figure, paper model name), sorted by x.
    x is in thousands of sequences (fig11_assoc_gen: number of items); cost in bits per sequence."""
    return {key: list(points) for key, points in _curves().items()}


def paper_curve(task: str, model: str) -> list[tuple[int, float]]:
    """The paper's learning curve for a run of ``task`` x ``model`` as (sequences, bits per
    sequence), its points on the figure's axes only (at its y-axis top the curve is off the plot
    and the reading only a lower bound: compare.on_axes); [] when the paper has none."""
    figure = next((f for f in FIGURES if f.task == task), None)
    if figure is None or model not in PAPER_MODEL_NAMES:
        return []
    points = _curves().get((figure.key, PAPER_MODEL_NAMES[model]), ())
    return [(round(x * 1000), c) for x, c in points if x > 0 and c < figure.ylim[1]]
