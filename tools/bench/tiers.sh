#!/bin/sh
# tools/bench/tiers.sh: the prefix cache's tiers end to end, through the real daemon
# (docs/BENCH.md, "The KV tiers"). One command:
#
#   tools/bench/tiers.sh BUILD_DIR MODEL_DIR [-- DAEMON_OPTIONS...]
#
# Environment (defaults in brackets): PROMPT_LEN [32768] tokens of the long prompt;
# HOST_GB [8] and DISK_GB [16] the tier budgets (the host tier must hold twice the prompt's
# pages for a whole disk hit to be read ahead); CACHE_DIR [a temp dir] the disk tier;
# STREAMS ["1 8 32 128"] the concurrency levels (set and empty: no throughput runs); BENCH_ARGS [--backend cpu --preset tiny]
# deepseekd-bench's options for the copy rates (use --backend cuda --preset full-dims on a GPU);
# REQUESTS_PER_STREAM [4] requests per stream in the throughput runs; THROUGHPUT_KV_PAGES [the
# TTFT runs' pool] the KV pool of the throughput runs (its daemon is restarted with it); DD_MB
# [1024] the most of the cache file's written part the O_DIRECT read measures; KEEP_LOG [none] a file that
# collects the daemons' logs; DISKBENCH_LAYERS [2] the layers of deepseekd-diskbench's records
# (the disk tier's read path alone, beside a plain O_DIRECT reader, in CACHE_DIR); DISK_HITS
# [1] disk hits, each after a restart and each followed by dd (the disk's rate drifts: a cloud
# volume's from one second to the next), the share of dd taken hit by hit; DISK_ONLY [unset]
# with CACHE_DIR holding the prompt's pages from an earlier run of the same model and
# PROMPT_LEN: only the disk hits (no cold, device or host case, no throughput runs).
#
# Prints, in Markdown: the time to first token of one PROMPT_LEN-token prompt cold, then on a
# device hit (the median of three), a host hit (its pages pushed to the host tier by two other
# prompts of the same length: the KV pool holds 1.5 prompts) and a disk hit (after a restart);
# each reload's rate (the reloaded pages' bytes over the time the hit took beyond a device hit)
# and the copies' own rate (the daemon's reload counters) beside the host <-> device copy rates
# of deepseekd-bench --copies-only and an O_DIRECT read of the cache file's written part (dd);
# the disk hit's records' rate end to end beside dd's, as a share: from the daemon's read-ahead
# counters (first read queued to last reaped) and from its time to first token beyond a device
# hit's; then throughput at each STREAMS level, REQUESTS_PER_STREAM requests each, prompts of
# PROMPT_LEN/16 .. PROMPT_LEN/4 tokens starting with one of 4 prefixes of PROMPT_LEN/16 tokens.
set -eu
[ $# -ge 2 ] || { sed -n '2,20p' "$0"; exit 2; }
B=$1
M=$2
shift 2
[ "${1:-}" = "--" ] && shift
L=${PROMPT_LEN:-32768}
HOST_GB=${HOST_GB:-8}
DISK_GB=${DISK_GB:-16}
STREAMS=${STREAMS-"1 8 32 128"}
BENCH_ARGS=${BENCH_ARGS:-"--backend cpu --preset tiny"}
RPS=${REQUESTS_PER_STREAM:-4}
DD_MB=${DD_MB:-1024}
T=$(mktemp -d /tmp/dsd-tiers-XXXXXX)
DIR=${CACHE_DIR:-$T/cache}
SOCK=$T/sock
PAGES=$(( (L + 63) / 64 ))
KVP=$(( PAGES * 3 / 2 + 16 ))
TKVP=${THROUGHPUT_KV_PAGES:-$KVP}
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null
    wait 2>/dev/null
    [ -z "${KEEP_LOG:-}" ] || [ -z "$PID" ] || cat "$T/log" >>"$KEEP_LOG"
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

# start KV_PAGES [DAEMON_OPTIONS...]
start() {
    pages=$1
    shift
    "$B/daemon/serve/deepseekd" --model "$M" --socket "$SOCK" --kv-pages "$pages" --host-cache-gb "$HOST_GB" \
        --disk-cache-dir "$DIR" --disk-cache-gb "$DISK_GB" --max-inflight 1024 "$@" >"$T/log" 2>&1 &
    PID=$!
    i=0
    until "$B/tools/probe/deepseekd-probe" -s "$SOCK" health >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 3000 ] || { cat "$T/log"; echo "the daemon did not start" >&2; exit 1; }
        kill -0 "$PID" 2>/dev/null || { cat "$T/log"; exit 1; }
        sleep 0.2
    done
    # a short unrelated request first: the first steps of a fresh daemon pay one-time costs
    # (weights and KV memory touched for the first time, a GPU's graph capture and library
    # setup) that no measured case should carry
    probe bench --concurrency 1 --requests 1 --prompt-len 200 --max-tokens 4 --seed 999 >/dev/null
}
# KEEP_LOG=FILE: each daemon's log is appended there when it stops (with --log_level debug
# among the daemon options it holds the tiers' timeline)
stop() {
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
    [ -z "${KEEP_LOG:-}" ] || cat "$T/log" >>"$KEEP_LOG"
}
probe() { "$B/tools/probe/deepseekd-probe" -s "$SOCK" --json -t 3600000 "$@"; }
field() { sed -n "s/.*\"$1\":{\"p50\":\([0-9.e+-]*\).*/\1/p"; }
cached() { sed -n "s/.*\"cached\":{\"total\":\([0-9]*\),\"device\":\([0-9]*\),\"host\":\([0-9]*\),\"disk\":\([0-9]*\)}.*/\1 \2 \3 \4/p"; }
# one value of the daemon's stats
stat() { probe stats | tr ',{}' '\n\n\n' | sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
# the daemon's host -> device reload counters: "pages seconds"
reloads() { echo "$(stat kv_cache_reload_pages_total) $(stat kv_cache_reload_seconds_total)"; }
# its disk -> host read-ahead counters: "pages seconds" (0 0 for a daemon without them)
readaheads() { echo "$(stat kv_cache_read_ahead_pages_total) $(stat kv_cache_read_ahead_seconds_total)" |
    awk '{ print ($1 == "" ? 0 : $1), ($2 == "" ? 0 : $2) }'; }
# dd over the cache file's written part (at most DD_MB): "bytes seconds"
ddread() {
    dd if="$FILE" of=/dev/null bs=4M count=$((DD_MB / 4)) iflag=direct 2>&1 |
        sed -n 's/^\([0-9]*\) bytes .*copied, \([0-9.]*\) s, .*/\1 \2/p'
}
# one request of the long prompt: seed S picks the prompt; prints "ttft cached device host disk"
long() {
    out=$(probe bench --concurrency 1 --requests 1 --prompt-len "$L" --shared-prefix "$L" --max-tokens 1 --seed "$1")
    printf '%.1f %s\n' "$(echo "$out" | field ttft_ms)" "$(echo "$out" | cached)"
}

start "$KVP" "$@"
PAGE_BYTES=$(( $(probe info | sed -n 's/.*"kv_bytes":\([0-9]*\).*/\1/p') / $(probe info | sed -n 's/.*"kv_pages":\([0-9]*\).*/\1/p') ))
if [ -z "${DISK_ONLY:-}" ]; then
COLD=$(long 1)
# the device hit is the baseline of every reload rate: the median of three (one request's TTFT
# varies by a few milliseconds, as much as a host reload takes)
DEV=$( (long 1; long 1; long 1) | sort -n | sed -n 2p)
# two other prompts: the pool holds 1.5 prompts, so the second pushes half of the first one's
# pages to the host tier and the third the rest (least recently used first)
long 2 >/dev/null
long 3 >/dev/null
R0=$(reloads)
HOST=$(long 1)
R1=$(reloads)
else
    STREAMS=
fi
stop
start "$KVP" "$@"
R2=$(reloads)
A2=$(readaheads)
DISK=$(long 1)
R3=$(reloads)
A3=$(readaheads)
FILE=$(ls "$DIR"/kv-*.dsdkv | head -1)
# dd reads only the part of the file that holds pages (slots are handed out from the start):
# the rest is preallocated but never written, and a file system answers reads of unwritten
# extents without touching the disk (H100 host, 2026-12-06: 8.5 GB/s over the whole file,
# about 1 GB/s over the written part). Record bytes: the file header's field at offset 32.
REC=$(od -An -t u8 -j 32 -N 8 "$FILE" | tr -d ' ')
STORED=$(stat kv_cache_disk_pages)
WRITTEN_MB=$(( (4096 + ${STORED:-0} * ${REC:-0}) / 1048576 ))
[ "$WRITTEN_MB" -ge 4 ] && [ "$WRITTEN_MB" -lt "$DD_MB" ] && DD_MB=$WRITTEN_MB
# "N bytes (...) copied, S s, ...": the bytes dd read (the file may be shorter than DD_MB) and
# its seconds
read -r DD_BYTES DD <<EOF
$(ddread)
EOF
# each disk hit: "ttft pages seconds dd_bytes dd_seconds" (its read-ahead counters' difference,
# then dd right after it)
HITS="${DISK%% *} $(echo "$A2 $A3" | awk '{ print $3 - $1, $4 - $2 }') $DD_BYTES $DD"
h=1
while [ "$h" -lt "${DISK_HITS:-1}" ]; do
    stop
    start "$KVP" "$@"
    A2=$(readaheads)
    D=$(long 1)
    A3=$(readaheads)
    HITS="$HITS
${D%% *} $(echo "$A2 $A3" | awk '{ print $3 - $1, $4 - $2 }') $(ddread)"
    h=$((h + 1))
done
COPIES=$("$B/tools/bench/deepseekd-bench" $BENCH_ARGS --copies-only 2>&1 | grep -E "host copies|device copy")

echo "## Time to first token, $L-token prompt (page: $PAGE_BYTES bytes)"
echo
echo "| case | TTFT ms | cached tokens (device / host / disk) | reload rate GB/s |"
echo "|---|---|---|---|"
DEV_TTFT=${DEV:-0}
DEV_TTFT=${DEV_TTFT%% *}
row() {
    set -- "$1" $2
    rate=$(awk -v t="$2" -v d="$DEV_TTFT" -v p="$(( ($5 + $6) / 64 ))" -v pb="$PAGE_BYTES" \
        'BEGIN { if (d > 0 && t > d && p > 0) printf "%.2f", p * pb / ((t - d) / 1e3) / 1e9; else print "-" }')
    echo "| $1 | $2 | $3 ($4 / $5 / $6) | $rate |"
}
if [ -z "${DISK_ONLY:-}" ]; then
    row cold "$COLD"
    row "device hit" "$DEV"
    row "host hit" "$HOST"
fi
row "disk hit (restart)" "$DISK"
echo
echo "Reload rate: the host and disk pages' bytes over (TTFT - device-hit TTFT). The copies"
echo "alone (kv_cache_reload_pages_total and kv_cache_reload_seconds_total across the request:"
echo "enqueueing a hit's host -> device copies to their synchronization):"
echo
rate() {
    set -- $1 $2
    awk -v p0="$1" -v s0="$2" -v p1="$3" -v s1="$4" -v pb="$PAGE_BYTES" \
        'BEGIN { if (s1 > s0 && p1 > p0) printf "%d pages in %.3f ms, %.2f GB/s", p1 - p0, (s1 - s0) * 1e3, (p1 - p0) * pb / (s1 - s0) / 1e9; else print "none" }'
}
[ -n "${DISK_ONLY:-}" ] || echo "    host hit: $(rate "$R0" "$R1")"
echo "    disk hit: $(rate "$R2" "$R3") (after the reads ahead into the host tier)"
echo
echo "Beside them:"
echo
echo "$COPIES" | sed 's/^/    /'
awk -v b="$DD_BYTES" -v s="$DD" 'BEGIN { if (s > 0) printf "    disk read (dd, O_DIRECT, the written part of the cache file, %.0f MiB): %.2f GB/s\n", b / 1048576, b / s / 1e9 }'
# the disk tier's own read path beside a 4 MiB O_DIRECT reader, on the same file system, without
# the daemon (records of DISKBENCH_LAYERS layers: 2 = one layer and the MTP layer)
if [ -x "$B/tools/bench/deepseekd-diskbench" ]; then
    mkdir -p "$DIR/diskbench"
    "$B/tools/bench/deepseekd-diskbench" "$DIR/diskbench" --pages "${STORED:-511}" \
        --layers "${DISKBENCH_LAYERS:-2}" 2>&1 | sed 's/^/    /'
    rm -rf "$DIR/diskbench"
fi
echo
# The disk hit's records end to end beside a plain O_DIRECT reader of the same file (issue 10:
# at least 80 %). Per hit: the rate of the read-ahead counters (from queueing the first read to
# reaping the last: the reads, their checks and the engine's reaping, as the daemon does them
# for the request) and dd's right after it; and the TTFT-derived rate (the records over the
# disk hit's time beyond the device hit's: the reload and the step included) where there is a
# device hit to subtract (on the CPU backend the step's own noise is larger than the reads).
echo "## The disk hit's records beside dd (O_DIRECT, the same file; records of $REC bytes)"
echo
echo "| hit | TTFT ms | pages read ahead | read-ahead ms | records GB/s | dd GB/s | share of dd | TTFT-derived GB/s | share of dd |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "$HITS" | awk -v rec="$REC" -v d="$DEV_TTFT" '
    { ttft = $1; p = $2; s = $3; ddr = ($5 > 0) ? $4 / $5 / 1e9 : 0
      ra = (p > 0 && s > 0) ? p * rec / s / 1e9 : 0
      te = (d > 0 && ttft > d && p > 0) ? p * rec / ((ttft - d) / 1e3) / 1e9 : 0
      share[NR] = (ra > 0 && ddr > 0) ? ra / ddr : 0
      ras = (ra > 0) ? sprintf("%.2f", ra) : "-"
      shs = (share[NR] > 0) ? sprintf("%.0f %%", 100 * share[NR]) : "-"
      tes = (te > 0) ? sprintf("%.2f", te) : "-"
      tss = (te > 0 && ddr > 0) ? sprintf("%.0f %%", 100 * te / ddr) : "-"
      printf "| %d | %.1f | %d | %.2f | %s | %.2f | %s | %s | %s |\n", NR, ttft, p, s * 1e3, ras, ddr, shs, tes, tss }
    END { n = 0; for (i = 1; i <= NR; i++) if (share[i] > 0) v[++n] = share[i]
          if (n == 0) exit
          for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
          printf "\nRead-ahead records at %.0f %% of dd'"'"'s rate (the median of %d hits; the goal: 80 %%).\n",
              100 * (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2), n }'
echo
if [ -n "$STREAMS" ]; then
    if [ "$TKVP" != "$KVP" ]; then
        stop
        start "$TKVP" "$@"
    fi
    echo "## Throughput: prompts of $((L / 16))..$((L / 4)) tokens, 4 shared prefixes of $((L / 16)) tokens, 64 generated, KV pool $TKVP pages"
    echo
    echo "| streams | requests | tokens/s | TTFT p50 ms | prompt tokens cached |"
    echo "|---|---|---|---|---|"
    for c in $STREAMS; do
        out=$(probe bench --concurrency "$c" --requests $((RPS * c)) --prompt-len $((L / 16)) --prompt-len-max $((L / 4)) \
            --shared-prefix $((L / 16)) --prefix-groups 4 --max-tokens 64 --seed $((100 + c)))
        tps=$(printf '%.1f' "$(echo "$out" | sed -n 's/.*"tokens_per_s":\([0-9.e+-]*\).*/\1/p')")
        pt=$(echo "$out" | sed -n 's/.*"prompt_tokens":\([0-9]*\).*/\1/p')
        echo "| $c | $((RPS * c)) | $tps | $(printf '%.1f' "$(echo "$out" | field ttft_ms)") | $(echo "$out" | cached | cut -d' ' -f1) of $pt |"
    done
fi
stop
