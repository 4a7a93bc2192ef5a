#!/bin/sh
# shopgen_help.sh - tailgate-shopgen answers --help with a usage text and
# exit 0, refuses an unknown option and a bad value with exit 2.
top_builddir=${top_builddir:-.}
prog=$top_builddir/tailgate-shopgen
n=0 failed=0
t() { n=$((n + 1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=1; fi; }
t "--help prints a usage and exits 0" '"$prog" --help | grep -q "^usage: tailgate-shopgen"'
t "an unknown option exits 2 with a usage" '"$prog" --no-such-option 2>&1 | grep -q usage; "$prog" --no-such-option >/dev/null 2>&1; [ $? -eq 2 ]'
t "a bad purchase rate exits 2" '"$prog" --purchases abc >/dev/null 2>&1; [ $? -eq 2 ]'
t "a negative pageview rate exits 2" '"$prog" --pageviews -1 >/dev/null 2>&1; [ $? -eq 2 ]'
t "--version" '"$prog" --version | grep -q "^tailgate-shopgen "'
t "a malformed --dsn exits 1 at once, naming it" 'out=$(timeout 10 "$prog" -q --dsn "nosuchkey=1" --duration 30 2>&1); [ $? -eq 1 ] && echo "$out" | grep -q "not a libpq connection string"'
t "no database within --duration: exit 1, not a retry forever" 'out=$(timeout 20 "$prog" -q --dsn "host=127.0.0.1 port=1" --duration 1 2>&1); [ $? -eq 1 ] && echo "$out" | grep -q "within --duration"'
echo "1..$n"
exit $failed
