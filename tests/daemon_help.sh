#!/bin/sh
# daemon_help.sh - tailgated's command line: --help, --version, a usage
# error, and --check on a good and a bad configuration (file:line: reason).
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
d="$top_builddir/tailgated"
n=0
failed=0
t() { # t DESCRIPTION CONDITION...
    n=$((n + 1)); what=$1; shift
    if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=1; fi
}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

out=$("$d" --help 2>&1); rc=$?
t "tailgated --help exits 0 with a usage text" [ $rc -eq 0 ]
t "  and mentions -c, --check, --syslog, --remove-on-exit" \
    sh -c 'printf "%s" "$1" | grep -q "usage: tailgated" && printf "%s" "$1" | grep -q -- "--check" &&
           printf "%s" "$1" | grep -q -- "--syslog" && printf "%s" "$1" | grep -q -- "--remove-on-exit"' _ "$out"
out=$("$d" --version 2>&1); rc=$?
t "tailgated --version exits 0 and names itself" sh -c '[ $1 -eq 0 ] && printf "%s" "$2" | grep -q "^tailgated "' _ $rc "$out"
out=$("$d" --no-such-option 2>&1); rc=$?
t "an unknown option is a usage error (exit 2)" sh -c '[ $1 -eq 2 ] && printf "%s" "$2" | grep -qi usage' _ $rc "$out"
out=$("$d" extra-argument 2>&1); rc=$?
t "a stray argument is a usage error (exit 2)" [ $rc -eq 2 ]

out=$("$d" --check --syntax -c "$top_srcdir/tailgated.conf.example" 2>&1); rc=$?
t "--check --syntax accepts tailgated.conf.example" sh -c '[ $1 -eq 0 ] && printf "%s" "$2" | grep -q ": ok (source materialize, 2 feeds; syntax only)"' _ $rc "$out"
sed "s|^conninfo = .*|conninfo = host=127.0.0.1 port=1 connect_timeout=2|; s|^ring_dir *= .*|ring_dir = $tmp/nonexistent|" \
    "$top_srcdir/tailgated.conf.example" > "$tmp/down.conf"
out=$("$d" --check -c "$tmp/down.conf" 2>&1); rc=$?
t "--check connects: no server and no ring_dir are two problems, one line each (exit 1)" \
    sh -c '[ $1 -eq 1 ] && printf "%s" "$2" | grep -q "ring_dir .*nonexistent does not exist" &&
           printf "%s" "$2" | grep -q "opening a connection failed (connection): .*refused" &&
           printf "%s" "$2" | grep -q "2 problems"' _ $rc "$out"

printf 'source = materialize\n[feed a]\nview = v\n[feed a]\nview = w\n' >"$tmp/dup.conf"
out=$("$d" --check -c "$tmp/dup.conf" 2>&1); rc=$?
t "--check refuses a duplicate feed with file:line (exit 1)" \
    sh -c '[ $1 -eq 1 ] && printf "%s" "$2" | grep -q "dup.conf:4: duplicate feed \"a\""' _ $rc "$out"
printf 'source = materialize\nbogus = 1\n' >"$tmp/key.conf"
out=$("$d" -n -c "$tmp/key.conf" 2>&1); rc=$?
t "--check refuses an unknown key with file:line" \
    sh -c '[ $1 -eq 1 ] && printf "%s" "$2" | grep -q "key.conf:2: unknown key \"bogus\""' _ $rc "$out"
out=$("$d" -c "$tmp/key.conf" 2>&1); rc=$?
t "starting with a bad file fails (exit 1) with the same message" \
    sh -c '[ $1 -eq 1 ] && printf "%s" "$2" | grep -q "key.conf:2: unknown key"' _ $rc "$out"
out=$("$d" --check -c "$tmp/missing.conf" 2>&1); rc=$?
t "--check on a missing file names it" sh -c '[ $1 -eq 1 ] && printf "%s" "$2" | grep -q "missing.conf: No such file"' _ $rc "$out"
echo "1..$n"
exit $failed
