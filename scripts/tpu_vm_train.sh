#!/bin/bash
# Cloud TPU VM pod slice: run the same command on every worker.
#
#   scripts/tpu_vm_train.sh my-tpu us-central2-b configs/bn_x30.py gs://bucket/workdirs/bn_x30 \
#       --config.global_batch_size=1024 --config.data.data_dir=gs://bucket/tensorflow_datasets
#
# JAX detects the TPU workers itself (jax.distributed.initialize without
# arguments). The repository must be checked out at the same path on every
# worker with `make setup` done (add jax[tpu] to the venv), and the workdir and
# data_dir must be on storage all workers see (e.g. GCS).
set -euo pipefail
TPU=${1:?usage: scripts/tpu_vm_train.sh TPU_NAME ZONE CONFIG WORKDIR [flags...]}
ZONE=${2:?}
CONFIG=${3:?}
WORKDIR=${4:?}
shift 4
REPO=${REPO:-~/bn_repro}
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd $REPO && .venv/bin/python scripts/train.py --config $CONFIG --workdir $WORKDIR $*"
