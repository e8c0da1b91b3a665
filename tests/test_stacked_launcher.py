"""hydra/launcher=stacked from the shell: a sweep's runs of one shape trained as one stack, each
with its own folder, events, checkpoint, train.log and failure; killed and resumed."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ntm_train_exe, run_cli, scalars
from ntm_experiments.train import COST_TAG
from test_faults import _env

SMALL = ["task=copy", "task.max_length=5", "model=ntm_lstm", "model.controller_size=12", "model.memory_rows=8",
         "model.memory_width=5", "train.batch_size=2", "train.log_every=16", "train.checkpoint_every=32",
         "train.fast_path=true", "eval.every=1000000", "eval.sequences=4", "eval.pictures=false", "progress=false"]
STACKED = ["-m", "hydra/launcher=stacked", "hydra.sweep.subdir=seed${seed}_lr${train.lr}"]


def test_four_seeds_stacked_each_its_own_run_and_seed_3_as_alone(workdir):
    sweep = workdir / "sweep"
    result = run_cli([*STACKED, *SMALL, "train.total_sequences=160", f"hydra.sweep.dir={sweep}", "seed=1,2,3,4"],
                     cwd=workdir)
    assert result.returncode == 0, result.stderr
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == [f"seed{s}_lr0.0001" for s in (1, 2, 3, 4)]
    for run in runs:
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "checkpoint.pt").is_file()
        log = (run / "train.log").read_text()
        assert "4 runs stacked" in log and "finished: 160 sequences" in log
        assert log.count("finished:") == 1  # its own lines only
    alone = workdir / "alone"
    result = run_cli([*SMALL, "train.total_sequences=160", "seed=3", f"hydra.run.dir={alone}"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    stacked, solo = scalars(sweep / "seed3_lr0.0001", COST_TAG), scalars(alone, COST_TAG)
    assert [s for s, _ in stacked] == [s for s, _ in solo] == list(range(16, 161, 16))
    assert [v for _, v in stacked] == pytest.approx([v for _, v in solo], rel=1e-4)


def test_a_diverging_job_fails_alone_and_the_sweep_exits_1(workdir):
    sweep = workdir / "sweep"
    result = run_cli([*STACKED, *SMALL, "train.total_sequences=64", "train.max_bad_steps=2", "train.max_restores=1",
                      f"hydra.sweep.dir={sweep}", "seed=1,2", "train.lr=1e-4,1e38"], cwd=workdir)
    assert result.returncode == 1, result.stderr
    failed = sorted(p.parent.name for p in sweep.rglob("FAILED"))
    assert failed == ["seed1_lr1e+38", "seed2_lr1e+38"]
    assert "training diverged" in (sweep / "seed1_lr1e+38" / "FAILED").read_text()
    for name in ("seed1_lr0.0001", "seed2_lr0.0001"):
        assert [s for s, _ in scalars(sweep / name, COST_TAG)][-1] == 64
    assert "2 of 4 jobs of the sweep" in result.stderr


@pytest.mark.slow
def test_a_killed_stack_resumes_every_run_to_its_uninterrupted_curve(workdir):
    sweep = workdir / "killed"
    args = [*STACKED, *SMALL, "train.fast_path=false", f"hydra.sweep.dir={sweep}", "seed=1,2,3"]
    proc = subprocess.Popen([ntm_train_exe(), *args, "train.total_sequences=100000"], cwd=workdir, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    checkpoints = [sweep / f"seed{s}_lr0.0001" / "checkpoint.pt" for s in (1, 2, 3)]
    while not all(c.exists() for c in checkpoints) and time.monotonic() < deadline:
        assert proc.poll() is None
        time.sleep(0.01)
    time.sleep(random.Random(0).uniform(0.2, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    import torch
    seen = [torch.load(c, weights_only=False)["sequences_seen"] for c in checkpoints]
    total = max(seen) + 64
    resumed = run_cli([*args, f"train.total_sequences={total}", "resume=true"], cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    straight = workdir / "straight"
    result = run_cli([*STACKED, *SMALL, "train.fast_path=false", f"hydra.sweep.dir={straight}", "seed=1,2,3",
                      f"train.total_sequences={total}"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    for s in (1, 2, 3):
        name = f"seed{s}_lr0.0001"
        killed_curve, whole = scalars(sweep / name, COST_TAG), scalars(straight / name, COST_TAG)
        assert [x for x, _ in killed_curve] == [x for x, _ in whole] == list(range(16, total + 1, 16))
        assert [v for _, v in killed_curve] == [v for _, v in whole]  # bitwise: each run's arithmetic is its own


@pytest.mark.slow
def test_each_stack_becomes_one_submitit_job(workdir):
    """hydra/launcher=stacked_slurm's path through submitit's local executor: three seeds, one stack,
    one job of the array."""
    sweep = workdir / "sweep"
    result = run_cli(["-m", "hydra/launcher=stacked_submitit_local", "hydra.launcher.submitit.timeout_min=10",
                      "hydra.sweep.subdir=seed${seed}", *SMALL, "train.total_sequences=64", f"hydra.sweep.dir={sweep}",
                      "seed=1,2,3"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    jobs = [p for p in (sweep / ".submitit").iterdir() if p.name != "%j"]
    assert len(jobs) == 1 and list(jobs[0].glob("*_0_result.pkl"))  # one stack, one job
    for s in (1, 2, 3):
        run = sweep / f"seed{s}"
        assert [x for x, _ in scalars(run, COST_TAG)] == [16, 32, 48, 64]
        assert "3 runs stacked" in (run / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs, stacked", [(2, True), (1, False)])
def test_optuna_hands_the_launcher_n_jobs_trials_at_a_time(workdir, n_jobs, stacked):
    """Trials of one shape (only the learning rate searched) in batches of n_jobs: two form a stack;
    one at a time, each trains alone."""
    sweep = workdir / "search"
    result = run_cli(["-m", "search=optuna", "hydra/launcher=stacked", f"hydra.sweeper.n_jobs={n_jobs}",
                      "hydra.sweeper.n_trials=2", "model.controller_size=choice(12)", "train.batch_size=choice(2)",
                      *SMALL[:2], "model=ntm_lstm", *SMALL[4:], "train.total_sequences=32", f"hydra.sweep.dir={sweep}"],
                     cwd=workdir)
    assert result.returncode == 0, result.stderr
    logs = [(sweep / f"trial_{n}" / "train.log").read_text() for n in (0, 1)]
    assert all(("2 runs stacked" in log) == stacked for log in logs)
    assert all("finished: 32 sequences" in log for log in logs)


@pytest.mark.slow
def test_ctrl_c_checkpoints_every_run_of_a_stack_where_it_stands_and_the_sweep_resumes_them(workdir):
    """SIGINT to a stacked sweep: every live run writes its checkpoint at the step the stack had
    reached (train.log says so), one line says where and how to continue, exit 130; the same sweep
    with resume=true then ends on every run's uninterrupted curve."""
    import re

    import torch

    sweep = workdir / "stopped"
    args = [*STACKED, *SMALL, "train.fast_path=false", "seed=1,2"]
    proc = subprocess.Popen([ntm_train_exe(), *args, f"hydra.sweep.dir={sweep}", "train.total_sequences=100000"],
                            cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = [sweep / f"seed{s}_lr0.0001" / "checkpoint.pt" for s in (1, 2)]
    deadline = time.monotonic() + 120
    while not all(c.exists() for c in checkpoints):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    time.sleep(random.Random(1).uniform(0.0, 0.3))
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr
    (line,) = stderr.strip().splitlines()
    match = re.fullmatch(rf"ntm-train: interrupted by SIGINT: 2 stacked runs under {re.escape(str(sweep))}, checkpoints "
                         rf"written at ([\d,]+) sequences; the same sweep with hydra.sweep.dir={re.escape(str(sweep))} "
                         r"resume=true continues them", line)
    assert match, line
    seen = int(match.group(1).replace(",", ""))
    for checkpoint in checkpoints:
        assert torch.load(checkpoint, weights_only=False)["sequences_seen"] == seen
        assert f"stopped by SIGINT at {seen} sequences: checkpoint written" in (checkpoint.parent / "train.log").read_text()
    total = seen + 48
    resumed = run_cli([*args, f"hydra.sweep.dir={sweep}", f"train.total_sequences={total}", "resume=true"], cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    straight = workdir / "straight"
    result = run_cli([*args, f"hydra.sweep.dir={straight}", f"train.total_sequences={total}"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    for s in (1, 2):
        name = f"seed{s}_lr0.0001"
        stopped_curve, whole = scalars(sweep / name, COST_TAG), scalars(straight / name, COST_TAG)
        assert [x for x, _ in stopped_curve] == [x for x, _ in whole]
        assert [v for _, v in stopped_curve] == [v for _, v in whole]  # bitwise, as a kill's resume


@pytest.mark.slow
def test_a_preempted_stack_job_checkpoints_every_run_and_its_requeued_self_resumes_them(workdir):
    """hydra/launcher=stacked_submitit_local: the stack's job gets SIGUSR2 (a pre-emption to
    submitit, with timeout_min=60); every run writes its checkpoint, submitit requeues the job
    (the stacked job function has no checkpoint method: it is submitted again as it was), and the
    requeued job resumes every run: each ends on its uninterrupted curve."""
    import os
    import re

    from test_sweeps import _children

    sweep = workdir / "preempted"
    args = ["-m", "hydra/launcher=stacked_submitit_local", "hydra.launcher.submitit.timeout_min=60",
            "hydra.sweep.subdir=seed${seed}", *SMALL, "train.fast_path=false", "seed=1,2", "train.total_sequences=480"]
    proc = subprocess.Popen([ntm_train_exe(), *args, f"hydra.sweep.dir={sweep}"], cwd=workdir, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = [sweep / f"seed{s}" / "checkpoint.pt" for s in (1, 2)]
    deadline = time.monotonic() + 120
    while not all(c.exists() for c in checkpoints):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    (job,) = [int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    (task,) = _children(job)
    os.kill(task, signal.SIGUSR2)
    assert proc.wait(timeout=240) == 0, proc.stderr.read()
    for s in (1, 2):
        log = (sweep / f"seed{s}" / "train.log").read_text()
        at = int(re.search(r"SIGUSR2 \(submitit: pre-empted or near the time limit\) at (\d+) sequences: checkpoint "
                           r"written", log).group(1))
        assert at < 480, "the stack finished before it was pre-empted: nothing was tested"
        assert f"its checkpoint at {at} sequences (a requeued submitit job): resuming it" in log
        assert log.count("finished: 480 sequences") == 1
    straight = workdir / "straight"
    result = run_cli([*args, f"hydra.sweep.dir={straight}"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    for s in (1, 2):
        stopped_curve, whole = scalars(sweep / f"seed{s}", COST_TAG), scalars(straight / f"seed{s}", COST_TAG)
        assert [x for x, _ in stopped_curve] == [x for x, _ in whole] == list(range(16, 481, 16))
        assert [v for _, v in stopped_curve] == [v for _, v in whole]


def test_a_group_is_split_into_stacks_that_fit_max_memory_gb(workdir):
    """Four seeds, room by the estimate for two and a half runs: two stacks of two, said in the log."""
    from conftest import compose_config
    from ntm_experiments.fast.stacked import run_memory_bytes
    from ntm_experiments.run_state import build_run

    import torch

    task, model, _, _ = build_run(compose_config(*SMALL), torch.device("cpu"))
    room = 2.5 * run_memory_bytes(task, model, 2) / 2**30
    sweep = workdir / "sweep"
    result = run_cli([*STACKED, *SMALL, "train.total_sequences=32", f"hydra.sweep.dir={sweep}", "seed=1,2,3,4",
                      f"hydra.launcher.max_memory_gb={room:.9f}"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "at most 2 runs each" in result.stdout + result.stderr
    for s in (1, 2, 3, 4):
        assert "2 runs stacked" in (sweep / f"seed{s}_lr0.0001" / "train.log").read_text()
    bad = run_cli([*STACKED, *SMALL, "hydra.launcher.max_memory_gb=0", f"hydra.sweep.dir={workdir / 'bad'}", "seed=1,2"],
                  cwd=workdir)
    assert bad.returncode != 0 and "hydra.launcher.max_memory_gb=0: must be a positive number of GB" in bad.stderr
