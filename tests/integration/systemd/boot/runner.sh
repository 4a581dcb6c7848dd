#!/bin/sh
# runner.sh: the checks of systemd_boot.sh, run by test-runner.service inside the container
# (as root, systemd 252 as PID 1). Writes /test/runner.out (one line per check),
# /test/runner.log (trace), /test/journal.txt and /test/result (PASS or the failures), then
# `systemctl exit 40+failures`, which becomes systemd-nspawn's exit status.
exec > /test/runner.log 2>&1
set -x
. /test/params
SOCK=/run/deepseekd/deepseekd.sock
PROBE=/test/bin/deepseekd-probe
: > /test/runner.out
: > /test/result.tmp
failures=0

check() {   # check DESCRIPTION COMMAND...
    desc=$1; shift
    if "$@"; then
        echo "ok   $desc" >> /test/runner.out
    else
        echo "FAIL $desc" >> /test/runner.out
        echo "FAIL: $desc" >> /test/result.tmp
        failures=$((failures + 1))
    fi
}
prop() { systemctl show -p "$1" --value "${2:-deepseekd.service}"; }
is() { [ "$(prop "$1" "${3:-}")" = "$2" ]; }
probe() { LD_LIBRARY_PATH=/test/bin timeout 30 "$PROBE" --socket "$SOCK" "$@"; }
# The first client activates the daemon, which then loads the model: `health` exits 75
# (EX_TEMPFAIL) while it loads and 0 once it is ready. Poll as an operator would.
ready() {
    for _ in $(seq 1 120); do
        probe health && return 0
        [ $? -eq 75 ] || return 1
        sleep 0.5
    done
    return 1
}

# ---- socket activation: nothing runs until a client connects
check "deepseekd.socket starts" systemctl start deepseekd.socket
check "socket file is 0660 root:deepseekd" \
    [ "$(stat -c '%a %U %G' "$SOCK")" = "660 root deepseekd" ]
check "socket directory lets only group deepseekd in (0750)" \
    [ "$(stat -c '%a %G' /run/deepseekd)" = "750 deepseekd" ]
check "service is not running before the first client" is ActiveState inactive

# ---- the first client starts the daemon; READY=1 makes it active
check "health probe through the activated socket (loading, then ready)" ready
check "service is active (READY=1 seen)" is ActiveState active
check "service is running" is SubState running
check "service has a status text (STATUS=)" [ -n "$(prop StatusText)" ]
check "service was triggered by deepseekd.socket" is TriggeredBy deepseekd.socket
pid=$(prop MainPID)
# (/proc/PID belongs to the process's user; no awk here: /etc/alternatives is empty)
check "daemon runs as user deepseekd" [ "$(stat -c %U /proc/"$pid")" = deepseekd ]
check "generate request" probe generate --prompt-tokens "1 2 3" --max-tokens 8

# ---- reload: RELOADING=1 ... READY=1, still the same process. The file changes a
# reloadable key (applied) and a restart-only one (reported, not applied).
printf 'max_tokens = 100\nmax_batch = 8\n' >> /test/deepseekd.conf
check "systemctl reload" timeout 30 systemctl reload deepseekd.service
check "active after reload" is ActiveState active
check "same process after reload" is MainPID "$pid"

# ---- the watchdog (3 s in the test drop-in) is fed while idle
sleep 4
check "still active after a watchdog interval" is ActiveState active
check "no restarts" is NRestarts 0

# ---- stop with a request in flight: STOPPING=1, the request finishes, clean exit
probe generate --prompt-tokens "1 2 3" --max-tokens "$DRAIN_TOKENS" > /test/drain.out 2>&1 &
bg=$!
sleep 0.5
check "systemctl stop" timeout 60 systemctl stop deepseekd.service
wait $bg
drain_rc=$?
check "request in flight during stop completed (probe exit 0)" [ "$drain_rc" -eq 0 ]
check "service stopped cleanly (Result=success)" is Result success
check "main process exited 0" is ExecMainStatus 0
check "service is inactive" is ActiveState inactive

# ---- the socket stays; a new client starts the daemon again
check "socket still listening after the service stopped" is ActiveState active deepseekd.socket
check "second activation after stop" ready
check "active again" is ActiveState active
# ---- deepseekd-openai (systemd_boot.sh --openai): the HTTP socket activates the gateway,
# which reaches the daemon through group deepseekd
if [ -x /test/bin/deepseekd-openai ]; then
    OA=http://127.0.0.1:8000/v1
    check "deepseekd-openai.socket starts" systemctl start deepseekd-openai.socket
    check "gateway is not running before the first HTTP client" is ActiveState inactive deepseekd-openai.service
    check "GET /v1/models through the activated gateway" \
        sh -c "curl -sf --max-time 30 $OA/models | grep -q '\"id\":\"model\"'"
    check "gateway is active (READY=1 seen)" is ActiveState active deepseekd-openai.service
    check "gateway was triggered by its socket" is TriggeredBy deepseekd-openai.socket deepseekd-openai.service
    gpid=$(prop MainPID deepseekd-openai.service)
    check "gateway does not run as root" [ "$(stat -c %u /proc/"$gpid")" != 0 ]
    check "gateway has group deepseekd" \
        sh -c "grep '^Groups:' /proc/$gpid/status | grep -qw $(getent group deepseekd | cut -d: -f3)"
    check "chat completion through the gateway" \
        sh -c "curl -sf --max-time 60 $OA/chat/completions -H 'Content-Type: application/json' \
               -d '{\"model\":\"model\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":4}' \
               | grep -q '\"completion_tokens\":4'"
    check "stop the gateway" timeout 30 systemctl stop deepseekd-openai.service deepseekd-openai.socket
    check "gateway stopped cleanly (Result=success)" is Result success deepseekd-openai.service
    journalctl -u deepseekd-openai.service -o cat >> /test/journal.txt 2>&1
fi

check "stop again" timeout 60 systemctl stop deepseekd.service deepseekd.socket

# ---- the log reached journald with its priorities parsed
journalctl -u deepseekd.service -o cat > /test/journal.txt 2>&1
journalctl -u deepseekd.service -o export | grep -a '^PRIORITY=' | sort | uniq -c >> /test/journal.txt
check "daemon logged something" [ "$(journalctl -u deepseekd.service -o cat _PID="$pid" | wc -l)" -gt 0 ]
check "no unparsed <N> prefixes in the journal" \
    sh -c '! journalctl -u deepseekd.service -o cat | grep -q "^<[0-7]>"'

if [ $failures -eq 0 ]; then echo PASS > /test/result; else mv /test/result.tmp /test/result; fi
rm -f /test/result.tmp
systemctl exit $((40 + failures))
