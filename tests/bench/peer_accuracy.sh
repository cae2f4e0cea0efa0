#!/usr/bin/env bash
# End-to-end accuracy benchmark of the real product on one host.
#
# A `sagemesh peer` process on 127.0.0.1 is fed by the simulator over HTTP:
#   phase 1: fault-free traffic (2 h), flush, one explicit training round;
#   phase 2: D more hours with an automatic fault schedule (--clean 0), the
#            simulator posting to the peer and writing labels.json (the
#            ground truth: faults and the exact frontend p99 per window),
#            flush, then wait until every diagnosis is done;
# and then the peer's stored diagnoses are scored against labels.json with
# python3 (AC@1, AC@3, resource accuracy, false positives, load spikes, per
# case detection), with the peer's diagnosis latency, the training round's
# time and the wall time of each phase.
#
# Usage: tests/bench/peer_accuracy.sh [--topology social|chain|fanout]
#            [--seed N] [--duration D] [--bin PATH] [--keep] [--peer-flag F]
# --peer-flag "F..." adds flags to the peer's command line (repeatable,
# word-split), e.g. --peer-flag "--lateness 90" to compare with defaults.
# Needs bash, python3 and curl; nothing else.
# Exit status: 0 when the run completed (tables and any PROBLEMS printed),
# 1 when a step or the peer failed, 2 usage. Every wait is bounded; the
# peer is killed and the temporary directory removed on exit (unless
# --keep).
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# ---- Flags ------------------------------------------------------------------

topology=social
seed=1
duration=6h
bin=build/sagemesh
keep=0
peer_flags=()

# usage STATUS: the usage lines of the header comment, then exit.
usage() {
    sed -n '15,16p' "${BASH_SOURCE[0]}" | sed 's/^# //'
    exit "$1"
}

while [ $# -gt 0 ]; do
    case $1 in
    --topology) topology=${2:?}; shift 2 ;;
    --seed) seed=${2:?}; shift 2 ;;
    --duration) duration=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    --peer-flag) read -r -a more <<< "${2:?}"; peer_flags+=("${more[@]}"); shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "peer_accuracy: unknown flag '$1'" >&2; usage 2 ;;
    esac
done
# --bin is relative to the repository, like the default.
case $bin in /*) ;; *) bin=$repo/$bin ;; esac
[ -x "$bin" ] || { echo "peer_accuracy: no executable at $bin" >&2; exit 2; }

# Fixed parts of the experiment.
readonly TRAIN_DURATION=2h      # phase 1: fault-free history to train on
readonly SAMPLING=0.1           # head sampling of traces
readonly SIM_START=1700028000   # the simulator's default start (UTC)
readonly SIM_BOUND=3600         # bound on one simulator run, seconds
readonly TRAIN_TIMEOUT=600      # bound on the training round
readonly PENDING_BOUND=600      # bound on the wait for pending diagnoses
readonly TAIL_S=30              # after a fault ends, see score() below

# ---- Helpers ----------------------------------------------------------------

dir=$(mktemp -d /tmp/sagemesh-accuracy-XXXXXX)
pid=   # the peer
child= # the running sim or train, see run()

cleanup() {
    if [ -n "$child" ]; then
        kill "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
    if [ -n "$pid" ]; then
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    if [ "$keep" = 1 ]; then
        echo "kept $dir"
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# die WHY: reports a failure with the end of the peer's log and exits 1.
die() {
    echo "peer_accuracy: FAILED: $*" >&2
    if [ -s "$dir/peer.log" ]; then
        echo "--- last lines of the peer's log ($dir/peer.log):" >&2
        tail -20 "$dir/peer.log" >&2
    fi
    exit 1
}

# seconds D: "2h", "90m", "30s" or plain seconds, as the simulator reads them.
seconds() {
    case $1 in
    *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
    esac
}

# run CMD...: runs a long step in the background and waits for it, so that
# SIGINT or SIGTERM interrupt the wait at once (bash runs traps only after a
# foreground child ends) and cleanup() can stop the step. Returns its status.
run() {
    local rc=0
    "$@" &
    child=$!
    wait "$child" || rc=$?
    child=
    return "$rc"
}

now_ns() { date +%s%N; }
# elapsed T0_NS: seconds since T0_NS with one decimal.
elapsed() { python3 -c "print('%.1f' % (($(now_ns) - $1) / 1e9))"; }

# alive: the peer still runs (a crash must not pass for a slow answer).
alive() {
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid"
        local rc=$?
        pid=
        die "the peer exited (status $rc)"
    }
}

# status_json: /v1/status into $dir/status.json through the CLI. `status`
# exits 1 for a peer that is not ready or failing but still prints the body.
status_json() {
    "$bin" status -o json --timeout 10 > "$dir/status.json" 2> "$dir/status.err"
    python3 -c "import json,sys; json.load(open(sys.argv[1]))" \
        "$dir/status.json" 2>/dev/null ||
        die "status -o json is not JSON: $(head -c 300 "$dir/status.json") $(cat "$dir/status.err")"
}

# status_field EXPR: a Python expression on the last status body `s` (call
# status_json first, outside $(...), so that its die ends the script).
status_field() {
    python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print($1)" \
        "$dir/status.json"
}

# The QoS of a topology: its frontend (the first entry's service) and its
# suggested target, from the simulator's own description of it.
topology_qos() {
    "$bin" sim --print-topology --topology "$topology" > "$dir/topology.txt" ||
        die "sim --print-topology --topology $topology"
    qos_service=$(awk '$1 == "entry" { print $2; exit }' "$dir/topology.txt")
    qos_target=$(awk '$1 == "qos-target-ms" { print $2; exit }' "$dir/topology.txt")
    if [ -z "$qos_service" ] || [ -z "$qos_target" ]; then
        die "no entry or qos-target-ms in the $topology topology"
    fi
}

# start_peer: the peer on an ephemeral port; sets $pid and $SAGEMESH_PEER.
# Only the explicit round after phase 1 trains: --train-after is at its
# maximum and --retrain-every 0.
start_peer() {
    "$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || die "keygen"
    export SAGEMESH_SECRET_FILE=$dir/secret
    "$bin" peer --id bench --listen-http 127.0.0.1:0 \
        --data-dir "$dir/data" --log-file "$dir/peer.log" \
        --secret-file "$dir/secret" \
        --qos-service "$qos_service" --qos-target-ms "$qos_target" \
        --train-after 20000 --retrain-every 0 "${peer_flags[@]}" \
        > "$dir/peer.out" 2>&1 &
    pid=$!
    local port='' _
    for _ in $(seq 1 200); do # 10 s
        port=$(sed -n 's/.*msg="peer started".*http_port=\([0-9]*\).*/\1/p' \
            "$dir/peer.log" 2>/dev/null | tail -1)
        [ -n "$port" ] && break
        alive
        sleep 0.05
    done
    [ -n "$port" ] || die "the peer did not report its port within 10 s"
    export SAGEMESH_PEER=127.0.0.1:$port
}

# sim ARGS...: one bounded simulator run posting to the peer; its summary
# line goes to $dir/sim.out.
sim() {
    local rc=0
    run timeout "$SIM_BOUND" "$bin" sim --topology "$topology" --sampling "$SAMPLING" \
        --peer "$SAGEMESH_PEER" --timeout 30 "$@" > "$dir/sim.out" 2>&1 || rc=$?
    # A dead peer explains a failed sim better than "connection refused".
    alive
    [ "$rc" = 0 ] || die "sim $* (status $rc): $(tail -3 "$dir/sim.out")"
    echo "  $(tail -1 "$dir/sim.out")"
}

flush() {
    "$bin" flush --timeout 30 > "$dir/flush.out" 2>&1 ||
        die "flush: $(cat "$dir/flush.out")"
}

# wait_pending: until /v1/status says no diagnosis is pending (bounded).
wait_pending() {
    local t0 pending
    t0=$(date +%s)
    while :; do
        alive
        status_json
        pending=$(status_field "s['diagnoses']['pending']")
        [ "$pending" = 0 ] && return
        [ $(($(date +%s) - t0)) -ge "$PENDING_BOUND" ] &&
            die "diagnoses.pending still $pending after $PENDING_BOUND s"
        sleep 0.5
    done
}

# stop_peer: SIGTERM, which must end the peer with status 0 within 20 s.
stop_peer() {
    local _ rc
    kill -TERM "$pid"
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "the peer still runs 20 s after SIGTERM"
    wait "$pid"
    rc=$?
    pid=
    [ "$rc" = 0 ] || die "the peer exited with status $rc after SIGTERM"
}

# ---- The phases -------------------------------------------------------------

phase1() {
    local t0
    t0=$(now_ns)
    sim --seed "$seed" --duration "$TRAIN_DURATION" --faults none
    flush
    sim1_s=$(elapsed "$t0")
    t0=$(now_ns)
    run timeout $((TRAIN_TIMEOUT + 60)) "$bin" train --wait --timeout "$TRAIN_TIMEOUT" \
        > "$dir/train.out" 2>&1 || die "train --wait: $(cat "$dir/train.out")"
    train_wall_s=$(elapsed "$t0")
    alive
    status_json
    cp "$dir/status.json" "$dir/status-trained.json"
}

phase2() {
    local t0 start
    start=$((SIM_START + $(seconds "$TRAIN_DURATION")))
    t0=$(now_ns)
    sim --seed $((seed + 1)) --start "$start" --duration "$duration" \
        --faults auto --clean 0 --out "$dir/out"
    sim2_s=$(elapsed "$t0")
    t0=$(now_ns)
    flush
    wait_pending
    drain_s=$(elapsed "$t0")
}

collect() {
    "$bin" diagnoses --limit 1000 -o json --timeout 30 > "$dir/diagnoses.json" \
        2> "$dir/diagnoses.err" || die "diagnoses -o json: $(cat "$dir/diagnoses.err")"
    status_json
    curl -sS --max-time 10 "http://$SAGEMESH_PEER/metrics" > "$dir/metrics.txt" ||
        die "GET /metrics"
}

# ---- Scoring ----------------------------------------------------------------

# score: everything printed comes from here. Arguments: the run's files and
# figures; see the bottom of the script.
score() {
    python3 - "$@" <<'PY'
import json, sys

(d, topology, seed, duration, qos_service, tail_s, sim1_s, train_wall_s,
 sim2_s, drain_s) = sys.argv[1:11]
tail_ns = int(tail_s) * 10**9
S = 10**9

labels = json.load(open(d + "/out/labels.json"))
diags = json.load(open(d + "/diagnoses.json"))["diagnoses"]
status = json.load(open(d + "/status.json"))
trained = json.load(open(d + "/status-trained.json"))
target = float(labels["qos_target_ms"])
p2_start, p2_end = int(labels["start_unix_nano"]), int(labels["end_unix_nano"])
problems = []  # anything the peer got wrong besides accuracy

# ---- Ground truth ----
KIND = {"load-spike": "load_spike"}
faults = []
for f in labels["faults"]:
    faults.append(dict(f, kind=KIND.get(f["kind"], f["kind"]),
                       s=int(f["start_unix_nano"]), e=int(f["end_unix_nano"])))
cases = {}  # group -> its faults (faults injected together share a group)
for f in faults:
    cases.setdefault(f["group"], []).append(f)

def case_kind(fs):
    if fs[0]["kind"] == "load_spike":
        return "load_spike"
    return fs[0]["kind"] if len(fs) == 1 else "multi"

gt = {}  # window start -> exact frontend p99 (None: no request ended in it)
for w in labels["qos_windows"]:
    gt[int(w["start_unix_nano"])] = w["p99_ms"]

# The rule: fault f is active for window [ws, we) when the window overlaps
# [f.start, f.end + tail): any overlap counts, however short, since a few
# seconds of a fault can make a window's p99; and the queues a fault fills
# drain after it ends, so a window starting within `tail` after the end is
# still the fault's (reported apart as "tail" windows).
def active(ws, we):
    return [f for f in faults if ws < f["e"] + tail_ns and f["s"] < we]

def in_fault(f, ws, we):
    return ws < f["e"] and f["s"] < we

# ---- Sanity of the diagnoses JSON ----
ids = [x["id"] for x in diags]
if len(ids) != len(set(ids)):
    problems.append("the same diagnosis id appears twice")
if len(diags) >= 1000:
    problems.append("1000 diagnoses returned: the list may be truncated")
model_version = trained["model"]["version"]
for x in diags:
    ws, we = int(x["window_start_unix_nano"]), int(x["window_end_unix_nano"])
    what = "diagnosis %s (window end %d)" % (x["id"], we // S)
    if we - ws != 30 * S or ws % (30 * S):
        problems.append(what + ": window not 30 s aligned")
    if not x["violated"] or not x["latency_ms"] > x["target_ms"]:
        problems.append(what + ": stored but not violated (%s ms, target %s)"
                        % (x["latency_ms"], x["target_ms"]))
    if x["service"] != qos_service or x["target_ms"] != target:
        problems.append(what + ": QoS %s/%s" % (x["service"], x["target_ms"]))
    if x["model_version"] != model_version:
        problems.append(what + ": model_version %s, trained %s"
                        % (x["model_version"], model_version))
    if len(x["id"]) != 16 or any(c not in "0123456789abcdef" for c in x["id"]):
        problems.append(what + ": id not 16 hex digits")
    scores = [r["score"] for r in x["ranking"]]
    if scores != sorted(scores, reverse=True):
        problems.append(what + ": ranking not in order of score")
    if x["culprits"]:
        if not x["path"] or x["path"][0] != x["culprits"][0]["service"] \
                or x["path"][-1] != qos_service:
            problems.append(what + ": path %s does not run from %s to %s"
                            % (x["path"], x["culprits"][0]["service"], qos_service))
    for c in x["culprits"] + x["ranking"]:
        if not 0 <= c["p_qos_met"] <= 1:
            problems.append(what + ": p_qos_met %s" % c["p_qos_met"])
            break
    if not p2_start <= ws < p2_end:
        problems.append(what + ": outside phase 2")
diags = [x for x in diags if p2_start <= int(x["window_start_unix_nano"]) < p2_end]

# ---- Diagnosis-level scores ----
ROWS = ["cpu", "memory", "network", "disk", "threadpool", "lock", "multi",
        "load_spike"]
row = {k: dict(cases=0, viol=0, det=0, det_v=0, correct=0, diags=0, ac1=0,
               ac3=0, res=0, empty=0, tail=0) for k in ROWS + ["total"]}
fp, fp_gt_violated, spike_diags, spike_empty = 0, 0, 0, 0
by_case = {g: [] for g in cases}  # group -> verdicts of its diagnoses
for x in diags:
    ws, we = int(x["window_start_unix_nano"]), int(x["window_end_unix_nano"])
    act = active(ws, we)
    first = x["culprits"][0] if x["culprits"] else None
    if not act:
        fp += 1
        p = gt.get(ws)
        fp_gt_violated += p is not None and p > target
        continue
    groups = sorted({f["group"] for f in act})
    if len(groups) > 1:
        problems.append("window %d overlaps two cases: the tail rule is too wide"
                        % (we // S))
    g = groups[0]
    kind = case_kind(cases[g])
    r = row[kind]
    r["diags"] += 1
    r["tail"] += not any(in_fault(f, ws, we) for f in act)
    if kind == "load_spike":
        spike_diags += 1
        spike_empty += not x["culprits"]
        r["empty"] += not x["culprits"]
        by_case[g].append(not x["culprits"])
        continue
    svcs = {f["service"] for f in act}
    ok1 = first is not None and first["service"] in svcs
    ok3 = any(c["service"] in svcs for c in x["ranking"][:3])
    # The resource of the fault on the service named.
    res = ok1 and any(f["service"] == first["service"] and
                      f["resource"] == first["resource"] for f in act)
    for k in (kind, "total"):
        if k != kind:
            row[k]["diags"] += 1
            row[k]["tail"] += not any(in_fault(f, ws, we) for f in act)
        row[k]["ac1"] += ok1
        row[k]["ac3"] += ok3
        row[k]["res"] += res
        row[k]["empty"] += not x["culprits"]
    by_case[g].append(ok1)

# ---- Case-level: detected and correct ----
for g, fs in cases.items():
    kind = case_kind(fs)
    start, end = fs[0]["s"], fs[0]["e"]  # a case's faults share their times
    violated = any(p is not None and p > target and ws < end + tail_ns and start < ws + 30 * S
                   for ws, p in gt.items())
    verdicts = by_case[g]
    det = len(verdicts) > 0
    correct = det and 2 * sum(verdicts) > len(verdicts)
    for k in ([kind, "total"] if kind != "load_spike" else [kind]):
        row[k]["cases"] += 1
        row[k]["viol"] += violated
        row[k]["det"] += det
        row[k]["det_v"] += det and violated
        row[k]["correct"] += correct

# ---- Window-level agreement of the peer's verdicts with the exact p99 ----
diag_ws = {int(x["window_start_unix_nano"]) for x in diags}
p2_windows = [ws for ws in gt if p2_start <= ws < p2_end]
gt_viol = {ws for ws in p2_windows if gt[ws] is not None and gt[ws] > target}
both = len(gt_viol & diag_ws)
rel = sorted(abs(x["latency_ms"] - gt[int(x["window_start_unix_nano"])]) /
             gt[int(x["window_start_unix_nano"])] for x in diags
             if gt.get(int(x["window_start_unix_nano"])))
med_rel = rel[len(rel) // 2] if rel else float("nan")

# ---- Peer figures ----
def metrics():
    buckets, total, count = [], None, None
    for line in open(d + "/metrics.txt"):
        for family in ("spans", "points"):
            if line.startswith("sagemesh_%s_total{" % family):
                outcome = line.split('outcome="')[1].split('"')[0]
                ingest[family][outcome] = int(float(line.split()[-1]))
        if line.startswith("sagemesh_qos_violations_total "):
            ingest["violations"] = int(float(line.split()[-1]))
        if line.startswith("sagemesh_diagnosis_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float(le), int(float(line.split()[-1]))))
        elif line.startswith("sagemesh_diagnosis_latency_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("sagemesh_diagnosis_latency_seconds_count"):
            count = int(float(line.split()[-1]))
    median = None
    prev = 0.0
    for le, n in buckets:  # cumulative buckets
        if count and n >= count / 2:
            median = (prev, le)
            break
        prev = le
    return total, count, median

ingest = {"spans": {}, "points": {}}  # family -> outcome -> count
lat_sum, lat_count, lat_median = metrics()
last_round = trained["model"]["last_round"] or {}
ds = status["diagnoses"]

def pct(a, b):
    return "%5.1f%%" % (100.0 * a / b) if b else "    -"

# ---- Report ----
print()
print("== sagemesh peer accuracy: topology %s, seed %s (phase 2 seed %d), "
      "phase 2 %s, QoS %s p99 <= %g ms"
      % (topology, seed, int(seed) + 1, duration, qos_service, target))
print("rule: a fault is active for a window [ws, we) that overlaps "
      "[fault start, fault end + %ss);" % tail_s)
print("      partial overlap counts, however short; windows that only overlap "
      "the %ss tail are counted too (column 'tail')." % tail_s)
print("      AC@1/AC@3/res: over diagnoses of windows with an active "
      "non-load-spike fault; AC@1 right when culprits[0].service")
print("      is one of the active faults' services (empty culprits: wrong); "
      "AC@3 on ranking[:3]; res among AC@1-right: the")
print("      culprit's resource is that fault's resource. 'multi' = cases on "
      "2-3 services at once (any of them is right).")
print("      Case detected: >= 1 diagnosis of its windows; correct: more than "
      "half of them right (load spike: culprits empty).")
print("      viol = cases whose exact frontend p99 (labels.json) exceeds the "
      "target in one of their windows; det_v = those detected.")
print()
hdr = "%-11s %5s %4s %4s %5s %7s %5s %6s %6s %6s %6s %4s"
print(hdr % ("kind", "cases", "viol", "det", "det_v", "correct", "diags",
             "AC@1", "AC@3", "res", "empty", "tail"))
for k in ROWS + ["total"]:
    r = row[k]
    if k == "load_spike":
        print(hdr % (k, r["cases"], r["viol"], r["det"], r["det_v"], r["correct"],
                     r["diags"], "-", "-", "-", pct(r["empty"], r["diags"]), r["tail"]))
        continue
    print(hdr % (k, r["cases"], r["viol"], r["det"], r["det_v"], r["correct"],
                 r["diags"], pct(r["ac1"], r["diags"]), pct(r["ac3"], r["diags"]),
                 pct(r["res"], r["ac1"]), pct(r["empty"], r["diags"]), r["tail"]))
print("(total: every case and diagnosis except load spikes; 'empty': diagnoses "
      "naming no culprit)")
print()
t = row["total"]
print("totals: %d diagnoses in phase 2; with an active fault %d: AC@1 %d/%d %s, "
      "AC@3 %d/%d %s, resource %d/%d %s"
      % (len(diags), t["diags"], t["ac1"], t["diags"], pct(t["ac1"], t["diags"]).strip(),
         t["ac3"], t["diags"], pct(t["ac3"], t["diags"]).strip(),
         t["res"], t["ac1"], pct(t["res"], t["ac1"]).strip()))
print("        false positives (no active fault): %d of %d diagnoses (%d of them "
      "in windows whose exact p99 does exceed the target)"
      % (fp, len(diags), fp_gt_violated))
print("        load spikes: %d diagnoses with an active spike, %d named no culprit"
      % (spike_diags, spike_empty))
print("        cases: %d faults in %d cases, %d violated (exact p99), %d of those "
      "detected, %d correct"
      % (len(faults), len(cases), t["viol"] + row["load_spike"]["viol"],
         t["det_v"] + row["load_spike"]["det_v"], t["correct"] + row["load_spike"]["correct"]))
print("windows: %d in phase 2, %d violated by the exact p99, %d diagnosed; both %d, "
      "peer only %d, exact only %d; median |peer p99 - exact| / exact %.1f%%"
      % (len(p2_windows), len(gt_viol), len(diag_ws), both, len(diag_ws - gt_viol),
         len(gt_viol - diag_ws), 100 * med_rel))
print()
if lat_count:
    print("diagnosis latency (/metrics): count %d, sum %.3f s, mean %.1f ms, "
          "median in (%g, %g] s"
          % (lat_count, lat_sum, 1000 * lat_sum / lat_count, lat_median[0],
             lat_median[1]) if lat_median else "")
else:
    print("diagnosis latency (/metrics): no diagnosis counted")
print("training round: %s s (mode %s, %s windows, val_loss %s, model version %s, ok %s)"
      % (last_round.get("seconds"), last_round.get("mode"), last_round.get("windows"),
         last_round.get("val_loss"), last_round.get("model_version"), last_round.get("ok")))
print("wall time: phase 1 sim+flush %s s, train --wait %s s; phase 2 sim %s s, "
      "flush+pending %s s" % (sim1_s, train_wall_s, sim2_s, drain_s))
late = {}
for family in ("spans", "points"):
    c = ingest[family]
    late[family] = c.get("late", 0) / max(1, sum(c.values()))
print("ingest (/metrics): spans %s, points %s"
      % (", ".join("%s %d" % kv for kv in sorted(ingest["spans"].items())),
         ", ".join("%s %d" % kv for kv in sorted(ingest["points"].items()))))
print("peer status: windows stored %s; diagnoses stored %s ok %s failed %s dropped %s "
      "pending %s no_model %s"
      % (status["windows"]["stored"], ds["stored"], ds["ok"], ds["failed"],
         ds["dropped"], ds["pending"], ds.get("no_model")))

# Status figures that should agree with what was served.
if ds["stored"] != len(ids):
    problems.append("status diagnoses.stored %s, /v1/diagnoses served %d"
                    % (ds["stored"], len(ids)))
if ds["failed"] or ds["dropped"]:
    problems.append("diagnoses failed %s, dropped %s" % (ds["failed"], ds["dropped"]))
# Every violated window ends diagnosed, failed, dropped or before the model:
# with nothing pending, anything else was lost on the way.
settled = ds["ok"] + ds["failed"] + ds["dropped"] + ds.get("no_model", 0)
if ingest.get("violations") is not None and ingest["violations"] != settled:
    problems.append("sagemesh_qos_violations_total %d, but ok+failed+dropped+no_model %d"
                    % (ingest["violations"], settled))
if lat_count is not None and lat_count != ds["ok"]:
    problems.append("latency histogram count %s, diagnoses.ok %s" % (lat_count, ds["ok"]))
for family in ("spans", "points"):
    if late[family] > 0.01:
        problems.append("%.1f%% of the %s arrived after their window closed and were "
                        "dropped (late)" % (100 * late[family], family))
# Not errors, but worth seeing next to the scores: a culprit set is named
# when it explains enough of the excess, even if the model says restoring it
# does not meet the target (why load spikes rarely get empty culprits).
unknown = sum(1 for x in diags if x["culprits"] and x["culprits"][0]["resource"] == "unknown")
short = sum(1 for x in diags if x["culprits"] and x["culprits"][-1]["p_qos_met"] < 0.9)
print("notes: %d diagnoses name a first culprit with resource \"unknown\"; %d name culprits "
      "whose p_qos_met (of the whole set) is below 0.9" % (unknown, short))
if not last_round.get("ok"):
    problems.append("training round not ok: %s" % last_round)
print()
if problems:
    print("PROBLEMS (%d):" % len(problems))
    for p in problems[:30]:
        print("  - " + p)
else:
    print("no problems seen in the peer's JSON and status")
PY
}

# ---- Main -------------------------------------------------------------------

topology_qos
start_peer
echo "peer on $SAGEMESH_PEER ($topology, QoS $qos_service p99 <= $qos_target ms," \
    "extra flags: ${peer_flags[*]:-none}, dir $dir)"
echo "phase 1: $TRAIN_DURATION fault-free, then train"
phase1
echo "phase 1: sim+flush $sim1_s s, train --wait $train_wall_s s: $(head -1 "$dir/train.out")"
echo "phase 2: $duration with faults"
phase2
echo "phase 2: sim $sim2_s s, flush and pending $drain_s s"
collect
score "$dir" "$topology" "$seed" "$duration" "$qos_service" "$TAIL_S" \
    "$sim1_s" "$train_wall_s" "$sim2_s" "$drain_s" || die "scoring failed"
stop_peer
