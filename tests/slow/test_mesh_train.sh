#!/usr/bin/env bash
# Distributed training rounds with real processes on 127.0.0.1: three peers
# form a mesh; simulator traffic goes to one follower, whose windows reach
# the other two; `sagemesh train --wait` on the other follower is forwarded
# to the leader, which spreads the round over the shard owners and commits
# one model version that every peer installs, byte for byte the same. The
# model diagnoses a CPU fault; the log keeps --log-keep diagnoses. Then a
# second round is asked for and the leader is SIGKILLed while its owners
# train: the new leader commits that version once, the survivors install
# it, and the old leader, restarted, fetches it. Bounded waits; every
# process started is killed.
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-mesh-train-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/tap.sh"
trap cleanup EXIT
echo "1..9"

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
export SAGEMESH_SECRET_FILE=$dir/secret

declare -A http mesh pid
# start NAME [flags...]: starts peer NAME; fills http[NAME], mesh[NAME].
start() {
    local name=$1
    shift
    # a restarted peer's earlier log is kept aside: ports are read from it
    [ -e "$dir/$name.log" ] && mv "$dir/$name.log" "$dir/$name.log.1"
    "$bin" peer --id "$name" --listen-http 127.0.0.1:0 \
        --listen-peer "127.0.0.1:${mesh[$name]:-0}" \
        --data-dir "$dir/$name" --log-file "$dir/$name.log" \
        --secret-file "$dir/secret" --election-timeout 500 \
        --qos-service nginx-web --qos-target-ms 100 --log-keep 10 \
        --train-after 20000 --retrain-every 0 "$@" &
    pid[$name]=$!
    pids+=("${pid[$name]}")
    wait_port "$dir/$name.log" "${pid[$name]}" "$peer_port_sed" "$name"
    http[$name]=$found_port
    mesh[$name]=$(sed -n 's/.*msg="peer started".*peer_port=\([0-9]*\).*/\1/p' \
        "$dir/$name.log" | tail -1)
}


# ckpt NAME: the SHA-256 of NAME's model checkpoint.
ckpt() { sha256sum < "$dir/$1/model.ckpt" | cut -d' ' -f1; }

# ---- A mesh, traffic to one follower ----------------------------------------

start p1
wait_for "p1 leads" 10 p1 "s['role']" leader
start p2 --join "127.0.0.1:${mesh[p1]}"
start p3 --join "127.0.0.1:${mesh[p1]}"
wait_for "three voters" 20 p1 \
    "sorted(m['role'] for m in s['mesh']['members'])" "['voter', 'voter', 'voter']"
ok "p1 leads a mesh of three voters"

"$bin" sim --topology social --duration 2400 --sampling 0.1 --faults none \
    --peer "127.0.0.1:${http[p2]}" --timeout 30 > /dev/null || fail "sim (normal)"
"$bin" flush --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "flush"
for p in p1 p2 p3; do
    wait_for "windows on $p" 30 "$p" "s['model']['windows'] >= 79" True
done
ok "80 windows made on p2 are held by p1 and p3 too"

# ---- A round across the owners ----------------------------------------------

"$bin" train --wait --timeout 600 --peer "127.0.0.1:${http[p3]}" \
    > "$dir/train.out" 2>&1 || fail "train --wait on p3: $(cat "$dir/train.out")"
for p in p1 p2 p3; do
    wait_for "model on $p" 60 "$p" "s['model']['version'], s['mesh']['model_version']" "1 1"
done
split=$(for p in p1 p2 p3; do field "$p" "s['mesh']['training']['shards_trained']"; done | tr '\n' ' ')
read -r a b c <<< "$split"
[ $((a + b + c)) = 28 ] && [ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ "$c" -gt 0 ] ||
    fail "shards trained by p1 p2 p3: $split (28 CBN nodes)"
[ "$(ckpt p1)" = "$(ckpt p2)" ] && [ "$(ckpt p1)" = "$(ckpt p3)" ] ||
    fail "the peers' model checkpoints differ"
ms=$(field p1 "s['mesh']['training']['last_round_ms']")
echo "# round 1: $ms ms from start to commit; shards trained by p1 p2 p3: $split"
ok "train on p3 ran one round on all owners ($split of 28 shards); every peer installed version 1, the same bytes"

# ---- Diagnoses with it; the log keeps 10 -------------------------------------

echo "at=240 for=420 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 780 --sampling 0.1 \
    --start 1700030400 --faults "$dir/faults" --peer "127.0.0.1:${http[p2]}" \
    --timeout 30 > /dev/null || fail "sim (fault)"
"$bin" flush --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "flush"
wait_for "diagnoses on p2" 120 p2 "s['diagnoses']['pending']" 0
made=$(field p2 "s['diagnoses']['stored']")
[ "$made" -gt 11 ] || fail "p2 made $made diagnoses, more than 11 wanted"
wait_for "the log's diagnoses on p3" 30 p3 \
    "s['mesh']['log_records']['diagnoses'] <= 11 and s['mesh']['log_records']['diagnoses_dropped'] > 0" True
"$bin" diagnoses --limit 1000 -o json --peer "127.0.0.1:${http[p3]}" > "$dir/d3.json" ||
    fail "diagnoses from p3"
python3 - "$dir/d3.json" << 'EOF' || fail "the diagnoses p3 serves"
import json, sys
d = json.load(open(sys.argv[1]))["diagnoses"]
right = [x for x in d if x["culprits"] and x["culprits"][0]["service"] == "compose-post"]
print("# p3 serves %d diagnoses, %d name compose-post first" % (len(d), len(right)))
assert 1 <= len(d) <= 11 and len(right) >= 0.8 * len(d)
EOF
sweeps=$(field p2 "s['sweeps']")
echo "# p2's sweeps: $sweeps"
served=$(($(field p1 "s['sweeps']['served']") + $(field p3 "s['sweeps']['served']")))
[ "$(field p2 "s['sweeps']['diagnoses'] >= $made and s['sweeps']['requests'] > 0 and s['sweeps']['fallbacks'] == 0")" = True ] &&
    [ "$served" -gt 0 ] || fail "the diagnoses' passes did not run on the owners: $sweeps, served $served"
ok "the CPU fault diagnosed with version 1 ($made diagnoses, their passes computed by the owners: $served requests served by p1 and p3); the log keeps the newest 10 to 11"

# ---- The leader killed during a round ---------------------------------------

"$bin" sim --topology social --duration 1200 --sampling 0.1 --faults none \
    --start 1700031300 --peer "127.0.0.1:${http[p2]}" --timeout 30 > /dev/null ||
    fail "sim (more normal traffic)"
"$bin" flush --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "flush"
have=$(field p2 "s['model']['windows']")
for p in p1 p3; do wait_for "windows on $p" 30 "$p" "s['model']['windows']" "$have"; done
"$bin" train --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "train on p2"
# killed while the owners train: the round is running, some shards missing
# (on whichever peer leads by then: a busy machine may have moved it)
L=
for _ in $(seq 1 600); do
    for p in p1 p2 p3; do
        grep -q 'msg="training round started" round=2' "$dir/$p.log" 2> /dev/null &&
            L=$p && break 2
    done
    sleep 0.05
done
[ -n "$L" ] || fail "round 2 never started"
kill -9 "${pid[$L]}"
wait "${pid[$L]}" 2> /dev/null
S=()
for p in p1 p2 p3; do [ "$p" != "$L" ] && S+=("$p"); done
ok "the leader $L SIGKILLed during round 2 ($(field "${S[0]}" "s['mesh']['model_version']") committed then)"

# The new leader runs round 2 again; or, when the commit got in but the
# shards died with $L, trains version 3 from scratch once nobody can send
# version 2.
for p in "${S[@]}"; do
    wait_for "the committed model on $p" 120 "$p" \
        "s['mesh']['model_version'] >= 2 and s['model']['version'] == s['mesh']['model_version']" True
done
V=$(field "${S[0]}" "s['mesh']['model_version']")
leader=$(field "${S[0]}" "s['leader']")
[ "$leader" != "$L" ] || fail "$L still the leader"
[ "$(ckpt "${S[0]}")" = "$(ckpt "${S[1]}")" ] || fail "${S[*]} installed different models"
ok "the new leader $leader committed version $V once; ${S[*]} installed the same model"

# The dead leader owned a third of the nodes: sweeps while it is down go to
# the replicas (or time out and are computed here), and diagnoses go on.
# p2 takes the traffic, or p3 when p2 was the leader killed.
T=p2
[ "$L" = p2 ] && T=p3
before=$(field "$T" "s['diagnoses']['stored']")
echo "at=0 for=240 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 240 --sampling 0.1 \
    --start 1700032500 --faults "$dir/faults" --peer "127.0.0.1:${http[$T]}" \
    --timeout 30 > /dev/null || fail "sim (fault while $L is down)"
"$bin" flush --peer "127.0.0.1:${http[$T]}" > /dev/null || fail "flush"
wait_for "diagnoses on $T" 120 "$T" "s['diagnoses']['pending']" 0
after=$(field "$T" "s['diagnoses']['stored']")
[ "$after" -gt "$before" ] || fail "no diagnosis while $L was down ($before then $after)"
echo "# $T's sweeps: $(field "$T" "s['sweeps']")"
ok "with the owner $L dead, $T still diagnoses ($((after - before)) more), its passes on the live owners"

start "$L"
wait_for "$L catches up" 60 "$L" "s['model']['version'], s['mesh']['model_version'], s['role']" "$V $V follower"
[ "$(ckpt "$L")" = "$(ckpt "${S[0]}")" ] || fail "the restarted $L installed another model"
fetched=$(field "$L" "s['mesh']['training']['installs']")
ok "$L restarted, fetched and installed version $V ($fetched install), the same bytes"

for p in p1 p2 p3; do
    field "$p" "s['mesh']['training']" | sed "s/^/# $p: /"
done
grep -h 'mod=train' "$dir"/p*.log | grep -c 'level=error' | grep -qx 0 ||
    fail "errors in the training logs: $(grep -h 'mod=train.*level=error' "$dir"/p*.log | head -3)"
ok "no training errors logged"
exit 0
