#!/usr/bin/env bash
# The mesh as processes on 127.0.0.1: three peers (the first bootstraps,
# the other two --join it) become three voters with one leader that all of
# them agree on; simulator traffic sent to one follower is diagnosed there
# and every peer serves the same diagnoses from the raft log, each once; a
# SIGKILL of the leader elects a new leader among the survivors, diagnoses
# made after the failover reach both survivors, still each once; the killed
# peer restarted on its data directory rejoins and serves the same list;
# a peer with another cluster secret is never admitted and the peer it
# contacted counts the refused handshake. Bounded: every wait has a
# deadline; every process started is killed on exit (by pid).
set -u
bin=$1
dir=$(mktemp -d /tmp/sagemesh-slow-mesh-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
    kill_started
    [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
# not_ok WHY: a failed check the later ones do not depend on: reported
# with the ends of the logs, and the test goes on (exit 1 at the end).
not_ok() {
    n=$((n + 1))
    failed=1
    echo "not ok $n - $*"
    local f
    for f in "$dir"/p*.log; do
        [ -s "$f" ] || continue
        echo "# --- ${f##*/}"
        tail -12 "$f" | cut -c1-300 | sed "s/^/# /"
    done
}
# fail WHY: a failed check the rest depends on: reported, then exit 1.
fail() {
    not_ok "$@"
    exit 1
}
echo "1..14"

ELECTION_MS=500
"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
"$bin" keygen --out "$dir/other" > /dev/null 2>&1 || fail "keygen (other)"
export SAGEMESH_SECRET_FILE=$dir/secret

declare -a pid http pport
peer_port_only_sed='s/.*msg="peer started".*peer_port=\([0-9]*\).*/\1/p'

ms_now() { echo $(($(date +%s%N) / 1000000)); }

# start I SECRET [PEER_PORT] [FLAG...]: starts peer mesh-I with its own data
# dir and log (a previous log is kept as pI.log.N); PEER_PORT "" is any.
start() {
    local i=$1 secret=$2 port=${3:-0}
    shift 3
    local log=$dir/p$i.log k=0
    while [ -e "$log.$k" ]; do k=$((k + 1)); done
    [ -e "$log" ] && mv "$log" "$log.$k"
    "$bin" peer --id "mesh-$i" --listen-http 127.0.0.1:0 \
        --listen-peer "127.0.0.1:${port:-0}" \
        --data-dir "$dir/d$i" --log-file "$log" --secret-file "$secret" \
        --qos-service nginx-web --qos-target-ms 100 \
        --train-after 20000 --retrain-every 0 \
        --election-timeout "$ELECTION_MS" "$@" &
    pid[$i]=$!
    pids+=("${pid[$i]}")
    wait_port "$log" "${pid[$i]}" "$peer_port_sed" "peer mesh-$i"
    http[$i]=$found_port
    wait_port "$log" "${pid[$i]}" "$peer_port_only_sed" "peer mesh-$i"
    pport[$i]=$found_port
    [ "${pport[$i]}" -gt 0 ] || fail "mesh-$i reports no peer port"
}

# sigkill I: SIGKILL and reap peer mesh-I (its pid leaves $pids).
sigkill() {
    local i=$1 p keep=()
    kill -9 "${pid[$i]}" 2>/dev/null
    wait "${pid[$i]}" 2>/dev/null
    for p in "${pids[@]}"; do [ "$p" != "${pid[$i]}" ] && keep+=("$p"); done
    pids=("${keep[@]}")
    pid[$i]=
}

peer() { echo "127.0.0.1:${http[$1]}"; }

# status I: /v1/status of mesh-I into $dir/sI.json (non-zero if unreachable).
status() {
    "$bin" status -o json --peer "$(peer "$1")" --timeout 2 \
        > "$dir/s$1.json" 2>/dev/null
    [ -s "$dir/s$1.json" ] # `status` exits 1 for a peer not ready, with the body
}

# diagnoses I: the log's diagnoses as mesh-I serves them, into $dir/dI.json.
diagnoses() {
    "$bin" diagnoses --limit 1000 -o json --peer "$(peer "$1")" --timeout 5 \
        > "$dir/d$1.json" 2>/dev/null
}

# json FILE EXPR: a Python expression on the file's JSON as `d`.
json() { python3 -c "import json; d=json.load(open('$1')); print($2)"; }

# The mesh as seen by the peers given: view.py MODE PEER... with MODE
# "formed EXPECTED_IDS" or "leader KILLED"; status files are $dir/sI.json.
cat > "$dir/view.py" << 'EOF'
import json, sys
mode, arg, peers = sys.argv[1], sys.argv[2], sys.argv[3:]
here = sys.argv[0].rsplit("/", 1)[0]
st = {i: json.load(open(f"{here}/s{i}.json")) for i in peers}
leaders = {s.get("leader") for s in st.values()}
if len(leaders) != 1 or None in leaders:
    sys.exit("leaders seen: %s" % sorted(map(str, leaders)))
leader = leaders.pop()
heads = [s["id"] for s in st.values() if s["role"] == "leader"]
others = [s["role"] for s in st.values() if s["role"] != "leader"]
if mode == "formed":
    want = set(arg.split(","))
    for s in st.values():
        m = s["mesh"]["members"]
        ids = [x["id"] for x in m]
        if sorted(ids) != sorted(want):
            sys.exit("%s sees members %s" % (s["id"], ids))
        # Health is when the link last heard from a peer: the leader hears
        # from everyone, a follower only from the leader.
        up = want if s["id"] == leader else {s["id"], leader}
        if any(x["role"] != "voter" or (x["id"] in up and x["health"] != "up") for x in m):
            sys.exit("%s sees %s" % (s["id"], [(x["id"], x["role"], x["health"]) for x in m]))
        if [x["id"] for x in m if x["leader"]] != [leader]:
            sys.exit("%s flags another leader" % s["id"])
    if heads != [leader] or others != ["follower"] * (len(st) - 1):
        sys.exit("roles: %s" % [(s["id"], s["role"]) for s in st.values()])
else:
    if leader == arg or heads != [leader] or others != ["follower"] * (len(st) - 1):
        sys.exit("leader %s, roles %s" % (leader, [(s["id"], s["role"]) for s in st.values()]))
print(leader)
EOF

# view MODE ARG PEER...: fetches the peers' status and runs view.py; prints
# the leader's id when the view holds.
view() {
    local mode=$1 arg=$2 i
    shift 2
    for i in "$@"; do status "$i" || return 1; done
    python3 "$dir/view.py" "$mode" "$arg" "$@" 2> "$dir/view.err"
}

# wait_view SECONDS MODE ARG PEER...: polls view every 50 ms.
wait_view() {
    local bound=$1 end
    shift
    end=$(($(ms_now) + bound * 1000))
    while [ "$(ms_now)" -lt "$end" ]; do
        leader=$(view "$@") && return 0
        sleep 0.05
    done
    return 1
}

# wait_pending I: until mesh-I has no diagnosis pending (queued for the
# model or not yet in its copy of the log); 60 s at most.
wait_pending() {
    for _ in $(seq 1 600); do
        status "$1" && [ "$(json "$dir/s$1.json" "d['diagnoses']['pending']" 2>/dev/null)" = 0 ] &&
            return 0
        sleep 0.1
    done
    fail "mesh-$1: diagnoses still pending after 60 s"
}

# same_diagnoses PEER...: every peer serves the same list, each id once.
same_diagnoses() {
    local i files=()
    for i in "$@"; do
        diagnoses "$i" || return 1
        files+=("$dir/d$i.json")
    done
    python3 - "${files[@]}" << 'EOF'
import json, sys
sys.excepthook = lambda t, v, tb: sys.exit("%s: %s" % (t.__name__, v))
lists = [json.load(open(f))["diagnoses"] for f in sys.argv[1:]]
ids = [x["id"] for x in lists[0]]
assert ids, "no diagnoses"
assert len(ids) == len(set(ids)), "an id twice"
assert all(l == lists[0] for l in lists[1:]), "the lists differ: %s" % [len(l) for l in lists]
EOF
}

# wait_same SECONDS PEER...: polls same_diagnoses every 100 ms.
wait_same() {
    local bound=$1
    shift
    for _ in $(seq 1 $((bound * 10))); do
        same_diagnoses "$@" 2> "$dir/same.err" && return 0
        sleep 0.1
    done
    return 1
}

# ---- Formation --------------------------------------------------------------

t0=$(ms_now)
start 1 "$dir/secret" ""
start 2 "$dir/secret" "" --join "127.0.0.1:${pport[1]}"
start 3 "$dir/secret" "" --join "127.0.0.1:${pport[1]}"
ok "three peers started (peer ports ${pport[1]} ${pport[2]} ${pport[3]})"

wait_view 20 formed mesh-1,mesh-2,mesh-3 1 2 3 ||
    fail "no mesh of 3 voters with one leader in 20 s: $(cat "$dir/view.err")"
formed_ms=$(($(ms_now) - t0))
ok "3 members, all voters, up as the leader sees them, one leader ($leader) seen by all; formed $formed_ms ms after the first start"
echo "# formation: $formed_ms ms from starting mesh-1 to 3 voters agreeing on $leader"

L=${leader#mesh-}
"$bin" members list --peer "$(peer 1)" > "$dir/members" 2>&1 || fail "members list"
sed 's/^/# /' "$dir/members"
[ "$(grep -c 'voter' "$dir/members")" = 3 ] && grep -q "mesh-$L.*leader" "$dir/members" ||
    fail "members list: $(cat "$dir/members")"
ok "members list: 3 voters, mesh-$L the leader"

# The traffic goes to a follower (never to the leader, which is killed).
for T in 1 2 3; do [ "$T" != "$L" ] && break; done
for O in 1 2 3; do [ "$O" != "$L" ] && [ "$O" != "$T" ] && break; done

# ---- Traffic to one follower, diagnoses everywhere --------------------------

export SAGEMESH_PEER=$(peer "$T")
"$bin" sim --topology social --duration 2400 --sampling 0.1 --faults none \
    --peer "$SAGEMESH_PEER" --timeout 30 > /dev/null || fail "sim (normal)"
"$bin" flush > /dev/null || fail "flush"
status "$T" || fail "status of mesh-$T"
stored=$(json "$dir/s$T.json" "d['windows']['stored']")
[ "$stored" -ge 79 ] || fail "expected 80 stored windows on mesh-$T, got $stored"
ok "40 min of normal traffic stored on mesh-$T, a follower ($stored windows)"

"$bin" train --wait --timeout 300 > "$dir/train.out" 2>&1 ||
    fail "train --wait: $(cat "$dir/train.out")"
ok "train --wait on mesh-$T: $(head -1 "$dir/train.out")"

echo "at=240 for=300 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 660 --sampling 0.1 \
    --start 1700030400 --faults "$dir/faults" --peer "$SAGEMESH_PEER" \
    --timeout 30 > /dev/null || fail "sim (fault)"
"$bin" flush > /dev/null || fail "flush"
wait_pending "$T"
local_n=$(json "$dir/s$T.json" "d['diagnoses']['stored']")
ok "the CPU fault diagnosed on mesh-$T ($local_n diagnoses, none pending)"

wait_same 10 1 2 3 || fail "the peers serve different diagnoses: $(cat "$dir/same.err")"
python3 - "$dir/d1.json" "$T" "$local_n" << 'EOF' || fail "the replicated diagnoses"
import json, sys
d = json.load(open(sys.argv[1]))["diagnoses"]
fault = (1700030400 + 240, 1700030400 + 540)
inside = [x for x in d if fault[0] < int(x["window_end_unix_nano"]) // 10**9 <= fault[1] + 30]
right = [x for x in inside if x["culprits"] and x["culprits"][0]["service"] == "compose-post"
         and x["culprits"][0]["resource"] == "cpu"]
print("# %d diagnoses, %d in the fault, %d name compose-post/cpu" % (len(d), len(inside), len(right)))
assert len(d) == int(sys.argv[3]), "the log holds %d, mesh-%s made %s" % (len(d), sys.argv[2], sys.argv[3])
assert len(inside) >= 5 and len(right) >= 0.8 * len(inside)
assert all(x["violated"] and x["decided_by"] == "mesh-" + sys.argv[2] for x in d)
EOF
cp "$dir/d1.json" "$dir/before_kill.json"
ok "mesh-1, mesh-2 and mesh-3 serve the same diagnoses, each id once, naming compose-post/cpu"

# ---- SIGKILL of the leader --------------------------------------------------

kill_port=${pport[$L]}
t0=$(ms_now)
sigkill "$L"
wait_view 10 leader "mesh-$L" "$T" "$O" ||
    fail "no new leader 10 s after the SIGKILL of mesh-$L: $(cat "$dir/view.err")"
failover_ms=$(($(ms_now) - t0))
ok "SIGKILL of the leader mesh-$L: mesh-$T and mesh-$O agree on the new leader $leader after $failover_ms ms"
echo "# failover: $failover_ms ms (election timeout $ELECTION_MS ms)"

wait_same 5 "$T" "$O" || fail "after the failover: $(cat "$dir/same.err")"
cmp -s <(json "$dir/before_kill.json" "d") <(json "$dir/d$T.json" "d") ||
    fail "the diagnoses changed with the failover"
ok "the survivors still serve the same diagnoses, none lost or doubled"

# Three more minutes of the fault, on mesh-$T: committed through the new
# leader.
echo "at=0 for=180 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
"$bin" sim --topology social --duration 180 --sampling 0.1 \
    --start 1700031060 --faults "$dir/faults" --peer "$SAGEMESH_PEER" \
    --timeout 30 > /dev/null || fail "sim (fault after the failover)"
"$bin" flush > /dev/null || fail "flush"
wait_pending "$T"
local_n=$(json "$dir/s$T.json" "d['diagnoses']['stored']")
wait_same 10 "$T" "$O" || fail "after the new fault traffic: $(cat "$dir/same.err")"
python3 - "$dir/before_kill.json" "$dir/d$T.json" "$T" "$local_n" << 'EOF' ||
import json, sys
before = json.load(open(sys.argv[1]))["diagnoses"]
after = json.load(open(sys.argv[2]))["diagnoses"]
old = {x["id"]: x for x in after}
assert all(old.get(x["id"]) == x for x in before), "an earlier diagnosis changed or went"
new = [x for x in after if int(x["window_end_unix_nano"]) // 10**9 > 1700031060]
right = [x for x in new if x["culprits"] and x["culprits"][0]["service"] == "compose-post"
         and x["culprits"][0]["resource"] == "cpu"]
print("# %d diagnoses after the failover (%d new, %d name compose-post/cpu)" % (len(after), len(new), len(right)))
assert len(after) == len(before) + len(new), "other new diagnoses"
assert len(after) == int(sys.argv[4]), "the log holds %d, mesh-%s made %s" % (len(after), sys.argv[3], sys.argv[4])
assert len(new) >= 4 and len(right) >= 0.8 * len(new)
assert all(x["decided_by"] == "mesh-" + sys.argv[3] for x in new)
EOF
    fail "the diagnoses made after the failover"
cp "$dir/d$T.json" "$dir/before_restart.json"
ok "diagnoses made after the failover reach both survivors, each id once"

# ---- The killed peer restarts and rejoins -----------------------------------

status "$T" || fail "status of mesh-$T"
health=$(json "$dir/s$T.json" "[x['health'] for x in d['mesh']['members'] if x['id'] == 'mesh-$L']")
[ "$health" = "['down']" ] || fail "mesh-$T sees the killed mesh-$L as $health"
ok "the killed mesh-$L is a member seen down"

t0=$(ms_now)
start "$L" "$dir/secret" "$kill_port"
# rejoined: every peer sees 3 members, mesh-L up as a voter or standby, one
# leader; mesh-L follows it and serves the same diagnoses.
rejoined() {
    local i
    for i in 1 2 3; do status "$i" || return 1; done
    python3 - "$dir" "$L" 2> "$dir/rejoin.err" << 'EOF' || return 1
import json, sys
d, L = sys.argv[1], sys.argv[2]
st = [json.load(open(f"{d}/s{i}.json")) for i in (1, 2, 3)]
views = [(s["id"], s["role"], s["leader"], s["term"]) for s in st]
sys.excepthook = lambda t, v, tb: sys.exit("%s: %s" % (t.__name__, v))
assert len({s["leader"] for s in st}) == 1 and st[0]["leader"] != "mesh-" + L, views
for s in st:
    m = {x["id"]: x for x in s["mesh"]["members"]}
    assert sorted(m) == ["mesh-1", "mesh-2", "mesh-3"], sorted(m)
    assert m["mesh-" + L]["role"] in ("voter", "standby")
    if s["id"] in (s["leader"], "mesh-" + L):  # see view.py on health
        assert m["mesh-" + L]["health"] == "up" and m[s["leader"]]["health"] == "up"
assert st[int(L) - 1]["role"] == "follower"
EOF
    same_diagnoses 1 2 3 2> "$dir/same.err"
}
end=$(($(ms_now) + 20000))
until rejoined || [ "$(ms_now)" -gt "$end" ]; do sleep 0.1; done
rejoin_ms=$(($(ms_now) - t0))
if ! rejoined; then
    not_ok "mesh-$L did not rejoin in 20 s: $(tail -1 "$dir/rejoin.err") $(tail -1 "$dir/same.err")"
elif ! cmp -s <(json "$dir/before_restart.json" "d") <(json "$dir/d$L.json" "d"); then
    not_ok "the restarted mesh-$L serves other diagnoses"
else
    role=$(json "$dir/s$T.json" "[x['role'] for x in d['mesh']['members'] if x['id'] == 'mesh-$L'][0]")
    ok "mesh-$L restarted on its data dir rejoined as a $role in $rejoin_ms ms and serves the same diagnoses"
fi

# ---- A peer with another secret ---------------------------------------------

# members I: the ids of mesh-I's members, sorted.
members() {
    status "$1" || fail "status of mesh-$1"
    json "$dir/s$1.json" "sorted(x['id'] for x in d['mesh']['members'])"
}
declare -a before
for i in 1 2 3; do before[$i]=$(members "$i"); done
start 4 "$dir/other" "" --join "127.0.0.1:${pport[$T]}"
for _ in $(seq 1 25); do # 5 s at least: five join attempts
    for i in 1 2 3; do
        now=$(members "$i")
        [ "$now" = "${before[$i]}" ] || fail "mesh-$i's members went from ${before[$i]} to $now"
    done
    sleep 0.2
done
status 4 || fail "status of mesh-4"
# (its role is raft's "follower": mesh.h promises "unavailable" while joining)
[ "$(json "$dir/s4.json" "d['role'] != 'leader', d['mesh']['joining'], len(d['mesh']['members'])")" = \
    "True True 0" ] || fail "mesh-4: $(json "$dir/s4.json" "d['role'], d['mesh']")"
ok "a peer with another secret is never a member (5 s of join attempts)"

refused=$(grep 'msg="refused a handshake' "$dir/p$T.log" | tail -1)
echo "# mesh-$T: ${refused:0:300}"
count=$(sed -n 's/.* count=\([0-9]*\).*/\1/p' <<< "$refused")
[ -n "$refused" ] && [ "${count:-0}" -ge 1 ] ||
    fail "mesh-$T did not log the refused handshake"
! grep -h 'msg="adding a peer".*peer=mesh-4' "$dir"/p[123].log* ||
    fail "a peer started adding mesh-4"
ok "mesh-$T refused and counted the handshake (count=$count)"
exit "$failed"
