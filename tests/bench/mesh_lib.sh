# Shared by the mesh benchmarks (sourced after they set $bin, $dir, $keep,
# the pids array and their own fail()): peers started by run and name, their
# /v1/status read with Python, and cleanup by pid.

# cleanup: kills (SIGKILL) and reaps every peer started, removes $dir
# unless --keep; for the EXIT trap.
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null && wait "$p" 2> /dev/null; done
    [ "$keep" = 1 ] || rm -rf "$dir"
}

# stop_all: kills the peers started so far, between runs.
stop_all() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null && wait "$p" 2> /dev/null; done
    pids=()
}

declare -A http mesh

# start RUN NAME [flags]: a peer with the cluster secret $dir/secret; fills
# http[NAME] and mesh[NAME].
start() {
    local run=$1 name=$2 log p
    shift 2
    log=$dir/$run-$name.log
    "$bin" peer --id "$name" --listen-http 127.0.0.1:0 --listen-peer 127.0.0.1:0 \
        --data-dir "$dir/$run-$name" --log-file "$log" --secret-file "$dir/secret" \
        --qos-service nginx-web --qos-target-ms 100 \
        --train-after 20000 --retrain-every 0 "$@" &
    p=$!
    pids+=("$p")
    for _ in $(seq 1 200); do
        http[$name]=$(sed -n 's/.*msg="peer started".*http_port=\([0-9]*\).*/\1/p' "$log" 2> /dev/null)
        mesh[$name]=$(sed -n 's/.*msg="peer started".*peer_port=\([0-9]*\).*/\1/p' "$log" 2> /dev/null)
        [ -n "${http[$name]}" ] && return 0
        kill -0 "$p" 2> /dev/null || fail "$name exited at start (see $log)"
        sleep 0.05
    done
    fail "$name did not start (see $log)"
}

# field NAME EXPR: a Python expression on NAME's /v1/status as `s`.
field() {
    "$bin" status --peer "127.0.0.1:${http[$1]}" -o json 2> /dev/null |
        python3 -c "import json, sys; s = json.load(sys.stdin); print($2)" 2> /dev/null
}

# wait_for SECONDS NAME EXPR WANT: polls every 100 ms.
wait_for() {
    for _ in $(seq 1 $(($1 * 10))); do
        [ "$(field "$2" "$3")" = "$4" ] && return 0
        sleep 0.1
    done
    fail "$2: $3 is not $4 after $1 s"
}
