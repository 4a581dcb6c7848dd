#!/bin/sh
# Installs the Debian 12 packages deepseekd needs to build and test.
# Called by the README's two commands and by .ci/run; safe to run again.
set -eu

PKGS="build-essential cmake ninja-build pkg-config git ca-certificates
      clang libclang-rt-14-dev
      libjansson-dev libpcre2-dev libxxhash-dev liburing-dev libmsgpack-dev libsystemd-dev
      libmicrohttpd-dev curl
      systemd systemd-container procps scdoc"
# systemd (systemd-analyze, -sysusers, -tmpfiles), systemd-container (nspawn) and procps
# (/bin/kill, the unit's ExecReload) serve the systemd tests; PID 1 need not be systemd.
# scdoc builds the man pages. libmicrohttpd-dev is the HTTP server of deepseekd-openai
# (tools/openai); curl drives its tests.
# Node.js + npm run the tokenizer identity tests. A machine may already carry a
# newer Node (nodesource bundles npm and conflicts with Debian's npm package):
# install Debian's only when the command is missing.
command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing$missing" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
