#!/bin/sh
# stress_ring.sh - run the ring stress test (tests/stress_ring.c) the way
# `make check` can afford, and print TAP.
#
# Plain build: the process mode at its defaults (1 writer, 8 reader
# processes, 3,000,000 batches, 20 of 1-4 MB), then a short --threads run.
# Sanitized builds run reduced sizes: AddressSanitizer the process mode
# with 1,000,000 batches and --threads with 200,000; ThreadSanitizer only
# --threads, 300,000 batches (it cannot see across processes).  The build
# is taken as sanitized when SANITIZER=asan|tsan (tools/test sets it) or
# when the binary links the sanitizer runtime.
#
# STRESS_SEED=N repeats a run (each run prints its seed); STRESS_ARGS adds
# options to every run.
top_builddir=${top_builddir:-.}
prog=$top_builddir/tests/stress_ring

if [ ! -x "$prog" ]; then
    echo "1..0 # SKIP $prog not built"
    exit 77
fi

san=${SANITIZER:-}
if [ -z "$san" ]; then
    syms=$(nm "$prog" 2>/dev/null; ldd "$prog" 2>/dev/null)
    case $syms in
    *__tsan_init* | *libtsan*) san=tsan ;;
    *__asan_init* | *libasan*) san=asan ;;
    esac
fi

seed=${STRESS_SEED:-}
n=0
failed=0

# run DESCRIPTION ARGS...: one TAP line per run of the program.
run() {
    desc=$1
    shift
    n=$((n + 1))
    if [ -n "$seed" ]; then
        set -- "$@" --seed "$seed"
    fi
    echo "# stress_ring $* ${STRESS_ARGS:-}"
    # shellcheck disable=SC2086 # STRESS_ARGS is a list of options
    out=$("$prog" "$@" ${STRESS_ARGS:-} 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed 's/^/# /'
    if [ $rc -eq 0 ]; then
        echo "ok $n - $desc"
    else
        echo "not ok $n - $desc (exit $rc)"
        failed=1
    fi
}

echo "# build: ${san:-not sanitized}"
case $san in
tsan)
    # TSan reports races it sees in the ring's callers and the test; the
    # reader's seqlock copy is exempt in ring.c (copy_racy).
    TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}"
    export TSAN_OPTIONS
    run "threads under ThreadSanitizer, 300k batches" \
        --threads --readers 8 --batches 300000 --big 4 --seconds 240
    ;;
asan)
    run "processes under AddressSanitizer, 1M batches" \
        --readers 8 --batches 1000000 --big 8 --seconds 180
    run "threads under AddressSanitizer, 200k batches" \
        --threads --readers 8 --batches 200000 --big 2 --seconds 180
    ;;
*)
    run "8 reader processes, 3M batches, 20 big" --seconds 120
    run "8 reader threads, 500k batches" \
        --threads --readers 8 --batches 500000 --big 4 --seconds 60
    # The ring alone keeps histories apart: no lookup check, many resets.
    run "8 reader threads, 300k batches, 30 resets, no history check" \
        --threads --readers 8 --batches 300000 --resets 30 --no-history-check --seconds 60
    ;;
esac

echo "1..$n"
exit $failed
