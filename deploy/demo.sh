#!/usr/bin/env bash
# Sets up, builds and runs sagemesh's main job on a fresh Debian 12 machine.
# Run as root from anywhere: bash deploy/demo.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash deploy/install-deps.sh
# The same configuration as deploy/test.sh, so the two share the tree.
[ -f build/build.ninja ] || meson setup build --buildtype=release -Dwerror=true
ninja -C build sagemesh

# A local peer, the simulated `social` application, training, an injected
# fault and the diagnoses; exits non-zero if the diagnoses are wrong.
exec ./build/sagemesh demo
