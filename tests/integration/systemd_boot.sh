#!/bin/sh
# systemd_boot.sh: boots a real systemd in a throwaway container and checks deepseekd's units
# end to end, as an operator would use them.
#
#   systemd_boot.sh [--drain-tokens N] [--openai GATEWAY] BUILD_UNITS_DIR SOURCE_UNITS_DIR DAEMON PROBE MODEL_DIR
#
# With --openai, deepseekd-openai (GATEWAY) and its units (BUILD_UNITS_DIR/deepseekd-openai.*)
# come along, and the runner also checks them: the HTTP socket activates the gateway, which
# reaches the daemon through group deepseekd and answers /v1/models and a chat (curl).
#
# BUILD_UNITS_DIR holds the configured deepseekd.service and deepseekd.socket (build/units),
# SOURCE_UNITS_DIR the sysusers.d/ and tmpfiles.d/ snippets (units/). DAEMON and PROBE are
# deepseekd and deepseekd-probe (or the stand-in, which plays both). MODEL_DIR is mounted
# read-only as the model.
#
# Inside (tests/integration/systemd/boot/runner.sh): deepseekd.socket is started; the first
# probe activates deepseekd.service, which must reach READY=1 (ActiveState=active); a
# generate request, a reload, a watchdog interval and `systemctl stop` with a request in
# flight (drained, not killed) follow; the socket then activates the daemon a second time.
#
# How (docs/TESTING.md, systemd): systemd-nspawn --volatile=yes -D / boots the host's /usr on a tmpfs
# root, so nothing the container's systemd does (tmpfiles --boot empties /tmp!) touches the
# host. NEVER boot systemd on the host root instead. Needs root and systemd-container;
# exits 77 (skipped) without them. Runs in its own cgroup so nspawn's payload/supervisor
# cgroups are ours and parallel runs do not collide. Takes ~10 s.
set -eu

DRAIN_TOKENS=150
OPENAI=""
while :; do
    case "${1:-}" in
        --drain-tokens) DRAIN_TOKENS=$2; shift 2 ;;
        --openai) OPENAI=$2; shift 2 ;;
        *) break ;;
    esac
done
if [ $# -ne 5 ]; then
    echo "usage: $0 [--drain-tokens N] [--openai GATEWAY] BUILD_UNITS_DIR SOURCE_UNITS_DIR DAEMON PROBE MODEL_DIR" >&2
    exit 2
fi
BUILD_UNITS=$1 SRC_UNITS=$2 DAEMON=$3 PROBE=$4 MODEL=$5
HERE=$(cd "$(dirname "$0")" && pwd)

skip() { echo "skipped: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null 2>&1 || skip "systemd-nspawn missing (apt-get install systemd-container)"
for f in "$BUILD_UNITS/deepseekd.service" "$BUILD_UNITS/deepseekd.socket" \
         "$SRC_UNITS/sysusers.d/deepseekd.conf" "$SRC_UNITS/tmpfiles.d/deepseekd.conf" \
         "$DAEMON" "$PROBE"; do
    [ -f "$f" ] || { echo "missing $f" >&2; exit 2; }
done
[ -d "$MODEL" ] || { echo "missing model directory $MODEL" >&2; exit 2; }

T=$(mktemp -d "${TMPDIR:-/tmp}/dsd-boot.XXXXXX")
NAME=dsdboot$$
CG=nspawn-$NAME
cleanup() {
    # Leave our cgroup before removing it (see below).
    for d in $CGDIRS; do
        echo $$ > "$d/cgroup.procs" 2>/dev/null || true
        find "$d/$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
CGDIRS=""
trap cleanup EXIT

# What the container sees:
#   /etc/systemd/system  the units under test + a drop-in pointing ExecStart at /test/bin
#   /etc/sysusers.d, /etc/tmpfiles.d  the snippets under test
#   /test  binaries, the runner, its results     /model  the model, read-only
mkdir -p "$T/units/deepseekd.service.d" "$T/sysusers.d" "$T/tmpfiles.d" "$T/test/bin"
cp "$BUILD_UNITS/deepseekd.service" "$BUILD_UNITS/deepseekd.socket" "$T/units/"
cp "$HERE/systemd/boot/test-runner.service" "$HERE/systemd/boot/test.target" "$T/units/"
cat > "$T/units/deepseekd.service.d/test.conf" <<'UNIT'
# The unit as installed, except: the binary under test, and a short watchdog the runner
# outlasts (a daemon that never pings would be killed during the test).
[Service]
ExecStart=
ExecStart=/test/bin/deepseekd --config /test/deepseekd.conf
WatchdogSec=3s
UNIT
cp "$SRC_UNITS/sysusers.d/deepseekd.conf" "$T/sysusers.d/"
cp "$SRC_UNITS/tmpfiles.d/deepseekd.conf" "$T/tmpfiles.d/"
cp "$DAEMON" "$T/test/bin/deepseekd"
cp "$PROBE" "$T/test/bin/deepseekd-probe"
# The probe links libdeepseekd.so.0 from the build tree, which the container cannot see:
# bring the library along (the runner sets LD_LIBRARY_PATH=/test/bin).
for lib in $(ldd "$PROBE" 2>/dev/null | awk '/libdeepseekd/ {print $3}'); do
    cp -L "$lib" "$T/test/bin/"
done
if [ -n "$OPENAI" ]; then
    cp "$BUILD_UNITS/deepseekd-openai.service" "$BUILD_UNITS/deepseekd-openai.socket" "$T/units/"
    mkdir -p "$T/units/deepseekd-openai.service.d"
    # LeakSanitizer stops the process with ptrace at exit, which the unit's
    # SystemCallFilter= forbids: in a sanitizer build the leak check is left to the tests
    # outside the sandbox (tests/openai). Other builds ignore ASAN_OPTIONS.
    printf '[Service]\nExecStart=\nExecStart=/test/bin/deepseekd-openai\nEnvironment=LD_LIBRARY_PATH=/test/bin ASAN_OPTIONS=detect_leaks=0\n' \
        > "$T/units/deepseekd-openai.service.d/test.conf"
    cp "$OPENAI" "$T/test/bin/deepseekd-openai"
    for lib in $(ldd "$OPENAI" 2>/dev/null | awk '/libdeepseekd/ {print $3}'); do
        cp -L "$lib" "$T/test/bin/"
    done
fi
cp "$HERE/systemd/boot/runner.sh" "$T/test/runner.sh"
cat > "$T/test/deepseekd.conf" <<CONF
model = /model
socket = /run/deepseekd/deepseekd.sock
drain_timeout_s = 10
log_level = info
CONF
echo "DRAIN_TOKENS=$DRAIN_TOKENS" > "$T/test/params"
chmod 0755 "$T" "$T/test" "$T/test/bin" "$T/test/bin/"* "$T/test/runner.sh"

# Our own cgroup (hybrid hierarchy on the build machines: name=systemd + unified; pure
# cgroup2 elsewhere).
if [ -d /sys/fs/cgroup/unified ]; then
    CGDIRS="/sys/fs/cgroup/systemd /sys/fs/cgroup/unified"
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    CGDIRS="/sys/fs/cgroup"
fi
for d in $CGDIRS; do
    mkdir -p "$d/$CG" && echo $$ > "$d/$CG/cgroup.procs"
done

start=$(date +%s)
set +e
timeout 120 systemd-nspawn --quiet --register=no --keep-unit --machine="$NAME" \
    --volatile=yes --directory=/ --boot \
    --bind="$T/test":/test --bind-ro="$MODEL":/model \
    --bind-ro="$T/units":/etc/systemd/system \
    --bind-ro="$T/sysusers.d":/etc/sysusers.d --bind-ro="$T/tmpfiles.d":/etc/tmpfiles.d \
    -- --unit=test.target systemd.firstboot=off > "$T/nspawn.log" 2>&1 < /dev/null
rc=$?
set -e
secs=$(( $(date +%s) - start ))

result=$(cat "$T/test/result" 2>/dev/null || echo "no result file")
if [ $rc -eq 40 ] && [ "$result" = "PASS" ]; then
    grep -E '^(ok|PASS)' "$T/test/runner.out" 2>/dev/null || true
    echo "1 passed, 0 failed: systemd boot test (${secs} s)"
    exit 0
fi
echo "systemd boot test failed: nspawn exit $rc (40 = runner passed), result: $result"
for f in runner.out runner.log journal.txt; do
    [ -f "$T/test/$f" ] && { echo "---- $f"; tail -n 80 "$T/test/$f"; }
done
echo "---- nspawn.log (tail)"; tail -n 40 "$T/nspawn.log"
echo "0 passed, 1 failed"
exit 1
