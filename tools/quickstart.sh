#!/bin/sh
# The README's first command: on a fresh Debian 12 machine, install what is missing, build,
# write a tiny random DeepSeek V3.2 checkpoint and generate from it with the engine.
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release --target deepseekd-mkmodel deepseekd-run
build/release/tools/mkmodel/deepseekd-mkmodel --preset tiny --out models/tiny
echo "generating 32 tokens from models/tiny (random weights: the ids are noise, the engine is real):"
build/release/tools/run/deepseekd-run --model models/tiny \
    --prompt-tokens "0 1024 77 5 431 1999 12 8" --max-tokens 32 --greedy --ignore-eos
