#!/bin/sh
# deps.sh - install what tailgate needs on Debian 12, only what is missing.
# Used by tools/test and tools/demo; safe to run again.
#   tools/deps.sh          everything the tests need (chromium, valgrind, clang, npm)
#   tools/deps.sh --demo   what tools/demo needs: the build, nginx, PostgreSQL
set -eu
demo=0
[ "${1:-}" = --demo ] && demo=1

pkgs="build-essential autoconf automake pkg-config libpq-dev libfcgi-dev libjson-c-dev zlib1g-dev
      libcurl4-openssl-dev libssl-dev
      nginx postgresql postgresql-client-15 python3 chromium valgrind clang libclang-rt-14-dev
      clang-format"
[ "${TAILGATE_BENCH_DEPS:-}" = 1 ] && pkgs="$pkgs libnginx-mod-nchan python3-tornado"
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
[ $demo = 1 ] && pkgs="build-essential autoconf automake pkg-config libpq-dev libfcgi-dev
      libjson-c-dev zlib1g-dev libcurl4-openssl-dev libssl-dev nginx postgresql
      postgresql-client-15 python3"

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Front-end test tooling (playwright-core drives Debian's chromium).
top=$(cd "$(dirname "$0")/.." && pwd)
if [ $demo = 0 ] && [ -f "$top/package.json" ] && [ ! -d "$top/node_modules" ]; then
    echo "deps: npm install"
    (cd "$top" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error;
                  else npm install --no-audit --no-fund --loglevel=error; fi)
fi
