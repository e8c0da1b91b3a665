"""The paper's five tasks (§4.1-4.5), each a batch generator with its cost in bits."""

from __future__ import annotations

from typing import Any, Mapping

from .associative_recall import AssociativeRecall
from .base import Batch, EvalSetting, Task, cost_bits
from .copy import Copy
from .ngrams import NGrams, optimal_predictions
from .priority_sort import PrioritySort
from .repeat_copy import RepeatCopy

TASKS: dict[str, type[Task]] = {
    "copy": Copy,
    "repeat_copy": RepeatCopy,
    "associative_recall": AssociativeRecall,
    "ngrams": NGrams,
    "priority_sort": PrioritySort,
}


def make_task(cfg: Mapping[str, Any]) -> Task:
    """Build a task from its config node (``cfg.task``): ``name`` picks the class, every other key is
    one of its keyword arguments (all required: the values live in conf/task/)."""
    settings = dict(cfg)
    name = settings.pop("name")
    if name not in TASKS:
        raise ValueError(f"task.name={name}: allowed values are {', '.join(TASKS)}")
    return TASKS[name](**settings)


__all__ = ["Batch", "EvalSetting", "Task", "TASKS", "make_task", "cost_bits", "optimal_predictions",
           "Copy", "RepeatCopy", "AssociativeRecall", "NGrams", "PrioritySort"]
