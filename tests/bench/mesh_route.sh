#!/usr/bin/env bash
# Telemetry sent per host (--ingest routed) over three peers on 127.0.0.1,
# against one peer sent everything (a benchmark, not a test).
#
# Each run, on fresh peers: a lone peer (a mesh of itself, --ingest local)
# gets 40 min of the simulator's social application (80 windows), then a
# flush; then three peers with --ingest routed (p1 bootstraps, p2 and p3
# join) get the same traffic per host (`sim --peer` three times), then a
# flush on p2. Measured: the sim's wall time on each (ingest ms) and their
# ratio; from the flush returning to the leader's merge.windows_merged
# reaching 80 (merge delay: the last parts crossing to the leader and the
# merge; polled every 10 ms, a poll takes a few ms more); from GET
# /v1/status of the three peers, the spans each routed out (and the share
# of the spans the three received that crossed to another peer), routing
# bytes per span routed, merge bytes in at the leader per window (the
# other two peers' parts and flushes), windows complete and timed out,
# parts late; and whether the leader's window log is byte-identical to the
# lone peer's. Prints every run, then medians and
# the median of the per-run ratios.
#
# Usage: tests/bench/mesh_route.sh [--bin PATH] [--runs N] [--keep]
# Defaults: build/sagemesh, 3 runs. Needs bash and python3.
# Exit status: 0 when every run was measured, 1 when a step failed, 2
# usage. Every wait is bounded; the peers are killed (by pid) and the
# temporary directory removed on exit (unless --keep).
set -u

bin=build/sagemesh
runs=3
keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --bin) bin=${2:?}; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '21,22p' "${BASH_SOURCE[0]}" | sed 's/^# //'; exit 0 ;;
    *) echo "mesh_route.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "mesh_route.sh: no binary at $bin" >&2; exit 2; }
case $runs in
'' | *[!0-9]* | 0) echo "mesh_route.sh: --runs wants a positive number" >&2; exit 2 ;;
esac

duration=2400 # 40 min of event time
windows=80    # of 30 s
dir=$(mktemp -d /tmp/sagemesh-bench-route-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/mesh_lib.sh"
trap cleanup EXIT
fail() { echo "mesh_route.sh: $*" >&2; exit 1; }

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
export SAGEMESH_SECRET_FILE=$dir/secret

# merged NAME: the leader NAME's merge.windows_merged (no python: cheap to poll).
merged() {
    "$bin" status --peer "127.0.0.1:${http[$1]}" -o json 2> /dev/null |
        sed -n 's/.*"windows_merged":\([0-9]*\).*/\1/p'
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
wlog() { cat "$dir/$1"/windows/*.log | sha256sum | cut -d' ' -f1; }

# sim_to NAME...: the traffic, each host's to one of NAMEs; prints its wall ms.
sim_to() {
    local peers=() p t0
    for p in "$@"; do peers+=(--peer "127.0.0.1:${http[$p]}"); done
    t0=$(now_ms)
    "$bin" sim --topology social --duration "$duration" --sampling 0.1 --faults none \
        "${peers[@]}" --timeout 30 > /dev/null || fail "sim to $*"
    echo $(($(now_ms) - t0))
}

echo "run  lone ms  routed ms  ratio  merge delay ms  spans out p1/p2/p3 (share)  B/span routed  merge KiB in/window  complete  timed out  late  identical"
: > "$dir/results"
for r in $(seq 1 "$runs"); do
    # ---- One peer, sent everything.
    start "r$r" lone
    wait_for 10 lone "s['role']" leader
    lone=$(sim_to lone) || exit 1
    "$bin" flush --peer "127.0.0.1:${http[lone]}" > /dev/null || fail "flush (lone)"
    wait_for 60 lone "s['model']['windows'] >= $windows" True
    lone_log=$(wlog "r$r-lone")
    stop_all

    # ---- Three peers, each host's telemetry to its own peer.
    start "r$r" p1 --election-timeout 500 --ingest routed
    wait_for 10 p1 "s['role']" leader
    start "r$r" p2 --election-timeout 500 --ingest routed --join "127.0.0.1:${mesh[p1]}"
    start "r$r" p3 --election-timeout 500 --ingest routed --join "127.0.0.1:${mesh[p1]}"
    wait_for 20 p1 "sorted(m['role'] for m in s['mesh']['members'])" "['voter', 'voter', 'voter']"
    for p in p1 p2 p3; do
        wait_for 10 "$p" "sorted(s['routing']['peers'])" "['p1', 'p2', 'p3']"
    done
    leader=$(field p1 "s['leader']")
    case $leader in p1 | p2 | p3) ;; *) fail "no leader named by p1 ('$leader')" ;; esac
    routed=$(sim_to p1 p2 p3) || exit 1
    "$bin" flush --peer "127.0.0.1:${http[p2]}" > /dev/null || fail "flush (routed)"
    t0=$(now_ms)
    delay=
    for _ in $(seq 1 3000); do # 30 s at most
        got=$(merged "$leader")
        if [ "${got:-0}" -ge "$windows" ]; then
            delay=$(($(now_ms) - t0))
            break
        fi
        sleep 0.01
    done
    [ -n "$delay" ] || fail "$leader merged ${got:-no} windows of $windows in 30 s"
    sleep 1 # late parts, if any, are counted
    for p in p1 p2 p3; do
        "$bin" status --peer "127.0.0.1:${http[$p]}" -o json > "$dir/status-$p.json" 2> /dev/null ||
            fail "status of $p"
    done
    [ "$(wlog "r$r-$leader")" = "$lone_log" ] && same=yes || same=no
    stop_all

    line=$(python3 - "$dir" "$leader" << 'EOF'
import json, sys
s = {p: json.load(open(f"{sys.argv[1]}/status-{p}.json")) for p in ("p1", "p2", "p3")}
rt = {p: x["routing"] for p, x in s.items()}
m = s[sys.argv[2]]["merge"]
out = sum(x["spans_out"] for x in rt.values())
got = sum(x["spans_out"] + x["spans_local"] + x["spans_kept"] for x in rt.values())
print("%d %d %d %.3f %.1f %.2f %d %d %d" % (
    rt["p1"]["spans_out"], rt["p2"]["spans_out"], rt["p3"]["spans_out"], out / max(1, got),
    sum(x["bytes_out"] for x in rt.values()) / max(1, out),
    m["bytes_in"] / 1024 / max(1, m["windows_merged"]),
    m["windows_complete"], m["windows_timed_out"], m["parts_late"]))
EOF
    ) || fail "the status figures"
    echo "$r $lone $routed $delay $line $same" >> "$dir/results"
    read -r o1 o2 o3 share bps kin comp tmo late <<< "$line"
    printf "%-4s %-8s %-10s %-6s %-15s %-27s %-14s %-20s %-9s %-10s %-5s %s\n" "$r" "$lone" "$routed" \
        "$(python3 -c "print('%.2f' % ($routed / $lone))")" "$delay" "$o1/$o2/$o3 ($share)" \
        "$bps" "$kin" "$comp" "$tmo" "$late" "$same"
done
python3 - "$dir/results" << 'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(i):
    return statistics.median(float(r[i]) for r in rows)
print("median: lone %.0f ms, routed %.0f ms (x%.2f routed/lone, median of the runs' ratios); "
      "merge delay %.0f ms; spans routed out %.0f/%.0f/%.0f (p1/p2/p3, %.1f%% of those received); "
      "%.1f B per span routed; %.1f KiB merge bytes in at the leader per window; "
      "%.0f windows complete, %.0f timed out, %.0f parts late; identical logs in %d of %d runs"
      % (med(1), med(2), statistics.median(float(r[2]) / float(r[1]) for r in rows), med(3),
         med(4), med(5), med(6), 100 * med(7), med(8), med(9), med(10), med(11), med(12),
         sum(r[13] == "yes" for r in rows), len(rows)))
EOF
