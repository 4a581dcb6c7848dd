#!/bin/bash
# The KV reload beside the step (kv_reload=overlap, docs/KV_CACHE.md "What overlaps what") on
# the GPU host, in one run:
#   1. correctness on the GPU itself: a daemon with the overlap on the tiny model, a small KV
#      pool and a host tier; a 1,000-token prompt greedy (16 ids) cold, two other prompts that
#      push its pages to the host tier, then the same prompt again: a host hit whose ids must
#      equal the cold ids (the same card, batch and kernels: no CPU comparison involved);
#   2. the time to first token of a host hit with and without the overlap (tools/bench/tiers.sh)
#      on 16 dense full-dimension layers (deepseekd-mkmodel --dense: ~25 GB, written first).
#   OUT=/tmp/kv-overlap tests/gpu/kv_overlap.sh BUILD TINY_MODEL_DIR
# BUILD: a tree built with -DDSD_CUDA=ON (its daemon, probe, bench and mkmodel); BACKEND=cpu
# HOSTCHECK_ONLY=1 runs step 1 on the CPU backend (a check of this script). Results under
# $OUT (hostcheck_*.txt, tiers_{overlap,auto}.md and the daemons' debug logs); exit status
# non-zero when the host hit's ids differ from the cold ids or a step fails.
set -uo pipefail
BUILD=${1:?build dir}
TINY=${2:?tiny model dir}
OUT=${OUT:-/tmp/kv-overlap}
PROMPT_LEN=${PROMPT_LEN:-16384}
BACKEND=${BACKEND:-cuda}
mkdir -p "$OUT"
export DSD_CUDA_MODULE=${DSD_CUDA_MODULE:-$BUILD/kernels/cuda/libdsd_backend_cuda.so}
export LD_LIBRARY_PATH=$BUILD/client_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
here=$(dirname "$0")
probe="$BUILD/tools/probe/deepseekd-probe"
rc=0
M=${DENSE_MODEL:-/tmp/dsd-dense16}
if [ -z "${HOSTCHECK_ONLY:-}" ] && [ ! -f "$M/config.json" ]; then
    "$BUILD/tools/mkmodel/deepseekd-mkmodel" --preset full-dims --layers 16 --dense 16 --out "$M" \
        >"$OUT/mkmodel.log" 2>&1 &
    MK=$!
fi

# 1. a host hit's ids against the cold ids, on one GPU daemon with the overlap
sock=$(mktemp -u /tmp/dsd-kv-overlap-XXXXXX.sock)
DSD_CUDA_ENGINES=kv_reload=overlap "$BUILD/daemon/serve/deepseekd" --model "$TINY" --backend "$BACKEND" --socket "$sock" \
    --kv-pages 40 --host-cache-gb 1 --log_level debug >"$OUT/hostcheck_daemon.log" 2>&1 &
D=$!
for _ in $(seq 1 200); do "$probe" -s "$sock" health >/dev/null 2>&1 && break; sleep 0.2; done
gen() { timeout 60 "$probe" -s "$sock" --json generate --prompt-tokens "$1" --ids --max-tokens 16 --temperature 0 \
    --ignore-eos; }
A=$(seq 3 1002 | tr '\n' ' ')
B=$(seq 1003 2002 | tr '\n' ' ')
C=$(seq 5 1004 | awk '{printf "%d ", ($1 * 7) % 2000 + 2}')
gen "$A" >"$OUT/hostcheck_cold.txt"
gen "$B" >/dev/null
gen "$C" >/dev/null
gen "$A" >"$OUT/hostcheck_hit.txt"
kill "$D"
wait "$D"
grep -v "\"done\"" "$OUT/hostcheck_cold.txt" >"$OUT/hostcheck_cold_ids.txt"
grep -v "\"done\"" "$OUT/hostcheck_hit.txt" >"$OUT/hostcheck_hit_ids.txt"
echo "cold: $(tail -n 1 "$OUT/hostcheck_cold.txt")"
echo "hit:  $(tail -n 1 "$OUT/hostcheck_hit.txt")"
if ! grep -q '"cached_host":[1-9]' "$OUT/hostcheck_hit.txt"; then
    echo "FAIL: the second request of the prompt was no host hit (see hostcheck_daemon.log)"
    rc=1
elif ! [ -s "$OUT/hostcheck_cold_ids.txt" ] || ! cmp -s "$OUT/hostcheck_cold_ids.txt" "$OUT/hostcheck_hit_ids.txt"; then
    echo "FAIL: the host hit's ids differ from the cold ids"
    rc=1
else
    echo "PASS: the host hit's 16 ids equal the cold ids"
fi

[ -n "${HOSTCHECK_ONLY:-}" ] && exit $rc

# 2. time to first token with and without the overlap
[ -n "${MK:-}" ] && { wait "$MK" || { echo "FAIL: deepseekd-mkmodel (see mkmodel.log)"; exit 1; }; }
for k in overlap auto; do
    DSD_CUDA_ENGINES=kv_reload=$k KEEP_LOG="$OUT/tiers_${k}_daemon.log" PROMPT_LEN=$PROMPT_LEN HOST_GB=8 DISK_GB=8 \
        DD_MB=512 STREAMS="" CACHE_DIR="$OUT/cache_$k" BENCH_ARGS="--backend cuda --preset full-dims --layers 1 --dense 1" \
        sh "$here/../../tools/bench/tiers.sh" "$BUILD" "$M" -- --backend cuda --max-batch 128 --log_level debug \
        >"$OUT/tiers_$k.md" 2>&1 || { echo "FAIL: tiers.sh with kv_reload=$k"; rc=1; }
    rm -rf "$OUT/cache_$k"
    echo "kv_reload=$k:"
    grep -a '^| \(cold\|device hit\|host hit\)' "$OUT/tiers_$k.md"
done
grep -a "KV hit: .* host pages\|device pages demoted to the host in [1-9]" "$OUT"/tiers_*_daemon.log | tail -n 8
exit $rc
