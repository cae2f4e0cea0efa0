#!/usr/bin/env bash
# The C sources follow .clang-format. Fix with:
#   clang-format -i $(git ls-files '*.c' '*.h')
set -u
clang_format=$1 src=$2
cd "$src" || exit 1
mapfile -t files < <(find base transport consensus cbn gvae actuate node tests \
    -name '*.[ch]' -not -path '*/corpus/*' | sort)
[ ${#files[@]} -gt 0 ] || { echo "no sources found"; exit 1; }
"$clang_format" --dry-run --Werror "${files[@]}" || exit 1
echo "${#files[@]} files formatted"
