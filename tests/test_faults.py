"""Runs that survive: kills at random moments, disk faults, non-finite steps, changed configs."""

from __future__ import annotations

import errno
import hashlib
import math
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ntm_experiments.run_state as run_state_module
import ntm_experiments.train as train_module
from conftest import TINY, compose_config, ntm_train_exe, run_cli, scalars
from ntm_experiments import checkpoint, interrupts
from ntm_experiments.errors import ConfigError, Interrupted, RunError
from ntm_experiments.tasks import Batch, make_task
from ntm_experiments.train import COST_TAG, train

# a checkpoint after every step, so kills often land in the middle of a checkpoint write
EVERY_STEP = ["task=copy", "model=ntm_ff", "model.controller_size=16", "model.memory_rows=16",
              "model.memory_width=6", "train.batch_size=8", "train.log_every=8", "train.checkpoint_every=8",
              "eval.every=1000000", "eval.pictures=false", "progress=false"]


TMP = ".checkpoint.pt.*.tmp"  # a checkpoint being written (ntm_experiments.checkpoint.save)


def _env() -> dict[str, str]:
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _wait_until(proc: subprocess.Popen, ready) -> None:
    """Return as soon as ``ready()`` holds; it must, within 120 s, while ``proc`` runs."""
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the run never got there"


@pytest.mark.slow
def test_kills_at_random_moments_and_mid_write_each_resume_and_the_curve_is_unbroken(tmp_path):
    """SIGKILL a real run (a checkpoint after every step), resume, again and again: every other kill
    at a random moment, the others as soon as a checkpoint's temp file appears. Until it has been
    seen at least once that a kill left a half-written temp file behind (mid-write), and that one
    left event-file points the checkpoint does not vouch for (logged after the checkpoint's
    sequences): each resume must clear the one and purge the other. Every checkpoint loads, every
    event file reads, and the final curve equals an uninterrupted run's, both on the plain path."""
    run = tmp_path / "killed"
    ckpt = run / "checkpoint.pt"
    common = [*EVERY_STEP, "train.fast_path=false"]  # the same path killed and straight
    rng = random.Random(0)
    kills = mid_write = unvouched = 0
    last_seen, left = 0, set()
    while kills < 8 or not (mid_write and unvouched):
        assert kills < 40, f"{kills} kills: {mid_write} mid-write, {unvouched} after unvouched events"
        resume = [f"resume={run}"] if ckpt.exists() else []
        proc = subprocess.Popen([ntm_train_exe(), *common, "train.total_sequences=1000000",
                                 f"hydra.run.dir={run}", *resume], env=_env(), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # wait until this process is training (its checkpoint moves on), then kill it
        start_mtime = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
        _wait_until(proc, lambda: ckpt.exists() and ckpt.stat().st_mtime_ns != start_mtime)
        assert not left & set(run.glob(TMP)), "the resume kept the temp file of a write cut short"
        if kills % 2 == 0:  # at a random moment
            time.sleep(rng.uniform(0.0, 0.25))
        else:  # while a checkpoint is being written
            _wait_until(proc, lambda: any(run.glob(TMP)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        left = set(run.glob(TMP))
        mid_write += bool(left)
        saved = checkpoint.load(ckpt)  # loadable after every kill
        assert saved["sequences_seen"] >= last_seen
        last_seen = saved["sequences_seen"]
        acc = EventAccumulator(str(run))
        acc.Reload()  # the event files stay readable
        steps = [e.step for e in acc.Scalars(COST_TAG)]
        assert steps == sorted(set(steps)) and steps[-1] >= last_seen  # no duplicates after the purge
        unvouched += steps[-1] > last_seen

    total = last_seen + 32
    result = run_cli([*common, f"train.total_sequences={total}", f"hydra.run.dir={run}", f"resume={run}"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not list(run.glob(TMP))  # writes cut short by a kill are cleared away
    straight = tmp_path / "straight"
    result = run_cli([*common, f"train.total_sequences={total}", f"hydra.run.dir={straight}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    killed_curve, straight_curve = scalars(run, COST_TAG), scalars(straight, COST_TAG)
    assert [s for s, _ in killed_curve] == [s for s, _ in straight_curve] == list(range(8, total + 1, 8))
    assert [v for _, v in killed_curve] == pytest.approx([v for _, v in straight_curve], rel=1e-6)


def _tiny(*extra: str):
    return compose_config("task=copy", "model=ntm_ff", *TINY, "train.total_sequences=64", *extra)


def test_resume_with_another_task_model_or_seed_is_refused(tmp_path):
    train(_tiny(), tmp_path)
    for changes, before, now in ((["model.controller_size=17"], "model.controller_size=16", "model.controller_size=17"),
                                 (["seed=4"], "seed=0", "seed=4"), (["task.max_length=9"], "task.max_length=20", "task.max_length=9"),
                                 (["train.batch_size=4"], "train.batch_size=8", "train.batch_size=4"),
                                 (["model.controller_size=17", "model.memory_rows=32"],
                                  "model.controller_size=16, model.memory_rows=16", "model.controller_size=17, model.memory_rows=32")):
        with pytest.raises(ConfigError) as info:
            train(_tiny(*changes, "resume=true"), tmp_path)
        message = str(info.value)  # the settings that differ, not the whole model dict (~600 characters)
        assert message.startswith(f"resume: the checkpoint was trained with {before}, this run asks for {now}; only ")
        assert "\n" not in message and "{" not in message, message
    # the total may change: the run simply continues
    assert math.isfinite(train(_tiny("train.total_sequences=96", "resume=true"), tmp_path))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["sequences_seen"] == 96


def test_a_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path):
    train(_tiny(), tmp_path)
    with pytest.raises(ConfigError, match="resume=true"):
        train(_tiny(), tmp_path)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    train(_tiny(), tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(RunError) as info:
        train(_tiny("train.total_sequences=128", "resume=true"), tmp_path)
    assert "No space left on device" in str(info.value) and "previous checkpoint is kept" in str(info.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # "latest" is still the whole old one
    assert not list(tmp_path.glob(".checkpoint.pt.*"))


def test_unwritable_output_folder_gives_one_line(workdir):
    blocker = workdir / "not_a_folder"
    blocker.write_text("a file where the run folder should go")
    result = run_cli(["train.total_sequences=16", f"hydra.run.dir={blocker}/run", "progress=false"], cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntm-train: error: cannot write") and "not_a_folder" in lines[0]


@pytest.mark.parametrize("fast_path", ["false", "true"])
def test_non_finite_steps_are_skipped_and_counted(tmp_path, monkeypatch, fast_path):
    """Fault injection: three batches carry a NaN; those steps are skipped, the run goes on."""
    poisoned = {2, 3, 6}

    class Poisoned:
        def __init__(self, task):
            self.task, self.calls = task, 0
            self.name, self.input_width, self.output_width = task.name, task.input_width, task.output_width

        def sample(self, *args, **kwargs):
            self.calls += 1
            batch = self.task.sample(*args, **kwargs)
            if self.calls in poisoned and not kwargs:
                batch = Batch(batch.inputs.clone().fill_(math.nan), batch.targets, batch.mask)
            return batch

        def __getattr__(self, name):
            return getattr(self.task, name)

    monkeypatch.setattr(run_state_module, "make_task", lambda cfg: Poisoned(make_task(cfg)))
    cost = train(_tiny("train.max_bad_steps=3", f"train.fast_path={fast_path}"), tmp_path)
    assert math.isfinite(cost)
    assert [v for _, v in scalars(tmp_path, "train/skipped_steps")] == [1, 2, 3]
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert saved["sequences_seen"] == 64


@pytest.mark.slow
def test_divergence_restores_then_stops_keeping_the_checkpoint(workdir):
    run = workdir / "run"
    base = [*EVERY_STEP[:5], "train.batch_size=8", "train.log_every=32", "train.checkpoint_every=32",
            "eval.sequences=4", "progress=false", f"hydra.run.dir={run}"]
    assert run_cli([*base, "train.total_sequences=64"], cwd=workdir).returncode == 0
    good = (run / "checkpoint.pt").read_bytes()
    result = run_cli([*base, "train.total_sequences=100000", "train.lr=1e36", f"resume={run}"], cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training diverged" in lines[0] and "checkpoint kept" in lines[0]
    assert [v for _, v in scalars(run, "train/restores")] == [1, 2, 3]
    assert (run / "checkpoint.pt").read_bytes() == good
    assert Path(run / "train.log").read_text().count("restored the checkpoint") == 3


def test_a_checkpoint_from_another_version_is_refused(workdir):
    run = workdir / "old"
    run.mkdir()
    torch.save({"format_version": 0, "model": {}}, run / "checkpoint.pt")
    result = run_cli([f"resume={run}", "train.total_sequences=16", "progress=false"], cwd=workdir)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ntm-train: error: ") and "checkpoint format 0, this version reads format 1" in line
    evaluated = run_cli([str(run)], cwd=workdir, exe=ntm_train_exe().replace("ntm-train", "ntm-eval"))
    assert evaluated.returncode == 2 and "checkpoint format 0" in evaluated.stderr
    assert len(evaluated.stderr.strip().splitlines()) == 1


def test_lengths_beyond_the_memory_warn_that_generalisation_cannot_be_exact(workdir):
    result = run_cli(["task=copy", "model=ntm_ff", *TINY, "eval.lengths=[8,40]", "train.total_sequences=16",
                      "train.log_every=16", "train.checkpoint_every=16", "eval.pictures=false"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stdout.splitlines() if "WARNING" in line]
    assert any("copy training: up to 20 vectors to store in 16 memory rows" in line for line in warned)
    assert any("copy length_40: up to 40 vectors" in line and "cannot be exact" in line for line in warned)
    assert not any("length_8:" in line for line in warned)


def test_out_of_memory_names_the_batch_size_and_suggests_a_smaller_one(tmp_path, monkeypatch):
    """Fault injection: the third training step runs out of device memory."""
    real = train_module.make_train_step

    def failing(*args, **kwargs):
        stepper, calls = real(*args, **kwargs), []
        forward_backward = stepper.forward_backward

        def third_fails(batch):
            calls.append(1)
            if len(calls) == 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return forward_backward(batch)
        stepper.forward_backward = third_fails
        return stepper

    monkeypatch.setattr(train_module, "make_train_step", failing)
    with pytest.raises(RunError, match=r"^out of memory on cpu at train.batch_size=8: try a smaller train.batch_size"):
        train(_tiny(), tmp_path)


# ---------------------------------------------------------------- SIGINT and SIGTERM
SIGNALLED = [*EVERY_STEP[:5], "train.batch_size=8", "train.log_every=64", "train.checkpoint_every=64",
             "eval.every=1000000", "eval.pictures=false", "train.fast_path=false", "progress=false"]


@pytest.mark.slow
def test_ctrl_c_and_sigterm_checkpoint_the_step_they_stop_at_say_so_and_resume_to_the_uninterrupted_curve(tmp_path):
    """A real ntm-train, stopped by SIGINT, resumed, stopped by SIGTERM, resumed, ... at random
    moments until one stop has landed inside a logging window (the point the window would log is
    then half in one process, half in the next). Each stop: exit code 130 / 143, one line saying at
    how many sequences it stopped and where the checkpoint is, a checkpoint at exactly that many
    sequences, the stop in train.log. The final curve equals an uninterrupted run's."""
    run = tmp_path / "stopped"
    ckpt = run / "checkpoint.pt"
    rng = random.Random(1)
    stops: list[int] = []
    while len(stops) < 2 or all(seen % 64 == 0 for seen in stops):
        assert len(stops) < 8, f"every stop landed on a logging boundary: {stops}"
        signum = (signal.SIGINT, signal.SIGTERM)[len(stops) % 2]
        resume = [f"resume={run}"] if ckpt.exists() else []
        proc = subprocess.Popen([ntm_train_exe(), *SIGNALLED, "train.total_sequences=1000000", f"hydra.run.dir={run}",
                                 *resume], env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        start_mtime = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
        _wait_until(proc, lambda: ckpt.exists() and ckpt.stat().st_mtime_ns != start_mtime)  # it is training
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signum)
        stderr = proc.communicate(timeout=120)[1]
        assert proc.returncode == 128 + signum, stderr
        (line,) = stderr.strip().splitlines()
        verb = "interrupted" if signum == signal.SIGINT else "stopped"
        match = re.fullmatch(rf"ntm-train: {verb} by {signum.name} at ([\d,]+) sequences; checkpoint written to "
                             rf"{re.escape(str(run))} \(resume={re.escape(str(run))} continues it\)", line)
        assert match, line
        seen = int(match.group(1).replace(",", ""))
        assert checkpoint.load(ckpt)["sequences_seen"] == seen  # the step it stopped at, not the last boundary
        assert f"stopped by {signum.name} at {seen} sequences: checkpoint written" in (run / "train.log").read_text()
        assert not stops or seen > stops[-1]
        stops.append(seen)

    total = stops[-1] + 96
    result = run_cli([*SIGNALLED, f"train.total_sequences={total}", f"hydra.run.dir={run}", f"resume={run}"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    straight = tmp_path / "straight"
    result = run_cli([*SIGNALLED, f"train.total_sequences={total}", f"hydra.run.dir={straight}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for tag in (COST_TAG, "train/grad_norm"):
        stopped_curve, straight_curve = scalars(run, tag), scalars(straight, tag)
        assert [s for s, _ in stopped_curve] == [s for s, _ in straight_curve]
        assert [v for _, v in stopped_curve] == pytest.approx([v for _, v in straight_curve], rel=1e-6)


@pytest.mark.parametrize("signum, said", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "stopped by SIGTERM")])
def test_a_signal_before_training_says_there_was_nothing_to_save(workdir, signum, said):
    """Outside the training loop (here: while the config is composed and the run is built) SIGINT
    and SIGTERM give one true line and 130 / 143, not a traceback or the shell's bare "Terminated"."""
    proc = subprocess.Popen([ntm_train_exe(), *SIGNALLED, "train.total_sequences=1000000"], env=_env(), cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_until(proc, lambda: _handler_installed(proc.pid))  # ntm-train's own handler, before Hydra starts
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=120)[1]
    if " sequences; " in stderr:  # it was already training: that case is the test above
        pytest.skip("the run had started training before the signal")
    assert proc.returncode == 128 + signum, stderr
    assert stderr.strip() == f"ntm-train: {said} while no training loop was running in this process: nothing to save"


def test_a_signal_swallowed_before_training_still_stops_the_next_loop(tmp_path):
    """ntm-train's handler outside a loop raises at once; if code on the way to the training loop
    swallows that exception (a bare except, a __del__), the loop must not train on: it stops before
    its first step with the same line, and leaves no checkpoint."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install_idle_handlers()
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                os.kill(os.getpid(), signum)
                time.sleep(1)  # the handler runs at the next bytecode; it must not get past here
                raise AssertionError("the handler did not raise")
            except Interrupted as swallowed:  # what a careless library would do
                assert swallowed.code == 128 + signum
            with pytest.raises(Interrupted) as stopped:
                train(compose_config(*TINY, "train.total_sequences=64", "progress=false"), tmp_path / signum.name)
            assert stopped.value.code == 128 + signum
            said = "interrupted" if signum == signal.SIGINT else "stopped by SIGTERM"
            assert str(stopped.value) == f"{said} while no training loop was running in this process: nothing to save"
            assert not (tmp_path / signum.name / "checkpoint.pt").exists()
            assert interrupts.PENDING == []  # consumed: the loop after it trains
        assert math.isfinite(train(compose_config(*TINY, "train.total_sequences=16", "progress=false"),
                                   tmp_path / "after"))
    finally:
        interrupts.PENDING.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _handler_installed(pid: int) -> bool:
    """Whether process ``pid`` catches SIGTERM (Linux: /proc/<pid>/status, SigCgt)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def _fingerprint(batch: Batch) -> str:
    return hashlib.sha1(batch.inputs.numpy().tobytes()).hexdigest()


def test_a_signal_between_skipped_steps_mid_window_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    """In-process, so the signal lands at a chosen step: batches of 8, a point every 32 sequences;
    batches 6 and 7 carry a NaN (train.max_bad_steps=2: the second restores the state at 32); SIGINT
    arrives during batch 6. The checkpoint written then, at 40 sequences, must carry the logging
    window's partial sums (batch 5), the guard's counters (one bad step in a row) and the state a
    restore goes back to (at 32), so that the resumed run logs, skips and restores as the straight
    run: the same costs, gradient norms, skipped steps and restores at the same steps."""
    settings = ["train.max_bad_steps=2", "train.log_every=32", "train.checkpoint_every=32", "train.total_sequences=96",
                "eval.every=96", "eval.pictures=false", "train.fast_path=false"]
    cfg = _tiny(*settings)
    generator = torch.Generator().manual_seed(cfg.seed)
    task = make_task(cfg.task)
    batches = [task.sample(cfg.train.batch_size, generator) for _ in range(14)]
    poisoned = {_fingerprint(batches[5]), _fingerprint(batches[6])}  # batches 6 and 7

    class Poisoned:
        def __init__(self, task):
            self.task = task

        def sample(self, *args, **kwargs):
            batch = self.task.sample(*args, **kwargs)
            if not kwargs and _fingerprint(batch) in poisoned:
                batch = Batch(batch.inputs.clone().fill_(math.nan), batch.targets, batch.mask)
            return batch

        def __getattr__(self, name):
            return getattr(self.task, name)

    monkeypatch.setattr(run_state_module, "make_task", lambda cfg: Poisoned(make_task(cfg)))
    train(cfg, tmp_path / "straight")

    real = train_module.make_train_step

    def signalled(*args, **kwargs):
        stepper, calls = real(*args, **kwargs), []
        forward_backward = stepper.forward_backward

        def sixth_is_interrupted(batch):
            calls.append(1)
            if len(calls) == 6:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, in the middle of a step
            return forward_backward(batch)
        stepper.forward_backward = sixth_is_interrupted
        return stepper

    stopped = tmp_path / "stopped"
    before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "make_train_step", signalled)
        with pytest.raises(Interrupted) as info:
            train(cfg, stopped)
    assert info.value.code == 130
    assert str(info.value) == f"interrupted by SIGINT at 40 sequences; checkpoint written to {stopped} " \
                              f"(resume={stopped} continues it)"
    saved = checkpoint.load(stopped)
    assert saved["sequences_seen"] == 40
    assert saved["window"]["steps"] == 1 and saved["window"]["sequences"] == 8  # batch 5, not yet logged
    assert saved["guard"]["skipped"] == saved["guard"]["bad_in_row"] == 1 and saved["guard"]["good"]["seen"] == 32
    assert signal.getsignal(signal.SIGINT) is before  # the loop's handler is gone with the loop

    train(_tiny(*settings, "resume=true"), stopped)
    for tag in (COST_TAG, "train/grad_norm", "train/skipped_steps", "train/restores"):
        a, b = scalars(tmp_path / "straight", tag), scalars(stopped, tag)
        assert [s for s, _ in b] == [s for s, _ in a], tag
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-6), tag
    assert [v for _, v in scalars(stopped, "train/restores")] == [1]


def test_a_checkpoint_without_window_or_guard_state_still_resumes(tmp_path):
    """Checkpoints written before the logging window and the guard's counters were saved load as
    before: an empty window and fresh counters (what a checkpoint at a logging boundary holds)."""
    train(_tiny(), tmp_path / "old")
    saved = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=False)
    for key in ("window", "guard"):
        del saved[key]
    torch.save(saved, tmp_path / "old" / "checkpoint.pt")
    train(_tiny("train.total_sequences=128", "resume=true"), tmp_path / "old")
    train(_tiny("train.total_sequences=128"), tmp_path / "straight")
    assert scalars(tmp_path / "old", COST_TAG) == scalars(tmp_path / "straight", COST_TAG)
