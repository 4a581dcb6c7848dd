#!/bin/bash
# Runs the GPU tests on the GPU host: BUILD is a build tree made with -DDSD_CUDA=ON (for a
# host without the project's libraries also -DDSD_STATIC_DEPS=ON), carried along.
#   OUT=/tmp/gpu tests/gpu/run.sh build
# 1. records the card (nvidia-smi) in $OUT/gpu.txt;
# 2. runs every built test_cuda_* at all its configs: $OUT/<test>.log, and one CSV of every
#    check and timing, $OUT/results.csv (tests/gpu/gpu_harness.c writes it);
# 3. runs each again at the tiny config only (--tiny-only) under compute-sanitizer memcheck,
#    and under racecheck (the kernels with shared memory: norms, quantization, transposes;
#    with --racecheck, which leaves out the warp-specialized attention engine: racecheck does
#    not follow its named-barrier and mbarrier handoffs);
#    logs $OUT/<test>.memcheck.log and $OUT/<test>.racecheck.log.
# 4. with MODELS set (a folder holding the tiny checkpoint `tiny` and DeepSeek's
#    tokenizer.json), the engine-level checks: tests/gpu/engine_checks.sh BUILD MODELS
#    (golden with the CUDA backend, deepseekd-run, the daemon on the GPU).
# 5. deepseekd-bench (tools/bench, docs/BENCH.md) on the CUDA backend at the full V3.2
#    dimensions with 3 layers (~47 GB of device memory, about a minute): $OUT/bench.txt (the
#    table) and $OUT/bench.json; commit them under bench/results/ as DATE-bench-CARD.txt, .json.
#    BENCH=0 skips it, BENCH=only runs nothing else; BENCH_ARGS adds options (--layers 4 ...);
#    COMMIT names the source commit when the tree has no .git.
# Exits non-zero if any test failed or was skipped (a GPU host must have a GPU), or a
# sanitizer reported an error, or the bench failed. SANITIZE=0 skips step 3; TESTS="act linear"
# picks tests.
set -uo pipefail
BUILD=${1:-build}
OUT=${OUT:-/tmp/gpu-tests}
mkdir -p "$OUT"
export OUT
summary="$OUT/summary.txt"
: >"$summary"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || \
    echo "nvidia-smi failed" | tee "$OUT/gpu.txt"

rc=0
note() { echo "$*" | tee -a "$summary"; }

run_bench() {
    local commit=${COMMIT:-$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)}
    echo "=== deepseekd-bench"
    # shellcheck disable=SC2086
    DSD_CUDA_MODULE=${DSD_CUDA_MODULE:-$BUILD/kernels/cuda/libdsd_backend_cuda.so} \
        "$BUILD/tools/bench/deepseekd-bench" --backend cuda --commit "$commit" --json "$OUT/bench.json" \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt"
    local s=${PIPESTATUS[0]}
    if [ "$s" -eq 0 ]; then note "PASS deepseekd-bench (bench.txt, bench.json)"
    else note "FAIL deepseekd-bench (exit $s; see bench.txt)"; rc=1
    fi
}
if [ "${BENCH:-1}" = only ]; then
    run_bench
    echo "=== summary"
    cat "$summary"
    exit $rc
fi

tests=()
if [ -n "${TESTS:-}" ]; then
    for t in $TESTS; do tests+=("$BUILD/tests/gpu/test_cuda_$t"); done
else
    for t in "$BUILD"/tests/gpu/test_cuda_*; do
        [ -x "$t" ] && [ -f "$t" ] && tests+=("$t")
    done
fi
if [ ${#tests[@]} -eq 0 ]; then
    echo "no test_cuda_* executables under $BUILD/tests/gpu" | tee -a "$summary"
    exit 1
fi


for t in "${tests[@]}"; do
    name=$(basename "$t")
    echo "=== $name"
    "$t" 2>&1 | tee "$OUT/$name.log"
    s=${PIPESTATUS[0]}
    if [ "$s" -eq 0 ]; then note "PASS $name"
    elif [ "$s" -eq 77 ]; then note "SKIP $name (no GPU: counts as a failure here)"; rc=1
    else note "FAIL $name (exit $s)"; rc=1
    fi
done

if [ "${SANITIZE:-1}" != 0 ]; then
    if ! command -v compute-sanitizer >/dev/null; then
        note "FAIL compute-sanitizer not found"
        rc=1
    else
        for t in "${tests[@]}"; do
            name=$(basename "$t")
            for tool in memcheck racecheck; do
                # test_cuda_fp8_linear's only own kernel is act_quant (racechecked through
                # test_cuda_linear); its GEMMs are cuBLASLt's, whose TMA/mbarrier handoffs
                # racecheck reports as hazards (2026-12-07, H100: 144 in nvjet_sm90_*_coopA)
                if [ "$tool" = racecheck ] && [ "$name" = test_cuda_fp8_linear ]; then
                    note "SKIP $name racecheck (cuBLASLt's kernels only)"
                    continue
                fi
                echo "=== $name under $tool (tiny only)"
                extra=()
                [ "$tool" = racecheck ] && extra=(--racecheck)
                OUT='' compute-sanitizer --tool "$tool" --error-exitcode 99 "$t" --tiny-only --iters 1 "${extra[@]}" \
                    >"$OUT/$name.$tool.log" 2>&1
                s=$?
                tail -n 3 "$OUT/$name.$tool.log"
                if [ "$s" -eq 0 ]; then note "PASS $name $tool"
                else note "FAIL $name $tool (exit $s; see $name.$tool.log)"; rc=1
                fi
            done
        done
    fi
fi
if [ -n "${MODELS:-}" ]; then
    echo "=== engine checks"
    if bash "$(dirname "$0")/engine_checks.sh" "$BUILD" "$MODELS"; then note "PASS engine_checks"
    else note "FAIL engine_checks (see engine_checks.log)"; rc=1
    fi
fi
[ "${BENCH:-1}" != 0 ] && run_bench
echo "=== summary"
cat "$summary"
exit $rc
