#!/bin/bash
# Runs the real deepseekd-text binary on files and compares its output byte for byte.
#   test_chat_cli.sh BINARY DATA_DIR   (DATA_DIR = tests/data/chat)
# parse:       cli/*.txt -> cli/*.jsonl, whole (default chunks) and fed one byte at a time;
#              files named thinking_* are parsed with --thinking.
# encode-chat: cli/chat_request.json -> chat_request.{chat,thinking}.prompt, and the official
#              vectors (thinking mode; their expected files end with a newline the official
#              test strips, which $(...) strips here too).
# errors:      bad input exits 1 with a message on stderr and nothing on stdout; bad usage 2;
#              tokenize/detokenize name a tokenizer file that cannot be read
#              (their real behaviour: test_text_cli_tokenize.sh).
set -u
bin=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }

for input in "$data"/cli/*.txt; do
    name=$(basename "$input" .txt)
    flags=()
    [[ $name == thinking_* ]] && flags=(--thinking)
    for chunk in 4096 1; do
        if "$bin" parse "${flags[@]}" --chunk "$chunk" <"$input" >"$tmp/out" 2>"$tmp/err" &&
            cmp -s "$tmp/out" "$data/cli/$name.jsonl" && [[ ! -s $tmp/err ]]; then
            ok "parse $name (chunk $chunk)"
        else
            bad "parse $name (chunk $chunk)"
            diff "$tmp/out" "$data/cli/$name.jsonl" | head -20
            cat "$tmp/err"
        fi
    done
done

for mode in chat thinking; do
    flags=()
    [[ $mode == thinking ]] && flags=(--thinking)
    if "$bin" encode-chat "${flags[@]}" <"$data/cli/chat_request.json" >"$tmp/out" &&
        cmp -s "$tmp/out" "$data/cli/chat_request.$mode.prompt"; then
        ok "encode-chat chat_request ($mode)"
    else
        bad "encode-chat chat_request ($mode)"
    fi
done

for vector in "" _search_w_date _search_wo_date; do
    "$bin" encode-chat --thinking <"$data/official/test_input$vector.json" >"$tmp/out"
    status=$?
    want=$(cat "$data/official/test_output$vector.txt")
    if [[ $status == 0 && "$(cat "$tmp/out")" == "$want" ]] &&
        [[ $(wc -c <"$tmp/out") == $(printf '%s' "$want" | wc -c) ]]; then
        ok "encode-chat official test_input$vector"
    else
        bad "encode-chat official test_input$vector (exit $status)"
    fi
done

expect_failure() { # name, exit status, stderr text, command...
    local name=$1 want=$2 text=$3
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    local status=$?
    if [[ $status == "$want" && ! -s $tmp/out ]] && grep -qF -- "$text" "$tmp/err"; then
        ok "$name"
    else
        bad "$name (exit $status)"
        cat "$tmp/err"
    fi
}
expect_failure "encode-chat: unknown role" 1 'messages[1]: unknown role "robot"' \
    "$bin" encode-chat <"$data/cli/bad_role.json"
expect_failure "encode-chat: not JSON" 1 "not valid JSON" "$bin" encode-chat <<<"{oops"
expect_failure "encode-chat: empty input" 1 "not valid JSON" "$bin" encode-chat </dev/null
expect_failure "encode-chat: unknown option" 2 "unknown option '--fast'" "$bin" encode-chat --fast
expect_failure "parse: bad chunk" 2 "--chunk wants a positive number" "$bin" parse --chunk 0
expect_failure "tokenize: missing tokenizer file" 1 "x: No such file" "$bin" tokenize --tokenizer x
expect_failure "detokenize: missing tokenizer file" 1 "x: No such file" "$bin" detokenize --tokenizer x
expect_failure "unknown command" 2 "unknown command 'frobnicate'" "$bin" frobnicate
expect_failure "no command" 2 "usage: deepseekd-text" "$bin"

echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
