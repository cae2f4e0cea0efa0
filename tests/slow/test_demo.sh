#!/usr/bin/env bash
# The README's main job: `sagemesh demo` runs end to end, checks its own
# diagnoses against the injected fault (exit 0 only when they are right),
# and leaves no process running.
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-demo-XXXXXX)
trap 'pkill -9 -f "sagemesh peer --id demo-1 .*$dir" 2>/dev/null; rm -rf "$dir"' EXIT
echo "1..3"
"$bin" demo --dir "$dir/run" > "$dir/out" 2>&1
rc=$?
sed 's/^/# /' "$dir/out"
[ "$rc" = 0 ] || { echo "not ok 1 - demo exited with $rc"; exit 1; }
echo "ok 1 - demo exited 0 (the diagnoses name the injected fault)"
grep -q "compose-post" "$dir/out" || { echo "not ok 2 - no culprit shown"; exit 1; }
echo "ok 2 - the diagnoses table shows the culprit"
if pgrep -f "sagemesh peer --id demo-1 .*$dir" > /dev/null; then
    echo "not ok 3 - a peer is still running"
    exit 1
fi
echo "ok 3 - nothing left running"
