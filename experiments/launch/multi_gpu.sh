#!/usr/bin/env bash
# One host, all its accelerators: one process, the batch sharded over every local device.
#
#   pip install -e ".[cuda12]"      # the zoo with CUDA 12 jaxlib
#   experiments/launch/multi_gpu.sh configs/ddpm_cifar10.py runs/ddpm_cifar10 [--config.x=y ...]
#
# CUDA_VISIBLE_DEVICES=0,1 limits the devices; --config.parallel=pmap runs the same step
# under jax.pmap. The per-device batch is data.batch_size / the number of devices.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
exec python -m zoo.main --config="$config" --workdir="$workdir" "$@"
