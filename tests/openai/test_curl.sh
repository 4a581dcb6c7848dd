#!/bin/sh
# test_curl.sh: the raw HTTP and server-sent-event framing of deepseekd-openai as curl sees
# it (run by run_with_gateway.sh): headers, chunked event stream, "data: " lines separated by
# blank lines ending with "data: [DONE]", JSON answers; then a gateway with no daemon behind
# it answers 503, and one in front of a daemon still loading its model (the test-only
# test_load_delay_ms keeps it loading) answers 503 model_loading, then 200 once it is ready.
set -u
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
T=${TMPDIR:-/tmp}
U=$OPENAI_BASE_URL
body='{"model": "'$DSD_MODEL'", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}'

curl -sS -N -D "$T/h" -o "$T/sse" -H 'Content-Type: application/json' -d "$body" "$U/chat/completions"
tr -d '\r' < "$T/h" > "$T/hh"
if grep -q '^HTTP/1.1 200' "$T/hh" && grep -qi '^content-type: text/event-stream' "$T/hh" &&
   grep -qi '^transfer-encoding: chunked' "$T/hh" && grep -qi '^cache-control: no-cache' "$T/hh"; then
    ok "stream headers: 200, text/event-stream, chunked, no-cache"
else
    bad "stream headers:"; cat "$T/hh"
fi
# every line is "data: ..." or empty; empty and data lines alternate; the last event is [DONE]
if awk 'NR % 2 == 1 && !/^data: / { exit 1 } NR % 2 == 0 && $0 != "" { exit 1 }' "$T/sse"; then
    ok "events are 'data: ...' lines each followed by one blank line"
else
    bad "event framing:"; cat -A "$T/sse" | head -20
fi
if [ "$(tail -n 2 "$T/sse" | head -n 1)" = "data: [DONE]" ] && [ "$(grep -c '^data: \[DONE\]' "$T/sse")" -eq 1 ]; then
    ok "the stream ends with exactly one data: [DONE]"
else
    bad "no single final data: [DONE]"; tail -n 4 "$T/sse"
fi
n=$(grep -c '^data: {' "$T/sse")
# role chunk + 5 token chunks (at most) + finish chunk + usage chunk
if [ "$n" -ge 4 ] && [ "$n" -le 8 ] && grep -q '"finish_reason":"length"' "$T/sse" &&
   grep -q '"choices":\[\],"usage":{"prompt_tokens":[0-9]*,"completion_tokens":5,' "$T/sse"; then
    ok "$n JSON events: deltas, finish_reason length, a usage chunk with completion_tokens 5"
else
    bad "unexpected events ($n):"; cat "$T/sse"
fi
if ! grep -q '"usage":null' "$T/sse" || ! grep -q '"object":"chat.completion.chunk"' "$T/sse"; then
    bad "chunks should carry object chat.completion.chunk and usage null before the last"
else
    ok "chunks are chat.completion.chunk objects with usage null until the usage chunk"
fi

code=$(curl -sS -o "$T/body" -w '%{http_code} %{content_type}' -H 'Content-Type: application/json' \
       -d '{"model": "'$DSD_MODEL'", "prompt": "Hi", "max_tokens": 3}' "$U/completions")
if [ "$code" = "200 application/json" ] && grep -q '"object":"text_completion"' "$T/body" &&
   grep -q '"completion_tokens":3' "$T/body"; then
    ok "completions: 200 application/json text_completion"
else
    bad "completions: $code $(cat "$T/body")"
fi

code=$(curl -sS -o "$T/body" -w '%{http_code}' -d '{"model":' "$U/chat/completions")
if [ "$code" = 400 ] && grep -q '"type":"invalid_request_error"' "$T/body"; then
    ok "malformed JSON: 400 with an OpenAI error body"
else
    bad "malformed JSON: $code $(cat "$T/body")"
fi

# A gateway with no daemon: 503, as a daemon that is loading or draining would give.
"$DSD_GATEWAY" --socket "$T/nobody.sock" --listen "unix:$T/gw.sock" > "$T/gw2.log" 2>&1 &
g2=$!
for _ in $(seq 1 50); do [ -S "$T/gw.sock" ] && break; sleep 0.1; done
code=$(curl -sS --unix-socket "$T/gw.sock" -o "$T/body" -w '%{http_code}' \
       -d '{"model": "m", "messages": [{"role": "user", "content": "Hi"}]}' http://localhost/v1/chat/completions)
if [ "$code" = 503 ] && grep -q '"type":"service_unavailable"' "$T/body" && grep -q 'nobody.sock' "$T/body"; then
    ok "no daemon behind the gateway: 503 naming the socket (and listening on a Unix socket works)"
else
    bad "no daemon: $code $(cat "$T/body")"
fi
code=$(curl -sS --unix-socket "$T/gw.sock" -o "$T/body" -w '%{http_code}' http://localhost/v1/models)
[ "$code" = 503 ] && ok "GET /v1/models without a daemon: 503" || bad "models without daemon: $code"
kill "$g2"
wait "$g2" && ok "the second gateway exits 0 on SIGTERM" || bad "second gateway exit status"
[ ! -e "$T/gw.sock" ] && ok "its Unix socket is removed" || bad "Unix socket left behind"

# A daemon still loading: 503 with code model_loading; once ready, the same request works.
"$DSD_DAEMON" --model "$DSD_MODEL_DIR" --socket "$T/slow.sock" --threads 1 --test-load-delay-ms 4000 \
    > "$T/slow.log" 2>&1 &
d3=$!
for _ in $(seq 1 50); do [ -S "$T/slow.sock" ] && break; sleep 0.1; done
"$DSD_GATEWAY" --socket "$T/slow.sock" --listen "unix:$T/gw3.sock" > "$T/gw3.log" 2>&1 &
g3=$!
for _ in $(seq 1 50); do [ -S "$T/gw3.sock" ] && break; sleep 0.1; done
req='{"model": "'$DSD_MODEL'", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}'
code=$(curl -sS --unix-socket "$T/gw3.sock" -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' \
       -d "$req" http://localhost/v1/chat/completions)
if [ "$code" = 503 ] && grep -q '"code":"model_loading"' "$T/body"; then
    ok "daemon loading: 503 model_loading"
else
    bad "daemon loading: $code $(cat "$T/body")"
fi
for _ in $(seq 1 200); do "$DSD_PROBE" --socket "$T/slow.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
code=$(curl -sS --unix-socket "$T/gw3.sock" -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' \
       -d "$req" http://localhost/v1/chat/completions)
[ "$code" = 200 ] && ok "the same request once the daemon is ready: 200" || bad "after loading: $code $(cat "$T/body")"
kill "$g3" "$d3"
wait "$g3" "$d3"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
