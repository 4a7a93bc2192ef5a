#!/bin/sh
# install.sh - `make install` as a service on a Debian-like host (TAP).
#
#   1. make install DESTDIR=D: programs, man pages, the nginx snippet, the
#      example configuration (not readable by others), the systemd units,
#      sysusers.d and tmpfiles.d files, each where it belongs;
#   2. the units name the installed programs and configuration;
#   3. man 5 tailgated.conf finds the installed page (when man is present);
#   4. systemd-analyze verify accepts the units (when present), on an
#      install with prefix=P, so the programs the units name exist;
#   5. a configuration holding a password that others can read gets a
#      warning from tailgated --check; mode 640 gets none.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
MAKE=${MAKE:-make}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tailgate-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }

D=$tmp/dest
$MAKE -C "$top_builddir" -s install DESTDIR="$D" >"$tmp/install.log" 2>&1
ok $? "make install DESTDIR=..." || sed 's/^/#   /' "$tmp/install.log" | tail -20

prefix=$(sed -n 's/^prefix = //p' "$top_builddir/Makefile")
sysconfdir=$(sed -n 's/^sysconfdir = //p' "$top_builddir/Makefile" | sed "s|\${prefix}|$prefix|")
missing=
for f in "$prefix/sbin/tailgated" "$prefix/sbin/tailgate-fcgi" "$prefix/bin/tailgate-ring" \
	"$prefix/share/man/man8/tailgated.8" "$prefix/share/man/man5/tailgated.conf.5" \
	"$prefix/share/man/man8/tailgate-fcgi.8" \
	"$sysconfdir/nginx/snippets/tailgate.conf" "$sysconfdir/tailgate/tailgated.conf.example" \
	"$prefix/lib/systemd/system/tailgated.service" \
	"$prefix/lib/systemd/system/tailgate-fcgi.socket" \
	"$prefix/lib/systemd/system/tailgate-fcgi.service" \
	"$prefix/lib/sysusers.d/tailgate.conf" "$prefix/lib/tmpfiles.d/tailgate.conf"; do
	[ -f "$D$f" ] || missing="$missing $f"
done
[ -z "$missing" ]
ok $? "installed: programs, man pages, nginx snippet, example config, units, sysusers, tmpfiles${missing:+ (missing:$missing)}"

mode=$(stat -c %a "$D$sysconfdir/tailgate/tailgated.conf.example")
[ "$mode" = 640 ]
ok $? "the example configuration is mode 640 (is $mode)"

grep -q "^ExecStart=$prefix/sbin/tailgated -c $sysconfdir/tailgate/tailgated.conf\$" \
	"$D$prefix/lib/systemd/system/tailgated.service" &&
	grep -q "^ExecStart=$prefix/sbin/tailgate-fcgi " "$D$prefix/lib/systemd/system/tailgate-fcgi.service" &&
	grep -q "^ListenStream=" "$D$prefix/lib/systemd/system/tailgate-fcgi.socket" &&
	! grep -q '@[a-z]*@' "$D$prefix/lib/systemd/system/"*
ok $? "the units name the installed programs and configuration"

if command -v man >/dev/null 2>&1; then
	MANPATH="$D$prefix/share/man" man -w 5 tailgated.conf >"$tmp/man.out" 2>&1 &&
		grep -q "man5/tailgated.conf.5" "$tmp/man.out"
	ok $? "man 5 tailgated.conf finds the installed page"
else
	skip "man 5 tailgated.conf" "man not installed"
fi

if command -v systemd-analyze >/dev/null 2>&1; then
	P=$tmp/prefix
	$MAKE -C "$top_builddir" -s install prefix="$P/usr" sysconfdir="$P/etc" >"$tmp/install2.log" 2>&1
	(cd "$P/usr/lib/systemd/system" &&
		systemd-analyze verify --man=no ./tailgated.service ./tailgate-fcgi.socket \
			./tailgate-fcgi.service) >"$tmp/verify.out" 2>&1
	rc=$?
	# Only our units' own complaints count (not the host's other units).
	# (systemd-analyze exits 0 on a key it ignores: its message counts.)
	if grep -E "(^|/)(tailgated|tailgate-fcgi)\.(service|socket)(:[0-9]+)?:" "$tmp/verify.out" >/dev/null; then
		rc=1
	fi
	ok $rc "systemd-analyze verify tailgated.service tailgate-fcgi.socket tailgate-fcgi.service" ||
		sed 's/^/#   /' "$tmp/verify.out"
else
	skip "systemd-analyze verify" "systemd-analyze not installed"
fi

conf=$tmp/tailgated.conf
cat >"$conf" <<CONF
source = postgresql
conninfo = host=127.0.0.1 port=1 user=app password=s3cret dbname=app
ring_dir = $tmp
[feed orders]
table = orders
CONF
chmod 644 "$conf"
"$top_builddir/tailgated" --check --syntax -c "$conf" >"$tmp/out" 2>"$tmp/err"
grep -q "warning: $conf holds a password and every user can read it (mode 0644); chmod 640 $conf" "$tmp/err"
ok $? "a password in a file others can read: warned, with the fix" || sed 's/^/#   /' "$tmp/err"
! grep -q s3cret "$tmp/err" "$tmp/out"
ok $? "the warning does not show the password"
chmod 640 "$conf"
"$top_builddir/tailgated" --check --syntax -c "$conf" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && ! grep -q warning "$tmp/err"
ok $? "mode 640: no warning"

echo "1..$n"
[ $fails -eq 0 ]
