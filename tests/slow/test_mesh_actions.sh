#!/usr/bin/env bash
# Exactly-once actuation across a leader failover, with real processes on
# 127.0.0.1: three peers form a mesh; p2 (a follower) takes the traffic,
# trains, diagnoses a CPU fault and decides an action (--actuate approve, on
# a fake cgroup v1 tree), and the decision reaches the replicated log. The
# leader is killed between the decision and the agent's acknowledgement;
# the action is then approved through another peer (forwarded to p2) and
# applied: the quota changes once, and the
# log of every survivor, and of the old leader once restarted, holds that
# one action as applied. Bounded waits; every process started is killed.
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-mesh-actions-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/tap.sh"
trap cleanup EXIT
echo "1..6"

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
export SAGEMESH_SECRET_FILE=$dir/secret
cg=$dir/cgroup/cpu/sim/compose-post
mkdir -p "$cg"
echo 50000 > "$cg/cpu.cfs_quota_us"
echo 100000 > "$cg/cpu.cfs_period_us"

declare -A http mesh pid
# start NAME [flags...]: starts peer NAME; fills http[NAME], mesh[NAME].
start() {
    local name=$1
    shift
    : > "$dir/$name.log"
    "$bin" peer --id "$name" --listen-http 127.0.0.1:0 \
        --listen-peer "127.0.0.1:${mesh[$name]:-0}" \
        --data-dir "$dir/$name" --log-file "$dir/$name.log" \
        --secret-file "$dir/secret" --election-timeout 500 \
        --qos-service nginx-web --qos-target-ms 100 \
        --train-after 20000 --retrain-every 0 "$@" &
    pid[$name]=$!
    pids+=("${pid[$name]}")
    wait_port "$dir/$name.log" "${pid[$name]}" "$peer_port_sed" "$name"
    http[$name]=$found_port
    mesh[$name]=$(sed -n 's/.*msg="peer started".*peer_port=\([0-9]*\).*/\1/p' \
        "$dir/$name.log" | tail -1)
}


act=(--actuate approve --cgroup-root "$dir/cgroup" --cgroup-path 'sim/{service}')
start p1
wait_for "p1 leads" 30 p1 "s['role']" leader
start p2 --join "127.0.0.1:${mesh[p1]}" "${act[@]}"
start p3 --join "127.0.0.1:${mesh[p1]}"
for p in p1 p2 p3; do
    wait_for "three voters" 30 "$p" \
        "sorted(m['role'] for m in s['mesh']['members'])" \
        "['voter', 'voter', 'voter']"
done
ok "mesh of three voters, p1 leads"

export SAGEMESH_PEER=127.0.0.1:${http[p2]}
"$bin" sim --topology social --duration 2400 --sampling 0.1 --faults none \
    --peer "$SAGEMESH_PEER" --timeout 30 > /dev/null || fail "sim (normal)"
"$bin" flush > /dev/null || fail "flush"
"$bin" train --wait --timeout 300 > /dev/null 2>&1 || fail "train --wait"
echo "at=240 for=300 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 660 --sampling 0.1 \
    --start 1700030400 --faults "$dir/faults" --peer "$SAGEMESH_PEER" \
    --timeout 30 > /dev/null || fail "sim (fault)"
"$bin" flush > /dev/null || fail "flush"
wait_for "diagnosed" 30 p2 "s['diagnoses']['pending']" 0
for p in p1 p2 p3; do
    wait_for "the decision in the log" 30 "$p" \
        "s['mesh']['log_actions']['pending']" 1
done
id=$("$bin" actions list -o json | python3 -c "
import json, sys
a = json.load(sys.stdin)['actions']
assert len(a) == 1 and a[0]['state'] == 'pending', a
print(a[0]['id'])") || fail "p2 has no single pending action"
[ "$(cat "$cg/cpu.cfs_quota_us")" = 50000 ] || fail "quota changed while pending"
ok "p2 decided action $id; every peer's log holds it, pending"

# The leader dies between the decision and the acknowledgement.
kill -9 "${pid[p1]}" && wait "${pid[p1]}" 2> /dev/null
t0=$(date +%s%N)
for _ in $(seq 1 300); do
    l2=$(field p2 "s['leader']" 2> /dev/null)
    l3=$(field p3 "s['leader']" 2> /dev/null)
    [ -n "$l2" ] && [ "$l2" != None ] && [ "$l2" != p1 ] && [ "$l2" = "$l3" ] && break
    sleep 0.05
done
[ "$l2" = "$l3" ] && [ "$l2" != p1 ] || fail "no new leader: p2 sees $l2, p3 $l3"
ok "p1 killed; $l2 leads after $((($(date +%s%N) - t0) / 1000000)) ms"

# approved through p3, which did not decide it: forwarded to p2
"$bin" actions approve "$id" --peer "127.0.0.1:${http[p3]}" > "$dir/approve.out" ||
    fail "approve on p3: $(cat "$dir/approve.out")"
grep -q "forwarded to the peer that decided it" "$dir/approve.out" ||
    fail "approve on p3 was not forwarded: $(cat "$dir/approve.out")"
for _ in $(seq 1 100); do
    [ "$(cat "$cg/cpu.cfs_quota_us")" = 100000 ] && break
    sleep 0.05
done
[ "$(cat "$cg/cpu.cfs_quota_us")" = 100000 ] || fail "quota not raised"
for p in p2 p3; do
    wait_for "applied in the log" 30 "$p" \
        "(s['mesh']['log_actions']['applied'], sum(s['mesh']['log_actions'].values()))" \
        "(1, 1)"
done
ok "approved on p3 after the failover, forwarded to p2: applied once (quota 50000 -> 100000), one action in the log"

start p1
wait_for "p1 back" 30 p1 "s['mesh']['log_actions']['applied']" 1
wait_for "p1 back" 30 p1 "sum(s['mesh']['log_actions'].values())" 1
ok "the old leader restarts and its log holds the one applied action"

"$bin" actions list -o json | python3 -c "
import json, sys
a = json.load(sys.stdin)['actions']
assert len(a) == 1 and a[0]['id'] == '$id' and a[0]['state'] == 'applied', a
" || fail "p2's actions after it all"
[ "$(cat "$cg/cpu.cfs_quota_us")" = 100000 ] || fail "quota changed again"
ok "p2 lists the action once, applied; the quota is unchanged since"
