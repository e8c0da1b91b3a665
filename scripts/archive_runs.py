#!/usr/bin/env python
"""Keep what a later session needs to extend a reproduction: a slim copy of every run under SRC.

Each run folder (and each sweep's multirun.yaml / failed_jobs.txt) is copied to DEST under the same
relative path with its config (.hydra/), train.log, FAILED marker and checkpoint.pt as they are, and
its TensorBoard event files rewritten without image summaries (the evaluations' example pictures:
about 10.9 of a run's 11 MB; every scalar, the hparams, text and custom-scalars records are kept
byte for byte). The copy is itself a sweep folder: ``ntm-report DEST`` rebuilds the report from it,
and ``ntm-train -m ... hydra.sweep.dir=DEST/<experiment> resume=true`` (scripts/reproduce_paper.sh
with SWEEP_ROOT=DEST) continues its runs from their checkpoints. To a larger budget: keep the run
folders' names, e.g. the cpu budget's runs to 500k sequences:

    SWEEP_ROOT=outputs/reproduction/archive BUDGET=cpu scripts/reproduce_paper.sh hydra/launcher=stacked \
        model=ntm_lstm train.total_sequences=500000 \
        'hydra.job.config.override_dirname.exclude_keys=[resume,device,progress,train.total_sequences]'

    python scripts/archive_runs.py outputs/reproduction/runs outputs/reproduction/archive

A run already archived is replaced (each file is written to a temporary name and renamed).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ntm_experiments.runs import ConfigError, find_run_dirs, write_atomic

KEPT_FILES = ("train.log", "checkpoint.pt", "FAILED")       # copied as they are, when present
SWEEP_FILES = ("multirun.yaml", "failed_jobs.txt")            # a sweep folder's own files
DROPPED_PLUGINS = ("images",)                                 # summaries left out of the event files


def slim_events(src: Path) -> bytes:
    """src's event records without image summaries, as an event file's bytes."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    out = io.BytesIO()
    writer = RecordWriter(out)
    for record in RawEventFileLoader(str(src)).Load():
        event = Event.FromString(record)
        values = event.summary.value if event.HasField("summary") else []
        if values and all(v.metadata.plugin_data.plugin_name in DROPPED_PLUGINS or v.HasField("image")
                          for v in values):
            continue
        writer.write(record)  # the record's own bytes: scalars stay exactly as logged
    return out.getvalue()


def archive(src: Path, dest: Path) -> list[Path]:
    """Archive every run under src into dest (each file written whole or not at all:
    runs.write_atomic); the archived run folders."""
    runs = find_run_dirs(src)
    for run in runs:
        out = dest / run.relative_to(src)
        copies = [f for f in (run / ".hydra").iterdir() if f.is_file()] + [run / n for n in KEPT_FILES]
        for f in copies:
            if f.is_file():
                write_atomic(out / f.relative_to(run), f.read_bytes())
        for events in sorted(run.glob("events.out.tfevents.*")):
            write_atomic(out / events.name, slim_events(events))
    for sweep in {run.parent for run in runs if run != src}:  # each sweep folder's own files, once
        for name in SWEEP_FILES:
            if (sweep / name).is_file():
                write_atomic(dest / sweep.relative_to(src) / name, (sweep / name).read_bytes())
    return [dest / run.relative_to(src) for run in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a run or sweep folder, or a folder of sweeps")
    parser.add_argument("dest", type=Path, help="where the slim copies go (the same relative paths)")
    args = parser.parse_args(argv)
    try:
        runs = archive(args.src, args.dest)
    except ConfigError as error:
        print(f"archive_runs.py: error: {error}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
    print(f"archived {len(runs)} runs in {args.dest} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
