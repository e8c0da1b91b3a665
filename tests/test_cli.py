"""The real ntm-train console script, run as a subprocess from a directory outside the repo."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import TINY, ntm_train_exe, run_cli, run_dirs, scalars
from ntm_experiments.train import COST_TAG

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, names", [
    (["modle=x"], ["modle", "allowed: task, model"]),
    (["train.lr=abc"], ["train.lr=abc", "Float"]),
    (["task=nonexistent"], ["task/nonexistent", "copy", "priority_sort"]),
    (["model=ntm_ff", "model.controler_size=3"], ["controler_size", "controller_size"]),
    (["train.lr=0"], ["train.lr=0", "> 0"]),
    (["train.batch_size=0"], ["train.batch_size=0", "> 0"]),
    (["device=cuda:7"] if not torch.cuda.is_available() else ["device=tpu"], ["device="]),
    (["resume=true"], ["resume=true", "no run with a checkpoint"]),
    (["train.fast_path_core=fused"], ["train.fast_path_core=fused", "native, sequence, step, triton"]),
])
def test_bad_input_gives_one_clear_line_and_exit_2(workdir, args, names):
    result = run_cli([*args, "train.total_sequences=16", "progress=false"], cwd=workdir, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ntm-train: error: ")
    for name in names:
        assert name in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(workdir.rglob("checkpoint.pt")) and not list(workdir.rglob("events.out.tfevents.*"))
    assert not list(workdir.iterdir())  # not even an empty run folder is left behind


def test_a_sweep_stopped_by_bad_input_before_any_job_exits_2_not_1(workdir):
    """1 is for a sweep whose jobs ran and some failed; a sweep that cannot start is bad input."""
    result = run_cli(["-m", "modle=x,y", "train.total_sequences=16", "progress=false"], cwd=workdir, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntm-train: error: ") and "modle" in lines[0], result.stderr
    assert not list(workdir.rglob(".hydra")) and not list(workdir.rglob("events.out.tfevents.*"))  # no job started


@pytest.mark.slow
def test_train_from_the_shell_logs_to_tensorboard_and_checkpoints(workdir):
    with_progress = [a for a in TINY if not a.startswith("progress")]
    result = run_cli(["task=copy", "model=ntm_lstm", "train.total_sequences=256", "train.lr_batch_scaling=sqrt",
                      *with_progress], cwd=workdir)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(workdir / "outputs")
    assert run_dir.parent == workdir / "outputs" / "copy" / "ntm_lstm"  # outputs/<task>/<model>/<time>
    # the parameter count is printed beside the paper's figure
    assert "parameters (paper, Table 2: 67,561)" in result.stdout

    cost = scalars(run_dir, COST_TAG)
    assert [step for step, _ in cost] == list(range(32, 257, 32))  # x axis: sequences seen
    assert all(math.isfinite(v) and 0 < v < 300 for _, v in cost)
    assert len(scalars(run_dir, "train/grad_norm")) == 8
    # the step's rate: the table's 1e-4 times sqrt(8) for a batch of 8 (train.lr keeps the table's value)
    assert scalars(run_dir, "train/lr")[0][1] == pytest.approx(1e-4 * 8 ** 0.5)
    assert "learning rate 0.000282843: train.lr=0.0001 scaled by the square root of the batch" in result.stdout

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    hparams = acc.PluginTagToContent("hparams")  # the run's settings, in the same run folder
    assert "_hparams_/experiment" in hparams
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["train.lr"].number_value == pytest.approx(1e-4)
    assert start.session_start_info.hparams["task.name"].string_value == "copy"
    assert "model/parameters" in acc.Tags()["scalars"]

    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert saved["sequences_seen"] == 256
    assert {"model", "optimizer", "config", "rng", "last_cost"} <= set(saved)
    assert saved["config"]["task"]["name"] == "copy"
    assert not list(run_dir.glob("*.tmp"))  # nothing half-written left behind
    assert "seq/s" in result.stderr  # tqdm: sequences seen and their rate


def _wait_for(path_glob, root: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(root.rglob(path_glob))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"training ended before a checkpoint: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_curve(tmp_path):
    # the same path on both sides (the killed run's long total would turn the fast path on by itself)
    args = ["task=copy", "model=ntm_ff", "seed=3", *TINY, "train.fast_path=false", "eval.pictures=false"]
    total = 320
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    result = run_cli([*args, f"train.total_sequences={total}"], cwd=straight)
    assert result.returncode == 0, result.stderr

    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([ntm_train_exe(), *args, "train.total_sequences=1000000"], cwd=killed, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ckpt = _wait_for("checkpoint.pt", killed, proc)
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    seen_at_kill = torch.load(ckpt, weights_only=False)["sequences_seen"]
    assert 0 < seen_at_kill < total, "the killed run got too far for this test to mean anything"

    result = run_cli([*args, "resume=true", f"train.total_sequences={total}"], cwd=killed)
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout
    (straight_dir,), (killed_dir,) = run_dirs(straight / "outputs"), run_dirs(killed / "outputs")
    for tag in (COST_TAG, "train/grad_norm"):
        a, b = scalars(straight_dir, tag), scalars(killed_dir, tag)
        assert [s for s, _ in b] == [s for s, _ in a] == list(range(32, total + 1, 32))  # no gap, no duplicate
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_multirun_gives_one_folder_per_job_named_by_its_overrides(workdir):
    result = run_cli(["-m", "task=copy", "model=ntm_ff,lstm", "train.total_sequences=64",
                      "seed=1", "train.batch_size=8",
                      "train.log_every=32", "train.checkpoint_every=64", "progress=false"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    dirs = run_dirs(workdir / "outputs" / "multirun")
    common = "seed=1,task=copy,train.batch_size=8,train.checkpoint_every=64,train.log_every=32,train.total_sequences=64"
    assert sorted(d.name for d in dirs) == [f"model=lstm,{common}", f"model=ntm_ff,{common}"]  # progress= left out
    for d in dirs:
        assert [s for s, _ in scalars(d, COST_TAG)] == [32, 64]


@pytest.mark.slow
def test_regular_install_finds_its_configs_from_any_directory(tmp_path, workdir):
    """A non-editable install (wheel) ships conf/ inside the package."""
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (target / "ntm_experiments" / "conf" / "task_model" / "copy_ntm_lstm.yaml").is_file()
    assert (target / "ntm_experiments" / "data" / "figure_curves.csv").is_file()  # the paper's curves for ntm-report
    assert (target / "ntm_experiments" / "fast" / "native.cpp").is_file()  # the fast path's native core, built on use
    env = {"PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import ntm_experiments.config as c; print(c.config_dir())"],
                           cwd=workdir, capture_output=True, text=True, env={**os.environ, **env})
    assert where.stdout.strip() == str(target / "ntm_experiments" / "conf")
    result = run_cli(["task=priority_sort", "model=ntm_lstm", "--cfg", "job"], cwd=workdir,
                     exe=str(target / "bin" / "ntm-train"), env=env)
    assert result.returncode == 0, result.stderr
    assert "read_heads: 5" in result.stdout and "controller_layers: 2" in result.stdout
    # Hydra's plugin scan finds hydra/launcher=stacked in the installed package, as in the editable one
    for exe, extra in ((str(target / "bin" / "ntm-train"), env), (None, None)):
        plugins = run_cli(["--info", "plugins"], cwd=workdir, exe=exe, env=extra)
        assert plugins.returncode == 0, plugins.stderr
        assert "\t\tStackedLauncher\n" in plugins.stdout  # listed under Launcher:


def test_multirun_with_cfg_is_one_line_not_a_traceback(workdir):
    result = run_cli(["-m", "--cfg", "job", "model=ntm_ff,lstm"], cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("ntm-train: error: Only one of --run, --multirun, --cfg")
    assert "--cfg job without -m" in lines[0]
    assert not (workdir / "outputs").exists()
