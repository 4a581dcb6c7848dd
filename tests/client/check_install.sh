#!/bin/sh
# tests/client/check_install.sh BUILD_DIR SOURCE_DIR CMAKE CC
# `cmake --install` puts libdeepseekd where users find it: the library with its SONAME link,
# the header, deepseekd.pc, the CMake package, the man pages and deepseekd-probe. Then a
# program is built against the staged tree twice, through pkg-config and through
# find_package(deepseekd), and run: it must load libdeepseekd.so.0 from there.
set -eu
build=$1 src=$2 cmake=$3 cc=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
"$cmake" --install "$build" --prefix "$prefix" > "$tmp/install.log"
libdir=$(ls -d "$prefix"/lib*/ | head -1)
for f in "$prefix/include/deepseekd.h" "$libdir/libdeepseekd.so.0" "$libdir/libdeepseekd.so" \
         "$libdir/pkgconfig/deepseekd.pc" "$libdir/cmake/deepseekd/deepseekd-config.cmake" \
         "$libdir/cmake/deepseekd/deepseekd-config-version.cmake" "$prefix/bin/deepseekd-probe"; do
    [ -e "$f" ] || { echo "FAIL: not installed: $f"; exit 1; }
done
if [ -d "$build/man/man3" ]; then
    for f in share/man/man3/dsd_client_connect.3 share/man/man3/dsd_client_free.3 \
             share/man/man7/libdeepseekd.7 share/man/man1/deepseekd-probe.1; do
        [ -s "$prefix/$f" ] || { echo "FAIL: not installed: $f"; exit 1; }
    done
fi
cat > "$tmp/app.c" <<'C'
#include <deepseekd.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    struct dsd_client_params p = dsd_client_default_params();
    p.socket_path = "/nonexistent-dir/deepseekd.sock";
    struct dsd_client *c;
    struct dsd_client_error e;
    int rc = dsd_client_connect(&p, &c, &e);
    printf("libdeepseekd %s: %d %s\n", dsd_client_version(), rc, e.message);
    return rc == -ENOENT && strstr(e.message, "no deepseekd listening") ? 0 : 1;
}
C
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH
# shellcheck disable=SC2046
"$cc" -o "$tmp/app_pc" "$tmp/app.c" $(pkg-config --cflags --libs deepseekd)
LD_LIBRARY_PATH=$libdir "$tmp/app_pc"
readelf -d "$tmp/app_pc" | grep -q 'NEEDED.*libdeepseekd.so.0' ||
    { echo "FAIL: the program does not need libdeepseekd.so.0"; exit 1; }

mkdir "$tmp/cm"
cat > "$tmp/cm/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.25)
project(app C)
find_package(deepseekd 0.1 REQUIRED)
add_executable(app ../app.c)
target_link_libraries(app PRIVATE deepseekd::deepseekd)
C
"$cmake" -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
    > "$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; exit 1; }
"$cmake" --build "$tmp/cm/build" > "$tmp/cmb.log" 2>&1 || { cat "$tmp/cmb.log"; exit 1; }
LD_LIBRARY_PATH=$libdir "$tmp/cm/build/app"
echo "installed tree works through pkg-config and find_package"
