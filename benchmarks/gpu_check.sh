#!/usr/bin/env bash
# Speed check on the GPU device (one H200): baseline (paper: unrolled, fp32) against fast (scanned, remat, bf16)
# with benchmarks/speed.py, sized to finish in about 6 minutes. Stages run in order of importance and
# each writes its own JSON + markdown under $OUT, so a run cut short still leaves the earlier stages.
#
# Assumes PYTHONPATH already holds the carried wheels (brax, mujoco) and the working tree; see
# /work/shared/device/README.md. From the repository root:
#
#   bash benchmarks/gpu_check.sh                  # on the device
#   GPU_CHECK_QUICK=1 JAX_PLATFORMS=cpu bash benchmarks/gpu_check.sh   # tiny end-to-end test on a CPU
#
# Knobs: OUT (default /tmp/out), PYTHON (default python3), GPU_CHECK_TIMEOUT (seconds per measurement
# subprocess; a timeout is recorded as a skipped row, never an abort).
set -euo pipefail

OUT="${OUT:-/tmp/out}"
PYTHON="${PYTHON:-python3}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes in turn; each peak is its own
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

start=$SECONDS
say() { echo "[gpu_check +$((SECONDS - start))s] $*"; }

if [[ "${GPU_CHECK_QUICK:-0}" == "1" ]]; then
  # Tiny everything: proves the script runs end to end on a CPU in a couple of minutes.
  DEEP=(8); ALL=(4 8); LOOP_DEPTHS=(4); UNROLL_DEPTHS=(8)
  NET=(--width 32 --batch-size 64 --sgd-steps-per-call 2 --sgd-repeats 2 --peak-repeats 2 --peak-matmul-size 512)
  # 16 envs × 10 steps : 4 SGD steps = 1:40, the paper's update-to-data ratio.
  LOOP=(--env point_u_maze --num-envs 16 --unroll-length 10 --sgd-steps-per-collection 4
        --episode-length 20 --min-replay-size 20 --max-replay-size 200 --loop-repeats 2)
  TIMEOUT="${GPU_CHECK_TIMEOUT:-300}"
else
  DEEP=(1024); ALL=(4 16 64 256); LOOP_DEPTHS=(4 64); UNROLL_DEPTHS=(64)
  NET=(--width 256 --batch-size 512 --sgd-steps-per-call 20 --sgd-repeats 5 --budget-seconds 5 --peak-repeats 5)
  # Humanoid at a quarter of the paper's env batch: 128 envs × 62 steps = 7,936 env steps per
  # 200 SGD steps (paper: 31,744 per 800), i.e. the paper's 1:40 update-to-data ratio.
  LOOP=(--env humanoid --num-envs 128 --unroll-length 62 --sgd-steps-per-collection 200
        --episode-length 1000 --min-replay-size 1000 --max-replay-size 2000 --loop-repeats 3)
  TIMEOUT="${GPU_CHECK_TIMEOUT:-150}"
fi

nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv 2>/dev/null || true
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"

# 1. SGD step, depths up to 256, both modes (+ fast with the other dtype), scan unroll sweep at one depth.
say "stage 1/4: SGD steps/s at depths ${ALL[*]}, scan unrolls 1 2 4 at ${UNROLL_DEPTHS[*]}"
"$PYTHON" benchmarks/speed.py --depths "${ALL[@]}" --skip-loop --also-other-dtype --unrolls 1 2 4 \
  --unroll-depths "${UNROLL_DEPTHS[@]}" "${NET[@]}" --timeout "$TIMEOUT" \
  --out "$OUT/speed_gpu_sgd.json" --markdown "$OUT/speed_gpu_sgd.md"

# 2. Whole training step (collect + insert + sample + SGD) at the paper's 1:40 UTD.
say "stage 2/4: whole-loop env steps/s at depths ${LOOP_DEPTHS[*]}"
"$PYTHON" benchmarks/speed.py --depths "${LOOP_DEPTHS[@]}" "${NET[@]}" "${LOOP[@]}" --timeout "$TIMEOUT" \
  --out "$OUT/speed_gpu_loop.json" --markdown "$OUT/speed_gpu_loop.md"

# 3. Four vmapped seeds against one (target: ≤ 1.5× the time of one seed).
say "stage 3/4: 4 seeds vs 1 (depth 4 training step)"
"$PYTHON" benchmarks/speed.py --depths --num-seeds-check "${NET[@]}" "${LOOP[@]}" \
  --timeout "$TIMEOUT" --out "$OUT/speed_gpu_seeds.json" --markdown "$OUT/speed_gpu_seeds.md"

# 4. Depth 1024 (actor 512) last: the unrolled baseline's compile may run into the timeout.
say "stage 4/4: SGD steps/s at depth ${DEEP[*]} (baseline may time out: recorded as skipped)"
"$PYTHON" benchmarks/speed.py --depths "${DEEP[@]}" --skip-loop "${NET[@]}" --timeout "$TIMEOUT" \
  --out "$OUT/speed_gpu_deep.json" --markdown "$OUT/speed_gpu_deep.md"

# Rows that crashed or timed out are recorded, not fatal: list them so they are not missed.
"$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("speed_gpu_*.json")):
    data = json.loads(path.read_text())
    rows = data["results"] + ([data["num_seeds_check"]] if data.get("num_seeds_check") else [])
    for row in rows:
        if "skipped" in row:
            print(f"{path.name}: depth {row.get('depth', 4)} {row.get('mode', 'seeds')}: skipped: {row['skipped']}")
PY
say "done; results in $OUT:"
ls -l "$OUT"
