"""scripts/batch_study.py and its summary (scripts/batch_study_summary.py) on a fake study: real Hydra
configs and real TensorBoard event files, curves chosen so that compare.py's rule gives known answers."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
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
# the paper's LSTM copy curve (Fig 3) in the windows a 100k run covers: its points at 75.48k, 85.5k and
# 95.52k fall in the windows ending at 80k-100k; the one at 67.7k is at the axis top (10 bits)
PAPER_COPY_BASELINE = [8.32, 6.823, 5.596]


def write_run(folder: Path, task: str, model: str, batch: int, lr: float, seed: int, windows: list[float],
              end: int | None = None, activity: tuple[float, float] | None = None, scaling: str = "none") -> None:
    """A run folder as ntm-train leaves it: the composed config, and COST_TAG every 1,000 sequences to
    ``end`` (default: 10k per window), each point the cost of the 10k window it lies in; ``scaling``: the
    run's train.lr_batch_scaling (its step's rate is ``lr`` scaled by it)."""
    config = compose_config(f"task={task}", f"model={model}", f"train.batch_size={batch}", f"train.lr={lr}",
                            f"train.lr_batch_scaling={scaling}",
                            f"seed={seed}", f"train.total_sequences={batch_study.budget(task, model)}")
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
    NTM-FF at B=16, lr x B (1 seed); a folder with a config but no events yet; and the LSTM baseline on
    copy at B=16 (100k sequences): lr x 1 on the paper's LSTM curve, lr x B 3 bits at 80k-100k."""
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
    # the baseline: its table rate is 3e-5, so 4.8e-4 at B=16 is lr x B; EARLY to 70k, off the paper's axes
    write_run(runs / "b16" / "lstm_lr3e-05_seed0", "copy", "lstm", 16, 3e-5, 0, [EARLY] * 7 + PAPER_COPY_BASELINE)
    write_run(runs / "b16" / "lstm_lr0.00048_seed0", "copy", "lstm", 16, 4.8e-4, 0, [EARLY] * 7 + [3.0] * 3)

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
    baseline = [(x, c) for x, c in load_paper_curves()[("fig3_copy", "LSTM")] if x <= 100]
    assert [c for x, c in baseline if c < 10] == PAPER_COPY_BASELINE
    assert [math.ceil(x / 10) * 10 for x, c in baseline if c < 10] == [80, 90, 100]


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
    assert len(read_csv(out / "seeds.csv")) == 7  # the folder without events is not a run
    assert len(read_csv(out / "cells.csv")) == 5


def test_settings_come_from_the_config_and_the_learning_rate_names_its_factor(study):
    out, _, _ = study
    rows = seed_rows(out)
    assert set(rows) == {("ntm_lstm", "4", "sqrtB", "0"), ("ntm_lstm", "4", "sqrtB", "1"),
                         ("ntm_lstm", "4", "sqrtB", "2"), ("ntm_lstm", "4", "1", "0"), ("ntm_ff", "16", "B", "0"),
                         ("lstm", "16", "1", "0"), ("lstm", "16", "B", "0")}
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
    assert "- overall: B=4, lr x sqrtB (median 0.066 over 1 of 6 NTM task x model cells)" in best
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


def test_the_lstm_baseline_has_its_own_rows_budget_and_paper_curve(study):
    out, _, _ = study
    cells = cell_rows(out)
    ntm = cells[("ntm_lstm", "4", "sqrtB")]
    assert (ntm["budget"], ntm["lr"]) == ("60000", "0.0002")  # the NTMs' rows as they were
    paper, scaled = cells[("lstm", "16", "1")], cells[("lstm", "16", "B")]
    assert batch_study.table_lr("copy", "lstm") == pytest.approx(3e-5)
    assert (paper["task"], paper["lr"], paper["budget"], paper["seeds_finished"]) == ("copy", "3e-05", "100000", "1")
    assert (scaled["lr"], scaled["budget"], scaled["median_last_window_end"]) == ("0.00048", "100000", "100000")
    # against the paper's LSTM curve: its three points on the axes within 100k
    assert float(paper["curve_figure"]) == pytest.approx(0, abs=1e-6) and paper["curve_figure_points"].startswith("3/")
    # 3 bits against 8.32, 6.823 and 5.596: the median of |log2(4 / (paper + 1))| is the middle point's
    assert float(scaled["curve_figure"]) == pytest.approx(math.log2(7.823 / 4), rel=1e-4)
    # the paper's LSTM copy landmarks (200k and later) lie beyond 100k: no landmark of its own
    assert paper["below_0.1_paper_k"] == paper["below_0.1_median_status"] == ""
    seed = seed_rows(out)[("lstm", "16", "1", "0")]
    assert (seed["budget"], seed["sequences"], seed["finished"]) == ("100000", "100000", "true")


def test_the_summary_shows_the_baseline_beside_the_ntm_cells(study):
    out, _, _ = study
    text = (out / "SUMMARY.md").read_text()
    assert "copy LSTM 100k sequences" in text.split("\n\n")[1]  # the budgets in the preamble
    table = text.split("## copy")[1].split("\n## ")[0]
    assert table.startswith(" (NTM-FF, NTM-LSTM: 60k sequences; LSTM: 100k sequences)\n")
    row = next(line for line in table.splitlines() if line.startswith("| LSTM | B=16, lr x 1 "))
    assert "(3e-05)" in row and "0.000 (0.000-0.000)" in row and "(running)" not in row
    assert "LSTM: against the paper's LSTM curve (Fig 3), on its axes from 75.48k (8.32 bits)" in table
    best = text.split("## Best settings")[1]
    assert "- copy, LSTM: B=16, lr x 1 (0.000)" in best
    # the overall line is the NTM cells' alone: the baseline's figure 0 would have won it
    assert "- overall: B=4, lr x sqrtB (median 0.066 over 1 of 6 NTM task x model cells)" in best


def test_the_dry_run_of_the_baseline_sweeps_it_alone_at_its_budget(tmp_path):
    env = {**os.environ, "NTM_BATCH_STUDY_DIR": str(tmp_path / "study")}
    result = subprocess.run([sys.executable, str(SCRIPTS / "batch_study.py"), "run", "--dry-run", "--models", "lstm",
                             "--tasks", "copy", "--batches", "16", "--seeds", "0"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "3 runs to train or finish" and len(lines) == 2  # 3 factors x 1 seed, one sweep
    words = lines[1].split()
    for word in ("task=copy", "model=lstm", "train.batch_size=16", "train.lr=3e-05,0.00012,0.00048",
                 "train.total_sequences=100000", "eval.every=100000", "seed=0"):
        assert word in words
    assert not (tmp_path / "study").exists()


def test_the_baseline_is_studied_on_copy_only_and_not_in_one_sweep_with_the_ntms():
    assert batch_study.budget("copy", "lstm") == 100_000 and batch_study.budget("copy", "ntm_ff") == 60_000
    assert batch_study.budget("repeat_copy", "lstm") is None
    assert [c[:2] for c in batch_study.cells(batch_study.TASKS, ["lstm"], [1], [0])] == [("copy", "lstm")]
    with pytest.raises(SystemExit, match="different table learning rates"):
        batch_study.run_commands([("copy", "ntm_lstm", 1, "1", 0), ("copy", "lstm", 1, "1", 0)], "joblib")
    with pytest.raises(SystemExit, match="lstm is studied on copy only"):
        batch_study.main(["run", "--dry-run", "--models", "lstm", "--tasks", "repeat_copy"])


def test_every_run_is_recorded_and_the_records_alone_rebuild_the_summary(study, tmp_path):
    """The run folders are git-ignored and go with the machine: a copy of the study without them (what
    a fresh clone has) writes the same CSVs and SUMMARY.md from the committed records."""
    out, _, _ = study
    records = sorted((out / "records").rglob("*.json"))
    assert len(records) == len(read_csv(out / "seeds.csv")) == 7  # the folder without events has none
    record = json.loads((out / "records" / "copy" / "b16" / "ntm_ff_lr0.0016_seed0.json").read_text())
    assert (record["model"], record["batch"], record["lr"], record["seed"]) == ("ntm_ff", 16, 0.0016, 0)
    assert record["path"] == str(Path("runs/copy/b16/ntm_ff_lr0.0016_seed0")) and record["sequences"] == 60_000
    assert len(record["curve"]) == 60 and record["curve"][0] == [1000, 5.0]
    clone = tmp_path / "clone"
    shutil.copytree(out, clone, ignore=shutil.ignore_patterns("runs"))
    with redirect_stdout(io.StringIO()) as printed:
        summarise(clone)
    assert printed.getvalue() == ""
    for name in ("seeds.csv", "cells.csv", "SUMMARY.md"):
        assert (clone / name).read_text() == (out / name).read_text(), name


def test_a_record_with_more_sequences_is_not_replaced_by_a_shorter_run(study, tmp_path):
    """A run started afresh in a later session (its folder lost) must not shrink what the record holds
    until it has caught up."""
    out, _, _ = study
    clone = tmp_path / "clone"
    shutil.copytree(out, clone)
    name = clone / "records" / "copy" / "b4" / "ntm_lstm_lr0.0001_seed0.json"
    longer = json.loads(name.read_text())
    longer["curve"] += [[x, 20.0] for x in range(36_000, 61_000, 1000)]
    longer["sequences"] = 60_000
    name.write_text(json.dumps(longer))
    with redirect_stdout(io.StringIO()) as printed:
        summarise(clone)
    assert "its record has more sequences, kept" in printed.getvalue()
    assert json.loads(name.read_text())["sequences"] == 60_000
    row = seed_rows(clone)[("ntm_lstm", "4", "1", "0")]
    assert (row["sequences"], row["finished"]) == ("60000", "true")


def test_archived_cells_count_in_the_overall_line_until_re_run(study, tmp_path):
    """An earlier summary's cells.csv under archive/: a cell no record covers joins the overall line,
    marked; one a record covers is replaced by it."""
    out, _, _ = study
    clone = tmp_path / "clone"
    shutil.copytree(out, clone)
    archive = clone / "archive" / "2026-12-03"
    archive.mkdir(parents=True)
    columns = ["task", "model", "batch", "lr_factor", "lr", "seeds", "seed_list", "seeds_finished", "curve_figure"]
    rows = [["repeat_copy", "ntm_lstm", "4", "sqrtB", "0.0002", "3", "0 1 2", "3", "0.01"],  # no record: counts
            ["copy", "ntm_lstm", "4", "sqrtB", "0.0002", "3", "0 1 2", "3", "9.5"],          # recorded: replaced
            ["repeat_copy", "ntm_ff", "16", "1", "0.0001", "3", "0 1 2", "2", "3.0"]]         # another setting
    archive.joinpath("cells.csv").write_text("\n".join(",".join(r) for r in [columns, *rows]) + "\n")
    with redirect_stdout(io.StringIO()):
        summarise(clone)
    text = (clone / "SUMMARY.md").read_text()
    section = text.split("## Archived cells")[1].split("\n## ")[0]
    assert "| repeat_copy | NTM-LSTM | B=4, lr x sqrtB (0.0002) | 0 1 2 | 0.01 | archive/2026-12-03/ |" in section
    assert "| repeat_copy | NTM-FF | B=16, lr x 1 (0.0001) | 0 1 2 (running) | 3 | archive/2026-12-03/ |" in section
    assert "9.5" not in section
    # B=4, lr x sqrtB: the recorded copy cell (0.066) and the archived repeat-copy cell (0.01)
    overall = text.split("- overall: ")[1]
    assert overall.startswith("B=4, lr x sqrtB (median 0.038 over 2 of 6 NTM task x model cells, 1 of them archived)")
    # every setting's row over the six cells: recorded and archived (*) figures, and their median
    grid = text.split("## Every setting over the six NTM cells")[1].split("\n## ")[0]
    row = next(line for line in grid.splitlines() if line.startswith("| B=4, lr x sqrtB |"))
    assert row == "| B=4, lr x sqrtB |  | 0.066 |  | 0.010* |  |  | 0.038 (2) |"
    assert "| B=16, lr x 1 |  |  | 3.000* (running) |  |  |  | 3.000 (1) |" in grid
    # the tables and the CSVs stay the records' own
    assert len(read_csv(clone / "cells.csv")) == 5


def test_a_diverged_run_is_marked_and_not_retried(study, tmp_path):
    """A run the divergence guard stopped (its FAILED file) counts up to where it got, is marked
    "diverged" rather than "running", and batch_study run does not train it again."""
    out, _, _ = study
    clone = tmp_path / "clone"
    shutil.copytree(out, clone)
    folder = clone / "runs" / "copy" / "b4" / "ntm_lstm_lr0.0001_seed0"  # stopped at 35k of 60k
    assert not batch_study.finished(folder, 60_000)
    (folder / "FAILED").write_text("training diverged: 10 non-finite steps in a row after 3 restores\n")
    assert batch_study.finished(folder, 60_000)
    with redirect_stdout(io.StringIO()):
        summarise(clone)
    row = seed_rows(clone)[("ntm_lstm", "4", "1", "0")]
    assert (row["finished"], row["diverged"], row["sequences"]) == ("false", "true", "35000")
    cell = cell_rows(clone)[("ntm_lstm", "4", "1")]
    assert (cell["seeds_finished"], cell["seeds_diverged"]) == ("0", "1")
    assert json.loads((clone / "records" / "copy" / "b4" / "ntm_lstm_lr0.0001_seed0.json").read_text())[
        "diverged"].startswith("training diverged")
    table = (clone / "SUMMARY.md").read_text().split("## copy")[1].split("\n## ")[0]
    line = next(line for line in table.splitlines() if "B=4, lr x 1 " in line)
    assert "| 1 (0) (1 diverged) |" in line and "(running)" not in line


def test_the_regime_check_reads_each_seeds_cost_at_25k_and_draws_every_seed(tmp_path):
    """Repeat copy NTM-LSTM at B=4, lr x B, to 30k: seed 0 stays on the plateau, seed 1 leaves it at
    21k (10 bits at 25k), seed 2 at 11k (12 bits): the median of seeds 0-2 at 25k is 12 bits, below 15.
    At B=16 x 1 one seed only: the median of seeds 0-2 cannot be taken."""
    runs = tmp_path / "runs" / "repeat_copy"
    for seed, windows in enumerate([[150.0] * 3, [150.0, 150.0, 10.0], [150.0, 12.0, 12.0]]):
        write_run(runs / "b4" / f"s{seed}", "repeat_copy", "ntm_lstm", 4, 1e-4, seed, windows, scaling="linear")
    write_run(runs / "b16" / "s0", "repeat_copy", "ntm_lstm", 16, 1e-4, 0, [1.0] * 3)
    with redirect_stdout(io.StringIO()):
        written = summarise(tmp_path)
    assert [p.name for p in written] == ["seeds.csv", "cells.csv", "batch_study.png", "repeat_copy_seeds.png",
                                         "SUMMARY.md"]
    assert (tmp_path / "repeat_copy_seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "## The regime issue's check: repeat_copy NTM-LSTM, seeds 0, 1, 2 below 15 bits at 25k" in summary
    check = [line for line in summary.splitlines() if line.startswith("| B=4, lr x B (0.0004) | 0: 150")]
    assert check == ["| B=4, lr x B (0.0004) | 0: 150, 1: 10, 2: 12 | 12 (yes) | 2/3 | 0: never, 1: 21k, 2: 11k |"]
    assert "| B=16, lr x 1 (0.0001) | 0: 1 | n/a (n/a) | 1/1 | 0: 1k |" in summary
