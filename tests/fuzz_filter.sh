#!/bin/sh
# fuzz_filter.sh - the filter fuzz target (tests/fuzz/fuzz_filter.c) in
# make check: its committed corpus, then 200,000 repeatable mutations.
set -u
out=$("${top_builddir:-.}/tests/fuzz_filter_replay" -n 200000 "${top_srcdir:-.}/tests/fuzz/corpus/filter" 2>&1)
rc=$?
echo "1..1"
if [ $rc -eq 0 ]; then echo "ok 1 - $out"; else echo "not ok 1 - fuzz_filter_replay exit $rc"; echo "$out" | sed 's/^/# /' | tail -20; exit 1; fi
