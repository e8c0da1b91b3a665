"""Generalisation evaluations and their pictures (the paper's Figs 4-6, 8-9, 11-14).

Each task owns its suite (``Task.suite``); this module scores a model on it with fixed
sequences, and draws one example per setting: input, target and output side by side, and
for an NTM its write and read weightings and add vectors over time.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from .models import NTM  # noqa: E402
from .tasks import Batch, EvalSetting, NGrams, Task, cost_bits, optimal_predictions  # noqa: E402

CHUNK = 256  # sequences per forward pass, to bound memory on long settings


@dataclass
class Result:
    setting: str
    sequences: int
    cost_bits: float           # mean cost per sequence, bits
    wrong_bits: float          # mean per sequence: scored bits on the wrong side of 1/2
    target_bits: float         # mean scored bits per sequence
    optimal_cost_bits: float | None = None  # N-grams: the Bayes-optimal estimator (eq. 10) on the same sequences


def eval_suite(task: Task, eval_cfg: Any) -> list[EvalSetting]:
    """The settings a run is evaluated on: the task's suite (``Task.suite``), its main size
    replaced by ``eval.lengths`` when that is set."""
    return task.suite(list(eval_cfg.lengths) if eval_cfg.lengths else None)


def setting_batch(task: Task, setting: EvalSetting, count: int, seed: int, index: int) -> Batch:
    """The fixed sequences of one setting: the same for every evaluation of every run."""
    generator = torch.Generator().manual_seed(seed + 7919 * index)
    return task.sample(count, generator, **setting.setting)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, eval_cfg: Any, device: torch.device | str = "cpu") -> list[Result]:
    """Score ``model`` on the task's generalisation suite; returns one Result per setting."""
    was_training = model.training
    model.eval()
    results = []
    for index, setting in enumerate(eval_suite(task, eval_cfg)):
        count = setting.sequences or eval_cfg.sequences
        batch = setting_batch(task, setting, count, eval_cfg.seed, index)
        cost = wrong = bits = optimal = 0.0
        for start in range(0, count, CHUNK):
            part = Batch(*(t[:, start:start + CHUNK] for t in batch)).to(device)
            logits = model(part.inputs)
            cost += task.cost(logits, part).sum().item()
            wrong += (((logits > 0).float() != part.targets).float() * part.mask).sum().item()
            bits += part.mask.sum().item()
        if isinstance(task, NGrams):
            probs = optimal_predictions(batch.targets[:, :, 0], task.context).clamp(1e-7, 1 - 1e-7)
            optimal = cost_bits(torch.logit(probs)[:, :, None], batch.targets, batch.mask).mean().item()
        results.append(Result(setting.name, count, cost / count, wrong / count, bits / count,
                              optimal if isinstance(task, NGrams) else None))
    model.train(was_training)
    return results


def results_table(results: list[Result]) -> str:
    """A plain-text table of results, for the terminal."""
    has_optimal = any(r.optimal_cost_bits is not None for r in results)
    head = f"{'setting':<28}{'sequences':>10}{'cost (bits/seq)':>17}{'wrong bits/seq':>16}{'target bits':>13}"
    head += f"{'optimal':>10}" if has_optimal else ""
    lines = [head, "-" * len(head)]
    for r in results:
        line = f"{r.setting:<28}{r.sequences:>10}{r.cost_bits:>17.3f}{r.wrong_bits:>16.2f}{r.target_bits:>13.1f}"
        line += f"{r.optimal_cost_bits:>10.3f}" if has_optimal else ""
        lines.append(line)
    return "\n".join(lines)


def as_dicts(results: list[Result]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


# ------------------------------------------------------------------ pictures
def used_rows(weights: torch.Tensor, margin: int = 2) -> list[int]:
    """The memory rows worth drawing: the shortest circular window holding every row that some
    step weights above 1 %, plus a margin (memory is circular, so the window may wrap).
    weights: (N, T). Returns row indices in display order."""
    n = weights.shape[0]
    used = (weights.max(dim=1).values > 0.01).tolist()
    if all(used) or not any(used):
        return list(range(n))
    # the longest circular run of unused rows is left out
    best_len, best_start, run = 0, 0, 0
    for k in range(2 * n):
        run = run + 1 if not used[k % n] else 0
        if run > best_len:
            best_len, best_start = min(run, n), (k - run + 1) % n
    start = (best_start + best_len - margin) % n
    length = n - best_len + 2 * margin
    if length >= n:
        return list(range(n))
    return [(start + k) % n for k in range(length)]


def _panel(ax, image: torch.Tensor, label: str, cmap: str = "gray_r", vmin: float = 0.0, vmax: float = 1.0,
           rows: list[int] | None = None):
    """image: (rows, T); time runs left to right. With rows, the y axis names memory rows."""
    shown = ax.imshow(image.numpy(), aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax,
                      origin="upper")
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if rows is None:
        ax.set_yticks([])
    else:
        ticks = list(range(0, len(rows), max(1, len(rows) // 6)))
        ax.set_yticks(ticks, [str(rows[k]) for k in ticks], fontsize=7)
    return shown


@torch.no_grad()
def example_figure(model: nn.Module, task: Task, setting: EvalSetting, seed: int,
                   device: torch.device | str = "cpu", result: Result | None = None) -> plt.Figure:
    """One example of ``setting``: inputs, targets, outputs (and NTM weightings/adds) over time.
    The title gives this one example's cost, named as such, and with ``result`` (the setting's
    evaluation) the mean over the evaluation's sequences beside it, named as that."""
    was_training = model.training
    model.eval()
    example = task.example(seed, **setting.setting)
    if isinstance(model, NTM):
        logits, trace = model(example.inputs.to(device), trace=True)
        trace = type(trace)(*(t.cpu() for t in trace))
    else:
        logits, trace = model(example.inputs.to(device)), None
    model.train(was_training)
    outputs = torch.sigmoid(logits.cpu())[:, 0]  # (T, O)
    inputs, targets, mask = example.inputs[:, 0], example.targets[:, 0], example.mask[:, 0]
    cost = cost_bits(logits.cpu(), example.targets, example.mask).item()
    title = f"{task.name}, {setting.name}: this example {cost:.2f} bits"
    if result is not None:
        title += (f"; mean over the evaluation's {result.sequences} sequences {result.cost_bits:.2f} bits "
                  f"(eval/{result.setting}/cost_bits_per_sequence)")
    else:
        title += " (one sequence, not an evaluation's mean)"

    if isinstance(task, NGrams):
        return _ngram_figure(task, targets[:, 0], outputs[:, 0], title)

    panels = [("inputs", inputs.T, "gray_r", 0, 1, None), ("targets", (targets * mask).T, "gray_r", 0, 1, None),
              ("outputs", (outputs * (mask > 0)).T, "gray_r", 0, 1, None)]
    if trace is not None:
        write, read = trace.write_weights[:, 0, 0].T, trace.read_weights[:, 0, 0].T  # (N, T), first heads
        rows = used_rows(torch.cat([write, read], dim=1))
        add = trace.adds[:, 0, 0]  # (T, M), first write head
        limit = max(float(add.abs().max()), 1e-6)
        panels += [("write\nweighting\n(memory row)", write[rows], "magma_r", 0, 1, rows),
                   ("read\nweighting\n(memory row)", read[rows], "magma_r", 0, 1, rows),
                   ("add vectors", add.T, "RdBu_r", -limit, limit, None)]
    heights = [max(2, p[1].shape[0]) ** 0.5 for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.09 * inputs.shape[0] + 2), 1.2 + 0.45 * sum(heights)),
                             gridspec_kw={"height_ratios": heights}, sharex=True, constrained_layout=True)
    for ax, (label, image, cmap, vmin, vmax, rows) in zip(axes, panels):
        shown = _panel(ax, image, label, cmap, vmin, vmax, rows)
        fig.colorbar(shown, ax=ax, fraction=0.02, pad=0.01)
    axes[-1].set_xlabel("time step")
    caption = "rows: inputs / targets / outputs (scored steps only), black = 1"
    if trace is not None:
        caption += "; head 1's weightings over the memory rows it used, and its add vectors"
    width_chars = int(fig.get_figwidth() * 14)
    fig.suptitle(textwrap.fill(title, width_chars) + "\n" + textwrap.fill(caption, width_chars), fontsize=9)
    return fig


def _ngram_figure(task: NGrams, bits: torch.Tensor, predicted: torch.Tensor, title: str) -> plt.Figure:
    """Fig 14: the model's P(next bit = 1) beside the optimal estimator's, over one sequence."""
    optimal = optimal_predictions(bits[:, None], task.context)[:, 0]
    fig, ax = plt.subplots(figsize=(10, 3), constrained_layout=True)
    steps = torch.arange(len(bits))
    ax.plot(steps, optimal, label="optimal estimator (eq. 10)", color="tab:orange", lw=1.2)
    ax.plot(steps, predicted, label="network", color="tab:blue", lw=1.0)
    ax.scatter(steps, bits, s=4, color="black", label="bit", zorder=3)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("time step")
    ax.set_ylabel("P(next bit = 1)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(textwrap.fill(title, 120), fontsize=9)
    return fig


def capacity_warnings(task: Task, memory_rows: int | None, eval_cfg: Any) -> list[str]:
    """One line per setting (training, then the suite) whose sequences hold more vectors than
    the memory has rows: such a setting can still be scored, but never exactly."""
    if not memory_rows:
        return []
    settings = [EvalSetting("training", {})] + eval_suite(task, eval_cfg)
    return [f"{task.name} {s.name}: up to {task.vectors_to_store(**s.setting)} vectors to store in "
            f"{memory_rows} memory rows; generalisation past {memory_rows} rows cannot be exact"
            for s in settings if task.vectors_to_store(**s.setting) > memory_rows]


def log_evaluation(writer, model: nn.Module, task: Task, eval_cfg: Any, step: int,
                   device: torch.device | str = "cpu") -> list[Result]:
    """Evaluate and write the numbers (and pictures) to TensorBoard at ``step`` sequences."""
    results = evaluate(model, task, eval_cfg, device)
    for r in results:
        writer.add_scalar(f"eval/{r.setting}/cost_bits_per_sequence", r.cost_bits, step)
        writer.add_scalar(f"eval/{r.setting}/wrong_bits_per_sequence", r.wrong_bits, step)
        if r.optimal_cost_bits is not None:
            writer.add_scalar(f"eval/{r.setting}/optimal_cost_bits_per_sequence", r.optimal_cost_bits, step)
    if eval_cfg.pictures:
        for setting, result in zip(eval_suite(task, eval_cfg), results):
            writer.add_figure(f"examples/{setting.name}",
                              example_figure(model, task, setting, eval_cfg.seed, device, result), step, close=True)
    return results


__all__ = ["Result", "eval_suite", "evaluate", "capacity_warnings", "results_table", "example_figure", "log_evaluation", "as_dicts"]
