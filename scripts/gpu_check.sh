#!/usr/bin/env bash
# The one prepared GPU session (device tool: an H200, 15 minutes a task): in under 8 minutes,
#   1. the GPU tests (tests/test_gpu.py: CUDA graphs, the Triton core compiled);
#   2. bench.py rows: eager / step / triton / fast at batch 32 and 512, and --stack 64 (stacked runs);
#   3. a 2-minute stacked training: 64 copy NTM-LSTM runs at batch 1 (hydra/launcher=stacked);
# each writing JSON or logs under $OUT (default outputs/gpu_check).
# The device machine has torch, triton, tensorboard, tqdm and matplotlib but not Hydra: carry its
# wheels, made here once with
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
# and call: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/* || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

echo "== 1. GPU tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -n 0 tests/test_gpu.py 2>&1 | tee "$OUT/tests.log" | tail -5

echo "== 2. bench rows"
timeout 150 python3 scripts/bench.py --device cuda --paths eager step triton fast --batch-sizes 32 512 \
  --steps 10 --repeats 3 --json "$OUT/bench_paths.json" 2>&1 | tail -8
timeout 90 python3 scripts/bench.py --device cuda --stack 64 --steps 64 --repeats 3 \
  --json "$OUT/bench_stack.json" 2>&1 | tail -8

echo "== 3. 64 stacked runs for two minutes"
timeout 150 python3 -c "from ntm_experiments.cli import train; import sys; sys.argv[0] = 'ntm-train'; train()" -m \
  hydra/launcher=stacked task=copy model=ntm_lstm train.batch_size=1 train.total_sequences=100000 \
  train.log_every=1000 train.checkpoint_every=10000 eval.every=100000 progress=false \
  "hydra.sweep.dir=/tmp/stack64" 'hydra.sweep.subdir=seed${seed}' "seed=range(64)" 2>&1 | tail -5
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
rows = []
for run in sorted(Path("/tmp/stack64").glob("seed*")):
    acc = EventAccumulator(str(run)); acc.Reload()
    points = acc.Scalars("train/cost_bits_per_sequence") if "train/cost_bits_per_sequence" in acc.Tags()["scalars"] else []
    rows.append({"run": run.name, "sequences": points[-1].step if points else 0, "cost": points[-1].value if points else None,
                 "wall_s": points[-1].wall_time - points[0].wall_time if len(points) > 1 else None})
total = sum(r["sequences"] for r in rows)
print(f"{len(rows)} runs, {total} sequences in all")
Path(sys.argv[1], "stack64.json").write_text(json.dumps(rows, indent=1))
PY
