#!/bin/sh
# run_with_daemon.sh: starts the real deepseekd on a model on a private socket, runs one test
# program against it with DSD_SOCKET set, and stops the daemon (which must exit 0 on SIGTERM).
#
#   run_with_daemon.sh DEEPSEEKD PROBE MODEL_DIR -- COMMAND [ARGS...]
set -eu
. "$(dirname "$0")/daemon_ready.sh"
DAEMON=$1 PROBE=$2 MODEL=$3
shift 3
[ "$1" = "--" ] && shift
T=$(mktemp -d "${TMPDIR:-/tmp}/dsd-blackbox.XXXXXX")
dpid=""
cleanup() {
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null || true
    [ -n "$dpid" ] && wait "$dpid" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL $*"; echo "---- daemon log"; tail -n 30 "$T/daemon.log"; exit 1; }
"$DAEMON" --model "$MODEL" --socket "$T/d.sock" --threads 2 > "$T/daemon.log" 2>&1 &
dpid=$!
wait_ready "$PROBE" "$T/d.sock" "$dpid"
rc=0
DSD_SOCKET="$T/d.sock" "$@" || rc=$?
kill -0 "$dpid" 2>/dev/null || fail "deepseekd died during the test"
kill "$dpid"
drc=0
wait "$dpid" || drc=$?
dpid=""
[ "$drc" -eq 0 ] || fail "deepseekd exited $drc on SIGTERM"
[ "$rc" -eq 0 ] || { echo "---- daemon log"; tail -n 30 "$T/daemon.log"; }
exit "$rc"
