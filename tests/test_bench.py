"""scripts/bench.py runs as a script and writes the rows it prints (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_a_median_row_per_batch_and_path(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "scripts/bench.py", "--device", "cpu", "--paths", "eager",
                             "--batch-sizes", "2", "3", "--steps", "1", "--repeats", "3", "--warmup", "1",
                             "--length", "2", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch_size"], r["path"]) for r in rows] == [(2, "eager"), (3, "eager")]
    for row in rows:
        assert len(row["ms_per_step_chunks"]) == 3 and row["steps"] == 3
        assert sorted(row["ms_per_step_chunks"])[1] == row["ms_per_step"]  # the median chunk
    assert "| 2 |" in result.stdout and "| 3 |" in result.stdout


def test_bench_refuses_zero_repeats():
    result = subprocess.run([sys.executable, "scripts/bench.py", "--device", "cpu", "--repeats", "0"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--repeats 0" in result.stderr and "Traceback" not in result.stderr


def test_bench_stack_writes_a_row_per_way_to_train_k_runs(tmp_path):
    out = tmp_path / "stack.json"
    result = subprocess.run([sys.executable, "scripts/bench.py", "--device", "cpu", "--stack", "3", "--steps", "3",
                             "--repeats", "2", "--warmup", "1", "--length", "2", "--override", "model.controller_size=8",
                             "model.memory_rows=8", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = {r["path"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["one", "stacked", "joblib2", "batch16"]
    assert (rows["stacked"]["runs"], rows["joblib2"]["runs"], rows["batch16"]["batch_size"]) == (3, 2, 16)
    assert rows["one"]["vs_one"] == 1.0 and all(len(r["chunks_sequences_per_s"]) == 2 for r in rows.values())
    assert "| stacked | 3 | 1 |" in result.stdout


def test_bench_stack_busy_times_every_chunk_again_with_a_spinning_process(tmp_path):
    out = tmp_path / "stack.json"
    result = subprocess.run([sys.executable, "scripts/bench.py", "--device", "cpu", "--stack", "2", "--steps", "2",
                             "--repeats", "2", "--warmup", "1", "--length", "2", "--busy", "1", "--override",
                             "model.controller_size=8", "model.memory_rows=8", "--json", str(out)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert all(r["busy"] == 1 and len(r["busy_chunks_sequences_per_s"]) == 2 for r in rows)
    assert all(r["idle_over_busy"] == r["sequences_per_s"] / r["busy_sequences_per_s"] for r in rows)
    assert "idle / busy" in result.stdout


def test_stack_end_to_end_times_one_run_and_a_stack_through_the_cli(tmp_path):
    out = tmp_path / "e2e.json"
    result = subprocess.run([sys.executable, "scripts/stack_end_to_end.py", "--runs", "2", "--sequences", "4",
                             "--override", "model.controller_size=8", "model.memory_rows=8", "eval.sequences=2",
                             "eval.pictures=false", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    row = json.loads(out.read_text())
    assert (row["runs"], row["sequences_per_run"], row["batch_size"]) == (2, 4, 1)
    assert row["one_run_s"] > 0 and row["stacked_s"] > 0
    assert row["vs_one"] == row["stacked_sequences_per_s"] / row["one_run_sequences_per_s"]
    assert "2 stacked runs:" in result.stdout
