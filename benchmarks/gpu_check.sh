#!/usr/bin/env bash
# The one GPU check (benchmarks/README.md#gpu-check): every GPU measurement rlscale needs, most valuable
# first, sized for a 15-minute device window (about 8 minutes of measuring; estimates per stage in the README):
#
#   a. the whole training loop at the paper's per-step shapes (humanoid, 512 envs, unroll 62, batch 512,
#      800 SGD steps per collection, replay 10,000 per env) at depths 4 and 64, after a short prefill:
#      steady-state env steps/s, SGD steps/s, peak GPU memory;
#   b. the SGD step alone at depths 4 to 1024 in the fast mode, and the unrolled baseline at 4 and 16 only
#      (deeper unrolled programs take minutes to compile, so they are not in the plan);
#   c. 8 packed seeds against 1 (depth 4 training step, a quarter of the paper's envs).
#
# Every measurement is appended to $OUT/rows.jsonl the moment it exists, and each stage writes its JSON and
# markdown when it ends, so a window cut short keeps what was measured. A measurement that fails (error,
# crash, timeout) prints its reason; the later stages still run and the script exits 1.
#
# Assumes PYTHONPATH holds the carried wheels (brax, mujoco, gymnasium, ...) and the working tree; see
# benchmarks/README.md#gpu-check. From the repository root:
#
#   bash benchmarks/gpu_check.sh                                        # on the device
#   GPU_CHECK_QUICK=1 JAX_PLATFORMS=cpu bash benchmarks/gpu_check.sh    # tiny, every row, on a CPU (~4 min)
#   bash benchmarks/device_like_check.sh                                # the same in a venv like the device's
#
# Knobs: OUT (default /tmp/out), PYTHON (default python3), GPU_CHECK_TIMEOUT (seconds per measurement).
set -uo pipefail

OUT="${OUT:-/tmp/out}"
PYTHON="${PYTHON:-python3}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes in turn; each peak is its own
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

start=$SECONDS
failed=0
say() { echo "[gpu_check +$((SECONDS - start))s] $*"; }

if [[ "${GPU_CHECK_QUICK:-0}" == "1" ]]; then
  # Tiny everything, same stages: proves the script and every row on a CPU.
  LOOP_DEPTHS=(4 8); FAST_DEPTHS=(4 8 16); BASELINE_DEPTHS=(4); SEEDS=2
  NET=(--width 32 --batch-size 64 --sgd-steps-per-call 2 --sgd-repeats 2 --peak-repeats 2 --peak-matmul-size 512)
  PAPER_LOOP=(--env point_u_maze --num-envs 16 --unroll-length 10 --sgd-steps-per-collection 4
              --episode-length 20 --min-replay-size 20 --max-replay-size 200 --loop-repeats 2)
  SEEDS_LOOP=("${PAPER_LOOP[@]}")
  TIMEOUT="${GPU_CHECK_TIMEOUT:-300}"
else
  LOOP_DEPTHS=(4 64); FAST_DEPTHS=(4 16 64 256 1024); BASELINE_DEPTHS=(4 16); SEEDS=8
  NET=(--width 256 --batch-size 512 --sgd-steps-per-call 20 --sgd-repeats 5 --budget-seconds 5 --peak-repeats 5)
  # The paper's per-step shapes; episodes of 100 steps so that the prefill (min replay = one episode) is
  # 51,200 env steps instead of the paper's 512,000: it fills the buffer only as far as sampling needs.
  PAPER_LOOP=(--env humanoid --num-envs 512 --unroll-length 62 --sgd-steps-per-collection 800
              --episode-length 100 --min-replay-size 100 --max-replay-size 10000 --loop-repeats 3)
  # 8 seeds of the paper's shapes would hold 8 replay buffers of 5 GB: a quarter of the envs and SGD steps.
  SEEDS_LOOP=(--env humanoid --num-envs 128 --unroll-length 62 --sgd-steps-per-collection 200
              --episode-length 100 --min-replay-size 100 --max-replay-size 2000 --loop-repeats 3)
  TIMEOUT="${GPU_CHECK_TIMEOUT:-150}"
fi
COMMON=(--strict --rows-out "$OUT/rows.jsonl" --timeout "$TIMEOUT")

nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv 2>/dev/null || true
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" || exit 1
"$PYTHON" -c "import rlscale.training.trainer, rlscale.envs" || { echo "rlscale does not import: see PYTHONPATH"; exit 1; }

stage() {  # stage NAME ARGS...: one benchmarks/speed.py run; a failure is remembered, not fatal
  local name=$1; shift
  "$PYTHON" benchmarks/speed.py "$@" "${COMMON[@]}" --out "$OUT/speed_gpu_$name.json" \
    --markdown "$OUT/speed_gpu_$name.md" || { failed=1; say "stage $name: some measurement failed (see FAILED above)"; }
}

say "stage a/3: whole training loop at the paper's per-step shapes, depths ${LOOP_DEPTHS[*]}"
stage loop --depths "${LOOP_DEPTHS[@]}" --modes fast --skip-peak "${NET[@]}" "${PAPER_LOOP[@]}"

say "stage b/3: SGD step, fast at depths ${FAST_DEPTHS[*]}, baseline at ${BASELINE_DEPTHS[*]}"
stage sgd_fast --depths "${FAST_DEPTHS[@]}" --modes fast --skip-loop "${NET[@]}" "${PAPER_LOOP[@]}"
stage sgd_baseline --depths "${BASELINE_DEPTHS[@]}" --modes baseline --skip-loop --skip-peak "${NET[@]}" "${PAPER_LOOP[@]}"

say "stage c/3: $SEEDS packed seeds against 1 (depth 4 training step)"
stage seeds --depths --skip-peak --num-seeds-check --num-seeds-count "$SEEDS" "${NET[@]}" "${SEEDS_LOOP[@]}"

say "done in $((SECONDS - start)) s; results in $OUT:"
ls -l "$OUT"
exit $failed
