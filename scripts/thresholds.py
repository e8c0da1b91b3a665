#!/usr/bin/env python
"""When did a run's training cost first fall below given thresholds?

Reads the run's TensorBoard event files and prints, per threshold, the sequences seen and
the wall-clock minutes since the run's first logged point (add the time to that first point,
also printed, for the total).

    python scripts/thresholds.py outputs/copy/ntm_lstm/2026-11-22_22-48-51 --below 1 0.1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TAG = "train/cost_bits_per_sequence"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--below", type=float, nargs="+", default=[1.0, 0.1], help="thresholds in bits per sequence")
    args = parser.parse_args(argv)
    if not list(args.run_dir.glob("events.out.tfevents.*")):
        print(f"thresholds.py: error: {args.run_dir}: no TensorBoard event files there", file=sys.stderr)
        return 2
    acc = EventAccumulator(str(args.run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if TAG not in acc.Tags()["scalars"]:
        print(f"thresholds.py: error: {args.run_dir}: no '{TAG}' scalar logged yet", file=sys.stderr)
        return 2
    points = acc.Scalars(TAG)
    start = points[0]
    print(f"{args.run_dir}: {len(points)} points, {points[-1].step:,} sequences, final {points[-1].value:.4f} bits/seq")
    print(f"first point: {start.step:,} sequences, {start.value:.2f} bits/seq")
    for threshold in args.below:
        hit = next((p for p in points if p.value < threshold), None)
        if hit is None:
            print(f"below {threshold:g} bits: not reached")
        else:
            minutes = (hit.wall_time - start.wall_time) / 60
            print(f"below {threshold:g} bits: at {hit.step:,} sequences, {minutes:.1f} min after the first point")
    return 0


if __name__ == "__main__":
    sys.exit(main())
