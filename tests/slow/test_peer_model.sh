#!/usr/bin/env bash
# The one-host product as processes on 127.0.0.1: a peer takes the
# simulator's traffic over HTTP, trains when told (`sagemesh train --wait`),
# diagnoses an injected CPU fault, serves the diagnoses to the CLI, stops on
# SIGTERM with exit 0, and after a restart serves the same diagnoses with
# the same model. Bounded: every wait has a deadline; every process started
# is killed on exit.
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-model-XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() {
    echo "not ok $((n + 1)) - $*"
    tail -20 "$dir/peer.log" 2>/dev/null | sed "s/^/# /"
    exit 1
}
echo "1..11"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
export SAGEMESH_SECRET_FILE=$dir/secret

start() {
    : > "$dir/peer.log" # a fresh log, so the port read is this run's
    "$bin" peer --id slow-model --listen-http 127.0.0.1:0 --listen-peer 127.0.0.1:0 \
        --data-dir "$dir/data" --log-file "$dir/peer.log" \
        --secret-file "$dir/secret" \
        --qos-service nginx-web --qos-target-ms 100 \
        --train-after 20000 --retrain-every 0 &
    pid=$!
    wait_port "$dir/peer.log" "$pid" "$peer_port_sed" "the peer"
    port=$found_port
    export SAGEMESH_PEER=127.0.0.1:$port
}

# status_field EXPR: evaluates a Python expression on /v1/status as `s`.
status_field() {
    "$bin" status -o json > "$dir/status.json" 2>/dev/null
    python3 -c "import json,sys; s=json.load(open('$dir/status.json')); print($1)"
}

start
ok "peer started on 127.0.0.1:$port"

# 40 min of normal traffic (80 windows of 30 s), then close the last one.
"$bin" sim --topology social --duration 2400 --sampling 0.1 --faults none \
    --peer "$SAGEMESH_PEER" --timeout 30 > /dev/null || fail "sim (normal)"
"$bin" flush > /dev/null || fail "flush"
stored=$(status_field "s['windows']['stored']")
[ "$stored" -ge 79 ] || fail "expected 80 stored windows, got $stored"
ok "normal traffic stored ($stored windows)"

"$bin" train --wait --timeout 300 > "$dir/train.out" 2>&1 ||
    fail "train --wait: $(cat "$dir/train.out")"
version=$(status_field "s['model']['version']")
[ "$version" = 1 ] || fail "model version $version after training"
ok "train --wait: $(head -1 "$dir/train.out")"

# A CPU hog on compose-post 4 min into 11 more minutes.
echo "at=240 for=300 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 660 --sampling 0.1 \
    --start 1700030400 --faults "$dir/faults" --peer "$SAGEMESH_PEER" \
    --timeout 30 > /dev/null || fail "sim (fault)"
"$bin" flush > /dev/null || fail "flush"
for _ in $(seq 1 300); do
    [ "$(status_field "s['diagnoses']['pending']")" = 0 ] && break
    sleep 0.1
done
"$bin" diagnoses --limit 100 -o json > "$dir/diag.json" || fail "diagnoses -o json"
python3 - "$dir/diag.json" <<'EOF' || fail "diagnoses do not name the fault"
import json, sys
d = json.load(open(sys.argv[1]))["diagnoses"]
fault = (1700030400 + 240, 1700030400 + 540)
inside = [x for x in d if fault[0] < int(x["window_end_unix_nano"]) // 10**9 <= fault[1] + 30]
right = [x for x in inside if x["culprits"] and x["culprits"][0]["service"] == "compose-post"
         and x["culprits"][0]["resource"] == "cpu"]
print("# %d diagnoses, %d in the fault, %d name compose-post/cpu" % (len(d), len(inside), len(right)))
assert len(inside) >= 5 and len(right) >= 0.8 * len(inside)
assert all(x["violated"] and x["model_version"] == 1 and x["decided_by"] == "slow-model" for x in d)
EOF
ok "diagnoses name compose-post / cpu"

"$bin" diagnoses --limit 3 > "$dir/table" || fail "diagnoses (table)"
grep -q "compose-post" "$dir/table" || fail "table: $(cat "$dir/table")"
ok "diagnoses table"

# Any window, violated or not: the second-last window of the hog.
"$bin" diagnose --from 1700030880 --to 1700030940 -o json --timeout 30 \
    > "$dir/diagnose.json" || fail "diagnose --from --to"
python3 - "$dir/diagnose.json" <<'EOF' || fail "diagnose: $(head -c 300 "$dir/diagnose.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["done"] and d["windows"] == 2 and len(d["diagnoses"]) == 2, d
assert d["diagnoses"][0]["ranking"][0]["service"] == "compose-post"
EOF
ok "diagnose --from --to ranks compose-post first"

# terminate WHAT: SIGTERM, then the peer must exit 0 within 10 s; sets
# $ms to the time it took.
terminate() {
    local t0 rc
    t0=$(date +%s%N)
    kill -TERM "$pid"
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && fail "still running 10 s after SIGTERM $1"
    wait "$pid"
    rc=$?
    pid=
    ms=$((($(date +%s%N) - t0) / 1000000))
    [ "$rc" = 0 ] || fail "exit status $rc after SIGTERM $1"
}

# Two more minutes of the hog, the last window still open: SIGTERM stores
# it (exit 0, promptly); its diagnosis is lost with the stop...
"$bin" diagnoses --limit 100 -o json > "$dir/diag.before" || fail "diagnoses"
echo "at=0 for=120 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 120 --sampling 0.1 \
    --start 1700031060 --faults "$dir/faults" --peer "$SAGEMESH_PEER" \
    --timeout 30 > /dev/null || fail "sim (more fault)"
terminate ""
ok "SIGTERM: exit 0 in $ms ms"

# ... and made up for at the restart: every earlier diagnosis unchanged,
# the stored window diagnosed again, exactly once.
start
for _ in $(seq 1 300); do
    [ "$(status_field "s['diagnoses']['pending']")" = 0 ] && break
    sleep 0.1
done
"$bin" diagnoses --limit 100 -o json > "$dir/diag.json" || fail "diagnoses after restart"
redone=$(status_field "s['diagnoses']['rediagnosed']")
python3 - "$dir/diag.before" "$dir/diag.json" "$redone" <<'EOF2' || fail "diagnoses after restart"
import json, sys
before = json.load(open(sys.argv[1]))["diagnoses"]
after = json.load(open(sys.argv[2]))["diagnoses"]
ids = [x["id"] for x in after]
assert len(ids) == len(set(ids)), "a window diagnosed twice"
old = {x["id"]: x for x in after}
assert all(old.get(x["id"]) == x for x in before), "an earlier diagnosis changed"
ends = sorted(int(x["window_end_unix_nano"]) // 10**9 for x in after)
assert ends[-1] == 1700031180, ends[-4:]
assert int(sys.argv[3]) >= 1, "nothing diagnosed again"
print("# %d diagnoses before the stop, %d after the restart (%s diagnosed again)"
      % (len(before), len(after), sys.argv[3]))
EOF2
ok "restart: earlier diagnoses unchanged, the window stored at the stop diagnosed once"
[ "$(status_field "s['model']['version'], s['model']['loaded']")" = "1 True" ] ||
    fail "restart: model $(status_field "s['model']")"
ok "restart: the same model (version 1, loaded from the checkpoint)"

# SIGHUP reopens the log file (logrotate moves it away first).
mv "$dir/peer.log" "$dir/peer.log.1"
kill -HUP "$pid"
for _ in $(seq 1 100); do
    grep -q 'msg="log file reopened"' "$dir/peer.log" 2>/dev/null && break
    sleep 0.05
done
grep -q 'msg="log file reopened"' "$dir/peer.log" 2>/dev/null ||
    fail "no new log file after SIGHUP"
kill -0 "$pid" 2>/dev/null || fail "the peer died on SIGHUP"
ok "SIGHUP: log file reopened"

# SIGTERM in the middle of a training round: the round is abandoned, the
# peer exits 0 promptly and the served model stays version 1.
# The round is queued when `train` returns; SIGTERM follows at once, well
# before a round can finish (no polling in between to lose the race).
"$bin" train > /dev/null || fail "train"
terminate "during training"
grep -q 'msg="training round started"' "$dir/peer.log" ||
    fail "no training round had started"
grep -q 'msg="model trained" version=2' "$dir/peer.log" &&
    fail "the abandoned round was published"
ok "SIGTERM during training: exit 0 in $ms ms, model unchanged"
