"""Shared helpers: compose the real Hydra config, run the real CLI, read real event files."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ntm_experiments.config import config_dir
from ntm_experiments.optim import GravesRMSprop
from ntm_experiments.tasks import Task, make_task

# One torch thread per test process: with pytest-xdist a worker per core shares the cores already,
# and two threads per worker would only compete for them.
torch.set_num_threads(1)

# Without a GPU, the fused Triton core's kernels run in Triton's interpreter (tests/test_triton.py).
# Set before anything defines them; on a machine with CUDA they are compiled for it instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

@pytest.fixture(scope="session", autouse=True)
def native_core_built():
    """Build (or load) the native core before any test: with train.fast_path=auto any NTM run on the
    CPU uses it once it is cached, so every test must see the same cache state, whatever the order
    the tests run in (a machine without a compiler: nothing is cached, for every test alike)."""
    from ntm_experiments.fast.native import NativeUnavailable, load_extension

    try:
        load_extension()
    except NativeUnavailable:
        pass


TASKS = ["copy", "repeat_copy", "associative_recall", "ngrams", "priority_sort"]
MODELS = ["ntm_ff", "ntm_lstm", "lstm"]
# a small, fast run for CLI tests: real code paths, tiny sizes
TINY = ["model.controller_size=16", "model.memory_rows=16", "model.memory_width=6", "train.batch_size=8",
        "train.log_every=32", "train.checkpoint_every=64", "eval.sequences=4", "progress=false"]


def compose_config(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


@functools.cache
def _composed(group: str, name: str) -> dict:
    """conf/<group>/<name>.yaml as composed (schema, shared includes), without a task_model row."""
    return OmegaConf.to_container(compose_config(f"{group}={name}", "~task_model")[group])


def conf_settings(group: str, name: str, **overrides) -> dict:
    """The keywords make_task / make_model pass for conf/<group>/<name>.yaml (every key but
    ``name``), with ``overrides``: a test builds a task or model from the config, so no value is
    written down twice."""
    values = dict(_composed(group, name))
    values.pop("name")
    unknown = set(overrides) - set(values)
    assert not unknown, f"{group}/{name} has no {', '.join(sorted(unknown))} (keys: {', '.join(values)})"
    return {**values, **overrides}


def graves_rmsprop(params, **overrides) -> GravesRMSprop:
    """The optimiser with conf/config.yaml's train.lr, decay, momentum and eps, and ``overrides``."""
    train = compose_config().train
    settings = {"lr": train.lr, "decay": train.decay, "momentum": train.momentum, "eps": train.eps, **overrides}
    return GravesRMSprop(params, **settings)


def build_task(name: str, **overrides) -> Task:
    """The task conf/task/<name>.yaml describes, with ``overrides``."""
    return make_task({"name": name, **conf_settings("task", name, **overrides)})


def ntm_train_exe() -> str:
    exe = shutil.which("ntm-train") or str(Path(sys.executable).with_name("ntm-train"))
    assert Path(exe).exists(), "ntm-train is not installed: pip install -e '.[test]'"
    return exe


def run_cli(args: list[str], cwd: Path, timeout: float = 240, exe: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # one torch thread per training subprocess: on CI's 2 cores, pytest and the subprocess would
    # otherwise oversubscribe them (tiny models gain nothing from a second thread)
    full_env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([exe or ntm_train_exe(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one scalar tag, read back from the run's event files."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def run_dirs(root: Path) -> list[Path]:
    """Folders under root that hold a checkpoint, i.e. finished or checkpointed runs."""
    return sorted(p.parent for p in root.rglob("checkpoint.pt"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory outside the repository (ntm-train must find conf/ from anywhere)."""
    d = tmp_path / "work"
    d.mkdir()
    return d
