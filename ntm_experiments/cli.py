"""Console scripts. Configuration mistakes end in one line on stderr and exit code 2; a sweep
whose jobs ran but some failed ends with a summary of those and exit code 1.

Hydra normally prints a multi-line report for a bad override; we ask it to raise
instead (HYDRA_FULL_ERROR) and print one line naming the bad value and what is allowed.
Set HYDRA_FULL_ERROR=1 yourself to see Hydra's full report and stack trace.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, NoReturn

from hydra.errors import HydraException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .errors import Interrupted, RunError
from .interrupts import IDLE, install_idle_handlers

_DETAIL = re.compile(r"^\s*(full_key|object_type|reference_type|Config search path|provider=|To append)")


def _allowed_keys(error: BaseException) -> str:
    """For an unknown key, the keys its dataclass schema does allow."""
    schema = getattr(error, "object_type", None)
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)) and dataclasses.is_dataclass(schema):
        return f" (allowed: {', '.join(f.name for f in dataclasses.fields(schema))})"
    return ""


def one_line(error: BaseException) -> str:
    """Condense a Hydra/OmegaConf/our error (and its causes) into a single line."""
    link: BaseException | None = error
    while link is not None:  # our own messages are already one clear line
        if isinstance(link, RunError):
            return str(link)
        link = link.__cause__ or link.__context__
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__
    parts: list[str] = []
    suffix = "".join(_allowed_keys(link) for link in chain)
    for link in chain:
        lines = [ln.strip() for ln in str(link).splitlines()]
        text, options = [], []
        for ln in lines:
            if not ln or _DETAIL.match(ln):
                continue
            if ln.startswith("Available options"):
                text.append(ln.rstrip(":").lower() + ":")
                continue
            if text and text[-1].endswith(":") and re.fullmatch(r"[\w./-]+", ln):
                options.append(ln)
                continue
            text.append(ln)
        if options:
            text[-1] = f"{text[-1]} {', '.join(options)}"
        message = " ".join(text).rstrip(".")
        message = message.replace("Key '", "key '").replace("is not in struct", "is not a known setting")
        if message and message not in parts:
            parts.append(message)
    return (": ".join(parts) if parts else "unknown error") + suffix


def discard_empty_run_dir(run_dir: Path) -> None:
    """Remove a run folder that a failed run left without events or a checkpoint, and the empty
    ``outputs/<task>/<model>/`` folders above it (up to the working folder)."""
    from .checkpoint import CHECKPOINT_NAME

    if any(run_dir.glob("events.out.tfevents.*")) or (run_dir / CHECKPOINT_NAME).exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.resolve().parents:
        if parent == Path.cwd() or Path.cwd() not in parent.parents:
            break
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            break


def exit_with_error(prog: str, error: BaseException) -> NoReturn:
    """The error as one line on stderr, then exit 2."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    sys.exit(2)


def run_cli(entry: Callable[[], object], prog: str, idle: str = "") -> None:
    """``entry()`` with its errors as one line; ``idle``: what an interrupt outside a training loop means."""
    user_wants_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        entry()
    except Interrupted as stop:  # a training loop stopped by a signal, its checkpoint written (interrupts.py)
        print(f"{prog}: {stop}", file=sys.stderr)
        sys.exit(stop.code)
    except (RunError, HydraException, OmegaConfBaseException) as error:
        if user_wants_full_error:
            raise
        exit_with_error(prog, error)
    except ValueError as error:  # Hydra's own command-line check, e.g. -m together with --cfg
        if user_wants_full_error or not str(error).startswith("Only one of --run"):
            raise
        print(f"{prog}: error: {error}: -m/--multirun cannot be combined with --cfg, --info or --run "
              "(--cfg job without -m prints one job's config)", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # e.g. an output folder that cannot be created or written
        if user_wants_full_error:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"{prog}: error: cannot write{where}: {error.strerror or error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a training loop, which handles SIGINT itself
        print(f"{prog}: interrupted{idle}", file=sys.stderr)
        sys.exit(130)


def train() -> None:
    from .sweep import CURRENT_SWEEP, LAST_SWEEP_FAILURES, report_failures
    from .train import main

    install_idle_handlers()  # SIGINT, SIGTERM outside a training loop (which handles them itself)
    try:
        run_cli(main, "ntm-train", IDLE)
    except Exception as error:  # a sweeper that gave up (e.g. Optuna when every trial failed)
        if not CURRENT_SWEEP or os.environ.get("NTM_FULL_ERROR") == "1":
            raise
        report_failures(CURRENT_SWEEP[0])
        print(f"ntm-train: error: the sweep stopped: {type(error).__name__}: {' '.join(str(error).split())}",
              file=sys.stderr)
        sys.exit(1)
    if LAST_SWEEP_FAILURES:  # a sweep ran, and some of its jobs failed (summary already printed)
        sys.exit(1)


def evaluate_checkpoint(argv: list[str]) -> Path:
    """ntm-eval: score a checkpoint on its task's generalisation suite; write PNGs, JSON, CSV."""
    import argparse

    import torch
    from omegaconf import OmegaConf

    from . import checkpoint
    from .devices import resolve_device
    from .evaluate import as_dicts, capacity_warnings, eval_suite, evaluate, example_figure, results_table
    from .runs import save_figure, write_atomic

    parser = argparse.ArgumentParser(prog="ntm-eval", description="Evaluate a trained checkpoint on its task's "
                                     "generalisation suite; writes <run dir>/eval/<date>_<time>/{results.json,"
                                     "results.csv,*.png}, a folder per call.")
    parser.add_argument("path", type=Path, help=f"a run directory (holding {checkpoint.CHECKPOINT_NAME}) or a "
                        "checkpoint file")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.lengths=[40,80,120] "
                        "eval.sequences=256 eval.pictures=false device=cpu")
    args = parser.parse_args(argv)
    run_dir = args.path if args.path.is_dir() else args.path.parent
    model, task, cfg, saved = checkpoint.load_model(args.path, args.overrides)
    device = torch.device(resolve_device(str(cfg.device)))
    model.to(device)

    seen = saved["sequences_seen"]
    for warning in capacity_warnings(task, cfg.model.get("memory_rows"), cfg.eval):
        print(f"ntm-eval: warning: {warning}", file=sys.stderr)
    results = evaluate(model, task, cfg.eval, device)
    print(f"{cfg.model.name} on {cfg.task.name}, after {seen:,} training sequences ({run_dir})")
    print(results_table(results))
    out = _new_folder(run_dir / "eval")  # each call's results apart: another call's PNGs never sit beside them
    payload = {"run_dir": str(run_dir), "task": cfg.task.name, "model": cfg.model.name, "sequences_seen": seen,
               "eval": OmegaConf.to_container(cfg.eval), "results": as_dicts(results)}
    write_atomic(out / "results.json", json.dumps(payload, indent=2) + "\n")
    rows = as_dicts(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "results.csv", buffer.getvalue())
    if cfg.eval.pictures:
        for setting, result in zip(eval_suite(task, cfg.eval), results):
            fig = example_figure(model, task, setting, cfg.eval.seed, device, result)
            save_figure(fig, out / f"{setting.name}.png", dpi=110)
    print(f"wrote {out}/results.json, results.csv" + (" and one PNG per setting" if cfg.eval.pictures else ""))
    return out


def _new_folder(parent: Path) -> Path:
    """A new folder ``<parent>/<date>_<time>`` (``_2``, ``_3``, ... after it when taken)."""
    from datetime import datetime

    stamp, n = datetime.now().strftime("%Y-%m-%d_%H-%M-%S"), 1
    while True:
        folder = parent / (stamp if n == 1 else f"{stamp}_{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            n += 1


def evaluate() -> None:
    run_cli(lambda: evaluate_checkpoint(sys.argv[1:]), "ntm-eval")


def aggregate() -> None:
    from .aggregate import main

    run_cli(lambda: main(sys.argv[1:]), "ntm-aggregate")


def report() -> None:
    from .report import main

    run_cli(lambda: main(sys.argv[1:]), "ntm-report")
