#!/bin/bash
# Runs the GPU tests on the GPU host (through the device tool): BUILD is a build tree made
# here with -DDSD_CUDA=ON -DDSD_STATIC_DEPS=ON, carried along. Results go to $OUT.
#   tests/gpu/run.sh build/gpu
set -uo pipefail
BUILD=${1:-build/gpu}
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
rc=0
"$BUILD/tests/gpu/test_cuda_fp8_linear" "$OUT/fp8_linear.csv" 2>&1 | tee "$OUT/fp8_linear.log" || rc=1
exit $rc
