# TAP steps and cleanup for the tests of peers named p1, p2, ... (sourced
# after lib.sh, by tests that set $dir and the pids array).

# TAP: ok counts and prints a passed step; fail prints the failed one and
# the tail of every peer's log, then exits 1.
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() {
    echo "not ok $((n + 1)) - $*"
    for f in "$dir"/p*.log*; do
        echo "# --- $f"
        grep -v 'level=debug' "$f" 2> /dev/null | tail -10 | cut -c1-300 |
            sed "s/^/# /"
    done
    exit 1
}

# cleanup: kills what the test started and removes $dir (unless KEEP is
# set); for its EXIT trap.
cleanup() {
    kill_started
    [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
