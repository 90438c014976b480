#!/bin/bash
# The prepared accelerator check, BN-Inception at 224x224: the bare train step in the settings
# that matter (bf16 at per-device batches 32, 128, 256; float32; augmentation on the host,
# whose difference from the first is the on-device augmentation's cost; no BN); the whole
# training loop against the bare step (synthetic input, so no TensorFlow is needed); a
# jax.profiler trace of a few steps summarized by category (profile/profile_summary.txt);
# FLOPs and MFU; and, where TensorFlow is installed, the host's input pipeline.
# Each variant is one run of scripts/benchmark.py (its compile apart, 10 warm-up steps before
# the timed repeats); the script stops starting variants after BUDGET_SECONDS (300), so it
# stays under 6 minutes with 30-45 s compiles, the most important variants first. Results:
# one JSON and one text file per variant in OUT_DIR, the trace and its table in
# OUT_DIR/profile, and summary.txt. A variant whose output lacks one of its parts is a
# failure: the script says so and exits 1.
#
#   scripts/gpu_benchmark.sh [OUT_DIR]        (default results/gpu)
#
# The model side needs jax, flax, optax, orbax-checkpoint, ml-collections and absl-py;
# TensorFlow and tfds only for the input pipeline; clu and TensorBoard are optional. CONFIG,
# STEPS, REPEATS, LOOP_STEPS, PROFILE_STEPS, BUDGET_SECONDS and INPUT_PIPELINE (0: skip it)
# can be overridden: the tests run it on the CPU with the small MLP config.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu}
PY=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/bn_x30.py}
STEPS=${STEPS:-20}
REPEATS=${REPEATS:-3}
LOOP_STEPS=${LOOP_STEPS:-300}
PROFILE_STEPS=${PROFILE_STEPS:-5}
BUDGET_SECONDS=${BUDGET_SECONDS:-300}
failures=0
mkdir -p "$OUT"
: > "$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv" 2>/dev/null || true

# name | benchmark parts | per-device batch | flags  (part 6, FLOPs and MFU, uses part 1's
# rate; part 2, the loop, reports its ratio to part 1's)
SYNTHETIC="--config.data.source=synthetic --loop_steps $LOOP_STEPS"
PROFILE="--profile_steps $PROFILE_STEPS --profile_dir $OUT/profile"
VARIANTS=(
  "bf16_b128|1,2,6,7|128|--config.model.dtype=bfloat16 $SYNTHETIC $PROFILE"
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
  limit=150
  [[ $parts == 1 ]] || limit=240   # the loop and the profile compile the step again (cached)
  # shellcheck disable=SC2086  (flags are words)
  timeout "$limit" "$PY" scripts/benchmark.py --config "$CONFIG" $flags --batch_size "$batch" \
      --parts "$parts" --steps "$STEPS" --repeats "$REPEATS" --output "$OUT/$name.json" \
      > "$OUT/$name.txt" 2>&1
  echo "$name: $(grep -E '^[1267] ' "$OUT/$name.txt" | tr '\n' ' ' || true)" | tee -a "$OUT/summary.txt"
  for part in ${parts//,/ }; do
    if ! grep -qE "^$part " "$OUT/$name.txt"; then
      echo "  $name failed: no part $part; see $name.txt" | tee -a "$OUT/summary.txt"
      failures=$((failures + 1))
      break
    fi
  done
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
if (( failures )); then
  echo "$failures variant(s) failed" | tee -a "$OUT/summary.txt"
  exit 1
fi
