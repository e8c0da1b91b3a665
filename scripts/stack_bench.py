"""``scripts/bench.py --stack K``: the aggregate training speed of K stacked runs (fast/stacked.py)
beside the other ways to train K runs, in one process, the contenders' timed chunks taken in turn:

  one       one run alone (FastStep, as ntm-train runs it): K runs one after another train at
            this aggregate rate
  stacked   K runs as one stack (StackedStep, as hydra/launcher=stacked trains them)
  joblib2   two runs at once in two processes with one torch thread each (hydra/launcher=joblib
            on two cores)
  batch16   one run at batch 16 (the speed of batching, for comparison)
Every run is the bench's task and model at --stack-batch sequences per update (default 1); the
ratios are to ``one``.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time

import torch

from ntm_experiments.fast import FastStep
from ntm_experiments.fast.stacked import StackedStep, stacked_forward


def _single(build, args, seed: int, batch_size: int, device: torch.device):
    cfg, task, model, params, opt = build(args.task, args.model, [*args.override, f"seed={seed}"], device)
    return cfg, task, FastStep(model, task, opt, params, device, graphs=False, core=args.core)


class One:
    """One run at ``batch_size``; ``steps(n)`` -> (seconds, sequences)."""

    def __init__(self, build, args, batch_size: int, device: torch.device, seed: int = 0):
        cfg, self.task, self.stepper = _single(build, args, seed, batch_size, device)
        self.clip, self.batch_size, self.device = cfg.train.clip_value, batch_size, device
        self.setting = {args.length_key: args.length} if args.length_key else {}
        self.generator = torch.Generator().manual_seed(seed)

    def steps(self, n: int) -> tuple[float, int]:
        start = time.perf_counter()
        for _ in range(n):
            batch = self.task.sample(self.batch_size, self.generator, **self.setting).to(self.device)
            cost, norm = self.stepper.forward_backward(batch)
            if bool(torch.isfinite(cost.sum()) & torch.isfinite(norm)):
                self.stepper.update(self.clip)
        return time.perf_counter() - start, n * self.batch_size


class Stacked:
    """K runs (seeds 0..K-1) as one stack."""

    def __init__(self, build, args, k: int, batch_size: int, device: torch.device):
        runs = [build(args.task, args.model, [*args.override, f"seed={seed}"], device) for seed in range(k)]
        fast = True
        forwards = [stacked_forward(fast, model, device, args.core) for _, _, model, _, _ in runs]
        self.tasks = [task for _, task, _, _, _ in runs]
        self.stepper = StackedStep([model for _, _, model, _, _ in runs], self.tasks, [opt for *_, opt in runs],
                                   [params for _, _, _, params, _ in runs], forwards)
        self.clip = torch.tensor([cfg.train.clip_value for cfg, *_ in runs])
        self.generators = [torch.Generator().manual_seed(seed) for seed in range(k)]
        self.setting = {args.length_key: args.length} if args.length_key else {}
        self.batch_size, self.device, self.k = batch_size, device, k

    def steps(self, n: int) -> tuple[float, int]:
        start = time.perf_counter()
        for _ in range(n):
            batches = [task.sample(self.batch_size, g, **self.setting).to(self.device)
                       for task, g in zip(self.tasks, self.generators)]
            costs, norms = self.stepper.forward_backward(batches)
            finite = torch.tensor([bool(torch.isfinite(c.sum())) for c in costs]) & torch.isfinite(norms)
            self.stepper.update(finite, self.clip)
        return time.perf_counter() - start, n * self.batch_size * self.k


def _worker(connection, args, batch_size: int, seed: int) -> None:
    """A joblib-like job: one run with one torch thread, timing chunks on request."""
    from bench import build  # the script's own builder (scripts/ is on sys.path: bench.py runs from there)

    torch.set_num_threads(1)
    one = One(build, args, batch_size, torch.device("cpu"), seed)
    one.steps(args.warmup)
    connection.send("ready")
    while (n := connection.recv()) is not None:
        connection.send(one.steps(n))


class Joblib2:
    """Two runs at once in two processes (one torch thread each): their sequences over the wall time."""

    def __init__(self, args, batch_size: int):
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        for seed in range(2):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, args, batch_size, seed), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        for pipe in self.pipes:
            assert pipe.recv() == "ready"

    def steps(self, n: int) -> tuple[float, int]:
        start = time.perf_counter()
        for pipe in self.pipes:
            pipe.send(n)
        sequences = sum(pipe.recv()[1] for pipe in self.pipes)
        return time.perf_counter() - start, sequences

    def close(self) -> None:
        for pipe, process in zip(self.pipes, self.processes):
            pipe.send(None)
            process.join(timeout=10)


def run(build, args, device: torch.device) -> list[dict]:
    """The four contenders' rows (aggregate sequences/s, median of --repeats chunks, taken in turn)."""
    k, b = args.stack, args.stack_batch
    contenders = {"one": One(build, args, b, device), "stacked": Stacked(build, args, k, b, device)}
    if device.type == "cpu":
        contenders["joblib2"] = Joblib2(args, b)
    contenders["batch16"] = One(build, args, 16, device)
    for name, contender in contenders.items():
        if name != "joblib2":
            contender.steps(args.warmup)
    from bench import Spinners

    chunks: dict[str, list[float]] = {name: [] for name in contenders}
    busy: dict[str, list[float]] = {name: [] for name in contenders}
    with Spinners(args.busy) as spinners:  # --busy N: each chunk again with N processes spinning
        for _ in range(args.repeats):
            for name, contender in contenders.items():
                steps = max(1, args.steps // k) if name == "stacked" else args.steps
                seconds, sequences = contender.steps(steps)
                chunks[name].append(sequences / seconds)
                if args.busy:
                    spinners.spin(True)
                    try:
                        seconds, sequences = contender.steps(steps)
                    finally:
                        spinners.spin(False)
                    busy[name].append(sequences / seconds)
    if "joblib2" in contenders:
        contenders["joblib2"].close()
    one = statistics.median(chunks["one"])
    rows = []
    for name, rates in chunks.items():
        rate = statistics.median(rates)
        rows.append({"path": name, "runs": {"one": 1, "stacked": k, "joblib2": 2, "batch16": 1}[name],
                     "batch_size": 16 if name == "batch16" else b, "sequences_per_s": rate, "vs_one": rate / one,
                     "chunks_sequences_per_s": rates, "device": device.type, "task": args.task, "model": args.model,
                     "threads": torch.get_num_threads()})
        if busy[name]:
            busy_rate = statistics.median(busy[name])
            rows[-1].update(busy=args.busy, busy_sequences_per_s=busy_rate, idle_over_busy=rate / busy_rate,
                            busy_chunks_sequences_per_s=busy[name])
    return rows


def table(rows: list[dict]) -> str:
    busy = any("busy" in r for r in rows)
    lines = ["| way to train | runs | batch per run | aggregate seq/s | vs one run |"
             + (" busy seq/s | idle / busy |" if busy else ""), "|---|---|---|---|---|" + ("---|---|" if busy else "")]
    for r in rows:
        lines.append(f"| {r['path']} | {r['runs']} | {r['batch_size']} | {r['sequences_per_s']:,.0f} | "
                     f"{r['vs_one']:.2f}x |" + (f" {r['busy_sequences_per_s']:,.0f} | {r['idle_over_busy']:.2f}x |"
                                               if busy else ""))
    return "\n".join(lines)
