#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time over its committed corpus.
# New inputs go to a scratch directory in the build tree, never into the
# source tree; promote useful ones by hand with -merge=1.
set -u
target=$1 corpus=$2 scratch=$3 seconds=$4
mkdir -p "$scratch"
# Crash inputs land in the scratch directory too; the log names them.
exec "$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$scratch/" "$scratch" "$corpus"
