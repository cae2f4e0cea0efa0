#!/usr/bin/env bash
# Actuation end to end on a real cgroup: a CPU-bound service (cpu_service)
# runs in its own cgroup and sends its spans and CPU metrics to a peer; once
# the peer has trained on unthrottled traffic, the test caps the cgroup's
# CPU quota hard so the service's p99 blows past the QoS target. The peer
# must diagnose the service with resource cpu, raise the cgroup's quota
# itself (`--actuate on`), and the service's p99, as the service measures
# it, must come back under the target. Needs root and a writable cgroup cpu
# controller (v1 /sys/fs/cgroup/cpu or v2 /sys/fs/cgroup); skipped
# otherwise. Bounded: every wait has a deadline; every process started is
# killed and every cgroup created is removed on exit.
set -u
bin=$1 service_bin=$2
name=svc-e2e
rate=20 work_us=5000 # 10% of a core
pids=()
n=0

skip_all() {
    echo "1..0 # SKIP $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip_all "needs root to create cgroups"

# The layout, as the peer's agent detects it: v2 when /sys/fs/cgroup is the
# unified tree, else v1 with a cpu hierarchy (a hybrid host's
# /sys/fs/cgroup/unified has no cpu controller while v1 holds it).
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    layout=v2 hierarchy=/sys/fs/cgroup
    grep -qw cpu "$hierarchy/cgroup.controllers" ||
        skip_all "cgroup v2 without the cpu controller"
elif [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    layout=v1 hierarchy=/sys/fs/cgroup/cpu
else
    skip_all "no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2)"
fi
[ -w "$hierarchy" ] || skip_all "$hierarchy is not writable"

top=$hierarchy/sagemesh-e2e-$$
cg=$top/$name
dir=$(mktemp -d /tmp/sagemesh-slow-actuate-XXXXXX)
made=() # cgroups created, parents first

# remove_cgroup DIR: moves what still runs in DIR to the hierarchy's root,
# then removes DIR (a killed task can take a moment to leave).
remove_cgroup() {
    local p
    for _ in $(seq 1 50); do
        for p in $(cat "$1/cgroup.procs" 2>/dev/null); do
            echo "$p" > "$hierarchy/cgroup.procs" 2>/dev/null
        done
        rmdir "$1" 2>/dev/null && return 0
        [ -d "$1" ] || return 0
        sleep 0.1
    done
    echo "# could not remove $1" >&2
}
cleanup() {
    kill_started
    local i
    for ((i = ${#made[@]} - 1; i >= 0; i--)); do
        remove_cgroup "${made[i]}"
    done
    rm -rf "$dir"
}
trap cleanup EXIT
# meson stops a test past its timeout with SIGTERM: clean up then too.
trap "exit 1" TERM INT
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() {
    echo "not ok $((n + 1)) - $*"
    echo "# service report (unix_s p99_ms count), last lines:"
    tail -8 "$dir/report" 2>/dev/null | sed "s/^/#   /"
    tail -5 "$dir/service.err" 2>/dev/null | sed "s/^/# service: /"
    tail -15 "$dir/peer.log" 2>/dev/null | sed "s/^/# /"
    exit 1
}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir "$top" 2>/dev/null || skip_all "mkdir $top failed"
made+=("$top")
if [ $layout = v2 ]; then
    # The leaf gets the cpu controller only when every ancestor passes it
    # down; a namespaced root with processes refuses (EBUSY).
    echo +cpu > "$hierarchy/cgroup.subtree_control" 2>/dev/null &&
        echo +cpu > "$top/cgroup.subtree_control" 2>/dev/null ||
        skip_all "cannot enable the cpu controller below $hierarchy"
fi
mkdir "$cg" 2>/dev/null || skip_all "mkdir $cg failed"
made+=("$cg")
echo "1..10"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# set_quota CORES: the cgroup's CPU quota, over a 100 ms period.
set_quota() {
    local us
    us=$(awk -v c="$1" 'BEGIN { printf "%d", c * 100000 }')
    if [ $layout = v1 ]; then
        echo 100000 > "$cg/cpu.cfs_period_us" &&
            echo "$us" > "$cg/cpu.cfs_quota_us"
    else
        echo "$us 100000" > "$cg/cpu.max"
    fi
}
# quota_cores: the cgroup's quota in cores, "max" when unlimited.
quota_cores() {
    local q p
    if [ $layout = v1 ]; then
        q=$(cat "$cg/cpu.cfs_quota_us") p=$(cat "$cg/cpu.cfs_period_us")
    else
        read -r q p < "$cg/cpu.max"
    fi
    case $q in
        -1 | max) echo max ;;
        *) awk -v q="$q" -v p="$p" 'BEGIN { printf "%.3f", q / p }' ;;
    esac
}

# start_service ARGS...: cpu_service inside the cgroup from its first
# instruction (the shell joins the cgroup, then execs it); its pid in $spid.
start_service() {
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
        "$service_bin" --name "$name" --rate $rate --work-us $work_us \
        --report "$dir/report" "$@" 2>> "$dir/service.err" &
    spid=$!
    pids+=("$spid")
}
# forget_service: the service was reaped; its pid may be reused by now, so
# the cleanup must not kill it.
forget_service() {
    local p keep=()
    for p in "${pids[@]}"; do
        [ "$p" = "$spid" ] || keep+=("$p")
    done
    pids=("${keep[@]}")
}
# report_lines FROM: the report's lines written at unix second FROM or later
# that count requests.
report_lines() {
    awk -v t="$1" '$1 >= t && $3 > 0' "$dir/report"
}
# Every wait is bounded twice: in polls and in seconds ($SECONDS), as a
# poll may run the CLI besides its 0.2 s sleep.
# wait_report_lines FROM K SECONDS: waits until K such lines exist.
wait_report_lines() {
    local deadline=$((SECONDS + $3))
    for _ in $(seq 1 $(($3 * 5))); do
        [ $SECONDS -lt $deadline ] || break
        [ "$(report_lines "$1" | wc -l)" -ge "$2" ] && return 0
        kill -0 "$spid" 2>/dev/null || fail "cpu_service exited"
        sleep 0.2
    done
    return 1
}
# max_p99 FROM: the largest per-second p99 since FROM, in ms.
max_p99() {
    report_lines "$1" | awk '$2 > m { m = $2 } END { printf "%.1f", m }'
}

# 1. Unthrottled latency, measured without a peer (6 s, the first second
# dropped), sets the QoS target: a few times it, at least 30 ms.
: > "$dir/report"
start_service --duration 6
t=$(date +%s)
wait_report_lines $((t + 1)) 4 15 || fail "no latency reported in 15 s"
grep -qx "$spid" "$cg/cgroup.procs" || fail "cpu_service is not in $cg"
kill -TERM "$spid"
wait "$spid"
forget_service
base_p99=$(max_p99 $((t + 1)))
target=$(awk -v p="$base_p99" 'BEGIN { t = 4 * p; printf "%d", t < 30 ? 30 : t }')
ok "unthrottled p99 ${base_p99} ms in $cg ($layout); QoS target $target ms"

# 2. The peer, with small windows and actuation on: it finds the
# service's cgroup from the path template, acts at most every 5 s of event
# time and judges an action within 3 windows.
"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
act_flags=(--actuate on --cgroup-root "${hierarchy%/cpu}"
    --cgroup-path "sagemesh-e2e-$$/{service}" --actuate-interval 5
    --actuate-verify-windows 3)
"$bin" peer --id slow-actuate --listen-http 127.0.0.1:0 --listen-peer 127.0.0.1:0 \
    --data-dir "$dir/data" --log-file "$dir/peer.log" \
    --secret-file "$dir/secret" --qos-service "$name" \
    --qos-target-ms "$target" --window 2 --lateness 1 --train-after 15 \
    --retrain-every 0 "${act_flags[@]}" &
peer_pid=$!
pids+=("$peer_pid")
wait_port "$dir/peer.log" "$peer_pid" "$peer_port_sed" "the peer"
export SAGEMESH_PEER=127.0.0.1:$found_port
ok "peer on $SAGEMESH_PEER (${act_flags[*]})"

# status_field EXPR: evaluates a Python expression on /v1/status as `s`.
status_field() {
    "$bin" status -o json > "$dir/status.json" 2>/dev/null || return 1
    python3 -c "import json; s=json.load(open('$dir/status.json')); print($1)"
}

# 3. Unthrottled traffic until the first model (15 windows of 2 s, then
# training; 90 s at most).
: > "$dir/report"
start_service --peer "$SAGEMESH_PEER" --duration 280
t0=$(now)
version=0
deadline=$((SECONDS + 90))
for _ in $(seq 1 450); do
    [ $SECONDS -lt $deadline ] || break
    version=$(status_field "s['model']['version']" 2>/dev/null) || version=0
    [ "${version:-0}" -ge 1 ] 2>/dev/null && break
    kill -0 "$spid" 2>/dev/null || fail "cpu_service exited"
    kill -0 "$peer_pid" 2>/dev/null || fail "the peer exited"
    sleep 0.2
done
[ "${version:-0}" -ge 1 ] 2>/dev/null ||
    fail "no model after $(since "$t0") s: $(status_field "s['model']")"
grep -qx "$spid" "$cg/cgroup.procs" || fail "cpu_service is not in $cg"
windows=$(status_field "s['model']['windows']")
ok "model version $version trained on $windows windows in $(since "$t0") s"

# 4. A hard cap: a tenth of the CPU the service needs.
cap=$(awk -v r=$rate -v w=$work_us 'BEGIN { printf "%.3f", r * w / 1e6 / 10 }')
set_quota "$cap" || fail "could not set the quota to $cap cores"
t_cap=$(now)
from=$(($(date +%s) + 2))
wait_report_lines $from 3 10 || fail "no latency reported in 10 s under the cap"
deadline=$((SECONDS + 10))
for _ in $(seq 1 50); do
    [ $SECONDS -lt $deadline ] || break
    capped_p99=$(max_p99 $from)
    awk -v p="$capped_p99" -v t="$target" 'BEGIN { exit !(p > 2 * t) }' && break
    sleep 0.2
done
awk -v p="$capped_p99" -v t="$target" 'BEGIN { exit !(p > 2 * t) }' ||
    fail "p99 ${capped_p99} ms under a quota of $cap cores, target $target ms"
ok "capped at $cap cores: p99 ${capped_p99} ms > 2 x target"

# 5. The peer names the service and cpu (60 s at most).
diagnosed=0
deadline=$((SECONDS + 60))
for _ in $(seq 1 300); do
    [ $SECONDS -lt $deadline ] || break
    if "$bin" diagnoses --limit 20 -o json > "$dir/diag.json" 2>/dev/null &&
        python3 - "$dir/diag.json" "$name" <<'EOF'; then
import json, sys
d = json.load(open(sys.argv[1]))["diagnoses"]
right = [x for x in d if x["violated"] and x["culprits"]
         and x["culprits"][0]["service"] == sys.argv[2]
         and x["culprits"][0]["resource"] == "cpu"]
for x in right[-1:]:  # the oldest shown (the list is newest first)
    c = x["culprits"][0]
    print("# diagnosis %s: p99 %.0f ms (target %.0f), culprit %s/%s "
          "p_qos_met %.2f, of %d diagnoses" % (
              x["id"], x["latency_ms"], x["target_ms"], c["service"],
              c["resource"], c["p_qos_met"], len(d)))
sys.exit(not right)
EOF
        diagnosed=1
        break
    fi
    kill -0 "$peer_pid" 2>/dev/null || fail "the peer exited"
    sleep 0.2
done
t_diag=$(since "$t_cap")
[ $diagnosed = 1 ] || fail "no diagnosis naming $name / cpu in 60 s: $(
    python3 -c "import json,sys; d=json.load(open('$dir/diag.json'))['diagnoses'];
print([(x['latency_ms'], x['culprits']) for x in d[:3]])" 2>&1)"
ok "diagnosed $name / cpu ${t_diag} s after the cap"

# 6. The peer applied a CPU quota action to the service (30 s at most).
applied=
deadline=$((SECONDS + 30))
for _ in $(seq 1 150); do
    [ $SECONDS -lt $deadline ] || break
    if "$bin" actions list -o json > "$dir/actions.json" 2>/dev/null; then
        applied=$(python3 - "$dir/actions.json" "$name" <<'EOF'
import json, sys
for a in json.load(open(sys.argv[1]))["actions"]:
    if (a["service"] == sys.argv[2] and a["kind"] == "cpu_quota"
            and a["state"] in ("applied", "verified")):
        print(a["id"], a["from"], a["to"], a["state"])
        break
EOF
        )
        [ -n "$applied" ] && break
    fi
    kill -0 "$peer_pid" 2>/dev/null || fail "the peer exited"
    sleep 0.2
done
t_act=$(since "$t_cap")
[ -n "$applied" ] ||
    fail "no applied cpu_quota action in 30 s: $(head -c 400 "$dir/actions.json")"
read -r act_id act_from act_to act_state <<< "$applied"
ok "action $act_id cpu_quota $act_from -> $act_to cores ($act_state) ${t_act} s after the cap"

# 7. The cgroup shows it.
quota=$(quota_cores)
awk -v q="$quota" -v c="$cap" -v to="$act_to" \
    'BEGIN { exit !(q == "max" || (q > c && q >= to - 0.01)) }' ||
    fail "quota $quota cores after the action to $act_to (cap $cap)"
ok "cgroup quota now $quota cores (was $cap)"

# 8. Latency recovers: 3 seconds in a row under the target (40 s at most).
from=$(date +%s)
recovered=
deadline=$((SECONDS + 40))
for _ in $(seq 1 200); do
    [ $SECONDS -lt $deadline ] || break
    recovered=$(report_lines "$from" | awk -v t="$target" \
        '$2 < t { k++; if ($2 > m) m = $2 } $2 >= t { k = 0; m = 0 }
         k >= 3 { printf "%.1f", m; exit }')
    [ -n "$recovered" ] && break
    kill -0 "$spid" 2>/dev/null || fail "cpu_service exited"
    sleep 0.2
done
[ -n "$recovered" ] || fail "p99 not under $target ms for 3 s within 40 s"
ok "p99 recovered to ${recovered} ms (< $target) $(since "$t_cap") s after the cap"
# 9. The controller saw QoS recover after its action: verified (20 s at
# most; it judges within --actuate-verify-windows windows).
state=
deadline=$((SECONDS + 20))
for _ in $(seq 1 100); do
    [ $SECONDS -lt $deadline ] || break
    state=$("$bin" actions list -o json 2>/dev/null | python3 -c "
import json, sys
print([a['state'] for a in json.load(sys.stdin)['actions']
       if a['id'] == sys.argv[1]][0])" "$act_id" 2>/dev/null)
    [ "$state" = verified ] && break
    case $state in not_helped | rolled_back | failed) break ;; esac
    sleep 0.2
done
[ "$state" = verified ] || fail "action $act_id is '$state', not verified"
ok "action $act_id verified $(since "$t_cap") s after the cap"

# 10. The service stops cleanly on SIGTERM, promptly.
kill -TERM "$spid"
for _ in $(seq 1 50); do
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$spid" 2>/dev/null && fail "cpu_service still running 5 s after SIGTERM"
wait "$spid"
rc=$?
forget_service
[ $rc = 0 ] || fail "cpu_service exit status $rc after SIGTERM"
ok "cpu_service: exit 0 on SIGTERM"
