#!/usr/bin/env bash
# The real binary as a process on 127.0.0.1: OTLP in, windows closed by the
# watermark and stored, kill -9, restart, the stored windows replayed.
# Bounded: every wait has a deadline; every process started is killed.
set -u
bin=$1 samples=$2
dir=$(mktemp -d /tmp/sagemesh-slow-XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "not ok - $*"; cat "$dir/log" 2>/dev/null | tail -20; exit 1; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$bin" keygen --out "$dir/secret" 2>/dev/null || fail "keygen"
start() {
    "$bin" peer --listen-http 127.0.0.1:0 --listen-peer 127.0.0.1:0 --data-dir "$dir/data" \
        --secret-file "$dir/secret" \
        --qos-service frontend --qos-target-ms 40 --window 10 --lateness 1 \
        --id slow-1 > "$dir/log" 2>&1 &
    pid=$!
    wait_port "$dir/log" "$pid" "$peer_port_sed" "the peer"
    port=$found_port
}

# http METHOD PATH [FILE]: prints the status line's code, body to $dir/resp.
http() {
    local method=$1 path=$2 file=${3:-/dev/null}
    local len
    len=$(wc -c < "$file")
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' \
        "$method" "$path" "$len" >&3
    cat "$file" >&3
    timeout 5 cat <&3 > "$dir/resp"
    exec 3>&-
    sed -n '1s/^HTTP\/1.1 \([0-9]*\).*/\1/p' "$dir/resp"
}

start
for f in otlp-sample.json otlp-sample-middle.json otlp-sample-backend.json otlp-sample-cache.json; do
    code=$(http POST /v1/traces "$samples/$f")
    [ "$code" = 200 ] || fail "POST $f answered $code"
done
# One span 60 s later moves the watermark past the samples' window.
sed 's/"startTimeUnixNano":"17954217\([0-9]*\)"/"startTimeUnixNano":"17954218\1"/g; s/"endTimeUnixNano":"17954217\([0-9]*\)"/"endTimeUnixNano":"17954218\1"/g' \
    "$samples/otlp-sample.json" > "$dir/later.json"
code=$(http POST /v1/traces "$dir/later.json")
[ "$code" = 200 ] || fail "POST later answered $code"
stored=
for _ in $(seq 1 60); do
    http GET /metrics > /dev/null
    stored=$(sed -n 's/^sagemesh_windows_stored_total \([0-9]*\).*/\1/p' "$dir/resp")
    [ -n "$stored" ] && [ "$stored" -ge 1 ] && break
    sleep 0.1
done
[ -n "$stored" ] && [ "$stored" -ge 1 ] || fail "no window stored (got '$stored')"
echo "# stored $stored window(s) before kill -9"
kill -9 "$pid"
wait "$pid" 2>/dev/null
pid=
start
code=$(http GET /v1/status)
[ "$code" = 200 ] || fail "status answered $code"
grep -q "\"replayed\":$stored" "$dir/resp" || fail "expected $stored replayed: $(tail -1 "$dir/resp")"
grep -q '"name":"frontend"' "$dir/resp" || fail "frontend missing from the CBN after replay"
out=$("$bin" import --jaeger "$samples/jaeger-api-traces.derived.json" \
    --peer "127.0.0.1:$port" --timeout 10) || fail "import failed: $out"
echo "# $out"
grep -q "imported 22 of 22 spans" <<< "$out" || fail "import: $out"
"$bin" import --jaeger "$dir/resp" --peer "127.0.0.1:$port" > /dev/null 2>&1 &&
    fail "importing a file that is not Jaeger JSON succeeded"
# The window open before kill -9 was lost (as documented); new data opens
# it again, and sagemesh flush closes it.
code=$(http POST /v1/traces "$dir/later.json")
[ "$code" = 200 ] || fail "POST later after restart answered $code"
out=$("$bin" flush --peer "127.0.0.1:$port" --secret-file "$dir/secret") ||
    fail "flush failed: $out"
echo "# flush: $out"
grep -q '"windows_closed":1' <<< "$out" || fail "flush closed no window: $out"
"$bin" flush --peer "127.0.0.1:$port" > /dev/null 2>&1 &&
    fail "flush without a secret succeeded"
kill -TERM "$pid"
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$pid" 2>/dev/null && fail "peer ignored SIGTERM"
pid=
echo "ok - ingest, kill -9, restart, replay"
