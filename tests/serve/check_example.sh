#!/bin/sh
# check_example.sh DEEPSEEKD EXAMPLE: EXAMPLE must equal `DEEPSEEKD --print-config` byte for
# byte (units/deepseekd.conf.example is generated, never edited by hand).
set -eu
bin=$1 example=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bin" --print-config > "$out"
if cmp -s "$out" "$example"; then
    echo "1 passed, 0 failed: $example is --print-config's output"
    exit 0
fi
diff -u "$example" "$out" || true
echo "$example differs from --print-config (diff above). Regenerate it:"
echo "    $bin --print-config > $example"
echo "0 passed, 1 failed"
exit 1
