#!/usr/bin/env bash
# Actuation through a real peer process, against a fake cgroup v1 tree (so
# it runs anywhere, root or not): --actuate approve holds the action the
# controller decides for a diagnosed CPU fault; `sagemesh actions approve`
# applies it (the quota file changes), `rollback` restores it, a wrong
# secret is refused, and after a SIGKILL and a restart the actions are the
# same and none is decided twice. Bounded: every wait has a deadline; every
# process started is killed on exit.
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-actions-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
    kill_started
    [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() {
    echo "not ok $((n + 1)) - $*"
    tail -20 "$dir/peer.log" 2>/dev/null | sed "s/^/# /"
    exit 1
}
echo "1..8"

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
"$bin" keygen --out "$dir/other" > /dev/null 2>&1 || fail "keygen"
export SAGEMESH_SECRET_FILE=$dir/secret

# compose-post's cgroup, capped at 0.5 cores.
cg=$dir/cgroup/cpu/sim/compose-post
mkdir -p "$cg" "$dir/cgroup/memory/sim/compose-post"
echo 50000 > "$cg/cpu.cfs_quota_us"
echo 100000 > "$cg/cpu.cfs_period_us"

start() {
    : > "$dir/peer.log"
    "$bin" peer --id slow-actions --listen-http 127.0.0.1:0 --listen-peer 127.0.0.1:0 \
        --data-dir "$dir/data" --log-file "$dir/peer.log" \
        --secret-file "$dir/secret" \
        --qos-service nginx-web --qos-target-ms 100 \
        --train-after 20000 --retrain-every 0 \
        --actuate approve --cgroup-root "$dir/cgroup" \
        --cgroup-path 'sim/{service}' &
    pid=$!
    pids+=("$pid")
    wait_port "$dir/peer.log" "$pid" "$peer_port_sed" "the peer"
    export SAGEMESH_PEER=127.0.0.1:$found_port
}

json() { # json FILE EXPR: a Python expression on the file's JSON as `d`
    python3 -c "import json; d=json.load(open('$1')); print($2)"
}

wait_diagnosed() {
    for _ in $(seq 1 300); do
        "$bin" status -o json > "$dir/status.json" 2>/dev/null &&
            [ "$(json "$dir/status.json" "d['diagnoses']['pending']")" = 0 ] &&
            return 0
        sleep 0.1
    done
    fail "diagnoses still pending after 30 s"
}

start
"$bin" sim --topology social --duration 2400 --sampling 0.1 --faults none \
    --peer "$SAGEMESH_PEER" --timeout 30 > /dev/null || fail "sim (normal)"
"$bin" flush > /dev/null || fail "flush"
"$bin" train --wait --timeout 300 > /dev/null 2>&1 || fail "train --wait"
echo "at=240 for=300 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 660 --sampling 0.1 \
    --start 1700030400 --faults "$dir/faults" --peer "$SAGEMESH_PEER" \
    --timeout 30 > /dev/null || fail "sim (fault)"
"$bin" flush > /dev/null || fail "flush"
wait_diagnosed
ok "trained, and the CPU fault on compose-post diagnosed"

"$bin" actions list -o json > "$dir/actions.json" || fail "actions list"
"$bin" diagnoses --limit 100 -o json > "$dir/diag.json" || fail "diagnoses"
id=$(python3 - "$dir/actions.json" "$dir/diag.json" <<'EOF'
import json, sys
acts = json.load(open(sys.argv[1]))["actions"]
diags = json.load(open(sys.argv[2]))["diagnoses"]
assert len(acts) == 1, acts  # one pending blocks further ones
a = acts[0]
assert a["service"] == "compose-post" and a["resource"] == "cpu", a
assert a["kind"] == "cpu_quota" and a["state"] == "pending", a
assert abs(a["from"] - 0.5) < 1e-9 and abs(a["to"] - 1.0) < 1e-9, a
assert a["prev"]["value"] == "50000", a
linked = [d for d in diags if d["action"] and d["action"]["id"] == a["id"]]
assert len(linked) == 1 and linked[0]["id"] == a["diagnosis_id"], linked
print(a["id"])
EOF
) || fail "actions after the fault: $(head -c 400 "$dir/actions.json")"
[ "$(cat "$cg/cpu.cfs_quota_us")" = 50000 ] || fail "quota changed while pending"
ok "one pending cpu_quota action (0.5 -> 1 core), linked from its diagnosis"

"$bin" actions list > "$dir/table" || fail "actions list (table)"
grep -q "pending" "$dir/table" && grep -q "compose-post" "$dir/table" ||
    fail "table: $(cat "$dir/table")"
ok "actions list (table)"

SAGEMESH_SECRET_FILE=$dir/other "$bin" actions approve "$id" > /dev/null \
    2> "$dir/refused" && fail "approved with the wrong secret"
grep -q "refused the credential" "$dir/refused" || fail "$(cat "$dir/refused")"
[ "$(cat "$cg/cpu.cfs_quota_us")" = 50000 ] || fail "quota changed when refused"
ok "a wrong secret is refused"

"$bin" actions approve "$id" -o json > "$dir/approved.json" ||
    fail "approve"
for _ in $(seq 1 100); do
    [ "$(cat "$cg/cpu.cfs_quota_us")" = 100000 ] && break
    sleep 0.05
done
[ "$(cat "$cg/cpu.cfs_quota_us")" = 100000 ] ||
    fail "quota after approve: $(cat "$cg/cpu.cfs_quota_us")"
"$bin" actions list --state applied -o json > "$dir/applied.json" || fail "list"
[ "$(json "$dir/applied.json" "d['actions'][0]['id']")" = "$id" ] ||
    fail "not applied: $(cat "$dir/applied.json")"
# A credential is good once, and the same command in the same second signs
# the same credential: step into the next second to reach the 409.
t=$(date +%s)
for _ in $(seq 1 30); do [ "$(date +%s)" != "$t" ] && break; sleep 0.05; done
"$bin" actions approve "$id" > /dev/null 2> "$dir/again" &&
    fail "approved twice"
grep -q "not pending" "$dir/again" || fail "$(cat "$dir/again")"
ok "approve: quota 50000 -> 100000 us per 100000 us; a second approve refused"

# SIGKILL and restart: the same actions, nothing decided or applied again.
kill -9 "$pid" && wait "$pid" 2> /dev/null
start
wait_diagnosed
"$bin" actions list -o json > "$dir/after.json" || fail "actions after restart"
python3 - "$dir/applied.json" "$dir/after.json" <<'EOF' || fail "after restart: $(head -c 400 "$dir/after.json")"
import json, sys
before = json.load(open(sys.argv[1]))["actions"]
after = json.load(open(sys.argv[2]))["actions"]
assert [a["id"] for a in after] == [a["id"] for a in before], (before, after)
assert after[0]["state"] == "applied"
EOF
[ "$(cat "$cg/cpu.cfs_quota_us")" = 100000 ] || fail "quota after restart"
ok "SIGKILL and restart: the same action, applied once"

"$bin" actions rollback "$id" -o json > /dev/null || fail "rollback"
for _ in $(seq 1 100); do
    [ "$(cat "$cg/cpu.cfs_quota_us")" = 50000 ] && break
    sleep 0.05
done
[ "$(cat "$cg/cpu.cfs_quota_us")" = 50000 ] || fail "quota after rollback"
"$bin" actions list --state rolled_back -o json > "$dir/rb.json" || fail "list"
[ "$(json "$dir/rb.json" "d['actions'][0]['id']")" = "$id" ] ||
    fail "not rolled back: $(cat "$dir/rb.json")"
ok "rollback: quota back to 50000"

"$bin" status -o json > "$dir/status.json" || fail "status"
[ "$(json "$dir/status.json" "d['actuation']['mode'], d['actuation']['cgroups']")" = "approve v1" ] ||
    fail "status: $(json "$dir/status.json" "d['actuation']")"
ok "status shows the actuation mode and the cgroup layout"
