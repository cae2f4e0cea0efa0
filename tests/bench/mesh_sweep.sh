#!/usr/bin/env bash
# Diagnosis (counterfactual sweep) time with the passes spread over three
# peers on 127.0.0.1, against one peer (a benchmark, not a test).
#
# Each run, twice: a mesh of one peer, then a mesh of three (traffic to a
# follower, whose shards' passes go to the owners). Both get 40 min of the
# simulator's social application, `sagemesh train --wait`, then 11 min with
# a CPU fault on compose-post; the diagnosing peer's
# diagnoses.compute_ms_mean (the sweep itself, on its compute thread) and,
# with three peers, its sweeps figures per diagnosis (round trips,
# requests, bytes both ways, timeouts, fallbacks) are read from
# GET /v1/status. Prints every run, then medians and the ratio.
#
# Usage: tests/bench/mesh_sweep.sh [--bin PATH] [--runs N] [--keep]
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
    -h | --help) sed -n '14,15p' "${BASH_SOURCE[0]}" | sed 's/^# //'; exit 0 ;;
    *) echo "mesh_sweep.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "mesh_sweep.sh: no binary at $bin" >&2; exit 2; }

dir=$(mktemp -d /tmp/sagemesh-bench-sweep-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/mesh_lib.sh"
trap cleanup EXIT
fail() { echo "mesh_sweep.sh: $*" >&2; exit 1; }

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
export SAGEMESH_SECRET_FILE=$dir/secret

# traffic NAME: normal traffic, a round, the fault; waits for the diagnoses.
traffic() {
    local to=127.0.0.1:${http[$1]}
    "$bin" sim --topology social --duration 2400 --sampling 0.1 --faults none \
        --peer "$to" --timeout 30 > /dev/null || fail "sim"
    "$bin" flush --peer "$to" > /dev/null || fail "flush"
    "$bin" train --wait --timeout 600 --peer "$to" > /dev/null || fail "train"
    echo "at=240 for=300 kind=cpu service=compose-post magnitude=1.5" > "$dir/faults"
    "$bin" sim --topology social --duration 660 --sampling 0.1 --start 1700030400 \
        --faults "$dir/faults" --peer "$to" --timeout 30 > /dev/null || fail "sim (fault)"
    "$bin" flush --peer "$to" > /dev/null || fail "flush"
    wait_for 300 "$1" "s['diagnoses']['pending']" 0
}

echo "run  one-peer ms  three-peer ms  ratio  diagnoses  round trips  requests  KiB out  KiB in  timeouts  fallbacks (per diagnosis)"
: > "$dir/results"
for r in $(seq 1 "$runs"); do
    start "r$r" solo
    wait_for 10 solo "s['role']" leader
    traffic solo
    one=$(field solo "s['diagnoses']['compute_ms_mean']")
    stop_all

    start "r$r" p1
    wait_for 10 p1 "s['role']" leader
    start "r$r" p2 --join "127.0.0.1:${mesh[p1]}"
    start "r$r" p3 --join "127.0.0.1:${mesh[p1]}"
    wait_for 20 p1 "sorted(m['role'] for m in s['mesh']['members'])" "['voter', 'voter', 'voter']"
    traffic p2
    line=$(field p2 "'%.3f %d %.1f %.1f %.2f %.2f %.3f %.3f' % (s['diagnoses']['compute_ms_mean'], s['sweeps']['diagnoses'], s['sweeps']['levels'] / max(1, s['sweeps']['diagnoses']), s['sweeps']['requests'] / max(1, s['sweeps']['diagnoses']), s['sweeps']['bytes_out'] / 1024 / max(1, s['sweeps']['diagnoses']), s['sweeps']['bytes_in'] / 1024 / max(1, s['sweeps']['diagnoses']), s['sweeps']['timeouts'] / max(1, s['sweeps']['diagnoses']), s['sweeps']['fallbacks'] / max(1, s['sweeps']['diagnoses']))")
    [ -n "$line" ] || fail "no sweep figures from p2"
    stop_all
    echo "$r $one $line" >> "$dir/results"
    read -r three diag trips reqs kout kin tmo fb <<< "$line"
    printf "%-4s %-12s %-14s %-6s %-10s %-12s %-9s %-8s %-7s %-9s %s\n" "$r" "$one" "$three" \
        "$(python3 -c "print('%.2f' % ($three / $one))")" "$diag" "$trips" "$reqs" "$kout" "$kin" "$tmo" "$fb"
done
python3 - "$dir/results" << 'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
one = statistics.median(r[1] for r in rows)
three = statistics.median(r[2] for r in rows)
print("median: one peer %.2f ms, three peers %.2f ms (x%.2f); per diagnosis %.1f round trips, %.1f requests, %.1f KiB out, %.1f KiB in"
      % (one, three, three / one, statistics.median(r[4] for r in rows), statistics.median(r[5] for r in rows),
         statistics.median(r[6] for r in rows), statistics.median(r[7] for r in rows)))
EOF
