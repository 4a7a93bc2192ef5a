#!/bin/sh
# daemon_mz.sh - run tests/daemon_mz.py (tailgated against the Materialize
# SUBSCRIBE test server) under automake; skip (77) without python3.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
command -v python3 >/dev/null 2>&1 || { echo "1..0 # SKIP python3 not found"; exit 77; }
top_builddir=$top_builddir exec python3 "$top_srcdir/tests/daemon_mz.py"
