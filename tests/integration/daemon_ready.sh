# daemon_ready.sh: sourced by the test runners that start the real daemon themselves
# (run_with_daemon.sh, tests/openai/run_with_gateway.sh). The caller defines fail().
#
#   wait_ready PROBE SOCKET PID    returns once `deepseekd-probe health` answers on SOCKET
#                                  (at most 30 s); calls fail if PID exits or it never does
wait_ready() {
    for _ in $(seq 1 300); do
        "$1" --socket "$2" health >/dev/null 2>&1 && return 0
        kill -0 "$3" 2>/dev/null || fail "deepseekd exited"
        sleep 0.1
    done
    "$1" --socket "$2" health >/dev/null 2>&1 || fail "deepseekd not ready"
}
