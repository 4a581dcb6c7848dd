#!/bin/sh
# tests/client/check_api.sh SO HEADER MAP MANDIR
# libdeepseekd's ABI is exactly its header: the dynamic symbols the .so exports, the
# functions deepseekd.h declares with DSD_CLIENT_API and the names in the version script are
# the same set, every one in node LIBDEEPSEEKD_0; the SONAME is libdeepseekd.so.0; and every
# exported function has a section 3 man page (a page of its own, or a ".so" page pointing to
# a page whose NAME section lists it), as systemd's check-api-docs does.
# MANDIR "none" means scdoc was not installed: the man check is skipped (exit 77) after the
# symbol checks passed.
set -eu
so=$1 header=$2 map=$3 mandir=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# Defined dynamic symbols, minus the version node's own absolute symbol.
nm -D --defined-only "$so" | awk '$2 != "A" {print $3}' | sort > "$tmp/exported.ver"
sed 's/@.*//' "$tmp/exported.ver" | sort -u > "$tmp/exported"
grep -v '@@LIBDEEPSEEKD_0$' "$tmp/exported.ver" > "$tmp/badver" || true
if [ -s "$tmp/badver" ]; then
    echo "FAIL: symbols outside version node LIBDEEPSEEKD_0:"; cat "$tmp/badver"; fail=1
fi
# Declarations: DSD_CLIENT_API ... name( possibly across lines (preprocessor lines dropped).
grep -v '^ *#' "$header" | tr '\n' ' ' | grep -o 'DSD_CLIENT_API[^;{]*(' |
    sed 's/($//; s/.*[ *]//' | sort -u > "$tmp/declared"
sed -n 's/^ *\(dsd_client_[a-z0-9_]*\);.*/\1/p' "$map" | sort -u > "$tmp/mapped"
[ -s "$tmp/declared" ] || { echo "FAIL: no declarations found in $header"; exit 1; }

if ! diff -u "$tmp/declared" "$tmp/exported" > "$tmp/d1"; then
    echo "FAIL: header declarations (-) differ from exported symbols (+):"; cat "$tmp/d1"; fail=1
fi
if ! diff -u "$tmp/declared" "$tmp/mapped" > "$tmp/d2"; then
    echo "FAIL: header declarations (-) differ from the version script (+):"; cat "$tmp/d2"; fail=1
fi
soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libdeepseekd.so.0" ] || { echo "FAIL: SONAME is '$soname'"; fail=1; }
n=$(wc -l < "$tmp/exported")
echo "$n exported symbols = header declarations = version script; SONAME $soname"
[ $fail -eq 0 ] || exit 1

if [ "$mandir" = none ]; then
    echo "skipped: scdoc is not installed, man pages were not built"; exit 77
fi
while read -r sym; do
    page="$mandir/man3/$sym.3"
    if [ ! -s "$page" ]; then
        echo "FAIL: $sym has no man page ($page)"; fail=1; continue
    fi
    target=$(sed -n 's/^\.so man3\/\(.*\)$/\1/p' "$page")
    if [ -n "$target" ]; then
        if [ ! -s "$mandir/man3/$target" ]; then
            echo "FAIL: $sym.3 points to missing $target"; fail=1; continue
        fi
        page="$mandir/man3/$target"
    fi
    # The NAME section (up to the next .SH) must list the function.
    if ! awk '/^\.SH NAME/{on=1; next} /^\.SH/{on=0} on' "$page" | grep -qw "$sym"; then
        echo "FAIL: the NAME section of $page does not list $sym"; fail=1
    fi
done < "$tmp/exported"
[ $fail -eq 0 ] || exit 1
echo "every exported function has a man page"
