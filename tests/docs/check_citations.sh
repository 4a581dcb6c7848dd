#!/bin/sh
# check_citations.sh [--no-self-test] ROOT: every file the project's text cites must exist in
# the repository at ROOT. The project explains itself; a comment that cites a note a user who
# clones the project does not have (or a file that was renamed) fails this check.
#
# Scanned: the files git tracks (plus untracked, not ignored ones; without git, every file
# outside build*/, models/ and .git/) that are sources, headers, scripts, CMake files, unit
# files, man page sources and Markdown, except the test data under tests/data/ and
# tests/fuzz/corpus/ and this script. A citation is:
#   - a name ending in .md. With a / it is a path from ROOT (or from the citing file's folder);
#     a bare name (PROTOCOL.md) resolves against the citing file's folder, docs/ and ROOT. Bare
#     names must start with an upper-case letter or a digit: `e.md` in C is a member access.
#   - a path whose first part is a top-level folder of the repository and whose last part has
#     an extension (kernels/cpu/cpu_rope.c, tests/gpu/run.sh). Folders, globs and stems such as
#     daemon/kv/kv_cache.[ch] are not checked.
#   - a numbered section right after a .md name (docs/MODEL.md §3.4): the page must have a
#     heading for it ("## 3." or "### 3.4 ...").
# A path that leaves the repository (..) is always an error.
#
# Before checking ROOT the script checks a small made-up tree with known bad citations and
# fails unless it finds exactly those, so this check can fail (--no-self-test skips that).
set -eu
LC_ALL=C
export LC_ALL

self_test=1
if [ "${1:-}" = "--no-self-test" ]; then
    self_test=0
    shift
fi
if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 [--no-self-test] ROOT" >&2
    exit 2
fi
ROOT=$(cd "$1" && pwd)
# This script's own path under ROOT: not scanned (the self-test's made-up citations are here).
SELF_REL=tests/docs/check_citations.sh

# The files to read, one per line, relative to $1.
list_files() {
    if git -C "$1" rev-parse --show-toplevel >/dev/null 2>&1 &&
       [ "$(cd "$(git -C "$1" rev-parse --show-toplevel)" && pwd)" = "$(cd "$1" && pwd)" ]; then
        git -C "$1" ls-files --cached --others --exclude-standard
    else
        (cd "$1" && find . -path ./.git -prune -o -path './build*' -prune -o -path ./models -prune \
             -o -type f -print | sed 's|^\./||')
    fi | grep -v -e '^tests/data/' -e '^tests/fuzz/corpus/' -e "^$SELF_REL\$" |
        grep -E '(\.(c|h|cu|cuh|cc|py|sh|md|txt|cmake|in|scd|js|conf|example|service|socket|target|map)$)|(^|/)run$' |
        sort -u
}

# Prints "file:line: message" for each broken citation under $1; returns 1 if any.
check_tree() {
    root=$1
    files=$(mktemp)
    found=$(mktemp)
    list_files "$root" > "$files"
    # Top-level folders of the scanned files: the first parts a checked path may start with.
    tops=$(sed -n 's|^\([^/]*\)/.*|\1|p' "$files" | sort -u | tr '\n' ' ')
    # Candidates: file, line, kind (md or path), token, section (or -).
    (cd "$root" && tr '\n' '\0' < "$files" | xargs -0 awk -v tops="$tops" -v S="§" '
        BEGIN { n = split(tops, t, " "); for (i = 1; i <= n; i++) top[t[i]] = 1 }
        {
            line = $0
            while (match(line, /[A-Za-z0-9_.\/-]+/)) {
                tok = substr(line, RSTART, RLENGTH)
                line = substr(line, RSTART + RLENGTH)
                sub(/[.\/]+$/, "", tok)
                sub(/^\/+/, "", tok)
                sub(/^(\.\/)+/, "", tok)
                if (tok ~ /\.md$/) {
                    if (tok !~ /\// && tok !~ /^[A-Z0-9]/)
                        continue
                    sec = "-"
                    if (substr(line, 1, 1 + length(S)) == " " S &&
                        match(substr(line, 2 + length(S)), /^[0-9A-Z][0-9.]*/)) {
                        sec = substr(line, 2 + length(S), RLENGTH)
                        sub(/\.+$/, "", sec)
                    }
                    printf "%s\t%d\tmd\t%s\t%s\n", FILENAME, FNR, tok, sec
                } else if (tok ~ /\//) {
                    first = tok; sub(/\/.*/, "", first)
                    last = tok; sub(/.*\//, "", last)
                    if ((first in top) && last ~ /.\.[A-Za-z0-9]+$/)
                        printf "%s\t%d\tpath\t%s\t-\n", FILENAME, FNR, tok
                }
            }
        }') > "$found.cand" || true
    bad=0
    while IFS="$(printf '\t')" read -r file line kind tok sec; do
        dir=$(dirname "$file")
        target=""
        case "/$tok/" in
        */../*)
            echo "$file:$line: $tok points outside the repository"
            bad=1
            continue ;;
        esac
        if [ "$kind" = md ] && [ "${tok#*/}" = "$tok" ]; then
            for d in "$dir" docs .; do
                if [ -f "$root/$d/$tok" ]; then target="${d#.}/$tok"; target=${target#/}; break; fi
            done
            if [ -z "$target" ]; then
                where="docs/ or the top level"
                [ "$dir" = . ] || [ "$dir" = docs ] || where="$dir/, $where"
                echo "$file:$line: cites $tok, which is not in $where"
                bad=1
                continue
            fi
        else
            for d in . "$dir"; do
                if [ -e "$root/$d/$tok" ]; then target="${d#.}/$tok"; target=${target#/}; break; fi
            done
            [ -n "$target" ] || { echo "$file:$line: cites $tok, which does not exist"; bad=1; continue; }
        fi
        if [ "$sec" != "-" ]; then
            esc=$(printf '%s' "$sec" | sed 's/\./\\./g')
            if ! grep -qE "^#+ $esc([. ]|\$)" "$root/$target"; then
                echo "$file:$line: cites $tok §$sec, but $target has no section $sec"
                bad=1
            fi
        fi
    done < "$found.cand" > "$found"
    cat "$found"
    n=$(wc -l < "$found.cand")
    rm -f "$found" "$found.cand"
    echo "read $n citations in $(wc -l < "$files") files"
    rm -f "$files"
    return $bad
}

if [ $self_test -eq 1 ]; then
    T=$(mktemp -d)
    trap 'rm -rf "$T"' EXIT
    mkdir -p "$T/docs" "$T/src/sub"
    printf '# A\n\n## 1. One\n\n### 1.2 Two\n' > "$T/docs/GOOD.md"
    cat > "$T/src/sub/x.c" <<'EOF'
/* Good: GOOD.md §1, docs/GOOD.md §1.2, src/sub/x.c, ctx.md, src/sub/*.c, src/sub/x.[ch]. */
/* Bad: MISSING.md, docs/GOOD.md §3, src/sub/gone.h, ../outside/NOTES.md */
EOF
    out=$(check_tree "$T") && { echo "self-test: a tree with bad citations passed"; exit 1; }
    out=$(printf '%s\n' "$out" | sed '$d')
    want="src/sub/x.c:2: cites MISSING.md, which is not in src/sub/, docs/ or the top level
src/sub/x.c:2: cites docs/GOOD.md §3, but docs/GOOD.md has no section 3
src/sub/x.c:2: cites src/sub/gone.h, which does not exist
src/sub/x.c:2: ../outside/NOTES.md points outside the repository"
    if [ "$out" != "$want" ]; then
        echo "self-test: expected"
        echo "$want"
        echo "self-test: got"
        echo "$out"
        exit 1
    fi
    echo "self-test: 4 made-up bad citations found, the good ones accepted"
fi

if out=$(check_tree "$ROOT"); then
    echo "$out"
    echo "1 passed, 0 failed: every cited file and section exists"
    exit 0
fi
echo "$out"
echo "Cite files of this repository (docs/...), or write the fact into docs/ first."
echo "0 passed, 1 failed"
exit 1
