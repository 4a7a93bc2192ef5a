#!/bin/sh
# responder.sh - the responder's HTTP tests through a real nginx
# (tests/test_responder.py; the stack is tests/lib/stack.py).  Skips (77)
# when nginx or python3 is missing.
top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
command -v python3 >/dev/null 2>&1 || { echo "python3 not found: skipped"; exit 77; }
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { echo "nginx not found: skipped"; exit 77; }
TAILGATE_BUILDDIR=$(cd "$top_builddir" && pwd)
export TAILGATE_BUILDDIR top_srcdir top_builddir
exec python3 "$top_srcdir/tests/test_responder.py" -v "$@"
