#!/bin/sh
# man_options.sh - every option a program's --help prints is described in
# its man page, and every option the man page describes is in --help.
#
# From --help: the option column of each line that starts (after spaces)
# with "-X" or "--name".  From the man page: the tag lines (the line after
# each .TP) of its OPTIONS section.  Both reduced to "-X" and "--name"
# tokens, sorted, compared; one "not ok" line per program names what is
# missing where.
LC_ALL=C
export LC_ALL
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
failed=0
n=0
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT

# help_options PROGRAM: the options --help lists, one per line.
help_options() {
    "$top_builddir/$1" --help 2>&1 |
        grep -E '^ +--?[A-Za-z0-9]' |
        # the option column ends at the first run of two spaces
        sed -E 's/^ +//; s/  .*//' |
        grep -oE '(^|[ ,/])--?[A-Za-z0-9][A-Za-z0-9-]*' |
        sed -E 's/^[ ,/]//' | sort -u
}

# man_options PAGE: the options the OPTIONS section's tags name.
man_options() {
    awk '/^\.SH/ { in_opt = ($2 == "OPTIONS") ; next }
         in_opt && /^\.TP/ { getline; print }' "$1" |
        sed -E 's/\\f[BIRP]//g; s/\\-/-/g; s/"//g' |
        grep -oE '(^|[ ,/])--?[A-Za-z0-9][A-Za-z0-9-]*' |
        sed -E 's/^[ ,/]//' | grep -vE '^-[0-9]' | sort -u
}

for pair in tailgated:tailgated.8 tailgate-fcgi:tailgate-fcgi.8 \
    tailgate-ring:tailgate-ring.1 tailgate-loadgen:tailgate-loadgen.1 \
    tailgate-shopgen:tailgate-shopgen.1 tailgate-watch:tailgate-watch.1 \
    tailgate-hook:tailgate-hook.1; do
    prog=${pair%%:*}
    page=$top_srcdir/man/${pair#*:}
    n=$((n + 1))
    if [ ! -x "$top_builddir/$prog" ] || [ ! -r "$page" ]; then
        echo "not ok $n - $prog: no program at $top_builddir/$prog or no page $page"
        failed=1
        continue
    fi
    h=$(help_options "$prog")
    m=$(man_options "$page")
    if [ -z "$h" ] || [ -z "$m" ]; then
        echo "not ok $n - $prog: no options read from --help or from $page"
        failed=1
        continue
    fi
    printf '%s\n' "$h" >"$tmp"
    only_help=$(printf '%s\n' "$m" | comm -13 - "$tmp" | tr '\n' ' ')
    only_man=$(printf '%s\n' "$m" | comm -23 - "$tmp" | tr '\n' ' ')
    if [ -z "$only_help$only_man" ]; then
        echo "ok $n - $prog: --help and $(basename "$page") name the same options"
    else
        echo "not ok $n - $prog:${only_help:+ in --help, not in $(basename "$page"): $only_help}${only_man:+ in $(basename "$page"), not in --help: $only_man}"
        failed=1
    fi
done
echo "1..$n"
exit $failed
