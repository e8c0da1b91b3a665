"""scripts/batch_study.py and its summary (scripts/batch_study_summary.py) on a fake study: real Hydra
configs and real TensorBoard event files, curves chosen so that compare.py's rule gives known answers."""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from conftest import compose_config
from ntm_experiments.compare import DID_NOT_STAY, NOT_REACHED, REACHED
from ntm_experiments.report import load_paper_curves
from ntm_experiments.run_state import CLIPPED_TAG, EPS_DOMINANT_TAG
from ntm_experiments.runs import COST_TAG

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import batch_study  # noqa: E402
from batch_study_summary import STABILITY, lr_factor, summarise  # noqa: E402

# the paper's NTM-LSTM copy curve (Fig 3) in the windows a 60k run covers: its points at 25.55k, 35.39k,
# 45.42k and 55.44k fall in the windows ending at 30k-60k; the one at 23.82k is at the axis top (10 bits)
PAPER_COPY_LSTM = [0.003, 0.003, 0.003, 0.003]
EARLY = 50.0  # bits per sequence in the first two windows, before the paper's curve is on its axes


def write_run(folder: Path, task: str, model: str, batch: int, lr: float, seed: int, windows: list[float],
              end: int | None = None, activity: tuple[float, float] | None = None, scaling: str = "none") -> None:
    """A run folder as ntm-train leaves it: the composed config, and COST_TAG every 1,000 sequences to
    ``end`` (default: 10k per window), each point the cost of the 10k window it lies in; ``scaling``: the
    run's train.lr_batch_scaling (its step's rate is ``lr`` scaled by it)."""
    config = compose_config(f"task={task}", f"model={model}", f"train.batch_size={batch}", f"train.lr={lr}",
                            f"train.lr_batch_scaling={scaling}",
                            f"seed={seed}", f"train.total_sequences={batch_study.BUDGETS[task]}")
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(config, folder / ".hydra" / "config.yaml")
    writer = SummaryWriter(str(folder))
    for step in range(1000, (end or 10_000 * len(windows)) + 1, 1000):
        writer.add_scalar(COST_TAG, windows[(step - 1) // 10_000], step)
        if activity is not None:
            writer.add_scalar(CLIPPED_TAG, activity[0] if step % 2000 else activity[0] * 3, step)  # mean 2x
            writer.add_scalar(EPS_DOMINANT_TAG, activity[1], step)
    writer.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, list[Path], str]:
    """Copy x NTM-LSTM at B=4: lr x sqrtB (3 seeds, finished), lr x 1 (1 seed, running to 35k); copy x
    NTM-FF at B=16, lr x B (1 seed); and a folder with a config but no events yet."""
    out = tmp_path_factory.mktemp("batch_study")
    runs = out / "runs" / "copy"
    lstm_sqrt = [  # seed 0: the paper's curve; seed 1: below 0.1 from 30k on; seed 2: below at 30k only
        [EARLY, EARLY] + PAPER_COPY_LSTM,
        [EARLY, EARLY, 0.05, 0.05, 0.05, 0.05],
        [EARLY, EARLY, 0.05, 0.5, 0.5, 0.5],
    ]
    for seed, windows in enumerate(lstm_sqrt):
        # the folder's name says nothing true of seed 1: its settings come from its config
        name = f"ntm_lstm_lr0.0002_seed{seed}" if seed != 1 else "some_other_name"
        write_run(runs / "b4" / name, "copy", "ntm_lstm", 4, 0.0002, seed, windows,
                  activity=(0.1, 0.5) if seed == 0 else None)
    write_run(runs / "b4" / "ntm_lstm_lr0.0001_seed0", "copy", "ntm_lstm", 4, 0.0001, 0, [EARLY, EARLY, 20.0, 20.0],
              end=35_000)
    # the table's rate scaled by the batch (train.lr_batch_scaling=linear): the step's rate is 0.0016, lr x B
    write_run(runs / "b16" / "ntm_ff_lr0.0016_seed0", "copy", "ntm_ff", 16, 0.0001, 0, [5.0] * 6, scaling="linear")
    empty = runs / "b4" / "ntm_ff_lr0.0001_seed0"
    (empty / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config("task=copy", "model=ntm_ff", "train.batch_size=4"), empty / ".hydra" / "config.yaml")

    printed = io.StringIO()
    with redirect_stdout(printed):
        written = summarise(out)
    return out, written, printed.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def seed_rows(out: Path) -> dict[tuple, dict[str, str]]:
    return {(r["model"], r["batch"], r["lr_factor"], r["seed"]): r for r in read_csv(out / "seeds.csv")}


def cell_rows(out: Path) -> dict[tuple, dict[str, str]]:
    return {(r["model"], r["batch"], r["lr_factor"]): r for r in read_csv(out / "cells.csv")}


def test_the_fake_curve_is_the_papers():
    """Guards the fixture: the values above are the paper's NTM-LSTM copy points in windows 30k-60k."""
    points = [(x, c) for x, c in load_paper_curves()[("fig3_copy", "NTM-LSTM")] if x <= 60]
    assert [c for x, c in points if c < 10] == PAPER_COPY_LSTM
    assert [math.ceil(x / 10) * 10 for x, c in points if c < 10] == [30, 40, 50, 60]


def test_summarise_writes_its_four_files_and_warns_of_a_run_without_events(study):
    out, written, printed = study
    assert [p.name for p in written] == ["seeds.csv", "cells.csv", "batch_study.png", "SUMMARY.md"]
    assert all(p.parent == out and p.is_file() for p in written)
    assert (out / "batch_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "batch_study.png").stat().st_size > 10_000
    warnings = printed.strip().splitlines()
    assert len(warnings) == 1 and "ntm_ff_lr0.0001_seed0" in warnings[0] and "skipped" in warnings[0]


def test_the_csvs_have_their_columns(study):
    out, _, _ = study
    with (out / "seeds.csv").open(newline="") as f:
        seeds_header = csv.DictReader(f).fieldnames
    with (out / "cells.csv").open(newline="") as f:
        cells_header = csv.DictReader(f).fieldnames
    for column in ("task", "model", "batch", "lr_factor", "lr", "seed", "sequences", "finished", "final_window_cost",
                   "curve_figure", "below_0.1_status", "below_0.1_at", "below_15_at", "clipped_fraction_mean",
                   "eps_dominant_fraction_mean"):
        assert column in seeds_header
    for column in ("task", "model", "batch", "lr_factor", "lr", "seeds", "seed_list", "curve_figure",
                   "curve_figure_seed_min", "curve_figure_seed_max", "below_0.1_median_status", "below_0.1_median_at",
                   "below_0.1_seeds_reached", "below_0.1_seeds_at_median", "below_0.1_seeds_at_min",
                   "below_0.1_seeds_at_max", "stable_strict_bits", "stable_strict_fraction", "stable_loose_bits",
                   "stable_loose_fraction", "clipped_fraction_median", "eps_dominant_fraction_median"):
        assert column in cells_header
    assert len(read_csv(out / "seeds.csv")) == 5  # the folder without events is not a run
    assert len(read_csv(out / "cells.csv")) == 3


def test_settings_come_from_the_config_and_the_learning_rate_names_its_factor(study):
    out, _, _ = study
    rows = seed_rows(out)
    assert set(rows) == {("ntm_lstm", "4", "sqrtB", "0"), ("ntm_lstm", "4", "sqrtB", "1"),
                         ("ntm_lstm", "4", "sqrtB", "2"), ("ntm_lstm", "4", "1", "0"), ("ntm_ff", "16", "B", "0")}
    assert rows[("ntm_lstm", "4", "sqrtB", "1")]["path"] == str(Path("runs/copy/b4/some_other_name"))
    assert float(rows[("ntm_lstm", "4", "sqrtB", "0")]["lr"]) == pytest.approx(2e-4)
    # the table's rate is 1e-4: 2e-4 at B=4 is sqrt(4) times it; within 1 %, else "other"
    assert batch_study.table_lr("copy", "ntm_lstm") == pytest.approx(1e-4)
    assert lr_factor("copy", "ntm_lstm", 4, 2e-4) == "sqrtB"
    assert lr_factor("copy", "ntm_lstm", 4, 2.01e-4) == "sqrtB"
    assert lr_factor("copy", "ntm_lstm", 4, 2.05e-4) == "other"
    assert lr_factor("copy", "ntm_lstm", 16, 1.6e-3) == "B"
    assert lr_factor("copy", "ntm_lstm", 1, 2e-4) == "other"  # batch 1 runs at the table's rate only


def test_per_seed_figure_landmark_and_stability(study):
    out, _, _ = study
    rows = seed_rows(out)
    paper, seed1, seed2 = (rows[("ntm_lstm", "4", "sqrtB", s)] for s in "012")
    assert float(paper["curve_figure"]) == pytest.approx(0, abs=1e-6)  # the paper's own values: figure 0
    on_axes = [c for _, c in load_paper_curves()[("fig3_copy", "NTM-LSTM")] if c < 10]  # Fig 3's axis top
    assert paper["curve_figure_points"] == f"4/{len(on_axes)}"  # the paper's points in windows 30k-60k
    assert (paper["below_0.1_status"], paper["below_0.1_at"]) == (REACHED, "30000")
    assert (seed1["below_0.1_status"], seed1["below_0.1_at"]) == (REACHED, "30000")
    assert (seed2["below_0.1_status"], seed2["below_0.1_at"]) == (DID_NOT_STAY, "")
    assert float(seed2["final_window_cost"]) == pytest.approx(0.5)
    assert seed2["final_window_end"] == "60000" and seed2["sequences"] == "60000" and seed2["finished"] == "true"
    # the landmarks of other tasks, and the clip / eps fractions where not logged: empty
    assert seed2["below_15_status"] == seed2["clipped_fraction_mean"] == seed2["eps_dominant_fraction_mean"] == ""
    assert float(paper["clipped_fraction_mean"]) == pytest.approx(0.2)
    assert float(paper["eps_dominant_fraction_mean"]) == pytest.approx(0.5)
    running = rows[("ntm_lstm", "4", "1", "0")]
    assert (running["sequences"], running["finished"], running["final_window_end"]) == ("35000", "false", "30000")
    assert running["below_0.1_status"] == NOT_REACHED
    # NTM-FF's copy landmark (below 0.1 bits at 55k) is within the 60k budget
    assert rows[("ntm_ff", "16", "B", "0")]["below_0.1_status"] == NOT_REACHED


def test_cells_median_curve_seeds_and_stability(study):
    out, _, _ = study
    cell = cell_rows(out)[("ntm_lstm", "4", "sqrtB")]
    assert (cell["seeds"], cell["seed_list"], cell["seeds_finished"]) == ("3", "0 1 2", "3")
    # the median curve: 50, 50, then 0.05 in every window: |log2(1.05 / 1.003)| at each paper point
    assert float(cell["curve_figure"]) == pytest.approx(math.log2(1.05 / 1.003), rel=1e-4)
    assert float(cell["curve_figure_seed_min"]) == pytest.approx(0, abs=1e-6)
    assert float(cell["curve_figure_seed_max"]) == pytest.approx(math.log2(1.5 / 1.003), rel=1e-4)
    assert (cell["below_0.1_median_status"], cell["below_0.1_median_at"]) == (REACHED, "30000")
    assert cell["below_0.1_paper_k"] == "25"
    assert (cell["below_0.1_seeds_reached"], cell["below_0.1_seeds_at_min"], cell["below_0.1_seeds_at_max"]) == (
        "2", "30000", "30000")
    strict, loose = STABILITY["copy"]
    assert (float(cell["stable_strict_bits"]), float(cell["stable_loose_bits"])) == (strict, loose) == (0.1, 1.0)
    assert cell["stable_strict_seeds"] == "2" and float(cell["stable_strict_fraction"]) == pytest.approx(2 / 3, 1e-3)
    assert cell["stable_loose_seeds"] == "3" and float(cell["stable_loose_fraction"]) == 1.0
    assert float(cell["clipped_fraction_median"]) == pytest.approx(0.2)  # the one seed that logged it
    running = cell_rows(out)[("ntm_lstm", "4", "1")]
    assert (running["seeds_finished"], running["median_last_window_end"]) == ("0", "30000")
    assert float(running["curve_figure"]) == pytest.approx(math.log2(21 / 1.003), rel=1e-4)  # one point: 30k


def test_summary_names_the_best_setting_and_marks_running_cells(study):
    out, _, _ = study
    text = (out / "SUMMARY.md").read_text()
    assert "python scripts/batch_study.py summarise" in text and "ntm_experiments/compare.py" in text
    assert "## copy" in text and "## repeat_copy" not in text  # cells without runs are skipped
    best = text.split("## Best settings")[1]
    assert "- copy, NTM-LSTM: B=4, lr x sqrtB (0.066)" in best
    assert "- copy, NTM-FF: B=16, lr x B" in best
    assert "- overall: B=4, lr x sqrtB (median 0.066" in best
    table = text.split("## copy")[1].split("\n## ")[0]
    running = next(line for line in table.splitlines() if "B=4, lr x 1 " in line)
    assert "(running)" in running
    finished = next(line for line in table.splitlines() if "B=4, lr x sqrtB" in line)
    assert "(running)" not in finished and "reached at 30k" in finished and "2/3, 3/3" in finished


def test_the_dry_run_prints_one_sweep_per_task_and_batch_size(tmp_path):
    env = {**os.environ, "NTM_BATCH_STUDY_DIR": str(tmp_path / "study")}
    result = subprocess.run([sys.executable, str(SCRIPTS / "batch_study.py"), "run", "--dry-run", "--tasks", "copy",
                             "--batches", "4", "--seeds", "0"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "6 runs to train or finish"  # 2 models x 3 factors x 1 seed
    commands = [line for line in lines if line.startswith("ntm-train ")]
    assert len(commands) == 1 and len(lines) == 2
    words = commands[0].split()
    for word in ("-m", "task=copy", "model=ntm_ff,ntm_lstm", "train.batch_size=4", "train.lr=0.0001,0.0002,0.0004",
                 "train.lr_batch_scaling=none", "seed=0", "train.total_sequences=60000", "resume=true",
                 f"hydra.sweep.dir={tmp_path / 'study' / 'runs' / 'copy' / 'b4'}"):
        assert word in words
    assert not (tmp_path / "study").exists()  # a dry run writes nothing
