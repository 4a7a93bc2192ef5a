#!/bin/sh
# help.sh - every program answers --help with a usage text and exit 0,
# and refuses an unknown option with exit status 2 (or 1) and a usage text.
top_builddir=${top_builddir:-.}
failed=0
n=0
for prog in tailgate-ring tailgated tailgate-fcgi tailgate-loadgen tailgate-watch tailgate-hook; do
    n=$((n + 1))
    out=$("$top_builddir/$prog" --help 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && printf '%s' "$out" | grep -qi 'usage'; then
        echo "ok $n - $prog --help"
    else
        echo "not ok $n - $prog --help (exit $rc)"; failed=1
    fi
    n=$((n + 1))
    out=$("$top_builddir/$prog" --no-such-option 2>&1)
    rc=$?
    if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qi 'usage'; then
        echo "ok $n - $prog refuses an unknown option"
    else
        echo "not ok $n - $prog --no-such-option (exit $rc)"; failed=1
    fi
done
echo "1..$n"
exit $failed
