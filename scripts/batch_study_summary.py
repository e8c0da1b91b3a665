"""The batch-size study's summary: what ``python scripts/batch_study.py summarise`` writes.

``summarise(out)`` records every run under ``out / "runs"`` (scripts/batch_study.py's layout, git-ignored;
each run's task, model, batch size, learning rate and seed taken from its own ``.hydra/config.yaml``) in
``out / "records"`` (committed: a JSON file per run with its setting, logged training curve and mean
clip and epsilon fractions), then reads the records back and writes into ``out``:

- ``seeds.csv``: a row per run: its setting, sequences reached, last covered window's cost, its own
  curve-level figure, sequences to each of the paper's "below" landmarks, and the mean fractions of
  gradient elements clipped and of RMSProp updates dominated by epsilon;
- ``cells.csv``: a row per task x model x batch size x learning-rate factor: the seeds, the median
  curve's curve-level figure and its range over seeds, the landmarks on the median curve and over
  seeds, the fraction of seeds ending below each of the task's STABILITY costs;
- ``batch_study.png``: per task x model, every setting's median curve over the paper's;
- ``repeat_copy_seeds.png`` (when repeat copy NTM-LSTM has runs): the regime issue's check (CHECK),
  each seed's curve per setting;
- ``SUMMARY.md``: a table per task and the best setting per task x model and overall (over the NTM cells;
  cells of an earlier summary under ``out / "archive"`` whose runs were lost before records were kept
  count there, marked, until re-run).

The LSTM baseline's runs (copy only: batch_study.BASELINE_BUDGETS) join their task's table, the CSVs and
the best settings as rows of their own, against the paper's LSTM curve, and get a panel of the figure
when there are any; the overall best setting stays the NTMs' alone.

Every comparison with the paper is by the fixed rule of ``ntm_experiments/compare.py``: costs averaged
into the paper's 10k-sequence windows, the median over seeds per window, a landmark reached at the first
window from which the curve stays below it, the curve-level figure the median over the paper's points
of |log2((ours + 1) / (paper + 1))|.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:  # imported from tests or elsewhere: batch_study sits beside this file
    sys.path.insert(0, str(SCRIPTS))

import batch_study  # noqa: E402
from ntm_experiments.aggregate import MODEL_LABELS  # noqa: E402
from ntm_experiments.compare import (REACHED, WINDOW, Binned, Comparison, Distance, Reach, bin_curve,  # noqa: E402
                                     compare, distance, on_axes, reach, window_end)
from ntm_experiments.errors import ConfigError  # noqa: E402
from ntm_experiments.optim import batch_scaled_lr  # noqa: E402
from ntm_experiments.report import FIGURES, LANDMARKS, load_paper_curves  # noqa: E402
from ntm_experiments.run_state import CLIPPED_TAG, EPS_DOMINANT_TAG  # noqa: E402
from ntm_experiments.runs import load_run, save_figure, write_atomic  # noqa: E402

# Choice: a seed counts as stable below a cost when its last covered 10k window is below it, in bits
# per sequence; per task a strict cost (the paper's converged level) and a loose one (learnt, roughly).
# copy: 0.1 (the paper's landmark) and 1 bit; repeat copy: 1 and 15 (the paper's NTM-LSTM landmarks);
# associative recall: 0.25 (Fig 10's NTM-LSTM at 205k) and 1 bit.
STABILITY = {"copy": (0.1, 1.0), "repeat_copy": (1.0, 15.0), "associative_recall": (0.25, 1.0)}
# The regime issue's check (Fig 7): repeat copy NTM-LSTM, seeds 0, 1 and 2, trained to 25k sequences;
# the median of their training cost at 25k (the logged point there: the mean over the 1,000 sequences
# before it) should be below 15 bits per sequence, as the paper's run is (13.6 bits at 25.5k).
CHECK = {"task": "repeat_copy", "model": "ntm_lstm", "at": 25_000, "seeds": (0, 1, 2), "bits": 15.0}
LR_MATCH = 0.01       # relative difference within which lr / the table's rate names a factor
TIE = 0.05            # curve-level figures within this of the lowest tie for best
FACTOR_ORDER = ("1", "sqrtB", "B", "other")
BATCH_COLOURS = {1: "tab:blue", 4: "tab:orange", 16: "tab:green"}  # any other batch size: tab:purple
FACTOR_STYLES = {"1": "-", "sqrtB": "-.", "B": ":", "other": (0, (6, 2, 1, 2, 1, 2))}  # the paper: black "--"


@functools.cache
def table_lr(task: str, model: str) -> float:
    """The task x model's learning rate in its table row (conf/task_model/)."""
    return batch_study.table_lr(task, model)


def lr_factor(task: str, model: str, batch: int, lr: float) -> str:
    """The name in batch_study.FACTORS[batch] of the factor lr is the table's rate times (relative
    match within LR_MATCH), else "other"."""
    ratio = lr / table_lr(task, model)
    names = batch_study.FACTORS.get(batch, ())
    if not names or not ratio > 0:
        return "other"
    best = min(names, key=lambda f: abs(ratio / batch_study.factor_value(f, batch) - 1))
    return best if abs(ratio / batch_study.factor_value(best, batch) - 1) <= LR_MATCH else "other"


def landmarks(task: str, model: str) -> list[tuple[float, float]]:
    """The paper's "below" landmarks of a task x model, (bits, k sequences), whose window (compare.py's)
    lies within the study's budget for the task x model ([] outside the study)."""
    budget = batch_study.budget(task, model)
    return [(a, b) for kind, a, b in LANDMARKS.get(task, {}).get(model, [])
            if kind == "below" and budget is not None and window_end(b * 1000) <= budget]


def _landmark_costs(tasks=batch_study.TASKS, models=batch_study.ALL_MODELS) -> list[float]:
    """Every landmark cost (bits) of these tasks x models, ascending: one set of CSV columns each."""
    return sorted({bits for t in tasks for m in models for bits, _ in landmarks(t, m)})


LANDMARK_COSTS = _landmark_costs()


def _figure(task: str):
    return next(f for f in FIGURES if f.task == task)


def paper_curve(paper: dict, task: str, model: str) -> tuple[list[tuple[float, float]], float]:
    """The paper's (k sequences, bits) points for a task x model and its figure's y-axis top (bits)."""
    figure = _figure(task)
    return paper.get((figure.key, MODEL_LABELS.get(model, model)), []), figure.ylim[1]


def _mean(values: list[tuple[int, float]] | None) -> float | None:
    kept = [v for _, v in values or [] if math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _median(values) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(kept)) if kept else None


# ---------------------------------------------------------------- reading the runs
@dataclass
class StudyRun:
    """One run of the study, read back from its folder."""
    path: Path
    task: str
    model: str
    batch: int                 # sequences per update (train.batch_size)
    lr: float                  # train.lr
    factor: str                # lr / the table's rate, named as in batch_study.FACTORS, or "other"
    seed: int
    sequences: int             # sequences seen at the last logged training point
    binned: Binned             # the training cost on the paper's 10k windows (compare.bin_curve)
    curve: list[tuple[int, float]]  # (sequences, bits per sequence) as logged
    distance: Distance         # its own curve-level figure against the paper's curve
    clipped: float | None      # mean over logged points of the fraction of gradient elements clipped
    eps_dominant: float | None  # the same for RMSProp updates whose epsilon dominates n - m^2
    diverged: str | None = None  # its FAILED line when it stopped before the budget (the divergence guard)

    @property
    def budget(self) -> int:
        """The study's sequences for this task x model."""
        return batch_study.budget(self.task, self.model)

    @property
    def finished(self) -> bool:
        return self.sequences >= self.budget

    @property
    def final_cost(self) -> float | None:
        """The cost in the last covered window, bits per sequence; None when no window is covered."""
        return float(self.binned.cost[-1]) if len(self.binned.cost) else None

    @property
    def setting(self) -> tuple:
        """(batch, factor, lr when the factor is "other" else None): the runs of one cell share it."""
        return (self.batch, self.factor, float(f"{self.lr:.6g}") if self.factor == "other" else None)


def record_name(task: str, model: str, batch: int, lr: float, seed: int) -> str:
    """A run's record file, relative to the records folder: one per task x model x batch x rate x seed."""
    return f"{task}/b{batch}/{model}_lr{float(f'{lr:.6g}'):g}_seed{seed}.json"


def live_records(runs_root: Path, out: Path) -> list[dict]:
    """A record (RECORD_KEYS) of every run folder under ``runs_root`` with events; each other folder
    skipped with a warning. A record holds all the summary reads of a run: its setting, its logged
    training curve and its mean clip and epsilon fractions."""
    records = []
    for config_path in sorted(runs_root.rglob(".hydra/config.yaml")) if runs_root.is_dir() else []:
        folder = config_path.parent.parent
        if not any(folder.glob("events.out.tfevents.*")):
            print(f"batch_study_summary: {folder}: no TensorBoard events, skipped")
            continue
        try:
            run = load_run(folder)
            cfg = run.config
            task, model = str(cfg.task.name), str(cfg.model.name)
            batch, seed = int(cfg.train.batch_size), int(cfg.seed)
            lr = batch_scaled_lr(float(cfg.train.lr), batch, str(cfg.train.get("lr_batch_scaling", "none")))
        except (ConfigError, AttributeError, KeyError, ValueError, TypeError) as error:
            print(f"batch_study_summary: {folder}: unreadable config ({str(error).splitlines()[0]}), skipped")
            continue
        if task not in batch_study.BUDGETS:
            print(f"batch_study_summary: {folder}: task {task} is not one of the study's, skipped")
            continue
        if batch_study.budget(task, model) is None:
            print(f"batch_study_summary: {folder}: model {model} on {task} is not one of the study's, skipped")
            continue
        records.append({"task": task, "model": model, "batch": batch, "lr": lr, "seed": seed,
                        "sequences": int(run.sequences), "path": _relative(folder, out),
                        "curve": [[int(x), float(y)] for x, y in run.curve],
                        "clipped": _mean(run.scalars.get(CLIPPED_TAG)),
                        "eps_dominant": _mean(run.scalars.get(EPS_DOMINANT_TAG)),
                        "diverged": _failed_line(folder)})
    return records


def _failed_line(folder: Path) -> str | None:
    """The run's FAILED line (ntm_experiments.sweep), None when it has none."""
    path = folder / batch_study.FAILED_NAME
    return (path.read_text().strip() or "failed") if path.is_file() else None


def keep_records(records: list[dict], folder: Path) -> None:
    """Write each live run's record into ``folder`` (committed), replacing one of fewer or as many
    sequences, so the summary survives the runs' folders (git-ignored, and gone with the machine)."""
    for record in records:
        path = folder / record_name(record["task"], record["model"], record["batch"], record["lr"], record["seed"])
        if path.exists():
            try:
                if json.loads(path.read_text())["sequences"] > record["sequences"]:
                    print(f"batch_study_summary: {record['path']}: its record has more sequences, kept")
                    continue
            except (ValueError, KeyError):
                pass  # a damaged record: the live run replaces it
        write_atomic(path, json.dumps(record, separators=(",", ":")) + "\n")


def read_records(folder: Path, out: Path, paper: dict) -> list[StudyRun]:
    """Every run recorded under ``folder``, a run per task x model x setting x seed (of two records of
    the same, the one with more sequences); a record of a task x model outside the study, or unreadable,
    skipped with a warning."""
    found: dict[tuple, StudyRun] = {}
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
            task, model, batch, lr, seed = (str(rec["task"]), str(rec["model"]), int(rec["batch"]),
                                            float(rec["lr"]), int(rec["seed"]))
            curve = [(int(x), float(y)) for x, y in rec["curve"]]
            sequences, run_path = int(rec["sequences"]), out / str(rec["path"])
        except (ValueError, KeyError, TypeError) as error:
            print(f"batch_study_summary: {path}: not a run record ({type(error).__name__}: {error}), skipped")
            continue
        if batch_study.budget(task, model) is None:
            print(f"batch_study_summary: {path}: {model} on {task} is not one of the study's, skipped")
            continue
        points, y_top = paper_curve(paper, task, model)
        binned = bin_curve(curve)
        this = StudyRun(run_path, task, model, batch, lr, lr_factor(task, model, batch, lr), seed, sequences,
                        binned, curve, distance(binned, points, y_top), rec.get("clipped"), rec.get("eps_dominant"),
                        rec.get("diverged"))
        key = (task, model, this.setting, seed)
        if key in found:
            kept, other = sorted([found[key], this], key=lambda r: (r.sequences, str(r.path)), reverse=True)
            print(f"batch_study_summary: {other.path}: the same run as {kept.path}, which has more sequences "
                  "(or a later name), skipped")
            this = kept
        found[key] = this
    return list(found.values())


# ---------------------------------------------------------------- cells
@dataclass
class Cell:
    """A task x model x setting across its seeds."""
    task: str
    model: str
    batch: int
    factor: str
    lr: float              # the table's rate times the factor; the runs' own for "other"
    runs: list[StudyRun]   # sorted by seed
    comparison: Comparison

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def budget(self) -> int:
        """The study's sequences for this task x model."""
        return batch_study.budget(self.task, self.model)

    @property
    def running(self) -> bool:
        """Whether some seed has neither reached the task x model's budget nor diverged yet."""
        return not all(r.finished or r.diverged for r in self.runs)

    @property
    def diverged(self) -> int:
        """Seeds stopped by the divergence guard before the budget."""
        return sum(bool(r.diverged) and not r.finished for r in self.runs)

    @property
    def label(self) -> str:
        return setting_label(self.batch, self.factor, self.lr)

    def stable(self, cost: float) -> int:
        """Seeds whose last covered window is below ``cost`` bits (a seed with none counts as not)."""
        return sum(r.final_cost is not None and r.final_cost < cost for r in self.runs)


def setting_label(batch: int, factor: str, lr: float) -> str:
    return f"B={batch}, lr x {factor}" if factor != "other" else f"B={batch}, lr {lr:g}"


def _place(names: tuple, name: str) -> int:
    """``name``'s place in ``names``; after them all when not there."""
    return names.index(name) if name in names else len(names)


def _order(task: str, model: str, batch: int, factor: str, lr: float) -> tuple:
    """Study order: tasks and models as batch_study lists them (the NTMs, then the baselines), then batch
    size, factor, rate."""
    return (_place(batch_study.TASKS, task), _place(batch_study.ALL_MODELS, model), task, model, batch,
            _place(FACTOR_ORDER, factor), lr)


def make_cells(runs: list[StudyRun], paper: dict) -> list[Cell]:
    """The runs by task x model x setting (cells with no runs do not appear), in study order."""
    groups: dict[tuple, list[StudyRun]] = {}
    for run in runs:
        groups.setdefault((run.task, run.model, run.setting), []).append(run)
    cells = []
    for (task, model, (batch, factor, other_lr)), members in groups.items():
        members = sorted(members, key=lambda r: (r.seed, str(r.path)))
        lr = other_lr if other_lr is not None else float(
            f"{table_lr(task, model) * batch_study.factor_value(factor, batch):.6g}")
        points, y_top = paper_curve(paper, task, model)
        comp = compare([r.curve for r in members], [r.seed for r in members], points, y_top)
        cells.append(Cell(task, model, batch, factor, lr, members, comp))
    return sorted(cells, key=lambda c: _order(c.task, c.model, c.batch, c.factor, c.lr))


# ---------------------------------------------------------------- the CSVs
def _fmt(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _col(bits: float) -> str:
    return f"below_{bits:g}"


def seed_columns() -> list[str]:
    cols = ["task", "model", "batch", "lr_factor", "lr", "seed", "sequences", "budget", "finished", "diverged",
            "final_window_end", "final_window_cost", "curve_figure", "curve_figure_points"]
    for bits in LANDMARK_COSTS:
        cols += [f"{_col(bits)}_status", f"{_col(bits)}_at"]
    return cols + ["clipped_fraction_mean", "eps_dominant_fraction_mean", "path"]


def seed_row(run: StudyRun, root: Path) -> dict[str, str]:
    """One run's row of seeds.csv (a landmark that is not this task x model's, or beyond the budget: empty)."""
    row = {"task": run.task, "model": run.model, "batch": str(run.batch), "lr_factor": run.factor,
           "lr": f"{run.lr:g}", "seed": str(run.seed), "sequences": str(run.sequences), "budget": str(run.budget),
           "finished": str(run.finished).lower(), "diverged": str(bool(run.diverged)).lower(), "final_window_end": str(run.binned.last_end or ""),
           "final_window_cost": _fmt(run.final_cost), "curve_figure": _fmt(run.distance.value),
           "curve_figure_points": f"{run.distance.used}/{run.distance.total}",
           "clipped_fraction_mean": _fmt(run.clipped), "eps_dominant_fraction_mean": _fmt(run.eps_dominant),
           "path": _relative(run.path, root)}
    mine = {bits for bits, _ in landmarks(run.task, run.model)}
    for bits in LANDMARK_COSTS:
        r = reach(run.binned, bits) if bits in mine else None
        row[f"{_col(bits)}_status"] = r.status if r else ""
        row[f"{_col(bits)}_at"] = str(r.at) if r and r.status == REACHED else ""
    return row


def cell_columns() -> list[str]:
    cols = ["task", "model", "batch", "lr_factor", "lr", "seeds", "seed_list", "seeds_finished", "seeds_diverged",
            "sequences_min",
            "budget", "median_last_window_end", "curve_figure", "curve_figure_points", "curve_figure_seed_min",
            "curve_figure_seed_max"]
    for bits in LANDMARK_COSTS:
        cols += [f"{_col(bits)}_{key}" for key in ("paper_k", "median_status", "median_at", "median_first_below",
                                                    "seeds_reached", "seeds_at_median", "seeds_at_min",
                                                    "seeds_at_max")]
    return cols + ["stable_strict_bits", "stable_strict_seeds", "stable_strict_fraction", "stable_loose_bits",
                   "stable_loose_seeds", "stable_loose_fraction", "clipped_fraction_median",
                   "eps_dominant_fraction_median"]


def cell_row(cell: Cell) -> dict[str, str]:
    """One cell's row of cells.csv."""
    comp = cell.comparison
    seed_values = [d.value for d in comp.seed_distances if d.value is not None]
    row = {"task": cell.task, "model": cell.model, "batch": str(cell.batch), "lr_factor": cell.factor,
           "lr": f"{cell.lr:g}", "seeds": str(len(cell.runs)), "seed_list": " ".join(map(str, cell.seeds)),
           "seeds_finished": str(sum(r.finished for r in cell.runs)), "seeds_diverged": str(cell.diverged),
           "sequences_min": str(min(r.sequences for r in cell.runs)), "budget": str(cell.budget),
           "median_last_window_end": str(comp.median.last_end or ""), "curve_figure": _fmt(comp.distance.value),
           "curve_figure_points": f"{comp.distance.used}/{comp.distance.total}",
           "curve_figure_seed_min": _fmt(min(seed_values, default=None)),
           "curve_figure_seed_max": _fmt(max(seed_values, default=None)),
           "clipped_fraction_median": _fmt(_median(r.clipped for r in cell.runs)),
           "eps_dominant_fraction_median": _fmt(_median(r.eps_dominant for r in cell.runs))}
    mine = dict(landmarks(cell.task, cell.model))
    for bits in LANDMARK_COSTS:
        c = _col(bits)
        values = {"paper_k": "", "median_status": "", "median_at": "", "median_first_below": "", "seeds_reached": "",
                  "seeds_at_median": "", "seeds_at_min": "", "seeds_at_max": ""}
        if bits in mine:
            med, per_seed = comp.reach(bits)
            ats = [r.at for r in per_seed if r.status == REACHED]  # sequences, each reaching seed's
            values = {"paper_k": f"{mine[bits]:g}", "median_status": med.status, "median_at": str(med.at or ""),
                      "median_first_below": str(med.first_below or ""), "seeds_reached": str(len(ats)),
                      "seeds_at_median": _fmt(_median(ats)), "seeds_at_min": str(min(ats, default="")),
                      "seeds_at_max": str(max(ats, default=""))}
        row.update({f"{c}_{key}": value for key, value in values.items()})
    for name, bits in zip(("strict", "loose"), STABILITY[cell.task]):
        n = cell.stable(bits)
        row.update({f"stable_{name}_bits": f"{bits:g}", f"stable_{name}_seeds": str(n),
                    f"stable_{name}_fraction": f"{n / len(cell.runs):.4g}"})
    return row


def _csv(columns: list[str], rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- the figure
def _steps(binned: Binned) -> tuple[np.ndarray, np.ndarray]:
    """A binned curve as steps, x in thousands of sequences: each window flat over (end - 10k, end],
    a gap (NaN) where a window is not covered."""
    xs, ys, previous = [], [], None
    for end, cost in zip(binned.ends.tolist(), binned.cost.tolist()):
        if previous is not None and end - WINDOW != previous:
            xs.append(math.nan)
            ys.append(math.nan)
        xs += [(end - WINDOW) / 1000, end / 1000]
        ys += [cost, cost]
        previous = end
    return np.array(xs), np.array(ys)


def _models_shown(cells: list[Cell]) -> tuple[str, ...]:
    """The NTMs, then each baseline that has runs."""
    return batch_study.MODELS + tuple(m for m in batch_study.BASELINES if any(c.model == m for c in cells))


def study_figure(cells: list[Cell], paper: dict):
    """Rows: the study's tasks; columns: its models (a baseline's only when it has runs, its panels only
    on its tasks). Every setting's median binned curve (a colour per batch size, a line style per
    learning-rate factor) over the paper's curve (black, dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, models = batch_study.TASKS, _models_shown(cells)
    fig, axes = plt.subplots(len(tasks), len(models), figsize=(6 * len(models), 3.6 * len(tasks)), squeeze=False,
                             constrained_layout=True)
    for i, task in enumerate(tasks):
        for j, model in enumerate(models):
            ax = axes[i][j]
            if batch_study.budget(task, model) is None:  # a baseline's task x model outside the study
                ax.remove()
                continue
            budget_k = batch_study.budget(task, model) / 1000
            top = 100.0  # bits: the y axis shows at least 0 to 100
            mine = [c for c in cells if c.task == task and c.model == model]
            for cell in mine:
                xs, ys = _steps(cell.comparison.median)
                if not len(xs):
                    continue
                note = f", {len(cell.runs)} seed{'s' if len(cell.runs) != 1 else ''}" + (
                    ", running" if cell.running else "") + (f", {cell.diverged} diverged" if cell.diverged else "")
                ax.plot(xs, ys, color=BATCH_COLOURS.get(cell.batch, "tab:purple"),
                        ls=FACTOR_STYLES[cell.factor], lw=1.4, label=cell.label + note)
                top = max(top, float(np.nanmax(ys)))
            points, y_top = paper_curve(paper, task, model)
            shown = on_axes(points, y_top)
            top = max([top] + [c for x, c in shown if x <= budget_k + WINDOW / 1000])
            if shown:
                ax.plot([x for x, _ in shown], [c for _, c in shown], "k--", marker=".", ms=4, lw=1,
                        label=f"paper ({MODEL_LABELS.get(model, model)})")
            if not any(len(c.comparison.median.ends) for c in mine):
                ax.text(0.5, 0.5, "no whole 10k window yet" if mine else "no runs yet", transform=ax.transAxes,
                        ha="center", va="center", color="grey")
            ax.set_yscale("symlog", linthresh=0.01)  # linear below 0.01 bits, logarithmic above
            ax.set_ylim(0, top * 1.5)
            ax.set_xlim(0, budget_k)
            ax.set_title(f"{task}, {MODEL_LABELS.get(model, model)}", fontsize=10)
            ax.set_xlabel("sequences seen (thousands)")
            ax.set_ylabel("cost per sequence (bits)")
            ax.grid(alpha=0.3, which="both")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="upper right")
    fig.suptitle("Batch-size study: median over seeds on the paper's 10k windows (compare.py)", fontsize=11)
    return fig


# ---------------------------------------------------------------- SUMMARY.md
def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _k(sequences: float | None) -> str:
    return "n/a" if sequences is None else f"{sequences / 1000:g}k"


def _figure_text(cell: Cell) -> str:
    comp = cell.comparison
    value = comp.distance.value
    seeds = [d.value for d in comp.seed_distances if d.value is not None]
    spread = f"{min(seeds):.3f}-{max(seeds):.3f}" if seeds else "n/a"
    return f"{'n/a' if value is None else f'{value:.3f}'} ({spread})"


def _landmark_text(cell: Cell, bits: float) -> str:
    if bits not in dict(landmarks(cell.task, cell.model)):
        return "-"
    med, per_seed = cell.comparison.reach(bits)
    ats = [r.at for r in per_seed if r.status == REACHED]
    over = (f"; seeds {len(ats)}/{len(per_seed)}" +
            (f" (median {_k(_median(ats))}, {_k(min(ats))}-{_k(max(ats))})" if ats else ""))
    return _reach_text(med) + over


def _reach_text(r: Reach) -> str:
    text = r.text()
    return text.replace("not reached within the run", "not reached")


def _best(cells: list[Cell]) -> tuple[list[Cell], float] | None:
    """The cells of lowest curve-level figure (median curve), ties within TIE, and that figure."""
    scored = [c for c in cells if c.comparison.distance.value is not None]
    if not scored:
        return None
    low = min(c.comparison.distance.value for c in scored)
    return [c for c in scored if c.comparison.distance.value <= low + TIE], low


def _running(cell: Cell) -> str:
    """" (running)" and/or " (k diverged)" after a cell's seeds or label."""
    return (" (running)" if cell.running else "") + (f" ({cell.diverged} diverged)" if cell.diverged else "")


def _budgets_text(task: str, models: tuple[str, ...]) -> str:
    """The budget of a task's table: "60k sequences", or per model when they differ."""
    by_budget: dict[int, list[str]] = {}
    for model in models:
        by_budget.setdefault(batch_study.budget(task, model), []).append(MODEL_LABELS.get(model, model))
    if len(by_budget) == 1:
        return f"{next(iter(by_budget)) // 1000:g}k sequences"
    return "; ".join(f"{', '.join(labels)}: {b // 1000:g}k sequences" for b, labels in by_budget.items())


def _baseline_note(task: str, model: str, paper: dict) -> str:
    """What the paper gives a baseline's rows of a task's table: its curve, and its landmarks (report.py)
    when none is a "below" one within the budget (the table then has no landmark column for it)."""
    label = MODEL_LABELS.get(model, model)
    points, y_top = paper_curve(paper, task, model)
    shown = on_axes(points, y_top)
    text = (f"{label}: against the paper's {label} curve (Fig {_figure(task).number}), on its axes from "
            f"{_k(shown[0][0] * 1000)} ({shown[0][1]:g} bits)" if shown else f"{label}: the paper has no curve")
    ks = sorted({b if kind == "below" else a for kind, a, b in LANDMARKS.get(task, {}).get(model, [])
                 if kind in ("below", "at")})  # k sequences
    budget = batch_study.budget(task, model)
    if ks and not landmarks(task, model):
        where = ("lie beyond the" if all(window_end(x * 1000) > budget for x in ks)
                 else "are none of them a \"below\" one within the")
        text += f"; its landmarks ({', '.join(f'{x:g}k' for x in ks)}) {where} {budget // 1000:g}k budget"
    return text + "."


def summary_markdown(cells: list[Cell], n_runs: int, paper: dict | None = None,
                     archived: list[ArchivedCell] = ()) -> str:
    """SUMMARY.md: the command, the rule, a table per task and the best settings."""
    paper = load_paper_curves() if paper is None else paper
    models = _models_shown(cells)
    baselines = models[len(batch_study.MODELS):]
    md = ["# Batch-size study: summary", "",
          "Built by `python scripts/batch_study.py summarise` from the run records under `records/` "
          f"({n_runs} run{'s' if n_runs != 1 else ''}, {len(cells)} cells; a record per run: its setting, logged "
          "training curve and mean clip and epsilon fractions, written from its folder under `runs/`, which "
          "stays local); per run: `seeds.csv`, per cell: "
          "`cells.csv`. Comparison with the paper by the fixed rule of `ntm_experiments/compare.py`: each "
          f"seed's training cost averaged over the paper's {WINDOW // 1000:g}k-sequence windows (whole windows "
          "only), the median over seeds per window; the curve-level figure is the median over the paper's points "
          "(on its axes, inside our windows) of |log2((ours + 1) / (paper + 1))| (0: identical; 1: a factor of "
          "two in cost + 1 bit), given for the median curve with its range over the seeds' own figures; a "
          "landmark cost is reached at the first window from which the curve stays below it. Budgets: "
          + ", ".join(f"{t} {b // 1000:g}k sequences" for t, b in batch_study.BUDGETS.items())
          + "".join(f", {t} {MODEL_LABELS.get(m, m)} {b // 1000:g}k sequences"
                    for (t, m), b in batch_study.BASELINE_BUDGETS.items() if m in baselines) + ". Settings: "
          "B = sequences per update; lr = the table's rate x 1, sqrt(B) or B. Stable: seeds whose last covered "
          "window is below the cost. \"(running)\": some seed has not reached the budget yet; \"(k diverged)\": k seeds "
          "were stopped before it by the divergence guard (non-finite steps after 3 restores; not retried), "
          "their curves counted up to there.", "",
          "![batch study](batch_study.png)", ""]
    if not cells:
        md += ["No runs yet.", ""]
    for task in batch_study.TASKS:
        mine = [c for c in cells if c.task == task]
        if not mine:
            continue
        here = tuple(m for m in models if batch_study.budget(task, m) is not None)
        costs = sorted({bits for m in here for bits, _ in landmarks(task, m)})
        heads = []
        for bits in costs:
            paper_k = ", ".join(f"{MODEL_LABELS.get(m, m)} {dict(landmarks(task, m))[bits]:g}k"
                                for m in here if bits in dict(landmarks(task, m)))
            heads.append(f"below {bits:g} bits (paper: {paper_k}): median curve; seeds reaching it")
        strict, loose = STABILITY[task]
        header = (["model", "setting", "seeds", "curve-level figure: median curve (seeds' range)"] + heads +
                  [f"stable < {strict:g} / < {loose:g} bits", "clipped / eps-dominant (median of run means)"])
        rows = []
        for cell in mine:
            n = len(cell.runs)
            rows.append([MODEL_LABELS.get(cell.model, cell.model), f"{cell.label} ({cell.lr:g})",
                         f"{n} ({', '.join(map(str, cell.seeds))}){_running(cell)}", _figure_text(cell)] +
                        [_landmark_text(cell, bits) for bits in costs] +
                        [f"{cell.stable(strict)}/{n}, {cell.stable(loose)}/{n}",
                         f"{_fmt3(_median(r.clipped for r in cell.runs))} / "
                         f"{_fmt3(_median(r.eps_dominant for r in cell.runs))}"])
        md += [f"## {task} ({_budgets_text(task, here)})", "", _table(header, rows), ""]
        notes = [_baseline_note(task, m, paper) for m in here if m in baselines]
        md += [" ".join(notes), ""] if notes else []

    md += check_markdown(cells)
    md += archive_markdown(list(archived))
    md += overall_markdown(cells, list(archived))
    md += ["## Best settings (lowest curve-level figure of the median curve; ties within "
           f"{TIE:g} listed together)", ""]
    for task in batch_study.TASKS:
        for model in models:
            best = _best([c for c in cells if c.task == task and c.model == model])
            if best is None:
                continue
            chosen, _ = best
            md.append(f"- {task}, {MODEL_LABELS.get(model, model)}: " + "; ".join(
                f"{c.label} ({c.comparison.distance.value:.3f}){_running(c)}" for c in chosen))
    md.append(f"- overall: {overall_best(cells, archived)}")
    return "\n".join(md) + "\n"


def _fmt3(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


@dataclass
class ArchivedCell:
    """A cell of an earlier summary (``archive/<name>/cells.csv``) whose runs were lost before their
    records were kept: its figure stands, marked, until the cell is re-run."""
    task: str
    model: str
    batch: int
    factor: str
    lr: float
    seeds: str             # the seed list, e.g. "0 1 2"
    running: bool          # some seed had not reached the budget
    figure: float | None   # the curve-level figure of the median curve
    source: str            # the archive's folder name


def read_archive(folder: Path, cells: list[Cell]) -> list[ArchivedCell]:
    """The archived NTM cells under ``folder`` (``<name>/cells.csv``, the newest name first) that no
    recorded cell replaces, in study order."""
    have = {(c.task, c.model, c.batch, c.factor) for c in cells}
    found: dict[tuple, ArchivedCell] = {}
    for path in sorted(folder.glob("*/cells.csv"), reverse=True) if folder.is_dir() else []:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                key = (row["task"], row["model"], int(row["batch"]), row["lr_factor"])
                if key in have or key in found or row["model"] not in batch_study.MODELS:
                    continue
                found[key] = ArchivedCell(*key, float(row["lr"]), row["seed_list"],
                                          int(row["seeds_finished"]) + int(row.get("seeds_diverged") or 0)
                                          < int(row["seeds"]),
                                          float(row["curve_figure"]) if row["curve_figure"] else None,
                                          path.parent.name)
    return sorted(found.values(), key=lambda c: _order(c.task, c.model, c.batch, c.factor, c.lr))


def archive_markdown(archived: list[ArchivedCell]) -> list[str]:
    """SUMMARY.md's section on the archived cells (none: no section)."""
    if not archived:
        return []
    rows = [[c.task, MODEL_LABELS.get(c.model, c.model), f"{setting_label(c.batch, c.factor, c.lr)} ({c.lr:g})",
             c.seeds + (" (running)" if c.running else ""), _fmt3(c.figure), f"archive/{c.source}/"]
            for c in archived]
    return ["## Archived cells (runs lost before their records were kept; not re-run yet)", "",
            "Measured with the same code and rule; their curves are not in `records/`, so they are not in the "
            "tables or the figure above, only in the overall line below, marked.", "",
            _table(["task", "model", "setting", "seeds", "curve-level figure (median curve)", "from"], rows), ""]


def setting_figures(cells: list[Cell], archived: list[ArchivedCell] = ()) -> dict[tuple, dict]:
    """Per setting (batch, factor, lr for "other"): its label and, per NTM task x model, (figure of the
    median curve, running, archived); an archived cell only where no recorded cell of its own is."""
    table: dict[tuple, dict] = {}
    for c, figure, archived_cell in ([(c, c.comparison.distance.value, False) for c in cells]
                                     + [(c, c.figure, True) for c in archived]):
        if c.model in batch_study.MODELS and figure is not None:
            key = (c.batch, c.factor, c.lr if c.factor == "other" else None)
            entry = table.setdefault(key, {"label": setting_label(c.batch, c.factor, c.lr), "cells": {}})
            entry["cells"][(c.task, c.model)] = (figure, c.running, archived_cell)
    return table


def overall_markdown(cells: list[Cell], archived: list[ArchivedCell] = ()) -> list[str]:
    """SUMMARY.md's table of every setting's figures over the NTM task x model cells and their median."""
    table = setting_figures(cells, archived)
    if not table:
        return []
    pairs = [(t, m) for t in batch_study.TASKS for m in batch_study.MODELS]
    header = ["setting"] + [f"{t} {MODEL_LABELS.get(m, m)}" for t, m in pairs] + ["median (cells)"]
    rows = []
    for key in sorted(table, key=lambda k: (k[0], _place(FACTOR_ORDER, k[1]), k[2] or 0)):
        entry = table[key]
        row = [entry["label"]]
        for pair in pairs:
            got = entry["cells"].get(pair)
            row.append("" if got is None else f"{got[0]:.3f}" + ("*" if got[2] else "") + (" (running)" if got[1] else ""))
        figures = [f for f, _, _ in entry["cells"].values()]
        row.append(f"{float(np.median(figures)):.3f} ({len(figures)})")
        rows.append(row)
    return ["## Every setting over the six NTM cells (curve-level figure of the median curve; * archived)", "",
            _table(header, rows), ""]


def overall_best(cells: list[Cell], archived: list[ArchivedCell] = ()) -> str:
    """The setting(s) of lowest median, over the NTM task x model cells (a baseline's left out), of the
    median curve's figure; an archived cell counts where no recorded cell of its task x model x setting
    is. Only settings with a figure in the most such cells compete (a setting missing cells would be
    ranked on fewer); ties within TIE listed together."""
    table = setting_figures(cells, archived)
    if not table:
        return "n/a (no NTM cell has a curve-level figure yet)"
    most = max(len(v["cells"]) for v in table.values())
    medians = {key: float(np.median([f for f, _, _ in v["cells"].values()]))
               for key, v in table.items() if len(v["cells"]) == most}
    low = min(medians.values())
    chosen = sorted((key for key, m in medians.items() if m <= low + TIE), key=lambda k: medians[k])
    total = len(batch_study.TASKS) * len(batch_study.MODELS)
    texts = []
    for key in chosen:
        members = table[key]["cells"].values()
        old = sum(a for _, _, a in members)
        texts.append(f"{table[key]['label']} (median {medians[key]:.3f} over {most} of {total} NTM task x model cells"
                     f"{f', {old} of them archived' if old else ''})"
                     f"{' (running)' if any(r for _, r, _ in members) else ''}")
    return "; ".join(texts)


# ---------------------------------------------------------------- the regime issue's check
def cost_at(curve: list[tuple[int, float]], at: int) -> float | None:
    """The logged training cost at the last point at or before ``at`` sequences (None before the first)."""
    before = [cost for seen, cost in curve if seen <= at]
    return before[-1] if before else None


def first_below(curve: list[tuple[int, float]], bits: float) -> int | None:
    """Sequences at the first logged point below ``bits`` (None if none is)."""
    return next((seen for seen, cost in curve if cost < bits), None)


def check_cells(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c.task == CHECK["task"] and c.model == CHECK["model"]]


def check_markdown(cells: list[Cell]) -> list[str]:
    """Per setting of the check's task x model: each seed's cost at the check's point, the median of the
    check's seeds, and where each seed first logs a cost below the check's bits (leaves the plateau)."""
    mine = check_cells(cells)
    if not mine:
        return []
    at, bits, want = CHECK["at"], CHECK["bits"], CHECK["seeds"]
    rows = []
    for cell in mine:
        by_seed = {r.seed: r for r in cell.runs}
        costs = {seed: cost_at(r.curve, at) for seed, r in by_seed.items()}
        left = {seed: first_below(r.curve, bits) for seed, r in by_seed.items()}
        chosen = [costs.get(seed) for seed in want]
        median = _median(chosen) if all(c is not None for c in chosen) else None
        verdict = "n/a" if median is None else ("yes" if median < bits else "no")
        rows.append([f"{cell.label} ({cell.lr:g})",
                     ", ".join(f"{seed}: {_fmt3(costs[seed])}" for seed in sorted(costs)),
                     f"{_fmt3(median)} ({verdict})",
                     f"{sum(1 for c in costs.values() if c is not None and c < bits)}/{len(costs)}",
                     ", ".join(f"{seed}: {_k(left[seed]) if left[seed] else 'never'}" for seed in sorted(left))])
    header = ["setting", f"cost at {at // 1000:g}k, per seed (bits)",
              f"median of seeds {', '.join(map(str, want))} < {bits:g}?", f"seeds below {bits:g} at {at // 1000:g}k",
              f"first logged point below {bits:g} bits, per seed (within the run)"]
    return [f"## The regime issue's check: {CHECK['task']} {MODEL_LABELS.get(CHECK['model'], CHECK['model'])}, "
            f"seeds {', '.join(map(str, want))} below {bits:g} bits at {at // 1000:g}k", "",
            "The paper's run is at 13.6 bits at 25.5k (Fig 7). Every run starts on a plateau near 150 bits "
            "(the cost of outputting the mean) and leaves it at a point that depends on the seed far more "
            "than on the setting; a run passes the check only if it has left it by 25k. Per-seed curves: "
            "`repeat_copy_seeds.png`.", "", _table(header, rows), ""]


def check_figure(cells: list[Cell], paper: dict):
    """A panel per setting of the check's task x model: each seed's logged curve over the paper's, with
    the check's point (25k) and cost (15 bits) marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = check_cells(cells)
    fig, axes = plt.subplots(1, len(mine), figsize=(4.2 * len(mine), 3.6), squeeze=False, sharey=True,
                             constrained_layout=True)
    points, y_top = paper_curve(paper, CHECK["task"], CHECK["model"])
    shown = on_axes(points, y_top)
    for ax, cell in zip(axes[0], mine):
        for run in cell.runs:
            ax.plot([s / 1000 for s, _ in run.curve], [c for _, c in run.curve], lw=0.9, label=f"seed {run.seed}")
        if shown:
            ax.plot([x for x, _ in shown], [c for _, c in shown], "k--", marker=".", ms=4, lw=1, label="paper")
        ax.axvline(CHECK["at"] / 1000, color="grey", lw=0.8)
        ax.axhline(CHECK["bits"], color="grey", lw=0.8, ls=":")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlim(0, batch_study.budget(cell.task, cell.model) / 1000)
        ax.set_title(f"{cell.label} ({cell.lr:g})", fontsize=9)
        ax.set_xlabel("sequences seen (thousands)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("cost per sequence (bits)")
    fig.suptitle(f"{CHECK['task']}, {MODEL_LABELS.get(CHECK['model'], CHECK['model'])}: every seed, as logged "
                 f"(grey: {CHECK['at'] // 1000:g}k sequences, {CHECK['bits']:g} bits)", fontsize=10)
    return fig


# ---------------------------------------------------------------- entry point
def summarise(out: Path) -> list[Path]:
    """Record every run under ``out / "runs"`` in ``out / "records"`` (keep_records), then read the
    records back and write seeds.csv, cells.csv, batch_study.png and SUMMARY.md into ``out`` (each
    atomically); return the paths written. The summary is the records' alone: a fresh clone, with no
    runs, writes the same files."""
    out = Path(out)
    paper = load_paper_curves()
    keep_records(live_records(out / "runs", out), out / "records")
    runs = read_records(out / "records", out, paper)
    cells = make_cells(runs, paper)
    seed_rows = [seed_row(r, out) for c in cells for r in c.runs]
    written = []
    for name, text in (("seeds.csv", _csv(seed_columns(), seed_rows)),
                       ("cells.csv", _csv(cell_columns(), [cell_row(c) for c in cells]))):
        write_atomic(out / name, text)
        written.append(out / name)
    save_figure(study_figure(cells, paper), out / "batch_study.png")
    written.append(out / "batch_study.png")
    if check_cells(cells):
        save_figure(check_figure(cells, paper), out / "repeat_copy_seeds.png")
        written.append(out / "repeat_copy_seeds.png")
    write_atomic(out / "SUMMARY.md", summary_markdown(cells, len(runs), paper, read_archive(out / "archive", cells)))
    written.append(out / "SUMMARY.md")
    return written
