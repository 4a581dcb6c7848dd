#!/bin/sh
# check_units.sh: static checks of deepseekd's systemd files, no systemd needed.
#
#   check_units.sh BUILD_UNITS_DIR SOURCE_UNITS_DIR EXEC BINDIR CONFIG_FILE PRINT_CONFIG_BIN
#
# 1. `systemd-analyze verify` of deepseekd.socket + deepseekd.service prints nothing: a
#    warning fails the test, not only an error (an unknown key is only a warning). verify
#    insists the ExecStart binary exists, so it runs on a copy whose ExecStart points at EXEC
#    (the daemon when built, else the stand-in); the rest of the unit is as installed. A
#    copy with a misspelt key must make verify speak, or this check could not fail.
# 2. The installed ExecStart is BINDIR/deepseekd --config CONFIG_FILE (what cmake --install
#    writes), and TimeoutStopSec= leaves room for the default drain_timeout_s.
# 3. The GPU-friendly hardening is intact (DeviceAllow=char-nvidia*, no PrivateDevices=,
#    no ProcSubset=pid, no PrivateUsers=) and `systemd-analyze security` scores it OK (<= 4).
# 4. sysusers.d creates user and group deepseekd, tmpfiles.d creates /run/deepseekd 0750
#    deepseekd:deepseekd, both applied to a scratch root (--root) only.
set -eu
BUILD_UNITS=$1 SRC_UNITS=$2 EXEC=$3 BINDIR=$4 CONFIG_FILE=$5 PRINT_CONFIG=$6

command -v systemd-analyze >/dev/null 2>&1 || { echo "skipped: no systemd-analyze"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/dsd-units.XXXXXX")
trap 'rm -rf "$T"' EXIT
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }

svc=$BUILD_UNITS/deepseekd.service
sock=$BUILD_UNITS/deepseekd.socket

# ---- 1. verify
mkdir -p "$T/verify" "$T/typo"
cp "$svc" "$sock" "$T/verify/"
sed -i "s|^ExecStart=[^ ]*|ExecStart=$EXEC|" "$T/verify/deepseekd.service"
out=$(systemd-analyze verify "$T/verify/deepseekd.socket" "$T/verify/deepseekd.service" 2>&1) && rc=0 || rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then
    ok "systemd-analyze verify: no errors, no warnings"
else
    bad "systemd-analyze verify (rc $rc):"; echo "$out"
fi
cp "$T/verify/deepseekd.service" "$T/verify/deepseekd.socket" "$T/typo/"
sed -i 's/^Restart=/Restrt=/' "$T/typo/deepseekd.service"
out=$(systemd-analyze verify "$T/typo/deepseekd.socket" "$T/typo/deepseekd.service" 2>&1) || true
case $out in
    *Restrt*) ok "verify reports a misspelt key (the check above can fail)" ;;
    *) bad "verify said nothing about a misspelt key: '$out'" ;;
esac

# ---- 2. paths and timeouts
line=$(grep '^ExecStart=' "$svc")
if [ "$line" = "ExecStart=$BINDIR/deepseekd --config $CONFIG_FILE" ]; then
    ok "ExecStart is the installed binary with the installed configuration"
else
    bad "ExecStart: '$line', want 'ExecStart=$BINDIR/deepseekd --config $CONFIG_FILE'"
fi
drain=$("$PRINT_CONFIG" --print-config | sed -n 's/^#drain_timeout_s = //p')
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$svc")
if [ -n "$drain" ] && [ -n "$stop" ] && [ "$stop" -gt "$drain" ]; then
    ok "TimeoutStopSec=${stop}s exceeds the default drain_timeout_s ($drain s)"
else
    bad "TimeoutStopSec='$stop' must exceed drain_timeout_s='$drain' (in seconds, NNs form)"
fi

# The disk tier's default directory is the unit's CacheDirectory= (writable under
# ProtectSystem=strict).
cachedir=$("$PRINT_CONFIG" --print-config | sed -n 's/^#disk_cache_dir = //p')
if [ "$cachedir" = /var/cache/deepseekd ]; then ok "disk_cache_dir defaults to the CacheDirectory= path"
else bad "disk_cache_dir default '$cachedir' is not /var/cache/deepseekd (CacheDirectory=deepseekd)"; fi

# ---- 3. hardening that keeps /dev/nvidia* usable
for want in "Type=notify" "NotifyAccess=main" "DeviceAllow=char-nvidia\* rw" "DevicePolicy=closed" \
            "NoNewPrivileges=yes" "ProtectSystem=strict" "LimitMEMLOCK=infinity" \
            "RuntimeDirectoryPreserve=yes" "User=deepseekd" "CacheDirectory=deepseekd"; do
    if grep -q "^$want\$" "$svc"; then ok "service has $want"; else bad "service lacks $want"; fi
done
for forbidden in "PrivateDevices=yes" "ProcSubset=pid" "PrivateUsers=yes"; do
    if grep -q "^$forbidden" "$svc"; then bad "service has $forbidden (hides GPUs or peer uids)"
    else ok "service has no $forbidden"; fi
done
for want in "ListenStream=/run/deepseekd/deepseekd.sock" "SocketMode=0660" "SocketGroup=deepseekd" \
            "FileDescriptorName=deepseekd"; do
    if grep -q "^$want\$" "$sock"; then ok "socket has $want"; else bad "socket lacks $want"; fi
done
score=$(systemd-analyze security --offline=yes "$T/verify/deepseekd.service" 2>/dev/null |
        sed -n 's/.*Overall exposure level for deepseekd.service: \([0-9.]*\).*/\1/p')
if [ -n "$score" ] && awk "BEGIN { exit !($score <= 4.0) }"; then
    ok "systemd-analyze security exposure $score (<= 4.0)"
else
    bad "systemd-analyze security exposure '$score' (want <= 4.0)"
fi

# ---- 4. sysusers.d and tmpfiles.d, applied to a scratch root only
R=$T/root
mkdir -p "$R/etc/sysusers.d" "$R/etc/tmpfiles.d"
cp "$SRC_UNITS/sysusers.d/deepseekd.conf" "$R/etc/sysusers.d/"
cp "$SRC_UNITS/tmpfiles.d/deepseekd.conf" "$R/etc/tmpfiles.d/"
if systemd-sysusers --root="$R" "$R/etc/sysusers.d/deepseekd.conf" >/dev/null 2>&1 &&
   grep -q '^deepseekd:x:[0-9]*:[0-9]*:.*:/usr/sbin/nologin$' "$R/etc/passwd" &&
   grep -q '^deepseekd:x:' "$R/etc/group"; then
    ok "sysusers.d creates user and group deepseekd (no login shell)"
else
    bad "sysusers.d did not create deepseekd"; cat "$R/etc/passwd" 2>/dev/null || true
fi
if systemd-tmpfiles --root="$R" --create "$R/etc/tmpfiles.d/deepseekd.conf" 2>&1 &&
   uid=$(sed -n 's/^deepseekd:x:\([0-9]*\):.*/\1/p' "$R/etc/passwd") &&
   [ "$(stat -c '%a %u %g' "$R/run/deepseekd")" = "750 $uid $uid" ]; then
    ok "tmpfiles.d creates /run/deepseekd 0750 deepseekd:deepseekd"
else
    bad "tmpfiles.d: /run/deepseekd is '$(stat -c '%a %u %g' "$R/run/deepseekd" 2>&1)'"
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
