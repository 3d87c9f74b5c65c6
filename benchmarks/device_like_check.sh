#!/usr/bin/env bash
# Run `GPU_CHECK_QUICK=1 benchmarks/gpu_check.sh` on this CPU the way the GPU device runs it: a fresh venv
# holding only what the device image holds (jax, flax, optax, orbax-checkpoint, chex, numpy, scipy, rich,
# matplotlib, pandas and their dependencies), the carried wheels installed with --no-deps into a --target
# folder, and the working tree on PYTHONPATH without `pip install` of rlscale. A missing module shows up
# here, not in the device window. Not part of CI: it downloads and installs (a few minutes).
#
#   bash benchmarks/device_like_check.sh                 # from the repository root; results in $OUT
#
# The carried set is the device README's (brax, mujoco, gymnasium and their pure-Python dependencies),
# downloaded here for this machine's Python (the device's is 3.12).
# Knobs: OUT (default /tmp/device_like_out), WORK (default /tmp/device_like).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-/tmp/device_like}"
OUT="${OUT:-/tmp/device_like_out}"
IMAGE=(jax flax optax orbax-checkpoint chex numpy scipy rich pillow jinja2 absl-py etils matplotlib pandas)
CARRIED=(brax mujoco mujoco-mjx glfw pyopengl tyro docstring-parser shtab typeguard trimesh jaxopt ml-collections
         tensorboardx flask flask-cors gymnasium cloudpickle farama-notifications typing-extensions pyyaml)

rm -rf "$WORK" "$OUT"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "${IMAGE[@]}"
"$WORK/venv/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$WORK/wheels" "${CARRIED[@]}"
"$WORK/venv/bin/python" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WORK/wheels"/*.whl
echo "device-like environment: $("$WORK/venv/bin/python" -m pip list 2>/dev/null | wc -l) packages in the venv," \
     "$(ls "$WORK/wheels" | wc -l) carried wheels"
PATH="$WORK/venv/bin:$PATH" PYTHONPATH="$WORK/site:$PWD" PYTHON="$WORK/venv/bin/python" OUT="$OUT" \
  GPU_CHECK_QUICK=1 JAX_PLATFORMS=cpu bash benchmarks/gpu_check.sh
