#!/bin/bash
# The prepared accelerator check: BN-Inception at 224x224, the bare train step in the settings
# that matter (bf16 at per-device batches 32, 128, 256; float32; augmentation on the host,
# whose difference from the first is the on-device augmentation's cost; no BN), FLOPs and
# MFU, and (where TensorFlow is installed) the host's input pipeline.
# Each variant is one run of scripts/benchmark.py (its compile apart, 10 warm-up steps before
# the timed repeats); the whole script stops starting variants after BUDGET_SECONDS (330), so
# it stays under 6 minutes with 30-45 s compiles. Results: one JSON and one text file per
# variant in OUT_DIR, and summary.txt.
#
#   scripts/gpu_benchmark.sh [OUT_DIR]        (default results/gpu)
#
# The model side needs jax, flax, optax, orbax-checkpoint, ml-collections and absl-py;
# TensorFlow / tfds / clu only for the input pipeline. CONFIG, STEPS, REPEATS, BUDGET_SECONDS
# and INPUT_PIPELINE (0: skip it) can be overridden: the tests run it on the CPU with the
# small MLP config.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu}
PY=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/bn_x30.py}
STEPS=${STEPS:-20}
REPEATS=${REPEATS:-3}
BUDGET_SECONDS=${BUDGET_SECONDS:-330}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv" 2>/dev/null || true

# name | benchmark parts | per-device batch | flags  (part 6, FLOPs and MFU, uses part 1's rate)
VARIANTS=(
  "bf16_b128|1,6|128|--config.model.dtype=bfloat16"
  "bf16_b32|1|32|--config.model.dtype=bfloat16"
  "bf16_b256|1|256|--config.model.dtype=bfloat16"
  "f32_b128|1|128|--config.model.dtype=float32"
  "bf16_b128_augmentation_on_host|1|128|--config.model.dtype=bfloat16 --config.data.augment_on_device=False"
  "bf16_b128_no_bn|1|128|--config.model.dtype=bfloat16 --config.model.batch_norm=False"
)
for variant in "${VARIANTS[@]}"; do
  IFS='|' read -r name parts batch flags <<< "$variant"
  if (( SECONDS > BUDGET_SECONDS )); then
    echo "$name: skipped (the ${BUDGET_SECONDS}-second budget is spent)" | tee -a "$OUT/summary.txt"
    continue
  fi
  # shellcheck disable=SC2086  (flags are words)
  timeout 150 "$PY" scripts/benchmark.py --config "$CONFIG" $flags --batch_size "$batch" \
      --parts "$parts" --steps "$STEPS" --repeats "$REPEATS" --output "$OUT/$name.json" \
      > "$OUT/$name.txt" 2>&1
  echo "$name: $(grep -E '^[16] ' "$OUT/$name.txt" | tr '\n' ' ' || true)" | tee -a "$OUT/summary.txt"
  grep -qE '^1 ' "$OUT/$name.txt" || echo "  $name failed: see $name.txt" | tee -a "$OUT/summary.txt"
done
if [[ ${INPUT_PIPELINE:-1} == 1 ]] && "$PY" -c 'import tensorflow, tensorflow_datasets' 2>/dev/null \
    && (( SECONDS <= BUDGET_SECONDS )); then
  timeout 120 "$PY" scripts/benchmark.py --config "$CONFIG" --parts 3 --steps 10 --repeats 2 \
      --output "$OUT/input_pipeline.json" > "$OUT/input_pipeline.txt" 2>&1
  echo "input pipeline: see input_pipeline.txt" | tee -a "$OUT/summary.txt"
else
  echo "input pipeline: not measured (skipped, no TensorFlow, or no time left)" | tee -a "$OUT/summary.txt"
fi
echo "total: $SECONDS s" | tee -a "$OUT/summary.txt"
