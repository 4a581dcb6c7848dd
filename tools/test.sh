#!/bin/sh
# The README's test command (and what .ci/run runs): installs what a fresh Debian 12 lacks,
# builds two trees and runs the whole suite with one ctest call:
#   build/sanitize  clang, ASan+UBSan, libFuzzer targets  (its ctest runs as one test below)
#   build/release   gcc -O3 -Werror, the tree users install
# The closing ctest line covers both trees.
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh

cmake -S . -B build/sanitize -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DDSD_SANITIZE=address,undefined -DDSD_FUZZ=ON -DDSD_WERROR=ON -DDSD_CUDA=OFF >/dev/null
cmake --build build/sanitize
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSD_WERROR=ON \
      -DDSD_SANITIZER_TREE="$PWD/build/sanitize" >/dev/null
cmake --build build/release
exec ctest --test-dir build/release --output-on-failure -j2
