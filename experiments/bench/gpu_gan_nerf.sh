#!/usr/bin/env bash
# GAN and NeRF benchmarks on a GPU machine without internet, zoo not installed.
#
#   OUT=/some/dir bash experiments/bench/gpu_gan_nerf.sh      # from the repo root, ~5 min
#   PARTS=nerf,sg2_parts OUT=... bash experiments/bench/gpu_gan_nerf.sh   # a subset
#   PARTS=gan,gigagan_timed GAN_STEPS=10 GIGAGAN_SECONDS=200 ...         # what else it runs
#
# Needs .whl/ml_collections-*.whl at the repo root (git-ignored; see gpu.sh for how
# to download it). Writes $OUT/{gan,nerf,nerf_paper}.json, their logs and $OUT/env.txt.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gan_nerf_bench}
mkdir -p "$OUT"
START=$SECONDS
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/ml_collections-*.whl 2>&1 \
  | grep -v WARNING
export PYTHONPATH=/tmp/site:.
# .whl/extra (pillow, tqdm for cp312) only where the image lacks them.
for mod in PIL tqdm; do
  if ! python3 -c "import $mod" 2>/dev/null; then
    echo "image lacks $mod: installing from .whl/extra"
    python3 -m pip install -q --no-index --no-deps --target /tmp/site-extra .whl/extra/*.whl 2>&1 \
      | grep -v WARNING
    export PYTHONPATH=/tmp/site-extra:$PYTHONPATH
    break
  fi
done
{
  nvidia-smi -L
  python3 -c "import sys, jax, flax, optax
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)
print(jax.devices())"
} 2>&1 | tee "$OUT/env.txt"

PARTS=,${PARTS:-gan,nerf,nerf_paper},
run() {  # run NAME SECONDS SCRIPT ARGS...
  local name=$1 limit=$2 script=$3; shift 3
  [[ $PARTS == *,$name,* ]] || return 0
  local t0=$SECONDS
  timeout -k 10 "$limit" python3 "experiments/bench/$script" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "$name: rc=$? in $((SECONDS - t0)) s"
  tail -3 "$OUT/$name.log"
}

run gan 170 gan_step.py --models dcgan,stylegan2 --batch 64 --size 64 --steps "${GAN_STEPS:-20}" --warmup 3
run nerf 110 nerf_step.py --rays 1024 --steps 20 --warmup 3 --render 100,800 --chunk 16384
# The paper's config (4096 rays, 64 + 128 samples, 8 x 256) on the procedural scene: PSNR vs time.
run nerf_paper 200 nerf_train_timed.py --seconds 120 --eval_every 1000 --scene_cache /tmp/scenes
# Where StyleGAN2's step time goes (G/D forward and backward, one modulated conv, resampling).
run sg2_parts 120 stylegan2_parts.py --size 64 --batch 64
# GigaGAN on `shapes` (configs/gigagan_shapes.py): caption match of EMA samples vs training time.
if [[ $PARTS == *,gigagan_timed,* ]]; then
  t0=$SECONDS
  timeout -k 10 330 python3 experiments/evals/train_timed.py --config configs/gigagan_shapes.py \
    --seconds "${GIGAGAN_SECONDS:-200}" --steps 100000 --eval_every 1000 --out "$OUT/gigagan" \
    >"$OUT/gigagan_timed.json" 2>"$OUT/gigagan_timed.log"
  echo "gigagan_timed: rc=$? in $((SECONDS - t0)) s"
  tail -3 "$OUT/gigagan_timed.log"
fi
echo "total $((SECONDS - START)) s; results in $OUT"
