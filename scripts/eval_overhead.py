#!/usr/bin/env python
"""How much training time do the periodic generalisation evaluations cost?

Times, in one process and side by side, (a) training steps on the task and (b) one
evaluation of the task's suite (with pictures, as during training), then prints the
evaluation time as a fraction of the time it takes to train `eval.every` sequences.

    python scripts/eval_overhead.py task=copy model=ntm_lstm
    python scripts/eval_overhead.py task=ngrams model=ntm_ff --steps 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir
from torch.utils.tensorboard import SummaryWriter

from ntm_experiments.config import config_dir
from ntm_experiments.evaluate import eval_suite, log_evaluation
from ntm_experiments.fast import PlainStep
from ntm_experiments.run_state import build_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="ntm-train overrides, e.g. task=copy model=ntm_lstm")
    parser.add_argument("--steps", type=int, default=30, help="training steps to time")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    task, model, opt, params = build_run(cfg, torch.device("cpu"))
    stepper = PlainStep(model, task, opt, params)
    rng = torch.Generator().manual_seed(cfg.seed)

    def train_step() -> None:
        stepper.forward_backward(task.sample(cfg.train.batch_size, rng))
        stepper.update(cfg.train.clip_value)

    train_step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step()
    per_sequence = (time.perf_counter() - start) / (args.steps * cfg.train.batch_size)

    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        start = time.perf_counter()
        log_evaluation(writer, model, task, cfg.eval, 0)
        evaluation = time.perf_counter() - start
        writer.close()
    training = per_sequence * cfg.eval.every
    print(f"{cfg.task.name}/{cfg.model.name}, batch {cfg.train.batch_size}, {torch.get_num_threads()} threads")
    print(f"training: {1 / per_sequence:.0f} sequences/s -> {training:.1f} s per eval.every={cfg.eval.every} sequences")
    suite = eval_suite(task, cfg.eval)
    scored = sum(s.sequences or cfg.eval.sequences for s in suite)
    print(f"one evaluation ({len(suite)} settings, {scored} sequences in all, pictures "
          f"{'on' if cfg.eval.pictures else 'off'}): {evaluation:.2f} s")
    print(f"evaluation overhead: {100 * evaluation / training:.1f} % of training time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
