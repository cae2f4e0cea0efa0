#!/usr/bin/env bash
# The binary runs, and the default build is fully static.
set -u
bin=$1 linkage=$2
out=$("$bin" --version) || { echo "$bin --version failed"; exit 1; }
echo "$out"
grep -q "^sagemesh " <<< "$out" || { echo "--version lacks the version line"; exit 1; }
if [ "$linkage" = static ]; then
    desc=$(file -b "$bin")
    echo "$desc"
    case "$desc" in
        *"statically linked"*|*"static-pie linked"*) ;;
        *) echo "expected a statically linked binary"; exit 1 ;;
    esac
    grep -q 'static' <<< "$out" || { echo "--version does not say static"; exit 1; }
fi
