#!/usr/bin/env bash
# A Cloud TPU pod slice: the same command on every worker VM; JAX finds the other workers
# by itself (zoo.engine.distributed), each worker reads its share of every batch.
#
#   experiments/launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]
#
# Once per slice: ZOO_SETUP=1 clones ZOO_REPO and installs it with jax[tpu] on every worker.
# WORKDIR must be one shared directory every worker sees at the same path (an NFS or
# Filestore mount): checkpoints are written by all workers together, logs by worker 0.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
repo=${ZOO_REPO:-https://github.com/zoo-dev/zoo.git}  # your fork or mirror
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$1"
}
if [[ ${ZOO_SETUP:-0} == 1 ]]; then
  ssh_all "(test -d zoo || git clone -q $repo zoo) && pip install -q -e 'zoo[tpu]'"
fi
ssh_all "cd zoo && python -m zoo.main --config=$config --workdir=$workdir $*"
