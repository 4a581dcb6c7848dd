#!/bin/sh
# Runs the soak test against the release tree's daemon and tiny model for SECONDS (default
# 300): many clients of every kind at once (readers, slow readers, non-readers, killed,
# flooders, slowloris, garbage); prints what each did and the daemon's RSS, exits non-zero
# if anything leaked, starved or died.
#   tests/soak/run.sh [SECONDS] [BUILD]
set -eu
cd "$(dirname "$0")/../.."
SECONDS_=${1:-300}
BUILD=${2:-build/release}
[ -d "$BUILD/models/tiny" ] || "$BUILD/tools/mkmodel/deepseekd-mkmodel" --preset tiny --out "$BUILD/models/tiny"
exec "$BUILD/tests/soak/deepseekd-soak" "$BUILD/daemon/serve/deepseekd" "$BUILD/models/tiny" --seconds "$SECONDS_"
