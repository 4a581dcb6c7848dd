#!/bin/sh
# check_openai_units.sh: static checks of deepseekd-openai's systemd units, no systemd needed.
#
#   check_openai_units.sh BUILD_UNITS_DIR GATEWAY_BIN BINDIR
#
# 1. `systemd-analyze verify` of deepseekd-openai.socket + .service prints nothing (ExecStart
#    pointed at the built binary, which verify insists exists); a misspelt key must make it
#    speak, or this check could not fail.
# 2. ExecStart is BINDIR/deepseekd-openai (what cmake --install writes).
# 3. The socket listens on loopback port 8000; the service is Type=notify, a dynamic user in
#    group deepseekd (the daemon's socket), hardened: `systemd-analyze security` <= 2.0.
set -eu
BUILD_UNITS=$1 GATEWAY=$2 BINDIR=$3
command -v systemd-analyze >/dev/null 2>&1 || { echo "skipped: no systemd-analyze"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/dsd-oa-units.XXXXXX")
trap 'rm -rf "$T"' EXIT
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
svc=$BUILD_UNITS/deepseekd-openai.service
sock=$BUILD_UNITS/deepseekd-openai.socket

mkdir -p "$T/v" "$T/typo"
cp "$svc" "$sock" "$T/v/"
sed -i "s|^ExecStart=[^ ]*|ExecStart=$GATEWAY|" "$T/v/deepseekd-openai.service"
out=$(systemd-analyze verify "$T/v/deepseekd-openai.socket" "$T/v/deepseekd-openai.service" 2>&1) && rc=0 || rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify: no errors, no warnings"
else bad "systemd-analyze verify (rc $rc):"; echo "$out"; fi
cp "$T/v/"* "$T/typo/"
sed -i 's/^NoNewPrivileges=/NoNewPrivilege=/' "$T/typo/deepseekd-openai.service"
out=$(systemd-analyze verify "$T/typo/deepseekd-openai.socket" "$T/typo/deepseekd-openai.service" 2>&1) || true
case $out in *NoNewPrivilege*) ok "verify reports a misspelt key (the check above can fail)" ;;
             *) bad "verify said nothing about a misspelt key: '$out'" ;; esac

line=$(grep '^ExecStart=' "$svc")
[ "$line" = "ExecStart=$BINDIR/deepseekd-openai" ] && ok "ExecStart is the installed binary" ||
    bad "ExecStart: '$line', want 'ExecStart=$BINDIR/deepseekd-openai'"

for want in "Type=notify" "DynamicUser=yes" "SupplementaryGroups=deepseekd" "NoNewPrivileges=yes" \
            "ProtectSystem=strict" "PrivateDevices=yes" "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" \
            "Requires=deepseekd-openai.socket" "Wants=deepseekd.socket"; do
    grep -q "^$want\$" "$svc" && ok "service has $want" || bad "service lacks $want"
done
grep -q "^PrivateUsers=yes" "$svc" && bad "PrivateUsers= would hide group deepseekd" || ok "service has no PrivateUsers="
grep -q "^ListenStream=127.0.0.1:8000\$" "$sock" && ok "socket listens on 127.0.0.1:8000" || bad "socket ListenStream"
score=$(systemd-analyze security --offline=yes "$T/v/deepseekd-openai.service" 2>/dev/null |
        sed -n 's/.*Overall exposure level for deepseekd-openai.service: \([0-9.]*\).*/\1/p')
if [ -n "$score" ] && awk "BEGIN { exit !($score <= 2.0) }"; then ok "systemd-analyze security exposure $score (<= 2.0)"
else bad "systemd-analyze security exposure '$score' (want <= 2.0)"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
