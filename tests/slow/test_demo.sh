#!/usr/bin/env bash
# The README's main job: `sagemesh demo` starts a mesh of three peers, runs
# end to end, checks its own diagnoses against the injected fault (exit 0
# only when they are right), shows them as served by another peer than the
# leader that merged and diagnosed the windows, stops the three peers (each
# exits 0 on SIGTERM) and leaves no process running.
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-demo-XXXXXX)
# The demo's peers, found by their data directories under this test's own
# temporary directory (nothing else has it on its command line).
leftover() { pgrep -f -- "sagemesh peer --id demo-[0-9] .*$dir/run/" ; }
cleanup() {
    local p
    for p in $(leftover); do kill -9 "$p" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT
echo "1..6"
t0=$(date +%s)
"$bin" demo --dir "$dir/run" > "$dir/out" 2>&1
rc=$?
secs=$(($(date +%s) - t0))
sed 's/^/# /' "$dir/out"
[ "$rc" = 0 ] || { echo "not ok 1 - demo exited with $rc"; exit 1; }
echo "ok 1 - demo exited 0 in $secs s (the diagnoses name the injected fault)"
# The members table: three voters, one of them the leader.
table=$(sed -n '/^\$ sagemesh members list/,/^$/p' "$dir/out")
if [ "$(grep -c ' voter ' <<< "$table")" != 3 ] || [ "$(grep -c 'leader$' <<< "$table")" != 1 ]; then
    echo "not ok 2 - no members table with 3 voters and one leader"
    exit 1
fi
echo "ok 2 - members list: 3 voters, one leader"
# Each host's traffic went to its own peer and the leader merged the
# windows and diagnosed them; the diagnoses were asked of another peer.
merged=$(sed -n 's/^ *\([0-9]*\) windows merged and stored on demo-[0-9].*/\1/p' "$dir/out")
leader=$(sed -n 's/^\[5\/6\] \(demo-[0-9]\), the leader,.*/\1/p' "$dir/out")
shown=$(sed -n 's/.*asking another peer (\(demo-[0-9]\)).*/\1/p' "$dir/out")
if [ "${merged:-0}" -lt 120 ] || [ -z "$leader" ] || [ -z "$shown" ] || [ "$leader" = "$shown" ]; then
    echo "not ok 3 - $merged windows merged, diagnosed by '$leader', shown by '$shown'"
    exit 1
fi
echo "ok 3 - traffic per host, $merged windows merged on the leader $leader, diagnoses served by $shown"
grep -q "compose-post" <<< "$(sed -n '/^\$ sagemesh diagnoses/,/^$/p' "$dir/out")" ||
    { echo "not ok 4 - no culprit shown"; exit 1; }
echo "ok 4 - the diagnoses table shows the culprit"
grep -q "Stopped the 3 peers with SIGTERM .*(each exited 0)" "$dir/out" ||
    { echo "not ok 5 - the peers did not all exit 0 on SIGTERM"; exit 1; }
echo "ok 5 - the three peers exited 0 on SIGTERM"
if [ -n "$(leftover)" ]; then
    echo "not ok 6 - a peer is still running"
    exit 1
fi
echo "ok 6 - nothing left running"
