#!/usr/bin/env bash
# Distributed training round of the mesh on one host (a benchmark, not a
# test).
#
# The simulator's `social` topology (28 services, so 28 CBN nodes, one CVAE
# shard each) sends N windows of normal traffic to a peer started with
# --train-after N --retrain-every 0, so exactly one round runs, started by
# the N-th window. Three configurations, R times each, fresh data
# directories every time, the same traffic (seed 1) every time:
#   standalone  one peer without --secret-file trains alone: the round's
#               model.last_round.seconds;
#   mesh-1      one peer with a secret (a mesh of itself): the leader's
#               mesh.training.last_round_ms (round start to MODEL_COMMIT);
#   mesh-3      three peers (the first bootstraps, two --join it), the
#               traffic to a follower: the leader's last_round_ms, the time
#               from the round start (seen by polling the leader's
#               rounds_started every 100 ms) until all three report
#               model.version 1, each peer's shards_trained, and the bytes
#               on the wire: the TRAIN bytes of the round (START, SHARD,
#               MODEL, acknowledgements) and the window replication bytes,
#               both from mesh.training.bytes_sent summed over the peers
#               (it counts TRAIN and WINDOW bodies): the traffic is sent in
#               two parts and the counters are read once the first part's
#               windows are on every peer (10 windows short of N, so
#               before the round) and once all three have installed; the
#               bytes per replicated window come from the first reading,
#               and the round's TRAIN bytes are what the second adds beyond
#               its windows. raft's bytes over the link in the same
#               interval come from /metrics (sagemesh_mesh_raft_bytes_total,
#               both ways on each peer, so halved in the sum).
# Every configuration also reports its install time (round start to the
# model served; on mesh-3 to the last of the three), the training seconds
# each peer logs, and the CPU seconds (user + system, /proc/PID/stat) its
# peers used from the first reading to the second: wall times move with
# whatever else the host runs, CPU seconds much less. Prints a line per run
# and configuration, then the medians, and the ratios mesh-3/mesh-1 and
# mesh-3/standalone of round times measured in the same run (median of the
# per-run ratios). The peers train a worker per online core (there is no
# thread flag), so on a 2-core host three peers training at once share two
# cores: no 3x speedup can show there.
#
# Usage: tests/bench/mesh_train.sh [--bin PATH] [--runs R] [--windows N]
#            [--round-timeout S] [--election-timeout MS] [--keep]
# Defaults: build-rel/sagemesh (a release build: meson setup build-rel
# --buildtype=release -Dwerror=true && ninja -C build-rel), 5 runs, 240
# windows (2 h of 30 s windows), 1800 s for a round, the peer's default
# election timeout (500 ms). Needs bash and python3.
# Exit status: 0 when every run was measured, 1 when a step failed (a mesh
# that does not form within 30 s, windows not replicated within 120 s, a
# round that does not commit or install within the round timeout, a failed
# install, a peer that exits), 2 usage. Every wait is bounded; the peers
# are killed (by pid) and the temporary directory removed on exit (unless
# --keep, which also keeps every run's data directories and logs).
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

bin=build-rel/sagemesh
runs=5
windows=240
round_timeout=1800
election=
keep=0

usage() {
    sed -n '42,43p' "${BASH_SOURCE[0]}" | sed 's/^# //'
    exit "$1"
}

while [ $# -gt 0 ]; do
    case $1 in
    --bin) bin=${2:?}; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --windows) windows=${2:?}; shift 2 ;;
    --round-timeout) round_timeout=${2:?}; shift 2 ;;
    --election-timeout) election=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "mesh_train: unknown flag '$1'" >&2; usage 2 ;;
    esac
done
case $bin in /*) ;; *) bin=$repo/$bin ;; esac
[ -x "$bin" ] || { echo "mesh_train: no executable at $bin" >&2; exit 2; }
for v in "$runs" "$windows" "$round_timeout"; do
    case $v in '' | *[!0-9]*) usage 2 ;; esac
done
case $election in *[!0-9]*) usage 2 ;; esac
if [ "$runs" -lt 1 ] || [ "$windows" -lt 20 ]; then usage 2; fi

readonly START_BOUND_S=30      # peers up and a mesh formed within this
readonly WINDOWS_BOUND_S=120   # the first part's windows on every peer
readonly SIM_START=1700028000  # the simulator's default start
readonly HOLD=10               # windows of the second part
readonly LATENESS_W=3          # windows a sim's end leaves open (60 s
                               # lateness, 30 s windows)
# Traffic: part 1 closes N-HOLD windows, part 2 the HOLD others.
part1_s=$(((windows - HOLD + LATENESS_W) * 30))
part2_s=$((HOLD * 30))

dir=$(mktemp -d /tmp/sagemesh-train-XXXXXX)
declare -a pid http

stop_peers() {
    local i
    for i in 1 2 3; do
        if [ -n "${pid[$i]:-}" ]; then
            kill -9 "${pid[$i]}" 2>/dev/null
            wait "${pid[$i]}" 2>/dev/null
            pid[i]=
        fi
    done
}
poller=
cleanup() {
    [ -n "$poller" ] && kill "$poller" 2>/dev/null
    stop_peers
    if [ "$keep" = 1 ]; then
        echo "kept $dir"
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_dir=
die() {
    echo "mesh_train: FAILED: $*" >&2
    local f
    for f in "$run_dir"/p?.log; do
        [ -s "$f" ] || continue
        echo "--- last lines of $f:" >&2
        grep -v 'level=debug' "$f" | tail -12 | cut -c1-300 >&2
    done
    exit 1
}

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || die "keygen"
eflags=()
[ -n "$election" ] && eflags+=(--election-timeout "$election")

# start I MODE [FLAG...]: starts peer fI in $run_dir (MODE standalone: no
# secret); sets pid[I], http[I] and, in a mesh, pport[I].
declare -a pport
start() {
    local i=$1 mode=$2 log=$run_dir/p$1.log _ line='' sflags=()
    shift 2
    [ "$mode" = standalone ] || sflags=(--secret-file "$dir/secret" --listen-peer 127.0.0.1:0 "${eflags[@]}")
    "$bin" peer --id "f$i" --listen-http 127.0.0.1:0 \
        --data-dir "$run_dir/d$i" --log-file "$log" \
        --qos-service nginx-web --qos-target-ms 100 \
        --train-after "$windows" --retrain-every 0 "${sflags[@]}" "$@" \
        > /dev/null 2>&1 &
    pid[i]=$!
    for _ in $(seq 1 200); do # 10 s
        line=$(grep 'msg="peer started"' "$log" 2>/dev/null | tail -1)
        [ -n "$line" ] && break
        kill -0 "${pid[$i]}" 2>/dev/null || die "f$i exited at start"
        sleep 0.05
    done
    [ -n "$line" ] || die "f$i did not start within 10 s"
    http[i]=$(sed -n 's/.*http_port=\([0-9]*\).*/\1/p' <<< "$line")
    pport[i]=$(sed -n 's/.*peer_port=\([0-9]*\).*/\1/p' <<< "$line")
}

# sim PORT START DURATION: the social topology's normal traffic to a peer.
sim() {
    "$bin" sim --topology social --seed 1 --sampling 0.1 --faults none \
        --start "$2" --duration "$3" --peer "127.0.0.1:$1" --timeout 30 \
        > "$run_dir/sim.out" 2>&1 || die "sim: $(tail -3 "$run_dir/sim.out")"
}

# cpu_ticks I...: user+system clock ticks of peers fI, one a line.
cpu_ticks() {
    local i f
    for i in "$@"; do
        read -r -a f < "/proc/${pid[i]}/stat" || die "f$i is gone"
        echo $((f[13] + f[14]))
    done
}
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)

cat > "$dir/poll.py" << 'EOF'
import json, os, sys, time, urllib.request

def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=2) as r:
            return r.read().decode()
    except Exception:
        return None

def status(port):
    body = get(port, "/v1/status")
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None

def metric(text, name):
    for line in (text or "").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(None, 1)[1])
    return 0.0

def now():
    return time.monotonic()

mode, bound, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
ports = sys.argv[4:]
end = now() + bound
if mode == "formed":  # formed OUT PORT...: one leader, len(PORTS) voters
    n = len(ports)
    while now() < end:
        st = [status(p) for p in ports]
        if all(st):
            leaders = {s.get("leader") for s in st}
            roles = sorted(s["role"] for s in st)
            voters = [len(s["mesh"]["members"]) == n and
                      all(m["role"] == "voter" for m in s["mesh"]["members"]) for s in st]
            if len(leaders) == 1 and None not in leaders and all(voters) \
                    and roles == sorted(["leader"] + ["follower"] * (n - 1)):
                print(leaders.pop())
                sys.exit(0)
        time.sleep(0.05)
    sys.exit("no mesh of %d voters with one leader" % n)
elif mode == "held":  # held OUT COUNT PORT...: every peer holds COUNT windows
    count, ports = int(ports[0]), ports[1:]
    seen = None
    while now() < end:
        st = [status(p) for p in ports]
        seen = [s["model"]["windows"] if s and s.get("model") else None for s in st]
        if all(x == count for x in seen):
            sys.exit(0)
        time.sleep(0.1)
    sys.exit("windows held: %s, want %d each" % (seen, count))
elif mode == "snap":  # snap OUT PORT...: status and /metrics of each peer
    snap = []
    for p in ports:
        s = status(p)
        if s is None:
            sys.exit("peer on port %s unreachable" % p)
        m = get(p, "/metrics")
        snap.append({"status": s,
                     "raft_bytes": metric(m, "sagemesh_mesh_raft_bytes_total"),
                     "messages_sent": metric(m, "sagemesh_mesh_messages_sent_total")})
    json.dump(snap, open(out, "w"))
elif mode == "round":  # round OUT LEADER_INDEX PIDS PORT...: times the round
    li, pids, ports = int(ports[0]), [int(x) for x in ports[1].split(",")], ports[2:]
    t_start, t_inst, last = None, [None] * len(ports), [None] * len(ports)
    while now() < end:
        t = now()
        for i, pid in enumerate(pids):
            try:
                os.kill(pid, 0)
            except OSError:
                json.dump({"error": "f%d (pid %d) exited during the round" % (i + 1, pid)},
                          open(out, "w"))
                sys.exit(1)
        for i, p in enumerate(ports):
            s = status(p)
            if s is None:
                continue
            last[i] = s
            model = s.get("model") or {}
            if i == li and t_start is None:
                tr = (s.get("mesh") or {}).get("training")
                if (tr and tr["rounds_started"] >= 1) or model.get("training") \
                        or model.get("version", 0) >= 1:
                    t_start = t
            tr = (s.get("mesh") or {}).get("training")
            if tr and tr["install_failures"]:
                json.dump({"error": "install failures on %s: %d" % (s["id"], tr["install_failures"])},
                          open(out, "w"))
                sys.exit(1)
            if model.get("last_round") and not model["last_round"]["ok"]:
                json.dump({"error": "%s: round failed: %s" % (s["id"], model["last_round"]["error"])},
                          open(out, "w"))
                sys.exit(1)
            if t_inst[i] is None and model.get("version", 0) >= 1:
                t_inst[i] = t
        if t_start is not None and all(t_inst):
            json.dump({"install_ms": [(x - t_start) * 1000 for x in t_inst]}, open(out, "w"))
            sys.exit(0)
        time.sleep(0.1)
    def brief(s):
        if s is None:
            return None
        return {"id": s["id"], "model": s.get("model"),
                "training": (s.get("mesh") or {}).get("training")}
    json.dump({"error": "no round installed everywhere within %.0f s (round start %s)"
               % (bound, "seen" if t_start else "not seen"),
               "last": [brief(s) for s in last]}, open(out, "w"))
    sys.exit(1)
EOF

# poll MODE BOUND OUT ARG...: runs poll.py; dies with its complaint.
poll() {
    python3 "$dir/poll.py" "$@" 2> "$dir/poll.err" || die "$1: $(cat "$dir/poll.err")"
}

# config RUN MODE: one measurement; appends a JSON result line to results.
config() {
    local r=$1 mode=$2 n i L=1 T=1 leader ports=()
    run_dir=$dir/run$r-$mode
    mkdir -p "$run_dir"
    case $mode in
    standalone) n=1; start 1 standalone ;;
    mesh-1) n=1; start 1 mesh ;;
    mesh-3) n=3; start 1 mesh
        start 2 mesh --join "127.0.0.1:${pport[1]}"
        start 3 mesh --join "127.0.0.1:${pport[1]}" ;;
    esac
    for i in $(seq 1 "$n"); do ports+=("${http[$i]}"); done
    if [ "$mode" != standalone ]; then
        leader=$(poll formed "$START_BOUND_S" - "${ports[@]}")
        L=${leader#f}
        # The traffic goes to a follower when there is one.
        for T in $(seq 1 "$n"); do [ "$n" = 1 ] || [ "$T" != "$L" ] && break; done
    fi
    sim "${http[$T]}" "$SIM_START" "$part1_s"
    poll held "$WINDOWS_BOUND_S" - $((windows - HOLD)) "${ports[@]}"
    poll snap 10 "$run_dir/before.json" "${ports[@]}"
    cpu_ticks $(seq 1 "$n") > "$run_dir/before.cpu"
    local pids=${pid[1]}
    for i in $(seq 2 "$n"); do pids+=,${pid[i]}; done
    python3 "$dir/poll.py" round "$round_timeout" "$run_dir/round.json" $((L - 1)) "$pids" \
        "${ports[@]}" 2> "$dir/poll.err" &
    poller=$!
    sim "${http[$T]}" $((SIM_START + part1_s)) "$part2_s"
    wait "$poller" || { poller=; die "$mode run $r: $(python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" "$run_dir/round.json" 2>/dev/null || cat "$dir/poll.err")"; }
    poller=
    sleep 0.5 # the last acknowledgements
    poll snap 10 "$run_dir/after.json" "${ports[@]}"
    cpu_ticks $(seq 1 "$n") > "$run_dir/after.cpu"
    python3 - "$run_dir" "$r" "$mode" "$L" "$T" "$hz" >> "$dir/results" << 'EOF' || die "$mode run $r: the figures"
import json, sys
d, r, mode, L, T = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
hz = float(sys.argv[6])
before = json.load(open(d + "/before.json"))
after = json.load(open(d + "/after.json"))
inst = json.load(open(d + "/round.json"))["install_ms"]
st = [x["status"] for x in after]
lead = st[L - 1]
res = {"run": r, "mode": mode, "install_ms": max(inst),
       "windows": lead["model"]["last_round"]["windows"] if lead["model"]["last_round"] else None,
       "model_seconds": [s["model"]["last_round"]["seconds"] if s["model"]["last_round"] else None
                         for s in st]}
if mode == "standalone":
    res["round_ms"] = lead["model"]["last_round"]["seconds"] * 1000
else:
    tr = [s["mesh"]["training"] for s in st]
    tb = [x["status"]["mesh"]["training"] for x in before]
    res["round_ms"] = tr[L - 1]["last_round_ms"]
    res["leader"], res["traffic"] = "f%d" % L, "f%d" % T
    res["shards"] = {s["id"]: t["shards_trained"] for s, t in zip(st, tr)}
    res["counters"] = {s["id"]: t for s, t in zip(st, tr)}
    res["model_version"] = [s["mesh"]["model_version"] for s in st]
    wsent_b = sum(t["windows_sent"] for t in tb)
    bytes_b = sum(t["bytes_sent"] for t in tb)
    per_w = bytes_b / wsent_b if wsent_b else 0.0
    wsent_a = sum(t["windows_sent"] for t in tr)
    bytes_a = sum(t["bytes_sent"] for t in tr)
    res["windows_sent"] = wsent_a
    res["window_bytes"] = wsent_a * per_w
    res["per_window"] = per_w
    res["train_bytes"] = bytes_a - bytes_b - (wsent_a - wsent_b) * per_w
    res["raft_bytes"] = (sum(x["raft_bytes"] for x in after) -
                         sum(x["raft_bytes"] for x in before)) / 2
    res["messages"] = (sum(x["messages_sent"] for x in after) -
                       sum(x["messages_sent"] for x in before))
    bad = [(s["id"], k, t[k]) for s, t in zip(st, tr)
           for k in ("install_failures", "windows_caught_up", "shards_reassigned")
           if t[k]]
    bad += [(s["id"], "rounds_committed", t["rounds_committed"]) for s, t in zip(st, tr)
            if s["id"] == lead["id"] and t["rounds_committed"] != 1]
    bad += [(s["id"], "installs", t["installs"]) for s, t in zip(st, tr) if t["installs"] != 1]
    res["unusual"] = bad
# The training itself, as the peers log it (seconds of CPU-bound work).
import glob, re
secs = {}
for f in sorted(glob.glob(d + "/p?.log")):
    for line in open(f, errors="replace"):
        m = re.search(r'msg="(shards trained|model trained)".* seconds=([0-9.]+)', line)
        if m:
            secs["f" + f[-5]] = float(m.group(2))
res["train_s"] = secs
# CPU the peers used from the first reading to the second (the second
# part's ingest and replication, the round, the installs).
cb = [int(x) for x in open(d + "/before.cpu").read().split()]
ca = [int(x) for x in open(d + "/after.cpu").read().split()]
res["cpu_s"] = [(a - b) / hz for a, b in zip(ca, cb)]
print(json.dumps(res))
EOF
    stop_peers
    [ "$keep" = 1 ] || rm -rf "$run_dir"/d?
    python3 - "$dir/results" << 'EOF'
import json, sys
x = json.loads(open(sys.argv[1]).read().splitlines()[-1])
line = "%3d %-10s %9.0f %9.0f %7s" % (x["run"], x["mode"], x["round_ms"], x["install_ms"],
                                     x["windows"])
if x["mode"] == "mesh-3":
    line += "  %-6s %-6s %-14s %10.0f %10.0f %10.0f" % (
        x["leader"], x["traffic"], "/".join(str(x["shards"][k]) for k in sorted(x["shards"])),
        x["train_bytes"], x["window_bytes"], x["raft_bytes"])
print(line)
print("    training as logged (s): %s;  peers' CPU (s): %s" % (
    " ".join("%s %.2f" % kv for kv in sorted(x["train_s"].items())),
    " ".join("f%d %.2f" % (i + 1, c) for i, c in enumerate(x["cpu_s"]))))
if x.get("unusual"):
    print("    unusual counters: %s" % x["unusual"])
EOF
}

cores=$(nproc 2>/dev/null || echo '?')
echo "mesh_train: social topology (28 services), $windows windows of 30 s, $runs runs; $cores cores; $bin"
echo "mesh_train: load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
echo "mesh_train: training threads: a worker per online core in every peer (no thread flag in 'sagemesh peer')"
if [ "$cores" != '?' ] && [ "$cores" -lt 3 ]; then
    echo "mesh_train: NOTE: $cores cores: three peers training in parallel share $cores cores, so mesh-3 cannot show a 3x speedup here"
fi
printf '%3s %-10s %9s %9s %7s  %-6s %-6s %-14s %10s %10s %10s\n' run config "round ms" "inst ms" windows \
    leader sent "shards f1/2/3" "train B" "windows B" "raft B"
: > "$dir/results"
for r in $(seq 1 "$runs"); do
    for mode in standalone mesh-1 mesh-3; do
        config "$r" "$mode"
    done
done

python3 - "$dir/results" "$cores" << 'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = lambda m: [x for x in rows if x["mode"] == m]
med = lambda v: statistics.median(v) if v else float("nan")
print()
print("medians over %d runs:" % len(by("standalone")))
for m in ("standalone", "mesh-1", "mesh-3"):
    xs = by(m)
    what = {"standalone": "model.last_round.seconds",
            "mesh-1": "leader's last_round_ms", "mesh-3": "leader's last_round_ms"}[m]
    print("  %-10s round %8.0f ms (%s)   installed %8.0f ms after the round start%s" % (
        m, med([x["round_ms"] for x in xs]), what, med([x["install_ms"] for x in xs]),
        " (all three)" if m == "mesh-3" else ""))
m3 = by("mesh-3")
ids = sorted(m3[0]["shards"])
print("  mesh-3 shards trained per peer: %s (the leader: %s)" % (
    ", ".join("%s %g" % (k, med([x["shards"][k] for x in m3])) for k in ids),
    ", ".join(x["leader"] for x in m3)))
print("  mesh-3 bytes on the wire (sum over the peers of training.bytes_sent):")
print("    the round's TRAIN messages (START, SHARD, MODEL, acks)  %12.0f B" % med([x["train_bytes"] for x in m3]))
print("    window replication (%d windows sent x %.0f B)          %12.0f B" % (
    med([x["windows_sent"] for x in m3]), med([x["per_window"] for x in m3]),
    med([x["window_bytes"] for x in m3])))
print("    raft over the link during the round (/metrics)          %12.0f B" % med([x["raft_bytes"] for x in m3]))
print("    envelopes sent during the round (/metrics)              %12.0f" % med([x["messages"] for x in m3]))
runs = sorted({x["run"] for x in rows})
def ratio(a, b):
    out = []
    for r in runs:
        x = [y for y in rows if y["run"] == r and y["mode"] == a]
        z = [y for y in rows if y["run"] == r and y["mode"] == b]
        if x and z and z[0]["round_ms"]:
            out.append(x[0]["round_ms"] / z[0]["round_ms"])
    return out
for a, b in (("mesh-3", "mesh-1"), ("mesh-3", "standalone"), ("mesh-1", "standalone")):
    v = ratio(a, b)
    print("  ratio %s/%s round time, same run: median %.2f  (runs: %s)" % (
        a, b, med(v), " ".join("%.2f" % x for x in v)))
m1, sa = by("mesh-1"), by("standalone")
print("  training as logged, median (s): standalone %.2f, mesh-1 %.2f, mesh-3 slowest peer %.2f" % (
    med([x["train_s"].get("f1", 0) for x in sa]), med([x["train_s"].get("f1", 0) for x in m1]),
    med([max(x["train_s"].values() or [0]) for x in m3])))
print("  peers' CPU from before the round to the installs, median (s, all peers): standalone %.2f, mesh-1 %.2f, mesh-3 %.2f" % (
    med([sum(x["cpu_s"]) for x in sa]), med([sum(x["cpu_s"]) for x in m1]),
    med([sum(x["cpu_s"]) for x in m3])))
if int(sys.argv[2] if sys.argv[2].isdigit() else 0) < 3:
    print("  note: %s cores: the three peers of mesh-3 train at once on them; a ratio near 1 or above is" % sys.argv[2])
    print("  what this host allows, not the speedup three machines would give")
EOF
echo "mesh_train: load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
