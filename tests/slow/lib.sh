# Shared by the slow tests (sourced). wait_port calls the test's own fail().

# wait_port LOG PID SED WHAT: waits up to 10 s for process PID to write the
# port it bound into LOG (SED is a `sed -n` script printing the number) and
# stores it in $found_port; calls fail (the test's own) when the process
# exits or says nothing in time.
wait_port() {
    local log=$1 pid=$2 script=$3 what=$4
    found_port=
    for _ in $(seq 1 200); do
        found_port=$(sed -n "$script" "$log" 2>/dev/null | tail -1)
        [ -n "$found_port" ] && return 0
        kill -0 "$pid" 2>/dev/null || fail "$what exited at start"
        sleep 0.05
    done
    fail "$what did not report its port in 10 s"
}

# The peer's log line with its HTTP port.
peer_port_sed='s/.*msg="peer started".*http_port=\([0-9]*\).*/\1/p'

# kill_started: kills (SIGKILL) and reaps every process in the test's
# $pids array; for its EXIT trap.
kill_started() {
    local p
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
}

# For tests of peers started by name: they set $bin, $dir and the
# associative array http (NAME -> HTTP port), and log to $dir/NAME.log
# (tap.sh gives them ok, fail and cleanup).

# field NAME EXPR: a Python expression on NAME's /v1/status as `s`.
field() {
    "$bin" status --peer "127.0.0.1:${http[$1]}" -o json \
        > "$dir/status-$1.json" 2> /dev/null
    python3 -c "import json; s=json.load(open('$dir/status-$1.json')); print($2)"
}

# wait_for WHAT SECONDS NAME EXPR WANT: polls every 100 ms until EXPR on
# NAME's status prints WANT; calls the test's fail() after SECONDS.
wait_for() {
    local what=$1 bound=$2 name=$3 expr=$4 want=$5 got=
    for _ in $(seq 1 $((bound * 10))); do
        got=$(field "$name" "$expr" 2> /dev/null)
        [ "$got" = "$want" ] && return 0
        sleep 0.1
    done
    fail "$what: $name says '$got', wanted '$want'"
}
