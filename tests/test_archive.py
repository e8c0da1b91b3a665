"""scripts/archive_runs.py: a slim copy of a sweep keeps every scalar and checkpoint, drops the
evaluation pictures, and is itself a sweep that a later `resume=true` continues to the curve the
uninterrupted run gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY, run_cli, run_dirs, scalars
from ntm_experiments.runs import COST_TAG

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "archive_runs.py"
# the run folders are named without the budget, so a longer run continues the same folder (as when a
# reproduction is extended: scripts/archive_runs.py's docstring)
SWEEP = ["-m", "task=copy", "model=ntm_lstm", *TINY, "eval.every=64", "train.fast_path=false",
         "hydra.job.config.override_dirname.exclude_keys=[resume,device,progress,train.total_sequences]"]


def _tags(run: Path) -> dict[str, list[str]]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc.Tags()


def test_an_archived_sweep_keeps_its_scalars_and_checkpoints_and_resumes_to_the_uninterrupted_curve(tmp_path):
    short, straight, archive = tmp_path / "short", tmp_path / "straight", tmp_path / "archive"
    result = run_cli([*SWEEP, "seed=0,1", "train.total_sequences=128", f"hydra.sweep.dir={short}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_cli([*SWEEP, "seed=0", "train.total_sequences=256", f"hydra.sweep.dir={straight}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    out = subprocess.run([sys.executable, str(SCRIPT), str(short), str(archive)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("archived 2 runs in ")
    assert (archive / "multirun.yaml").read_text() == (short / "multirun.yaml").read_text()
    originals = run_dirs(short)
    for original in originals:
        copy = archive / original.name
        assert (copy / "checkpoint.pt").read_bytes() == (original / "checkpoint.pt").read_bytes()
        assert (copy / ".hydra" / "config.yaml").read_text() == (original / ".hydra" / "config.yaml").read_text()
        before, after = _tags(original), _tags(copy)
        assert before["images"] and not after["images"]  # the evaluations' pictures are what goes
        assert after["scalars"] == before["scalars"]
        for tag in before["scalars"]:
            assert scalars(copy, tag) == scalars(original, tag)
        assert sum(f.stat().st_size for f in copy.glob("events.*")) < sum(f.stat().st_size
                                                                           for f in original.glob("events.*"))

    # the archive is a sweep folder: the same sweep with resume=true continues its runs from their checkpoints
    result = run_cli([*SWEEP, "seed=0,1", "train.total_sequences=256", f"hydra.sweep.dir={archive}", "resume=true"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(run_dirs(archive)) == 2
    seed0 = next(r for r in run_dirs(archive) if "seed=0" in r.name)
    (whole,) = run_dirs(straight)
    resumed, uninterrupted = scalars(seed0, COST_TAG), scalars(whole, COST_TAG)
    assert [s for s, _ in resumed] == [s for s, _ in uninterrupted] == list(range(32, 257, 32))
    assert [v for _, v in resumed] == pytest.approx([v for _, v in uninterrupted], rel=1e-6, abs=1e-9)


def test_archiving_a_folder_without_runs_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nothing"), str(tmp_path / "archive")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"archive_runs.py: error: {tmp_path / 'nothing'}: no such file or "
                                               "directory (give a run folder or a sweep folder)"]
    assert not (tmp_path / "archive").exists()
