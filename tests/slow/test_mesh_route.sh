#!/usr/bin/env bash
# Telemetry sent per host (--ingest routed) with real processes on
# 127.0.0.1: three peers form a mesh and the simulator sends each host's
# spans and metrics to a different peer, as each host's collector would.
# Spans go to the peer owning their trace, every peer closes its part of
# each window and the leader merges the parts. The leader's window log must
# be byte-identical to that of a lone peer sent all the same traffic: the
# sketches merge exactly and no client span lost its server span. Then a
# round trains across the peers, a CPU fault goes to the mesh per host and
# to the lone peer, and the leader is SIGKILLed in the middle of the
# fault: the new leader diagnoses what its predecessor merged and left
# undiagnosed, so every violated window p1 merged is diagnosed once in the
# log (windows it had not merged lose its part with it). The new leader
# then merges the next windows.
# Bounded waits; every process started is killed.
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-mesh-route-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/tap.sh"
trap cleanup EXIT
echo "1..8"

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
export SAGEMESH_SECRET_FILE=$dir/secret

declare -A http mesh pid
# start NAME [flags...]: starts peer NAME; fills http[NAME], mesh[NAME].
start() {
    local name=$1
    shift
    "$bin" peer --id "$name" --listen-http 127.0.0.1:0 \
        --listen-peer "127.0.0.1:${mesh[$name]:-0}" \
        --data-dir "$dir/$name" --log-file "$dir/$name.log" \
        --qos-service nginx-web --qos-target-ms 100 \
        --train-after 20000 --retrain-every 0 "$@" &
    pid[$name]=$!
    pids+=("${pid[$name]}")
    wait_port "$dir/$name.log" "${pid[$name]}" "$peer_port_sed" "$name"
    http[$name]=$found_port
    mesh[$name]=$(sed -n 's/.*msg="peer started".*peer_port=\([0-9]*\).*/\1/p' \
        "$dir/$name.log" | tail -1)
}
mesh_start() {
    start "$@" --secret-file "$dir/secret" --election-timeout 500 --ingest routed
}
wlog() { cat "$dir/$1"/windows/*.log | sha256sum | cut -d' ' -f1; }
# sim_all START DURATION FAULTS PEERS...: per-host traffic to PEERS.
sim_all() {
    local start=$1 duration=$2 faults=$3 peers=() p
    shift 3
    for p in "$@"; do peers+=(--peer "127.0.0.1:${http[$p]}"); done
    "$bin" sim --topology social --duration "$duration" --sampling 0.1 \
        --start "$start" --faults "$faults" "${peers[@]}" --timeout 30 \
        > /dev/null
}

# ---- The mesh, and a lone peer for reference ---------------------------------

mesh_start p1
wait_for "p1 leads" 10 p1 "s['role']" leader
mesh_start p2 --join "127.0.0.1:${mesh[p1]}"
mesh_start p3 --join "127.0.0.1:${mesh[p1]}"
wait_for "three voters" 20 p1 \
    "sorted(m['role'] for m in s['mesh']['members'])" "['voter', 'voter', 'voter']"
for p in p1 p2 p3; do
    wait_for "$p routes over three peers" 10 "$p" "sorted(s['routing']['peers'])" "['p1', 'p2', 'p3']"
done
start p0 --secret-file "$dir/secret" # a mesh of itself, --ingest local
ok "p1 leads a mesh of three voters; p0 runs alone"

# ---- Per-host traffic: merged windows equal the lone peer's -----------------

sim_all 1700028000 2400 none p1 p2 p3 || fail "sim (normal, per host)"
"$bin" flush --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "flush"
sim_all 1700028000 2400 none p0 || fail "sim (normal, to p0)"
"$bin" flush --peer "127.0.0.1:${http[p0]}" > /dev/null || fail "flush p0"
wait_for "80 windows merged on p1" 30 p1 "s['merge']['windows_merged'] >= 80" True
for p in p2 p3; do
    wait_for "windows on $p" 30 "$p" "s['model']['windows'] >= 80" True
done
field p1 "s['merge']" > "$dir/merge" || fail "status of p1"
echo "# p1 merge: $(cat "$dir/merge")"
python3 - "$dir/merge" << 'EOF' || fail "the merge figures"
import ast, sys
m = ast.literal_eval(open(sys.argv[1]).read())
assert m["windows_merged"] == m["windows_complete"] == 80, m
assert m["windows_timed_out"] == 0 and m["parts_late"] == 0 and m["parts_refused"] == 0, m
assert m["parts_received"] >= 3 * 80 - 3, m
EOF
ok "p1 merged 80 windows, each with every peer's part, none late"

for p in p1 p2 p3; do
    field "$p" "s['routing']" > "$dir/routing.$p" || fail "status of $p"
    echo "# $p routing: $(cat "$dir/routing.$p")"
done
python3 - "$dir" << 'EOF' || fail "the routing figures"
import ast, sys
r = [ast.literal_eval(open(f"{sys.argv[1]}/routing.p{i}").read()) for i in (1, 2, 3)]
assert all(x["spans_out"] > 0 and x["spans_in"] > 0 and x["spans_local"] > 0 for x in r), r
assert sum(x["spans_kept"] + x["spans_refused"] + x["batches_malformed"] for x in r) == 0, r
assert sum(x["spans_out"] for x in r) == sum(x["spans_in"] for x in r), r
EOF
ok "every peer routed spans to the others and took theirs; none kept back or refused"

# Shards go where their telemetry arrives: every placed node's owner, as
# far as the balance allows, is a peer its services' hosts send to.
wait_for "a placement" 30 p1 "s['mesh']['placement']['epoch'] >= 1" True
for p in p1 p2 p3; do
    field "$p" "s['routing']['services']" > "$dir/seen.$p" || fail "status of $p"
done
field p1 "s['mesh']['placement']['shards']" > "$dir/shards" || fail "placement"
python3 - "$dir" << 'PY' || fail "the placement"
import ast, sys
d = sys.argv[1]
seen = {p: ast.literal_eval(open(f"{d}/seen.{p}").read()) for p in ("p1", "p2", "p3")}
shards = ast.literal_eval(open(f"{d}/shards").read())
home = [s for s in shards if any(m in seen.get(s["owner"], {}) for m in s["service"].split("+"))]
owners = {s["owner"] for s in shards}
print("# %d shards placed; %d owned by a peer their services' telemetry arrives at; owners %s; "
      "services seen per peer %s" % (len(shards), len(home), sorted(owners),
      {p: len(v) for p, v in seen.items()}))
assert len(shards) >= 20 and len(home) >= 0.6 * len(shards) and len(owners) == 3
PY
ok "shards are placed where their services' telemetry arrives"

[ "$(wlog p1)" = "$(wlog p0)" ] ||
    fail "p1's merged window log differs from the lone p0's"
ok "p1's window log is byte-identical to the lone peer's ($(wlog p1 | cut -c1-12))"

# ---- A round; a fault; the leader killed as it diagnoses ---------------------

"$bin" train --wait --timeout 300 --peer "127.0.0.1:${http[p3]}" > "$dir/train.out" 2>&1 ||
    fail "train --wait: $(cat "$dir/train.out")"
for p in p1 p2 p3; do
    wait_for "model on $p" 60 "$p" "s['model']['version'] >= 1" True
done
"$bin" train --wait --timeout 300 --peer "127.0.0.1:${http[p0]}" > /dev/null 2>&1 ||
    fail "train --wait on p0"
ok "train --wait on p3: a round across the three peers, installed everywhere (p0 trains alone)"

# The same fault to p0, and to the mesh: each host's traffic to p2 or p3,
# so that p1, the leader, gets only the spans of the traces it owns. p1 is
# SIGKILLed in the middle of the fault, after its third diagnosis: the
# windows it merged and had not diagnosed, and those it had not merged,
# fall to the new leader.
echo "at=240 for=300 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
sim_all 1700030400 660 "$dir/faults" p0 || fail "sim (fault, to p0)"
"$bin" flush --peer "127.0.0.1:${http[p0]}" > /dev/null || fail "flush p0"
wait_for "p0 diagnosed" 60 p0 "s['diagnoses']['pending']" 0
sim_all 1700030400 660 "$dir/faults" p2 p3 &
sim_pid=$!
pids+=("$sim_pid")
for _ in $(seq 1 600); do
    [ "$(field p1 "s['diagnoses']['ok']" 2> /dev/null)" -ge 3 ] 2> /dev/null && break
    sleep 0.05
done
kill -KILL "${pid[p1]}"
wait "${pid[p1]}" 2> /dev/null
wait "$sim_pid" || fail "sim (fault, per host)"
wait_for "a new leader" 15 p2 "s['leader'] in ('p2', 'p3')" True
new=$(field p2 "s['leader']")
"$bin" flush --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "flush"
wait_for "$new done" 60 "$new" "s['diagnoses']['pending']" 0
sleep 2 # the last commits reach the other survivor
for p in p0 p2 p3; do
    "$bin" diagnoses --limit 1000 -o json --peer "127.0.0.1:${http[$p]}" \
        --timeout 5 > "$dir/d.$p.json" || fail "diagnoses of $p"
done
took=$(sed -n 's/.*msg="leading now: diagnosing.*windows=\([0-9]*\).*/\1/p' "$dir/$new.log" | tail -1)
echo "# $new took over ${took:-0} undiagnosed windows"
python3 - "$dir" << 'PY' || fail "the diagnoses after the leader's death"
import glob, json, struct, sys
d = {p: json.load(open(f"{sys.argv[1]}/d.{p}.json"))["diagnoses"] for p in ("p0", "p2", "p3")}
# The windows p1 delivered before it died (its window log: records of
# magic u32, length u32, time u64, crc u32, payload): those it did not
# merge lost p1's part with it, and the survivors' data may not violate.
merged_by_p1 = set()
for seg in sorted(glob.glob(f"{sys.argv[1]}/p1/windows/*.log")):
    b = open(seg, "rb").read()
    at = 0
    while at + 20 <= len(b):
        magic, length, t, crc = struct.unpack_from("<IIQI", b, at)
        if magic != 0x4C574D53:
            break
        merged_by_p1.add(t // 10**9)
        at += 20 + length
assert d["p2"] == d["p3"], "the survivors serve different diagnoses"
ids = [x["id"] for x in d["p2"]]
assert len(ids) == len(set(ids)), "a diagnosis twice"
fault = (1700030400 + 240, 1700030400 + 540 + 30)
def ends(xs):
    return {int(x["window_end_unix_nano"]) // 10**9 for x in xs
            if fault[0] < int(x["window_end_unix_nano"]) // 10**9 <= fault[1]}
alone, mesh = ends(d["p0"]), ends(d["p2"])
after = {e for e in alone if e not in merged_by_p1}
alone -= after
right = [x for x in d["p2"] if x["culprits"] and x["culprits"][0]["service"] == "compose-post"
         and x["culprits"][0]["resource"] == "cpu"]
by = sorted({x["decided_by"] for x in d["p2"]})
print("# of the fault's windows p1 merged before it died, p0 alone diagnosed %d; the mesh "
      "diagnosed %d in all (%d name compose-post/cpu), decided by %s; %d merged after, "
      "without p1's part" % (len(alone), len(mesh), len(right), by, len(after)))
assert len(alone) >= 3 and alone <= mesh, "windows the lone peer diagnosed are missing: %s" % sorted(alone - mesh)
assert len(right) >= 0.8 * len(mesh)
PY
ok "SIGKILL of the leader p1 as it diagnoses: $new leads; every violated window p1 merged and the lone peer diagnosed is diagnosed once, and p2 and p3 serve the same list"

# ---- The new leader merges ---------------------------------------------------

before=$(field "$new" "s['merge']['windows_merged']")
sim_all 1700031060 600 none p2 p3 || fail "sim (after the failover)"
"$bin" flush --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "flush"
wait_for "windows merged on $new" 30 "$new" "s['merge']['windows_merged'] >= $before + 20" True
field "$new" "s['merge']" > "$dir/merge2" || fail "status of $new"
echo "# $new merge: $(cat "$dir/merge2")"
python3 - "$dir/merge2" << 'PY' || fail "the new leader's merge"
import ast, sys
m = ast.literal_eval(open(sys.argv[1]).read())
assert m["parts_late"] == 0 and m["outbox"] == 0 and m["pending"] == 0, m
PY
ok "$new merges the next 20 windows from both survivors, none late"
