#!/bin/sh
# pgoutput_live.sh - capture a fresh pgoutput stream from a private
# PostgreSQL cluster (tests/lib/pg.sh) with tests/pgoutput_capture and check
# it with tests/test_pgoutput, so the parser meets the installed server's
# real bytes, not only the checked-in capture.  Skips (77) without
# PostgreSQL server binaries.
top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
. "$top_srcdir/tests/lib/pg.sh"
pg_bindir >/dev/null 2>&1 || { echo "1..0 # SKIP no PostgreSQL server binaries"; exit 77; }
pg_start >/dev/null || { echo "Bail out! could not start PostgreSQL"; exit 1; }
cap=$PGDIR/capture.bin
trap 'pg_stop' EXIT
"$top_builddir/tests/pgoutput_capture" "$TAILGATE_PG_DSN" "$cap" ||
    { echo "Bail out! capture failed"; exit 1; }
"$top_builddir/tests/test_pgoutput" "$cap"
