#!/bin/sh
# run_with_gateway.sh: starts the real deepseekd on a model and deepseekd-openai in front of
# it, runs one test program against them, and stops both (the gateway must exit 0 on
# SIGTERM).
#
#   run_with_gateway.sh DEEPSEEKD GATEWAY PROBE MODEL_DIR -- COMMAND [ARGS...] [-- GATEWAY_FLAGS...]
#
# The daemon runs with the test-only forced output (docs/DAEMON.md, test_force_trigger): a
# chat whose last user message ends with "[[force-tool-call]]" gets a DSML call of
# get_weather(city = "Paris") as the model's output. COMMAND sees OPENAI_BASE_URL
# (http://127.0.0.1:PORT/v1), OPENAI_API_KEY, DSD_SOCKET, DSD_PROBE, DSD_MODEL (the model
# name the daemon reports), DSD_GATEWAY (the binary), DSD_GATEWAY_LOG, DSD_DAEMON (the daemon's
# binary) and DSD_MODEL_DIR.
set -eu
. "$(dirname "$0")/../integration/daemon_ready.sh"
DAEMON=$1 GATEWAY=$2 PROBE=$3 MODEL=$4
shift 4
[ "$1" = "--" ] && shift
CMD=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do CMD="$CMD '$1'"; shift; done
[ $# -gt 0 ] && shift
GW_FLAGS="$*"

T=$(mktemp -d "${TMPDIR:-/tmp}/dsd-openai.XXXXXX")
dpid="" gpid=""
cleanup() {
    [ -n "$gpid" ] && kill "$gpid" 2>/dev/null || true
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null || true
    [ -n "$gpid" ] && wait "$gpid" 2>/dev/null || true
    [ -n "$dpid" ] && wait "$dpid" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL $*"; echo "---- daemon log"; tail -n 30 "$T/daemon.log"; echo "---- gateway log"; tail -n 30 "$T/gateway.log"; exit 1; }

FORCED='<｜DSML｜function_calls>
<｜DSML｜invoke name="get_weather">
<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>
</｜DSML｜invoke>
</｜DSML｜function_calls>'
"$DAEMON" --model "$MODEL" --socket "$T/d.sock" --threads 2 \
    --test-force-trigger "[[force-tool-call]]" --test-force-output "$FORCED" > "$T/daemon.log" 2>&1 &
dpid=$!
wait_ready "$PROBE" "$T/d.sock" "$dpid"

# shellcheck disable=SC2086
"$GATEWAY" --socket "$T/d.sock" --listen 127.0.0.1:0 $GW_FLAGS > "$T/gateway.log" 2>&1 &
gpid=$!
url=""
for _ in $(seq 1 100); do
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$T/gateway.log" | head -n 1)
    [ -n "$url" ] && break
    kill -0 "$gpid" 2>/dev/null || fail "deepseekd-openai exited"
    sleep 0.1
done
[ -n "$url" ] || fail "deepseekd-openai did not report its address"

export OPENAI_BASE_URL="$url/v1" OPENAI_API_KEY=unused DSD_SOCKET="$T/d.sock" DSD_PROBE="$PROBE" \
       DSD_MODEL="$(basename "$MODEL")" DSD_GATEWAY="$GATEWAY" DSD_GATEWAY_LOG="$T/gateway.log" TMPDIR="$T" \
       DSD_DAEMON="$DAEMON" DSD_MODEL_DIR="$MODEL"
set +e
eval "$CMD"
rc=$?
set -e
kill -TERM "$gpid"
wait "$gpid" && grc=0 || grc=$?
gpid=""
[ $rc -eq 0 ] || fail "the test program exited $rc"
[ $grc -eq 0 ] || fail "deepseekd-openai exited $grc on SIGTERM"
kill -0 "$dpid" 2>/dev/null || fail "deepseekd died during the test"
echo "PASS"
