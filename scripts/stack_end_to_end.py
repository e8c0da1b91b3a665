#!/usr/bin/env python
"""End to end: K seeds trained by ``ntm-train -m hydra/launcher=stacked`` against one run trained by
``ntm-train``, each as the user runs it (start-up, data, logging, evaluations and checkpoints
included), on an otherwise idle machine. Prints each command's wall-clock time, the aggregate
sequences per second and the ratio; ``--json`` also writes them.

    python scripts/stack_end_to_end.py --runs 16 --sequences 3000 [--batch-size 1] [--task copy --model ntm_lstm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"stack_end_to_end: {' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16, help="seeds in the stack")
    parser.add_argument("--sequences", type=int, default=3000, help="training sequences per run")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--task", default="copy")
    parser.add_argument("--model", default="ntm_lstm")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for both, e.g. eval.pictures=false")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    common = [f"task={args.task}", f"model={args.model}", f"train.batch_size={args.batch_size}",
              f"train.total_sequences={args.sequences}", "train.fast_path=true", "progress=false", *args.override]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one = timed(["ntm-train", *common, "seed=0", "hydra.run.dir=one"], work)
        seeds = ",".join(str(s) for s in range(args.runs))
        stacked = timed(["ntm-train", "-m", "hydra/launcher=stacked", *common, f"seed={seeds}",
                         "hydra.sweep.dir=stack"], work)
    row = {"task": args.task, "model": args.model, "batch_size": args.batch_size, "sequences_per_run": args.sequences,
           "runs": args.runs, "one_run_s": one, "stacked_s": stacked,
           "one_run_sequences_per_s": args.sequences / one, "stacked_sequences_per_s": args.runs * args.sequences / stacked,
           "cpus": os.cpu_count()}
    row["vs_one"] = row["stacked_sequences_per_s"] / row["one_run_sequences_per_s"]
    print(f"one run:          {one:7.1f} s  {row['one_run_sequences_per_s']:8.0f} seq/s  (ntm-train, {args.sequences} sequences)")
    print(f"{args.runs} stacked runs: {stacked:7.1f} s  {row['stacked_sequences_per_s']:8.0f} seq/s  "
          f"(ntm-train -m hydra/launcher=stacked): {row['vs_one']:.2f}x one run")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
