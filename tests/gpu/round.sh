#!/bin/bash
# One round of checks and timings on the GPU host inside a fixed time (the device time of a
# session is short and its machine may leave): each step runs only if its time limit still
# fits in LIMIT seconds, in this order of value.
#   LIMIT=540 OUT=/tmp/round tests/gpu/round.sh BUILD
# BUILD is a build tree made with -DDSD_CUDA=ON -DDSD_STATIC_DEPS=ON, carried to the host.
#   1. the op tests of the engines that change most (linear, attention, moe), checks and
#      timings ($OUT/tests/results.csv, tests/gpu/run.sh with SANITIZE=0 BENCH=0);
#   2. compute-sanitizer memcheck of the same tests at the tiny config;
#   3. deepseekd-bench: the default engines and the engines that were the defaults before
#      2026-12-07 (attn_tile=mma indexer=fp8 moe_prefill=serial linear=lt), decode at batch 1
#      and 8 and a 16K prefill chunk on a two-layer full-dimension model ($OUT/bench_*.txt,
#      .json);
#   4. --kernels: every projection alone at 1, 8 and 64 tokens, the MoE block, the sampler
#      (both engines: sampler=slices, the default, and sampler=block) and the attention and
#      indexer in steps at 4K and 32K contexts ($OUT/kernels*.txt, .json);
#   5. --determinism at batch 64 ($OUT/determinism.txt, .json);
#   6. ncu of the prefill attention tile, of the grouped MoE experts at a 16K chunk, of the
#      decode step's attention, streaming linears, top-k selection and sampling at batch 1,
#      the prefill attention's source view (stall samples per CUDA line and SASS instruction:
#      the kernels are built with -lineinfo), and every kernel's duration in a one-layer decode
#      bench ($OUT/ncu_*.txt, ncu_attention_source.csv, ncu_durations.csv);
#   7. the remaining GPU tests (act, sample, generate, fp8_linear).
# BASE_MODULE (optional): a libdsd_backend_cuda.so built from an earlier commit; steps 3 and 4
# then time it beside BUILD's instead of the previous engines (for changes that are no knob).
# CAND_ENGINES (optional): engine choices not yet the default (e.g. "attn_tile=ws-fp8"): step 3
# also times BUILD with them, and step 6 reads the counters of the
# kernels they name in CAND_NCU (an ncu -k regex) at a 16K prefill chunk.
# COMMIT names the source commit (default: git's HEAD of this checkout). Writes
# $OUT/summary.txt (one line per step: PASS, FAIL or SKIP for lack of time) and exits non-zero
# when a step failed. Commit the bench files under bench/results/ with date, commit and card.
set -uo pipefail
BUILD=${1:-build}
OUT=${OUT:-/tmp/gpu-round}
LIMIT=${LIMIT:-540}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: >"$summary"
here=$(dirname "$0")
commit=${COMMIT:-$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)}
bench="$BUILD/tools/bench/deepseekd-bench"
export DSD_CUDA_MODULE=${DSD_CUDA_MODULE:-$BUILD/kernels/cuda/libdsd_backend_cuda.so}
start=$(date +%s)
rc=0
elapsed() { echo $(( $(date +%s) - start )); }
note() { echo "$*" | tee -a "$summary"; }
# step NAME SECONDS CMD...: runs CMD under `timeout SECONDS` when it still fits
step() {
    local name=$1 secs=$2
    shift 2
    if [ $(( $(elapsed) + secs )) -gt "$LIMIT" ]; then
        note "SKIP $name (needs $secs s; $(( LIMIT - $(elapsed) )) of LIMIT=$LIMIT s left)"
        return
    fi
    timeout "$secs" "$@"
    local s=$?
    if [ "$s" -eq 0 ]; then note "PASS $name ($(elapsed) s)"
    else note "FAIL $name (exit $s at $(elapsed) s)"; rc=1
    fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
step "op tests: linear attention moe" 150 env OUT="$OUT/tests" TESTS="linear attention moe" SANITIZE=0 BENCH=0 \
    bash "$here/run.sh" "$BUILD"
for t in linear attention moe; do
    step "memcheck test_cuda_$t (tiny)" 60 sh -c "OUT= compute-sanitizer --tool memcheck --error-exitcode 99 \
        '$BUILD/tests/gpu/test_cuda_$t' --tiny-only --iters 1 > '$OUT/memcheck_$t.log' 2>&1"
done
B="--backend cuda --commit $commit --layers 2 --batches 1,8 --contexts 4096 --chunks 16384 --reps 3 --warmup 1"
# shellcheck disable=SC2086
step "bench, default engines" 80 sh -c "'$bench' $B --json '$OUT/bench_default.json' > '$OUT/bench_default.txt' 2>&1"
if [ -n "${BASE_MODULE:-}" ]; then
    # the same engines built from an earlier commit (a change that is not a knob, timed against
    # what it replaces in the same run)
    # shellcheck disable=SC2086
    step "bench, default engines of BASE_MODULE" 80 env DSD_CUDA_MODULE="$BASE_MODULE" sh -c "'$bench' $B \
        --json '$OUT/bench_base.json' > '$OUT/bench_base.txt' 2>&1"
else
    # shellcheck disable=SC2086
    step "bench, the engines before 2026-12-07" 80 sh -c "'$bench' $B --engine attn_tile=mma --engine indexer=fp8 \
        --engine moe_prefill=serial --engine linear=lt --json '$OUT/bench_previous.json' > '$OUT/bench_previous.txt' 2>&1"
fi
if [ -n "${CAND_ENGINES:-}" ]; then
    cand=""
    for e in $CAND_ENGINES; do cand="$cand --engine $e"; done
    # shellcheck disable=SC2086
    step "bench, candidate engines ($CAND_ENGINES)" 80 sh -c "'$bench' $B $cand --json '$OUT/bench_cand.json' \
        > '$OUT/bench_cand.txt' 2>&1"
fi
step "kernels" 90 sh -c "'$bench' --backend cuda --commit $commit --kernels --batches 1,8,64 \
    --contexts 4096,32768 --chunks 4096,16384 --json '$OUT/kernels.json' > '$OUT/kernels.txt' 2>&1"
# the one-CTA sampler (the default before 2026-12-07 night): the same table, for the sampler rows
step "kernels, sampler=block" 90 sh -c "'$bench' --backend cuda --commit $commit --kernels --batches 1,8,64 \
    --contexts 4096 --chunks 4096 --engine sampler=block --json '$OUT/kernels_block.json' \
    > '$OUT/kernels_block.txt' 2>&1"
if [ -n "${BASE_MODULE:-}" ]; then
    step "kernels, BASE_MODULE" 45 env DSD_CUDA_MODULE="$BASE_MODULE" sh -c "'$bench' --backend cuda --commit $commit \
        --kernels --batches 1,8,64 --json '$OUT/kernels_base.json' > '$OUT/kernels_base.txt' 2>&1"
fi
step "determinism" 50 sh -c "'$bench' --backend cuda --commit $commit --determinism --layers 2 --batches 64 \
    --contexts 4096 --chunks 4096 --json '$OUT/determinism.json' > '$OUT/determinism.txt' 2>&1"
# where the time goes: the prefill attention tile (half of a 16K chunk; the fifth launch is
# tokens 2,048-3,071 of the chunk, the first with full 2,048-entry selections: the KV fill of
# 2,048 positions and the chunk run in sub-batches of 1,024 tokens) and the decode step's
# attention and streaming linears at batch 1 (their counters, not guesses)
if command -v ncu >/dev/null; then
    SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy"
    step "ncu: attention tile at a 16K chunk" 120 sh -c "ncu -k regex:mla_wgmma --launch-skip 4 --launch-count 1 $SEC \
        '$bench' --backend cuda --layers 1 --dense 0 --batches 1 --contexts 2048 --chunks 16384 --reps 1 \
        --warmup 0 > '$OUT/ncu_attention_prefill.txt' 2>&1"
    # the grouped MoE experts at a 16K chunk: launches 5-6 are the chunk's first gate/up and
    # down (the four before are the 2,048-token KV fill's, one 128-pair block per expert)
    step "ncu: grouped MoE experts at a 16K chunk" 90 sh -c "ncu -k regex:grouped_kernel --launch-skip 4 \
        --launch-count 2 $SEC '$bench' --backend cuda --layers 1 --dense 0 --batches 1 --contexts 2048 \
        --chunks 16384 --reps 1 --warmup 0 > '$OUT/ncu_moe_grouped.txt' 2>&1"
    step "ncu: decode attention, linears, top-k select and sampling at batch 1" 120 sh -c "ncu -k 'regex:mla_attn_kernel|mla_attn_combine|linstream|sample_kernel|indexer_select' \
        --launch-count 40 $SEC '$bench' --backend cuda --layers 1 --dense 1 --batches 1 --contexts 4096 \
        --chunks 4096 --reps 1 --warmup 0 > '$OUT/ncu_decode.txt' 2>&1"
    if [ -n "${CAND_ENGINES:-}" ] && [ -n "${CAND_NCU:-}" ]; then
        # shellcheck disable=SC2086
        step "ncu: candidate kernels ($CAND_NCU) at a 16K chunk" 120 sh -c "ncu -k 'regex:$CAND_NCU' --launch-count 4 \
            $SEC '$bench' --backend cuda $cand --layers 1 --dense 0 --batches 1 --contexts 2048 --chunks 16384 \
            --reps 1 --warmup 0 > '$OUT/ncu_cand.txt' 2>&1"
    fi
    # the prefill attention's counters by source line and SASS instruction (one launch of the
    # 16K chunk, as above): where its warps stall, for the next version of the kernel
    step "ncu: attention tile source view at a 16K chunk" 150 sh -c "ncu -k regex:mla_ws_kernel --launch-skip 4 \
        --launch-count 1 --set full --import-source yes -o '$OUT/attn_ws' '$bench' --backend cuda --layers 1 \
        --dense 0 --batches 1 --contexts 2048 --chunks 16384 --reps 1 --warmup 0 > '$OUT/ncu_attention_run.txt' 2>&1 \
        && ncu -i '$OUT/attn_ws.ncu-rep' --page source --print-source cuda,sass --csv \
        > '$OUT/ncu_attention_source.csv' 2>&1; rm -f '$OUT/attn_ws.ncu-rep'"
    # every kernel's duration in a one-layer decode bench (the ops that are several kernels,
    # attention above all, split into their parts); CSV, one row per launch
    step "ncu: every kernel's duration, decode batch 1" 100 sh -c "ncu --metrics gpu__time_duration.sum --csv \
        '$bench' --backend cuda --layers 1 --dense 1 --batches 1 --contexts 4096 --chunks 1024 --reps 1 \
        --warmup 0 > '$OUT/ncu_durations.csv' 2>'$OUT/ncu_durations.err'"
else
    note "SKIP ncu (not found)"
fi
step "op tests: act sample generate fp8_linear" 120 env OUT="$OUT/tests2" TESTS="act sample generate fp8_linear" \
    SANITIZE=0 BENCH=0 bash "$here/run.sh" "$BUILD"
echo "=== summary ($(elapsed) s)"
cat "$summary"
exit $rc
