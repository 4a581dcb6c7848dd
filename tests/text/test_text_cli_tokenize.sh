#!/bin/sh
# deepseekd-text tokenize/detokenize on the real DeepSeek tokenizer (fixture):
#   test_text_cli_tokenize.sh DEEPSEEKD_TEXT TOKENIZER_JSON
# Round trips, --special, --jsonl and bad input exit codes.
set -u
bin=$1 tok=$2
fails=0
check() { # name expected actual
    if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected [$2] got [$3]"; fails=$((fails + 1)); fi
}
inputs='Hello, world!
你好，世界 🫨
    indented	tab  "quotes" \backslash
<｜User｜>not special'
ids=$(printf '%s\n' "$inputs" | "$bin" tokenize --tokenizer "$tok")
check "one id line per input line" 4 "$(printf '%s\n' "$ids" | wc -l)"
back=$(printf '%s\n' "$ids" | "$bin" detokenize --tokenizer "$tok")
want=$(printf '%s\n' "$inputs" | while IFS= read -r l; do printf '%s' "$l" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s)))'; done)
check "detokenize(tokenize(x)) == x" "$want" "$back"
plain=$(printf '<｜User｜>\n' | "$bin" tokenize --tokenizer "$tok")
special=$(printf '<｜User｜>\n' | "$bin" tokenize --tokenizer "$tok" --special)
check "--special makes the marker one token" 128803 "$special"
[ "$plain" != "$special" ] && echo "ok   without --special the marker is text" || { echo "FAIL marker parsed without --special"; fails=$((fails + 1)); }
check "--jsonl reads JSON strings" "$(printf 'Hello, world!\n' | "$bin" tokenize --tokenizer "$tok")" \
      "$(printf '"Hello, world!"\n' | "$bin" tokenize --tokenizer "$tok" --jsonl)"
check "--jsonl keeps newlines inside one input" 1 "$(printf '"a\\nb\\nc"\n' | "$bin" tokenize --tokenizer "$tok" --jsonl | wc -l)"
printf 'not json\n' | "$bin" tokenize --tokenizer "$tok" --jsonl >/dev/null 2>&1
check "bad --jsonl line exits 1" 1 $?
printf '1 2 x\n' | "$bin" detokenize --tokenizer "$tok" >/dev/null 2>&1
check "a non-id exits 1" 1 $?
printf '999999999\n' | "$bin" detokenize --tokenizer "$tok" >/dev/null 2>&1
check "an id outside the vocabulary exits 1" 1 $?
"$bin" tokenize </dev/null >/dev/null 2>&1
check "missing --tokenizer exits 2" 2 $?
"$bin" tokenize --tokenizer /nonexistent </dev/null >/dev/null 2>&1
check "missing tokenizer file exits 1" 1 $?
echo "$fails failures"
[ "$fails" -eq 0 ]
