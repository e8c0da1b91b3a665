"""Training speed of the plain eager path against the fast path, side by side, in one run.

    python scripts/bench.py                                  # CPU here, or the GPU when there is one
    python scripts/bench.py --device cuda --batch-sizes 32 512 2048 --json bench.json

For each batch size and each path, it trains for a fixed number of steps exactly as
ntm-train does (draw a batch on the CPU, copy it to the device, forward, backward, check
it is finite, clip, RMSProp) and prints sequences/s and ms/step, with the ratio to eager.
Each row is timed in --repeats chunks of --steps steps and reports the median chunk, so a
stall of a shared machine during one chunk does not move the figure; the paths' chunks are
taken in turn, so a machine that slows down for a while slows every path alike.

Paths: eager, one per core of the registry (ntm_experiments/fast/cores.py), and fast:
  eager     PlainStep: eager PyTorch, what train.fast_path=false runs
  step      the NTM time step compiled with torch.compile, autograd per time step, no CUDA graphs
  sequence  the sequence core (fast/sequence.py): compiled forward and backward loops with
            the weight gradients as one GEMM each, no CUDA graphs
  native    the native C++ core (fast/native.py, fast/native.cpp), CPU only
  triton    the fused GPU core (fast/triton.py): Triton kernels for the memory step and
            the LSTM's pointwise work, no CUDA graphs; CUDA only
  fast      FastStep, what train.fast_path=true (and auto on CUDA) runs: on the CPU the native
            core; on CUDA the compiled time step (or --core ...) with each half of the training
            step replayed as a CUDA graph
(each core's path is FastStep with that core and no CUDA graphs)
Start-up (compiling, capturing) is timed apart and reported. On CUDA the peak memory of each
run is reported; a batch that does not fit is reported as out of memory, and the next is tried.
The task defaults to copy at a fixed length (Table 2's NTM-LSTM row, length 20: 42 time steps).

A busy machine (--busy N): bench.py starts N processes that spin on a core each, and takes every
timed chunk twice, once idle and once with the spinners running (they are paused in between,
and killed when bench.py ends, however it ends), so each row reports both and their ratio
side by side, under the same outside load. The load average is printed at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from ntm_experiments.config import config_dir  # noqa: E402
from ntm_experiments.fast import CORES, FastStep, PlainStep  # noqa: E402
from ntm_experiments.run_state import build_run  # noqa: E402


def build(task_name: str, model_name: str, overrides: list[str], device: torch.device):
    """The config, task, model, trained parameters and optimiser, as ntm-train builds them (seed 0)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"task={task_name}", f"model={model_name}", *overrides])
    task, model, opt, params = build_run(cfg, device)
    return cfg, task, model, params, opt


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(stepper, task, batch_size: int, setting: dict, steps: int, generator, device, clip: float) -> int:
    """``steps`` training steps as ntm-train runs them; returns the steps that were finite."""
    applied = 0
    ahead = task.sample(batch_size, generator, **setting).to(device)
    for _ in range(steps):
        batch = ahead
        cost, norm = stepper.forward_backward(batch)
        ahead = task.sample(batch_size, generator, **setting).to(device)  # drawn while the GPU works
        if bool(torch.isfinite(cost.sum()) & torch.isfinite(norm)):
            stepper.update(clip)
            applied += 1
    return applied


PATH_OPTIONS = {core: {"graphs": False, "core": core} for core in CORES}  # FastStep's keywords; eager is PlainStep
PATHS = ["eager", *CORES, "fast"]


class Run:
    """One path at one batch size: its own model, optimiser and data stream, built from the same seeds."""

    def __init__(self, path: str, args, batch_size: int, device: torch.device):
        cfg, self.task, model, params, opt = build(args.task, args.model, args.override, device)
        if path == "eager":
            self.stepper = PlainStep(model, self.task, opt, params)
        else:
            options = PATH_OPTIONS.get(path, {"core": args.core})  # fast: FastStep as ntm-train runs it
            self.stepper = FastStep(model, self.task, opt, params, device, **options)
        self.setting = {args.length_key: args.length} if args.length_key else {}
        self.generator = torch.Generator().manual_seed(0)
        self.batch_size, self.device, self.clip = batch_size, device, cfg.train.clip_value
        self.row = {"path": path, "batch_size": batch_size, "device": device.type, "task": args.task,
                    "model": args.model}
        core = getattr(self.stepper, "core", None)
        if core:
            self.row["core"] = core
        self.chunks: list[float] = []
        self.busy_chunks: list[float] = []  # with --busy: the same chunks, taken with the spinners running
        self.applied = 0

    def steps(self, count: int) -> float:
        """Seconds for ``count`` training steps, the device synchronised at the end."""
        start = time.perf_counter()
        self.applied += train_steps(self.stepper, self.task, self.batch_size, self.setting, count, self.generator,
                                    self.device, self.clip)
        synchronize(self.device)
        return time.perf_counter() - start


# a spinning process: it kills itself with bench.py (PR_SET_PDEATHSIG, Linux; elsewhere it notices
# its parent is gone within a few milliseconds of running), so none is left behind, even paused
SPIN = """
import ctypes, os, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except (AttributeError, OSError):
    pass
while os.getppid() == parent:
    for _ in range(100000):
        pass
"""


class Spinners:
    """``count`` processes that each keep one core busy while resumed; started paused. A context
    manager: on leaving it (an error, Ctrl-C) every one is killed and reaped."""

    def __init__(self, count: int):
        self.processes: list[subprocess.Popen] = []
        try:
            for _ in range(count):
                process = subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())], stdin=subprocess.DEVNULL)
                self.processes.append(process)
                os.kill(process.pid, signal.SIGSTOP)
        except BaseException:
            self.close()
            raise

    def spin(self, on: bool) -> None:
        for process in self.processes:
            os.kill(process.pid, signal.SIGCONT if on else signal.SIGSTOP)
        if on:
            time.sleep(0.05)  # let the scheduler place them before the chunk starts

    def close(self) -> None:
        for process in self.processes:
            process.kill()  # SIGKILL ends a paused process too
            process.wait()
        self.processes = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def measure(paths: list[str], args, batch_size: int, device: torch.device) -> list[dict]:
    """Every path at one batch size. Each is built and warmed up (compiled, captured) in turn,
    its start-up timed; then the timed chunks go round the paths (eager, fast, eager, fast,
    ...), so the ratios compare chunks that ran under the same load of the machine. With
    --busy each chunk is followed by the same chunk with the spinners running."""
    torch._dynamo.reset()  # every batch size compiles for itself: start-up is a cold start
    runs = []
    for path in paths:
        held = 0
        if device.type == "cuda":  # what the paths set up before this one hold is not this one's
            torch.cuda.reset_peak_memory_stats(device)
            held = torch.cuda.memory_allocated(device)
        run = Run(path, args, batch_size, device)
        runs.append(run)
        try:
            run.row["startup_s"] = run.steps(args.warmup)
        except torch.OutOfMemoryError:
            run.row["error"] = f"out of memory at batch {batch_size}: try a smaller batch"
            run.stepper = None
        if device.type == "cuda":  # this path's peak over its set-up and warm-up
            run.row["peak_memory_gib"] = (torch.cuda.max_memory_allocated(device) - held) / 2**30
    timed = [run for run in runs if "error" not in run.row]
    with Spinners(args.busy) as spinners:
        for _ in range(args.repeats):
            for run in timed:
                try:
                    run.chunks.append(run.steps(args.steps))
                    if args.busy:
                        spinners.spin(True)
                        try:
                            run.busy_chunks.append(run.steps(args.steps))
                        finally:
                            spinners.spin(False)
                except torch.OutOfMemoryError:
                    run.row["error"] = f"out of memory at batch {batch_size}: try a smaller batch"
            timed = [run for run in timed if "error" not in run.row]
    for run in runs:
        if "error" not in run.row:
            seconds = statistics.median(run.chunks)  # the median chunk: a stall of the machine does not move it
            run.row.update(ms_per_step=1000 * seconds / args.steps, sequences_per_s=args.steps * batch_size / seconds,
                           finite_steps=run.applied, steps=args.steps * args.repeats,
                           ms_per_step_chunks=[1000 * c / args.steps for c in run.chunks])
            if run.busy_chunks:
                busy = statistics.median(run.busy_chunks)
                run.row.update(busy=args.busy, busy_ms_per_step=1000 * busy / args.steps,
                               busy_sequences_per_s=args.steps * batch_size / busy,
                               busy_ms_per_step_chunks=[1000 * c / args.steps for c in run.busy_chunks])
        run.stepper = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [run.row for run in runs]


def profile(args, batch_size: int, device: torch.device) -> str:
    """Where a training step's time goes: the compiled step run kernel by kernel (no graphs)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cfg, task, model, params, opt = build(args.task, args.model, args.override, device)
    stepper = FastStep(model, task, opt, params, device, graphs=False, core=args.core)
    setting = {args.length_key: args.length} if args.length_key else {}
    generator = torch.Generator().manual_seed(0)
    train_steps(stepper, task, batch_size, setting, args.warmup, generator, device, cfg.train.clip_value)
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        train_steps(stepper, task, batch_size, setting, args.steps, generator, device, cfg.train.clip_value)
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type.name == "CUDA"]
        total = sum(e.self_device_time_total for e in kernels)
        launches = sum(e.count for e in kernels)
        head = (f"# {launches / args.steps:.0f} kernels per training step, {total / 1000 / args.steps:.2f} ms of "
                f"kernel time per step (batch {batch_size})\n")
    else:
        head = ""
    return head + events.table(sort_by=key, row_limit=30, max_name_column_width=70)


def table(rows: list[dict], paths: list[str]) -> str:
    by = {(r["batch_size"], r["path"]): r for r in rows}
    ratio_paths = [p for p in paths if p != "eager"]
    busy = any("busy_sequences_per_s" in r for r in rows)  # --busy: each path's busy speed and busy / idle
    head = ["batch", *(f"{p} {unit}" for p in paths for unit in ("seq/s", "ms/step")),
            *(f"{p} / eager" for p in ratio_paths),
            *(f"{p} {unit}" for p in (paths if busy else []) for unit in ("busy seq/s", "busy / idle")),
            "start-up s", "peak GiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for batch_size in sorted({r["batch_size"] for r in rows}):
        runs = {p: by.get((batch_size, p), {}) for p in paths}
        eager = runs.get("eager", {}).get("sequences_per_s")
        cells = [str(batch_size)]
        for r in runs.values():
            cells += ([f"{r['sequences_per_s']:,.0f}", f"{r['ms_per_step']:.2f}"] if "sequences_per_s" in r
                      else ["OOM" if "error" in r else "-", "-"])
        for p in ratio_paths:
            speed = runs[p].get("sequences_per_s")
            cells.append(f"{speed / eager:.2f}x" if eager and speed else "-")
        for r in runs.values() if busy else []:
            loaded = r.get("busy_sequences_per_s")
            cells += ([f"{loaded:,.0f}", f"{loaded / r['sequences_per_s']:.2f}x"] if loaded else ["-", "-"])
        startup = runs[paths[-1]].get("startup_s")
        peaks = [r["peak_memory_gib"] for r in runs.values() if "peak_memory_gib" in r]
        cells += ["-" if startup is None else f"{startup:.1f}", f"{max(peaks):.2f}" if peaks else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    parser.add_argument("--task", default="copy")
    parser.add_argument("--model", default="ntm_lstm")
    parser.add_argument("--length-key", default="length", help="the task's size keyword to pin ('' for none)")
    parser.add_argument("--length", type=int, default=20, help="value of --length-key (copy: 20, 42 time steps)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="default: 1 16 on the CPU, 32 128 512 2048 on CUDA")
    parser.add_argument("--paths", nargs="+", default=None, choices=PATHS, help="default: eager step fast")
    parser.add_argument("--core", default=None, choices=list(CORES),
                        help="the fast path's core (default: native on the CPU, step on CUDA)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per chunk")
    parser.add_argument("--repeats", type=int, default=5, help="timed chunks per row; the row reports the median")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, capture)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="also time every chunk with N processes spinning (a machine doing something else)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. model.memory_rows=64")
    parser.add_argument("--profile", type=int, default=0, metavar="BATCH",
                        help="instead of the table: the compiled step's kernels at this batch size, by device time")
    parser.add_argument("--warm-cache", action="store_true",
                        help="let torch.compile use its on-disk caches (default: off, so start-up is a first run's)")
    parser.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                        help="torch._inductor.config settings to try, e.g. decompose_mem_bound_mm=True")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode for the step, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--tf32", action="store_true", help="float32 matrix products in TF32 (changes the arithmetic)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--stack", type=int, default=0, metavar="K",
                        help="instead of the paths: K stacked runs beside one run, two joblib jobs and one "
                             "batch-16 run, aggregate sequences/s (scripts/stack_bench.py)")
    parser.add_argument("--stack-batch", type=int, default=1, help="with --stack: sequences per update of each run")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.busy < 0:
        parser.error(f"--busy {args.busy}: must be 0 or more")
    if min(args.steps, args.warmup, args.repeats) <= 0:
        parser.error(f"--steps {args.steps} --warmup {args.warmup} --repeats {args.repeats}: all must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config
    inductor_config.force_disable_caches = not args.warm_cache
    if args.compile_mode:
        FastStep.compile_options = {**FastStep.compile_options, "mode": args.compile_mode}
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    for setting in args.inductor:
        key, _, value = setting.partition("=")
        if not hasattr(inductor_config, key):
            parser.error(f"--inductor {setting}: torch._inductor.config has no setting {key!r}")
        setattr(inductor_config, key, {"True": True, "False": False}.get(value, value))
    batch_sizes = args.batch_sizes or ([1, 16] if device.type == "cpu" else [32, 128, 512, 2048])
    if any(b <= 0 for b in batch_sizes):
        parser.error(f"--batch-sizes {batch_sizes}: must be positive")
    paths = args.paths or ["eager", "step", "fast"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"# {args.task} / {args.model}, {args.length_key or 'setting'}={args.length}, on {name} "
          f"({torch.get_num_threads()} CPU threads), torch {torch.__version__}; "
          f"the median of {args.repeats} chunks of {args.steps} timed steps, after {args.warmup} warm-up steps; "
          f"the paths' chunks taken in turn"
          + (f"; each chunk also with {args.busy} spinning process(es)" if args.busy else "")
          + f"; load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    if args.profile:
        print(profile(args, args.profile, device))
        return 0
    if args.stack:
        import stack_bench

        if args.stack < 1 or args.stack_batch < 1:
            parser.error(f"--stack {args.stack} --stack-batch {args.stack_batch}: both must be >= 1")
        rows = stack_bench.run(build, args, device)
        print(stack_bench.table(rows))
        if args.json:
            meta = {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "argv": sys.argv[1:]}
            args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        return 0
    rows = []
    for batch_size in batch_sizes:
        for row in measure(paths, args, batch_size, device):
            rows.append(row)
            detail = row.get("error") or (f"{row['sequences_per_s']:,.0f} seq/s, {row['ms_per_step']:.2f} ms/step, "
                                          f"start-up {row['startup_s']:.1f} s")
            print(f"batch {batch_size:>5} {row['path']:>8}: {detail}", file=sys.stderr, flush=True)
    print(table(rows, paths))
    print(f"# load average {os.getloadavg()[0]:.2f} at the end (1-minute; this run's own processes included)")
    if args.json:
        meta = {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "argv": sys.argv[1:],
                "busy": args.busy}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
