#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running sagemesh needs.
# Idempotent; run as root on a fresh Debian 12 machine. --test adds what
# only the tests need.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root (apt-get install); try: sudo $0" >&2
    exit 1
fi

packages=(
    # toolchain and build
    build-essential meson ninja-build pkg-config file git python3 netbase
    clang libclang-rt-14-dev clang-format
    # core libraries (static archives ship with the -dev packages)
    libuv1-dev libnng-dev libmbedtls-dev libmsgpack-dev libopenblas-dev
    libgfortran-12-dev libsodium-dev libraft-dev liblz4-dev libhttp-parser-dev
    zlib1g-dev libyajl-dev
)
# Only for the tests (deploy/test.sh passes --test): promtool (check metrics)
# and the prometheus server scraping a peer in the slow suite. Not on a
# machine that only runs sagemesh: the package would start a server there.
if [ "${1:-}" = "--test" ]; then
    packages+=(prometheus)
fi

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps.sh: all ${#packages[@]} packages already installed"
    exit 0
fi
echo "install-deps.sh: installing ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
