#!/bin/bash
# The prepared GPU check: BN-Inception at 224x224, batch 128 per device, bf16 and float32.
# Runs benchmark parts 1 (bare train step, compile time apart), 6 (FLOPs and MFU)
# and, where TensorFlow is installed, 3 (input pipeline on this machine's CPUs),
# well within 5 minutes including compiles, and writes JSON files to OUT_DIR.
#
#   scripts/gpu_benchmark.sh [OUT_DIR]        (default results/gpu)
#
# The model side needs jax, flax, optax, orbax-checkpoint, ml-collections and absl-py;
# TensorFlow / tfds / clu only for part 3.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv" 2>/dev/null || true
for dtype in bfloat16 float32; do
  timeout 150 "$PY" scripts/benchmark.py --config configs/bn_x30.py \
      --config.model.dtype=$dtype --batch_size 128 --parts 1,6 --steps 20 --repeats 3 \
      --output "$OUT/bn_inception_224_${dtype}.json" 2>&1 | grep -v '^[IW][0-9]' | tee "$OUT/bn_inception_224_${dtype}.txt"
done
if "$PY" -c 'import tensorflow, tensorflow_datasets' 2>/dev/null; then
  timeout 120 "$PY" scripts/benchmark.py --config configs/bn_x30.py --parts 3 --steps 10 \
      --repeats 2 --output "$OUT/input_pipeline.json" 2>&1 | grep -v '^[IW][0-9]' | tee "$OUT/input_pipeline.txt"
else
  echo "TensorFlow is not installed here: part 3 (input pipeline) skipped" | tee "$OUT/input_pipeline.txt"
fi
