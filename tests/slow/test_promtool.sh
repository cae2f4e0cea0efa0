#!/usr/bin/env bash
# The peer's GET /metrics against Prometheus's own tools: after one OTLP
# sample, `promtool check metrics` must report nothing (no parse error, no
# lint warning). Then a real `prometheus` server on 127.0.0.1 scrapes the
# peer every second; its query API must show the target up and a sagemesh_
# series with the sample's span count.
#
#   test_promtool.sh SAGEMESH SAMPLES_DIR
#
# Skips (exit 77) without promtool (Debian: the prometheus package, see
# deploy/install-deps.sh); the scrape part is skipped, with a note, without
# the prometheus binary. Bounded: every wait has a deadline; every process
# started is killed on exit; only 127.0.0.1.
set -u
bin=$1 samples=$2
dir=$(mktemp -d /tmp/sagemesh-prom-XXXXXX)
pids=()
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
    kill_started
    rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "not ok - $*"
    local f
    for f in "$dir"/*.log; do
        [ -f "$f" ] || continue
        echo "# --- $(basename "$f") (last 15 lines)"
        tail -15 "$f" | sed 's/^/#   /'
    done
    exit 1
}

command -v promtool > /dev/null ||
    { echo "1..0 # SKIP promtool is not installed (Debian package prometheus)"; exit 77; }

"$bin" keygen --out "$dir/secret" > /dev/null 2>&1 || fail "keygen"
"$bin" peer --listen-http 127.0.0.1:0 --listen-peer 127.0.0.1:0 --data-dir "$dir/data" \
    --secret-file "$dir/secret" --qos-service frontend --qos-target-ms 500 \
    --window 5 --lateness 1 --id prom-1 > "$dir/peer.log" 2>&1 &
peer=$!
pids+=("$peer")
wait_port "$dir/peer.log" "$peer" "$peer_port_sed" "the peer"
port=$found_port

# http PORT METHOD PATH [FILE]: prints the status code, the body to $dir/body.
http() {
    local file=${4:-/dev/null}
    exec 3<> "/dev/tcp/127.0.0.1/$1" || return 1
    printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' \
        "$2" "$3" "$(wc -c < "$file")" >&3
    cat "$file" >&3
    timeout 5 cat <&3 > "$dir/resp"
    exec 3>&-
    sed '1,/^\r$/d' "$dir/resp" > "$dir/body"
    sed -n '1s/^HTTP\/1\.[01] \([0-9]*\).*/\1/p' "$dir/resp"
}

code=$(http "$port" POST /v1/traces "$samples/otlp-sample.json")
[ "$code" = 200 ] || fail "POST otlp-sample.json answered $code"
code=$(http "$port" GET /metrics)
[ "$code" = 200 ] || fail "GET /metrics answered $code"
grep -q '^sagemesh_spans_total{outcome="accepted"} [1-9]' "$dir/body" ||
    fail "/metrics shows no accepted span: $(head -5 "$dir/body")"
cp "$dir/body" "$dir/metrics.txt"
# promtool exits 1 on a parse error, 3 on lint problems, and prints each one.
promtool check metrics < "$dir/metrics.txt" > "$dir/promtool.out" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ -s "$dir/promtool.out" ]; then
    sed 's/^/# promtool: /' "$dir/promtool.out"
    fail "promtool check metrics (exit $rc) on the peer's /metrics"
fi
echo "# promtool check metrics: clean ($(grep -c '^# TYPE' "$dir/metrics.txt") families, $(grep -vc '^#' "$dir/metrics.txt") samples; $(promtool --version 2>&1 | head -1))"

# ---- a real Prometheus scraping the peer ---------------------------------------
if ! command -v prometheus > /dev/null; then
    echo "# prometheus is not installed: scrape not checked"
    echo "ok - /metrics clean under promtool"
    exit 0
fi
cat > "$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sagemesh
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF
promtool check config "$dir/prometheus.yml" > "$dir/promtool-config.log" 2>&1 ||
    fail "promtool check config: $(cat "$dir/promtool-config.log")"
t0=$(date +%s)
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address=127.0.0.1:0 > "$dir/prometheus.log" 2>&1 &
prom=$!
pids+=("$prom")
wait_port "$dir/prometheus.log" "$prom" \
    's/.*msg="Listening on" address=127\.0\.0\.1:\([0-9]*\).*/\1/p' prometheus
pport=$found_port
# Prometheus hands targets to the scraper after up to 5 s; allow 30 s.
up=
for _ in $(seq 1 300); do
    code=$(http "$pport" GET '/api/v1/query?query=up%7Bjob%3D%22sagemesh%22%7D')
    if [ "$code" = 200 ] && grep -q '"value":\[[0-9.]*,"1"\]' "$dir/body"; then
        up=1
        break
    fi
    sleep 0.1
done
[ -n "$up" ] || fail "prometheus: up{job=\"sagemesh\"} not 1 after 30 s: $(cat "$dir/body")"
echo "# prometheus: $(cat "$dir/body")"
code=$(http "$pport" GET /api/v1/targets)
grep -q '"health":"up"' "$dir/body" && grep -q '"lastError":""' "$dir/body" ||
    fail "prometheus target not healthy: $(cat "$dir/body")"
code=$(http "$pport" GET '/api/v1/query?query=sagemesh_spans_total%7Boutcome%3D%22accepted%22%7D')
accepted=$(sed -n 's/^sagemesh_spans_total{outcome="accepted"} \([0-9]*\)$/\1/p' "$dir/metrics.txt")
grep -q "\"value\":\[[0-9.]*,\"$accepted\"\]" "$dir/body" ||
    fail "prometheus: sagemesh_spans_total{outcome=\"accepted\"} is not $accepted: $(cat "$dir/body")"
echo "# prometheus: $(cat "$dir/body")"
echo "# prometheus scraped the peer $(($(date +%s) - t0)) s after its start"
kill -TERM "$prom"
for _ in $(seq 1 200); do
    kill -0 "$prom" 2>/dev/null || break
    sleep 0.05
done
kill -TERM "$peer"
for _ in $(seq 1 100); do
    kill -0 "$peer" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$peer" 2>/dev/null && fail "peer ignored SIGTERM"
echo "ok - /metrics clean under promtool and scraped by prometheus"
