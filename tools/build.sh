#!/bin/sh
# build.sh - configure and build tailgate in build/ (or $1), from a clean
# clone: autoreconf when configure is missing, configure when the build
# directory has no Makefile.  Extra arguments go to configure.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
[ $# -gt 0 ] && shift
cd "$top"
[ -x configure ] || autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
mkdir -p "$dir"
cd "$dir"
[ -f Makefile ] || "$top/configure" -q --enable-werror "$@"
make -j"$(nproc)" >/dev/null
