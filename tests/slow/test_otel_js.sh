#!/usr/bin/env bash
# A real OpenTelemetry SDK as the client: four Node.js HTTP services
# (frontend -> middle -> backend, frontend -> cache), each traced by the
# OpenTelemetry JS SDK (tests/slow/otel-js, versions pinned by its
# package-lock.json), export OTLP/HTTP JSON to a peer on 127.0.0.1 (two of
# them gzipped). After a few hundred requests the SDKs are shut down (which
# exports what they still hold), `sagemesh flush` closes the windows, and the
# peer must hold exactly the chain: every span the SDKs exported accepted,
# none late or rejected, the CBN nodes with the right parent counts, and
# (when the peer has GET /v1/services) the right callers and callees.
#
#   test_otel_js.sh SAGEMESH OTEL_JS_SOURCE_DIR WORK_DIR
#
# WORK_DIR (in the build tree) receives the npm install; it is reused while
# package-lock.json is unchanged. Skips (exit 77) without node 20.6+ and npm,
# or when the npm registry cannot be reached. Bounded: every wait has a
# deadline; every process started is killed on exit; only 127.0.0.1.
set -u
bin=$1 src=$2 work=$3
window=5
requests=300
dir=$(mktemp -d /tmp/sagemesh-otel-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
    kill_started
    rm -rf "$dir"
}
trap cleanup EXIT
logs() {
    local f
    for f in "$dir"/*.log; do
        [ -f "$f" ] || continue
        echo "# --- $(basename "$f") (last 15 lines)"
        tail -15 "$f" | sed 's/^/#   /'
    done
}
fail() { echo "not ok - $*"; logs; exit 1; }
skip() { echo "1..0 # SKIP $*"; exit 77; }

# ---- node, npm and the pinned SDK ------------------------------------------
command -v node > /dev/null || skip "node is not installed"
command -v npm > /dev/null || skip "npm is not installed"
nodev=$(node -p 'process.versions.node' 2>/dev/null) || skip "node does not run"
node -e 'const [a, b] = process.versions.node.split(".").map(Number);
         process.exit(a > 20 || (a === 20 && b >= 6) ? 0 : 1)' ||
    skip "node $nodev is older than 20.6, which the pinned SDK needs"
mkdir -p "$work" && work=$(cd "$work" && pwd) || fail "cannot create $work"
cp "$src"/package.json "$src"/package-lock.json "$src"/*.js "$work"/ ||
    fail "cannot copy $src to $work"
if [ -d "$work/node_modules" ] && cmp -s "$src/package-lock.json" "$work/.installed-lock"; then
    echo "# reusing the npm install in $work"
else
    rm -rf "$work/node_modules" "$work/.installed-lock"
    t0=$(date +%s)
    # Own cache dir: nothing written to $HOME; few retries so that an offline
    # machine gives up quickly.
    (cd "$work" && timeout 120 npm ci --no-audit --no-fund --ignore-scripts \
        --no-update-notifier --cache "$work/.npm-cache" \
        --fetch-retries 1 --fetch-retry-mintimeout 2000 \
        --fetch-retry-maxtimeout 5000 --fetch-timeout 30000) > "$dir/npm.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        if [ $rc -eq 124 ]; then
            skip "npm ci did not finish in 120 s (registry unreachable or slow)"
        fi
        if grep -Eq 'code (ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|ERR_SOCKET_TIMEOUT|E5[0-9][0-9]|ECONNABORTED|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN)|npm (ERR|error) network|request to .* failed' "$dir/npm.log"; then
            skip "npm registry unreachable: $(grep -m1 -E 'code E|network|failed' "$dir/npm.log")"
        fi
        fail "npm ci failed (rc $rc): $(tail -5 "$dir/npm.log" | tr '\n' ' ')"
    fi
    cp "$src/package-lock.json" "$work/.installed-lock"
    echo "# npm ci: $(grep -m1 -E '^added' "$dir/npm.log") ($(($(date +%s) - t0)) s)"
fi
echo "# node $nodev, @opentelemetry/sdk-trace-node $(node -p 'require(process.argv[1] + "/node_modules/@opentelemetry/sdk-trace-node/package.json").version' "$work"), exporter-trace-otlp-http $(node -p 'require(process.argv[1] + "/node_modules/@opentelemetry/exporter-trace-otlp-http/package.json").version' "$work")"

# ---- the peer ----------------------------------------------------------------
"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
"$bin" peer --listen-http 127.0.0.1:0 --listen-peer 127.0.0.1:0 --data-dir "$dir/data" \
    --secret-file "$dir/secret" --qos-service frontend --qos-target-ms 500 \
    --window "$window" --lateness 1 --id otel-1 > "$dir/peer.log" 2>&1 &
peer=$!
pids+=("$peer")
wait_port "$dir/peer.log" "$peer" "$peer_port_sed" "the peer"
port=$found_port

# http METHOD PATH: prints the status code, the body to $dir/body.
http() {
    exec 3<> "/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' \
        "$1" "$2" >&3
    timeout 5 cat <&3 > "$dir/resp"
    exec 3>&-
    sed '1,/^\r$/d' "$dir/resp" > "$dir/body"
    sed -n '1s/^HTTP\/1.1 \([0-9]*\).*/\1/p' "$dir/resp"
}

# ---- the services --------------------------------------------------------------
declare -A sport spid
# start NAME [--gzip] [--call URL ...]: in the background; wait_port NAME.
start() {
    local name=$1
    shift
    : > "$dir/$name.log"
    node "$work/service.js" --name "$name" \
        --otlp "http://127.0.0.1:$port/v1/traces" "$@" > "$dir/$name.log" 2>&1 &
    spid[$name]=$!
    pids+=("$!")
}
wait_port() {
    local name=$1 p=
    for _ in $(seq 1 300); do
        p=$(sed -n 's/^listening port=\([0-9]*\)$/\1/p' "$dir/$name.log")
        [ -n "$p" ] && break
        kill -0 "${spid[$name]}" 2>/dev/null || fail "service $name exited at start"
        sleep 0.05
    done
    [ -n "$p" ] || fail "service $name did not report its port in 15 s"
    sport[$name]=$p
}
start backend
start cache --gzip
wait_port backend
wait_port cache
start middle --gzip --call "http://127.0.0.1:${sport[backend]}/item"
wait_port middle
start frontend --call "http://127.0.0.1:${sport[middle]}/price" \
    --call "http://127.0.0.1:${sport[cache]}/session"
wait_port frontend
echo "# peer :$port; frontend :${sport[frontend]} middle :${sport[middle]} backend :${sport[backend]} cache :${sport[cache]}"

# ---- the load, inside one window (see loadgen.js) ------------------------------
out=$(timeout 60 node "$work/loadgen.js" --url "http://127.0.0.1:${sport[frontend]}/checkout" \
    --requests "$requests" --concurrency 4 --window-ms $((window * 1000))) ||
    fail "load generator failed: $out"
echo "# load: $out"
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<< "$2"; }
sent=$(field sent "$out") ok=$(field ok "$out") failed=$(field failed "$out")
[ -n "$sent" ] && [ "$failed" = 0 ] && [ "$ok" = "$sent" ] ||
    fail "requests failed: $out"
[ "$ok" -ge 50 ] || fail "only $ok requests fitted in one window: $out"

# ---- SDK shutdown: every queued span exported ------------------------------------
for name in frontend middle cache backend; do
    kill -TERM "${spid[$name]}"
done
for name in frontend middle cache backend; do
    for _ in $(seq 1 500); do
        kill -0 "${spid[$name]}" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "${spid[$name]}" 2>/dev/null && fail "service $name did not exit in 25 s after SIGTERM"
    wait "${spid[$name]}" || fail "service $name exited with $? after SIGTERM"
done
# Spans per request: frontend SERVER + 2 CLIENT, middle SERVER + CLIENT,
# backend SERVER, cache SERVER.
declare -A per=([frontend]=3 [middle]=2 [backend]=1 [cache]=1)
exported=0
for name in frontend middle cache backend; do
    line=$(grep '^stats ' "$dir/$name.log") || fail "service $name printed no stats"
    echo "# $line"
    ended=$(sed -n 's/.* ended=\([0-9]*\).*/\1/p' <<< "$line")
    ex=$(sed -n 's/.* exported=\([0-9]*\).*/\1/p' <<< "$line")
    fl=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<< "$line")
    [ "$fl" = 0 ] || fail "$name: the peer refused $fl spans"
    [ "$ended" = $((per[$name] * ok)) ] ||
        fail "$name: $ended spans ended, expected $((per[$name] * ok))"
    [ "$ex" = "$ended" ] || fail "$name: $ended spans ended but $ex exported"
    exported=$((exported + ex))
done

# ---- the peer's counters ---------------------------------------------------------
code=$(http GET /metrics)
[ "$code" = 200 ] || fail "GET /metrics answered $code"
metric() { sed -n "s/^$1 \([0-9.e+]*\)\$/\1/p" "$dir/body"; }
accepted=$(metric 'sagemesh_spans_total{outcome="accepted"}')
late=$(metric 'sagemesh_spans_total{outcome="late"}')
rejected=$(metric 'sagemesh_spans_total{outcome="rejected"}')
brej=$(metric sagemesh_batches_rejected_total)
echo "# /metrics: spans accepted $accepted, late $late, rejected $rejected; batches rejected $brej; SDKs exported $exported"
[ -n "$accepted" ] && [ "$accepted" -gt 0 ] || fail "no span accepted"
[ "$rejected" = 0 ] || fail "$rejected spans rejected"
[ "$late" = 0 ] || fail "$late spans late"
[ "$brej" = 0 ] || fail "$brej batches rejected"
[ "$accepted" = "$exported" ] || fail "peer accepted $accepted spans, the SDKs exported $exported"

# ---- flush, then the graph ---------------------------------------------------------
out=$("$bin" flush --peer "127.0.0.1:$port" --secret-file "$dir/secret") ||
    fail "flush failed: $out"
echo "# flush: $out"
code=$(http GET /v1/status)
[ "$code" = 200 ] || fail "GET /v1/status answered $code"
cp "$dir/body" "$dir/status.json"
node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const l = s.qos && s.qos.last_latency_ms;
    console.log(`# /v1/status: windows closed ${s.windows.closed}, stored ${s.windows.stored};` +
        ` qos ${s.qos.service} last_latency_ms ${l}`);
    process.exit(s.windows.closed >= 1 && typeof l === "number" && l > 0 ? 0 : 1)' \
    "$dir/status.json" || fail "no closed window with a QoS latency: $(cat "$dir/status.json")"
services=()
code=$(http GET /v1/services)
if [ "$code" = 200 ]; then
    cp "$dir/body" "$dir/services.json"
    services=(--services "$dir/services.json")
else
    echo "# GET /v1/services answered $code: callers/callees not checked"
fi
node "$work/check.js" --status "$dir/status.json" "${services[@]}" \
    --expect frontend:middle,cache --expect middle:backend \
    --expect backend: --expect cache: ||
    { echo "# status: $(cat "$dir/status.json")"; logs; exit 1; }

kill -TERM "$peer"
for _ in $(seq 1 100); do
    kill -0 "$peer" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$peer" 2>/dev/null && fail "peer ignored SIGTERM"
echo "ok - OpenTelemetry JS SDK: $ok requests, $exported spans, graph frontend->{middle->backend, cache}"
