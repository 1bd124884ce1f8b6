#!/usr/bin/env bash
# The U-Net train-step benchmark on a GPU machine without internet, zoo not installed.
#
#   OUT=/some/dir bash experiments/bench/gpu.sh        # from the repo root, ~5 min
#
# Needs .whl/ at the repo root (git-ignored), made on a machine with PyPI:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform any -d .whl ml_collections diffusers
# plus .whl/fallback/ (huggingface_hub 2.x and its deps, used only if diffusers does
# not import against the image's huggingface_hub) and .whl/fallback-flax/ (flax,
# optax; used only if the image's flax lacks nnx.view / nnx.List).
# Writes $OUT/<run>.json (one JSON object each), $OUT/<run>.log and $OUT/env.txt.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/unet_bench}
mkdir -p "$OUT"
START=$SECONDS

pip_target() {  # pip_target DIR WHEELS...
  local dir=$1; shift
  python3 -m pip install -q --no-index --no-deps --target "$dir" "$@" 2>&1 | grep -v WARNING
}
pip_target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:.
if ! python3 -c "from flax import nnx; nnx.view, nnx.List" 2>/dev/null; then
  echo "image flax lacks nnx.view/nnx.List: using .whl/fallback-flax"
  pip_target /tmp/site-flax .whl/fallback-flax/*.whl
  export PYTHONPATH=/tmp/site-flax:$PYTHONPATH
fi
if ! python3 -c "from diffusers import UNet2DModel" 2>"$OUT/diffusers_import.err"; then
  echo "diffusers does not import with the image's packages: using .whl/fallback"
  pip_target /tmp/site-hub .whl/fallback/*.whl
  export PYTHONPATH=/tmp/site-hub:$PYTHONPATH
fi

{
  nvidia-smi -L
  nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv
  python3 -c "import sys, jax, flax, optax, torch, diffusers
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__,
      'optax', optax.__version__, 'torch', torch.__version__, 'diffusers', diffusers.__version__)
print(jax.devices(), torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"

# run NAME SECONDS ARGS...: one benchmark process, bounded in time. On SIGTERM the
# script still prints its JSON, with what it measured and "incomplete".
run() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout -k 15 "$limit" python3 experiments/bench/unet_step.py "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "$name: rc=$? in $((SECONDS - t0)) s"
  python3 -c "import json, sys
r = json.load(open(sys.argv[1]))
def short(v):
    return {k: round(v[k], 3) for k in ('images_per_s', 'step_ms_median', 'mfu') if v.get(k)} or v
print('  zoo', {k: short(v) for k, v in r['zoo'].items()}, 'torch', short(r['torch']))
print('  ratio', r['ratio_zoo_over_torch'], 'params', r['params'], r.get('incomplete', ''))" \
    "$OUT/$name.json" 2>/dev/null || tail -5 "$OUT/$name.log"
}

# bf16 compute (float32 params) vs torch bf16 autocast (float32 weights): the same mixed precision.
run b128_bf16 170 --batch 128 --dtype bfloat16 --attention full,dot_product --steps 30 --warmup 5
# float32 (TF32 matmuls/convs on both sides: XLA's default, switched on in torch).
run b16_f32 110 --batch 16 --dtype float32 --attention full,dot_product --steps 30 --warmup 5
# diffusers' default heads (16 of dim 8) on both sides, if time is left.
if ((SECONDS - START < 220)); then
  run b128_bf16_h16 70 --batch 128 --dtype bfloat16 --heads 16 --attention dot_product \
    --steps 30 --warmup 5
fi
echo "total $((SECONDS - START)) s; results in $OUT"
