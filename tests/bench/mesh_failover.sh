#!/usr/bin/env bash
# Leader failover time of the mesh on one host (a benchmark, not a test).
#
# Three `sagemesh peer` processes on 127.0.0.1 form a mesh (the first
# bootstraps, the other two --join it). Then, N times: find the leader,
# SIGKILL it, and measure the time until a surviving peer reports another
# leader in GET /v1/status (both survivors polled every 20 ms; the time
# until both agree is shown too); restart the killed peer on its data
# directory and peer port (no --join: it has raft state) and wait until it
# is back as a member (a follower of the new leader, caught up with the
# leader's log). Prints every kill's figures, then the median and max.
#
# Usage: tests/bench/mesh_failover.sh [--bin PATH] [--kills N]
#            [--election-timeout MS] [--keep]
# Defaults: build/sagemesh, 20 kills, the peer's default election timeout
# (500 ms). Needs bash and python3.
# Exit status: 0 when every kill was measured, 1 when a step failed (no new
# leader within 30 s, a peer that does not come back, a peer that exits),
# 2 usage. Every wait is bounded; the peers are killed (by pid) and the
# temporary directory removed on exit (unless --keep).
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

bin=build/sagemesh
kills=20
election=
keep=0

usage() {
    sed -n '20,21p' "${BASH_SOURCE[0]}" | sed 's/^# //'
    exit "$1"
}

while [ $# -gt 0 ]; do
    case $1 in
    --bin) bin=${2:?}; shift 2 ;;
    --kills) kills=${2:?}; shift 2 ;;
    --election-timeout) election=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "mesh_failover: unknown flag '$1'" >&2; usage 2 ;;
    esac
done
case $bin in /*) ;; *) bin=$repo/$bin ;; esac
[ -x "$bin" ] || { echo "mesh_failover: no executable at $bin" >&2; exit 2; }
case $kills in '' | *[!0-9]*) usage 2 ;; esac
case $election in *[!0-9]*) usage 2 ;; esac

readonly START_BOUND_S=30   # a mesh of 3 voters must form within this
readonly FAILOVER_BOUND_S=30
readonly REJOIN_BOUND_S=30

dir=$(mktemp -d /tmp/sagemesh-failover-XXXXXX)
declare -a pid http pport

cleanup() {
    local i
    for i in 1 2 3; do
        if [ -n "${pid[$i]:-}" ]; then
            kill -9 "${pid[$i]}" 2>/dev/null
            wait "${pid[$i]}" 2>/dev/null
        fi
    done
    if [ "$keep" = 1 ]; then
        echo "kept $dir"
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "mesh_failover: FAILED: $*" >&2
    local f
    for f in "$dir"/p?.log; do
        [ -s "$f" ] || continue
        echo "--- last lines of $f:" >&2
        tail -8 "$f" | cut -c1-300 >&2
    done
    exit 1
}

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || die "keygen"
flags=()
[ -n "$election" ] && flags+=(--election-timeout "$election")

# start I [PEER_PORT] [FLAG...]: starts peer fI; a previous log is kept
# as pI.log.K. Sets http[I] and pport[I] from its "peer started" line.
start() {
    local i=$1 port=${2:-0} log=$dir/p$1.log k=0 _ line=
    shift 2
    while [ -e "$log.$k" ]; do k=$((k + 1)); done
    [ -e "$log" ] && mv "$log" "$log.$k"
    "$bin" peer --id "f$i" --listen-http 127.0.0.1:0 \
        --listen-peer "127.0.0.1:$port" --data-dir "$dir/d$i" \
        --log-file "$log" --secret-file "$dir/secret" \
        --qos-service nginx-web --qos-target-ms 100 "${flags[@]}" "$@" \
        > /dev/null 2>&1 &
    pid[$i]=$!
    for _ in $(seq 1 200); do # 10 s
        line=$(grep 'msg="peer started"' "$log" 2>/dev/null | tail -1)
        [ -n "$line" ] && break
        kill -0 "${pid[$i]}" 2>/dev/null || die "f$i exited at start"
        sleep 0.05
    done
    [ -n "$line" ] || die "f$i did not start within 10 s"
    http[$i]=$(sed -n 's/.*http_port=\([0-9]*\).*/\1/p' <<< "$line")
    pport[$i]=$(sed -n 's/.*peer_port=\([0-9]*\).*/\1/p' <<< "$line")
}

# The polls, in one Python program (a process per poll would cost more
# than the 20 ms between polls).
cat > "$dir/poll.py" << 'EOF'
import json, os, signal, sys, time, urllib.request

def status(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/v1/status" % port, timeout=1) as r:
            return json.load(r)
    except Exception:
        return None

def now():
    return time.monotonic()

mode, bound = sys.argv[1], float(sys.argv[2])
end = now() + bound
if mode == "formed":  # formed PORT...: one leader, 3 voters, all agree
    ports = sys.argv[3:]
    while now() < end:
        st = [status(p) for p in ports]
        if all(st):
            leaders = {s.get("leader") for s in st}
            roles = sorted(s["role"] for s in st)
            voters = [all(m["role"] == "voter" for m in s["mesh"]["members"])
                      and len(s["mesh"]["members"]) == 3 for s in st]
            if len(leaders) == 1 and None not in leaders and all(voters) \
                    and roles == ["follower", "follower", "leader"]:
                print(leaders.pop())
                sys.exit(0)
        time.sleep(0.05)
    sys.exit("no mesh of 3 voters with one leader")
elif mode == "kill":  # kill PID KILLED_ID PORT...: SIGKILL, then time
    pid, killed, ports = int(sys.argv[3]), sys.argv[4], sys.argv[5:]
    t0 = now()
    os.kill(pid, signal.SIGKILL)
    end = t0 + bound
    first = None
    while now() < end:
        st = [status(p) for p in ports]
        seen = [s.get("leader") if s else None for s in st]
        new = [l for l in seen if l is not None and l != killed]
        t = now()
        if new and first is None:
            first = (t - t0, new[0])
        if len(new) == len(ports) and len(set(new)) == 1:
            print("%.0f %.0f %s" % (first[0] * 1000, (t - t0) * 1000, new[0]))
            sys.exit(0)
        time.sleep(0.02)
    sys.exit("no new leader (last seen: %s)" % seen)
elif mode == "rejoined":  # rejoined ID PORT LEADER_PORT: a caught-up follower
    who, port, lport = sys.argv[3], sys.argv[4], sys.argv[5]
    t0 = now()
    while now() < end:
        s, l = status(port), status(lport)
        if s and l and s["role"] == "follower" and s["leader"] == l["id"] \
                and l["role"] == "leader" \
                and any(m["id"] == who for m in l["mesh"]["members"]) \
                and s["mesh"]["last_applied"] >= l["mesh"]["last_index"]:
            print("%.0f" % ((now() - t0) * 1000))
            sys.exit(0)
        time.sleep(0.05)
    sys.exit("not back as a caught-up follower")
EOF

start 1 0
start 2 0 --join "127.0.0.1:${pport[1]}"
start 3 0 --join "127.0.0.1:${pport[1]}"
leader=$(python3 "$dir/poll.py" formed "$START_BOUND_S" "${http[1]}" "${http[2]}" "${http[3]}" 2> "$dir/poll.err") ||
    die "$(cat "$dir/poll.err")"
echo "mesh_failover: 3 peers, election timeout ${election:-1000 (default)} ms, $kills kills; leader $leader"
printf '%5s %-7s %-7s %10s %10s %10s\n' kill killed leader "new (ms)" "agree (ms)" "back (ms)"

: > "$dir/times"
for k in $(seq 1 "$kills"); do
    L=${leader#f}
    survivors=()
    for i in 1 2 3; do [ "$i" != "$L" ] && survivors+=("$i"); done
    out=$(python3 "$dir/poll.py" kill "$FAILOVER_BOUND_S" "${pid[$L]}" "$leader" \
        "${http[${survivors[0]}]}" "${http[${survivors[1]}]}" 2> "$dir/poll.err") ||
        die "kill $k of $leader: $(cat "$dir/poll.err")"
    wait "${pid[$L]}" 2>/dev/null
    pid[$L]=
    read -r first agree new <<< "$out"
    N=${new#f}
    start "$L" "${pport[$L]}"
    back=$(python3 "$dir/poll.py" rejoined "$REJOIN_BOUND_S" "f$L" "${http[$L]}" "${http[$N]}" 2> "$dir/poll.err") ||
        die "f$L after kill $k: $(cat "$dir/poll.err")"
    printf '%5d %-7s %-7s %10s %10s %10s\n' "$k" "$leader" "$new" "$first" "$agree" "$back"
    echo "$first $agree $back" >> "$dir/times"
    # The next leader: whoever all three agree on now.
    leader=$(python3 "$dir/poll.py" formed "$START_BOUND_S" "${http[1]}" "${http[2]}" "${http[3]}" 2> "$dir/poll.err") ||
        die "after kill $k: $(cat "$dir/poll.err")"
done

python3 - "$dir/times" << 'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
for i, name in enumerate(["a survivor reports a new leader", "both survivors agree",
                          "the killed peer back (from its restart)"]):
    col = [r[i] for r in rows]
    print("%-40s median %6.0f ms   max %6.0f ms   min %6.0f ms" %
          (name + ":", statistics.median(col), max(col), min(col)))
EOF
