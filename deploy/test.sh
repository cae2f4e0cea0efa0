#!/usr/bin/env bash
# Sets up, builds and runs every sagemesh test on a fresh Debian 12 machine.
# Run as root from anywhere: bash deploy/test.sh
#
# Three builds, all with -Werror:
#   build       the static release binary (gcc): unit, fuzz replay, lint,
#               slow (real processes on 127.0.0.1)
#   build-asan  dynamic, ASan+UBSan, no recovery (gcc): unit, fuzz replay
#               and slow (the daemon under real traffic, leaks checked)
#   build-fuzz  clang libFuzzer with ASan+UBSan: each target fuzzed briefly
# The last line is "N passed, N failed" over all three; the exit status is
# non-zero on any failure.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash deploy/install-deps.sh --test || exit 1
export SM_SEED=${SM_SEED:-20261125}

status=0          # any failure at all
build_failures=0  # failed setup or compile steps: no test result shows them

build_step() {
    echo "==> $*"
    "$@" || { status=1; build_failures=$((build_failures + 1)); }
}

test_step() {
    echo "==> $*"
    "$@" || status=1
}

# `meson setup` only once per build directory; later runs reuse it. The
# compiler comes from CC when set.
setup() {
    local dir=$1
    shift
    [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@"
}

setup_clang() {
    [ -f "$1/build.ninja" ] || CC=clang meson setup "$@"
}

san_args=(-Dstatic=false -Db_sanitize=address,undefined
          -Dc_args=-fno-sanitize-recover=all
          -Dc_link_args=-fno-sanitize-recover=all)

build_step setup build --buildtype=release -Dwerror=true
build_step ninja -C build
test_step meson test -C build --print-errorlogs --num-processes 2

build_step setup build-asan --buildtype=debug -Dwerror=true "${san_args[@]}"
build_step ninja -C build-asan
test_step env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1 \
    meson test -C build-asan --suite unit --suite fuzz --suite slow --print-errorlogs \
    --num-processes 2

build_step setup_clang build-fuzz --buildtype=debugoptimized -Dwerror=true -Dfuzzing=libfuzzer \
    "${san_args[@]}" -Db_lundef=false
build_step ninja -C build-fuzz
test_step meson test -C build-fuzz --suite fuzz --print-errorlogs \
    --num-processes 2

python3 tests/summary.py --failed-steps "$build_failures" \
    build build-asan build-fuzz || status=1
exit $status
