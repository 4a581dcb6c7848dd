#!/bin/sh
# test_plan_cli.sh DEEPSEEKD V32_CONFIG_JSON TINY_CHECKPOINT_DIR
# `deepseekd --plan` end to end: a directory holding only the published V3.2 config.json
# (1 GPU and 8 GPUs of the default 80 GB: does not fit, exit 2; 8 GPUs of 139 GiB: fits,
# exit 0), the tiny generated checkpoint (headers read, cross-check printed), and the
# errors (no config.json: exit 1; a bad option: exit 78). The printed numbers must agree
# with each other: "needed in all" minus "GPU memory" is the shortfall of the verdict, and
# a fitting GPU's weights + workspace + KV pool + unused add up to its memory.
set -u
bin=$1 v32=$2 tiny=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

mkdir "$tmp/v32"
cp "$v32" "$tmp/v32/config.json"

# run NAME WANT_STATUS ARGS...: output in $tmp/NAME.out
run() {
    name=$1 want=$2
    shift 2
    "$bin" --config /dev/null "$@" > "$tmp/$name.out" 2> "$tmp/$name.err"
    st=$?
    if [ "$st" -eq "$want" ]; then ok; else bad "$name: exit status $st, want $want"; cat "$tmp/$name.out" "$tmp/$name.err"; fi
}
has() { # has NAME TEXT
    if grep -qF -- "$2" "$tmp/$1.out" "$tmp/$1.err"; then ok; else bad "$1: no \"$2\" in the output"; fi
}
# bytes NAME LABEL: the exact-bytes column of the first table row starting with LABEL, commas dropped
bytes() {
    awk -v l="$2" 'index($0, "  " l) == 1 { gsub(",", "", $NF); print $NF; exit }' "$tmp/$1.out"
}

# 1 GPU, config.json only: does not fit, and says by how much.
run one 2 --plan --model "$tmp/v32"
has one "config.json alone"
has one "Verdict: does not fit: needs "
has one "more bytes per GPU"
has one "on 1 GPU."
need=$(bytes one "needed in all") mem=$(bytes one "GPU memory")
short=$(sed -n 's/^Verdict: does not fit: needs \([0-9,]*\) more bytes.*/\1/p' "$tmp/one.out" | tr -d ,)
if [ -n "$need" ] && [ -n "$short" ] && [ "$((need - mem))" = "$short" ]; then ok; else bad "one: need $need - memory $mem != shortfall $short"; fi

# 8 GPUs of 80 GB: the routed experts split 32 per GPU, still more than 80 GB each.
run eight 2 --plan --model "$tmp/v32" --gpus 8
has eight "Each of GPUs 0-7 (32 routed experts each)"
has eight "on 8 GPUs."
short8=$(sed -n 's/^Verdict: does not fit: needs \([0-9,]*\) more bytes.*/\1/p' "$tmp/eight.out" | tr -d ,)
if [ -n "$short8" ] && [ "$short8" -lt "$short" ]; then ok; else bad "eight: shortfall $short8 not below one GPU's $short"; fi

# 8 GPUs of 139 GiB (an H200): fits; every byte of a GPU accounted for.
run h200 0 --plan --model "$tmp/v32" --gpus 8 --gpu-mem 139G
has h200 "Verdict: fits on 8 GPUs"
sum=0
for label in "weights, replicated" "weights, routed experts" "workspace" "KV pool:" "unused"; do
    v=$(bytes h200 "$label")
    [ -n "$v" ] || bad "h200: no row \"$label\""
    sum=$((sum + ${v:-0}))
done
if [ "$sum" = "$(bytes h200 "GPU memory")" ] && [ "$sum" = "$((139 << 30))" ]; then ok; else bad "h200: parts add up to $sum, memory $((139 << 30))"; fi

# The host tier and the KV keys reach the plan.
run host 0 --plan --model "$tmp/v32" --gpus 8 --gpu-mem 139G --host-cache-gb 64 --kv-dtype bf16 --kv-pages 5000
has host "KV pool: 5000 pages = 319,936 tokens"
has host "bf16, 1152 + 132 bytes per token and layer"
has host "pages = "

# A whole checkpoint: its headers are read and cross-checked against config.json.
run tiny 0 --plan --model "$tiny" --gpus 2 --gpu-mem 2G
has tiny "the checkpoint's safetensors headers"
has tiny "Cross-check: the checkpoint's headers give"
has tiny "(difference +0)"

# IndexCache (docs/INDEXCACHE.md): off unless asked; the daemon's keys over config.json's;
# a pattern of the wrong length is refused.
has one "IndexCache: off"
run ic 2 --plan --model "$tmp/v32" --index-topk-freq 4
has ic "IndexCache: on: 16 of 61 layers compute the indexer (FFSSSFSSSF"
run icpat 0 --plan --model "$tiny" --index-topk-pattern FSSF
has icpat "IndexCache: on: 2 of 4 layers compute the indexer (FSSF)"
run icbad 1 --plan --model "$tiny" --index-topk-pattern FSF
has icbad "index_topk_pattern has 3 characters; the model has 4 main layers"

# Errors.
run missing 1 --plan --model "$tmp/nowhere"
has missing "config.json"
run badopt 78 --plan --model "$tmp/v32" --gpus 0
has badopt "gpus"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
