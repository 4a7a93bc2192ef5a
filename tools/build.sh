#!/bin/sh
# build.sh - configure and build tailgate in build/ (or $1), from a clean
# clone: autoreconf when configure is missing, configure when the build
# directory has no Makefile.  Extra arguments go to configure.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
[ $# -gt 0 ] && shift
cd "$top"
# README's "Building" runs ./configure in the source tree itself; autoconf
# then refuses every other build directory ("source directory already
# configured"): say so, with the fix.
if [ -f "$top/config.status" ]; then
    echo "build.sh: $top is configured in place (./configure ran there), so $dir/ cannot be" \
        "configured: run \`make distclean\` in $top first" >&2
    exit 1
fi
[ -x configure ] || autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
mkdir -p "$dir"
cd "$dir"
[ -f Makefile ] || "$top/configure" -q --enable-werror "$@"
make -j"$(nproc)" >/dev/null
