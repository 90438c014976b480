#!/bin/bash
# Training on a Cloud TPU VM (one host or a pod slice), from your own machine.
#
#   scripts/tpu_vm_train.sh [--dry_run] [--keep_restarting] [--python PY] TPU_NAME ZONE CONFIG WORKDIR \
#       [train.py flags...]
#
#   scripts/tpu_vm_train.sh my-tpu us-central2-b configs/bn_x30.py gs://bucket/bn_x30 \
#       --config.global_batch_size=1024 --config.data.data_dir=gs://bucket/tensorflow_datasets
#
# What it does, on every worker of the TPU VM:
#   1. copies this repository's current commit (git archive HEAD) to ~/bn_repro-<commit>,
#   2. sets it up there with `make setup ACCEL=tpu` (skipped once done): Google's TPU VM images
#      have Python 3.10, so the set-up gets Python 3.12 with uv (scripts/make_venv.sh), or
#      uses --python PY (e.g. python3.12 from the deadsnakes PPA),
#   3. starts training detached (it survives the ssh session), logging to
#      ~/bn_repro-<commit>/logs/<host>.log, with JAX's multi-host runtime on every worker.
# Arguments reach train.py exactly as given (each one is quoted for the remote shell).
# The workdir and the data must be on storage every worker sees (gs://).
#
# --dry_run          prints the gcloud commands instead of running them.
# --python PY        the workers' interpreter for the venv (make setup PYTHON=PY).
# --keep_restarting  for spot / preemptible TPUs: stays in a loop, and whenever the TPU is
#                    back in READY without a training process (after a preemption and your
#                    re-creation, or a maintenance restart), starts training again; it
#                    resumes from the last checkpoint. The loop ends when WORKDIR holds
#                    results.json. If BN_REPRO_TPU_CREATE is set (e.g. your `gcloud compute
#                    tpus tpu-vm create ... --spot` command), a preempted or deleted TPU is
#                    deleted and re-created with it first. Checks every CHECK_SECONDS (300).
set -euo pipefail

DRY_RUN=0
KEEP_RESTARTING=0
SETUP_PYTHON=""
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --dry_run) DRY_RUN=1 ;;
    --keep_restarting) KEEP_RESTARTING=1 ;;
    --python) SETUP_PYTHON=${2:?--python needs an interpreter}; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
USAGE="usage: scripts/tpu_vm_train.sh [--dry_run] [--keep_restarting] [--python PY] TPU_NAME ZONE CONFIG WORKDIR [flags...]"
TPU=${1:?$USAGE}
ZONE=${2:?$USAGE}
CONFIG=${3:?$USAGE}
WORKDIR=${4:?$USAGE}
shift 4
cd "$(dirname "$0")/.."

if [[ -n $(git status --porcelain --untracked-files=no) && -z ${BN_REPRO_ALLOW_DIRTY:-} ]]; then
  echo "uncommitted changes: the workers get the current commit (git archive HEAD); commit" \
       "them first (or set BN_REPRO_ALLOW_DIRTY=1 to send HEAD without them)" >&2
  exit 2
fi
COMMIT=$(git rev-parse --short=12 HEAD)
REMOTE_DIR="bn_repro-$COMMIT"
ARCHIVE="/tmp/$REMOTE_DIR.tar.gz"

run() {   # a command, printed with every argument quoted (what --dry_run shows)
  printf '%q ' "$@"
  echo
  if [[ $DRY_RUN == 0 ]]; then
    "$@"
  fi
}

quoted_args() {   # the arguments, each quoted for the remote shell
  local out=""
  for arg in "$@"; do
    out+=" $(printf '%q' "$arg")"
  done
  echo "$out"
}

SETUP="set -e; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/$REMOTE_DIR.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR && mkdir -p logs && (test -x .venv/bin/python || make setup ACCEL=tpu${SETUP_PYTHON:+ PYTHON=$(printf '%q' "$SETUP_PYTHON")})"
TRAIN="cd ~/$REMOTE_DIR && BN_REPRO_TPU_POD=1 BN_REPRO_RUN_ID=$(printf '%q' "tpu-vm $ZONE/$TPU $WORKDIR") nohup setsid .venv/bin/python scripts/train.py$(quoted_args --config "$CONFIG" --workdir "$WORKDIR" "$@") > logs/\$(hostname).log 2>&1 < /dev/null &"

launch() {
  run git archive --format=tar.gz --output="$ARCHIVE" HEAD
  run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU:~/$REMOTE_DIR.tar.gz" --zone "$ZONE" --worker=all
  run gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$SETUP"
  run gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$TRAIN"
}

tpu_state() {
  gcloud compute tpus tpu-vm describe "$TPU" --zone "$ZONE" --format='value(state)' 2>/dev/null || echo ABSENT
}

training_running() {   # on worker 0
  gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=0 \
    --command "pgrep -f 'scripts/train.py' > /dev/null" > /dev/null 2>&1
}

finished() {
  gcloud storage cat "$WORKDIR/results.json" > /dev/null 2>&1
}

launch
if [[ $KEEP_RESTARTING == 0 || $DRY_RUN == 1 ]]; then
  echo "started on every worker of $TPU; logs: ~/$REMOTE_DIR/logs/ on each worker"
  exit 0
fi
while ! finished; do
  sleep "${CHECK_SECONDS:-300}"
  state=$(tpu_state)
  if [[ $state != READY ]]; then
    echo "$(date -u +%FT%TZ) $TPU is $state"
    if [[ -n ${BN_REPRO_TPU_CREATE:-} && $state =~ ^(PREEMPTED|TERMINATED|ABSENT)$ ]]; then
      [[ $state == ABSENT ]] || run gcloud compute tpus tpu-vm delete "$TPU" --zone "$ZONE" --quiet
      run bash -c "$BN_REPRO_TPU_CREATE"
    fi
    continue
  fi
  if ! training_running && ! finished; then
    echo "$(date -u +%FT%TZ) $TPU is READY without training: starting it again (it resumes)"
    launch
  fi
done
echo "$WORKDIR/results.json exists: training finished"
