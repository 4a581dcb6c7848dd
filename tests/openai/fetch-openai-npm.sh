#!/bin/sh
# Installs the official `openai` npm package, pinned by tests/openai/npm/package-lock.json
# (npm ci checks every file's integrity hash), into WORK_DIR once; later runs reuse it while
# the lock file is unchanged. Needs node, npm and, the first time, the npm registry.
#   fetch-openai-npm.sh WORK_DIR
set -eu
mkdir -p "$1"; work=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")" && pwd)/npm
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    { echo "fetch-openai-npm: node and npm are needed (tools/install-deps.sh installs them)" >&2; exit 1; }
mkdir -p "$work"
if ! cmp -s "$src/package-lock.json" "$work/package-lock.json.done" ||
   [ ! -f "$work/node_modules/openai/package.json" ]; then
    cp "$src/package.json" "$src/package-lock.json" "$work/"
    (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
        { echo "fetch-openai-npm: npm ci in $work failed: the npm registry must be reachable" >&2; exit 1; }
    cp "$work/package-lock.json" "$work/package-lock.json.done"
fi
v=$(node -e "console.log(require('$work/node_modules/openai/package.json').version)")
want=$(node -e "console.log(require('$src/package.json').dependencies.openai)")
[ "$v" = "$want" ] || { echo "fetch-openai-npm: installed openai $v, want $want" >&2; exit 1; }
echo "openai $v in $work"
