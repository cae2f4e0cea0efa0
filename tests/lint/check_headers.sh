#!/usr/bin/env bash
# Every header of every module compiles on its own (after dav1d's header test):
# a header that relies on its includer's includes breaks the next includer.
set -u
cc=$1 src=$2 build=$3
fail=0 n=0
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
cd "$src" || exit 1
for h in base/*.h transport/*.h consensus/*.h cbn/*.h gvae/*.h actuate/*.h node/*.h; do
    [ -e "$h" ] || continue
    n=$((n + 1))
    printf '#include "%s"\n#include "%s"\n' "$h" "$h" > "$tmp/t.c"
    if ! "$cc" -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Wpedantic -Werror \
        -fsyntax-only -I "$src" -I "$build" "$tmp/t.c" 2> "$tmp/err"; then
        echo "header does not compile on its own (or lacks a guard): $h"
        cat "$tmp/err"
        fail=1
    fi
done
echo "$n headers checked"
[ "$n" -gt 0 ] && exit $fail
