#!/usr/bin/env python3
"""daemon_mz.py - tailgated against the Materialize SUBSCRIBE test server.

For each scenario in tests/mzserver/scenarios/ this starts mzserver.py on
a free port, runs the real tailgated with a private ring directory, waits
(polling, with a deadline) until the ring holds the scenario's last closed
timestamp, then reads the ring back with `tailgate-ring dump` and checks:

  - the snapshot plus the batches, applied in order, give exactly the
    scenario's state at every cursor (the snapshot's and each batch's);
  - each batch is at a timestamp where the scenario changed, in order;
  - values are typed as the column types say: numbers keep their text,
    NaN/Infinity are strings, bools, json embedded, NULL, strings;
  - faults behave: drops and errors end in a resume AS OF the frontier
    with SNAPSHOT = false (mzserver's event log shows the statements), a
    refused AS OF ends in a fresh snapshot whose difference is one batch,
    malformed rows are refused with a clear log line and never published,
    an open timestamp is never visible before its progress row (holds);
  - notices and ParameterStatus between rows are logged and end nothing;
    the error of a dropped relation makes the next subscription a fresh
    snapshot; a quiet upstream is called stalled, then recovers; what
    no batch can hold (multiplicities in int8's range) is refused without
    laying out copies; options=--cluster=NAME selects the cluster; very
    wide rows pass;
  - SIGTERM stops the daemon with status 0 and the segment marked closed;
  - a daemon restarted after SIGTERM or kill -9 adopts the segment and
    resumes AS OF its head without a snapshot, repeating no batch.

Python 3 standard library only; reuses mzserver's scenario parser for the
scenario's history (its text values), and decides the expected JSON from
the column types independently of the daemon.  TAP output.
"""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'mzserver'))
sys.path.insert(0, os.path.join(HERE, 'lib'))
import mzserver  # noqa: E402
from mz import read_events  # noqa: E402
from tap import count, done, failed, ok  # noqa: E402

BUILD = os.environ.get('top_builddir', '.')
TAILGATED = os.path.join(BUILD, 'tailgated')
RINGTOOL = os.path.join(BUILD, 'tailgate-ring')
SCENARIOS = os.path.join(HERE, 'mzserver', 'scenarios')
DEADLINE = float(os.environ.get('TAILGATE_TEST_TIMEOUT', '60'))

NUMBER_TYPES = {'int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'oid',
                'uint2', 'uint4', 'uint8', 'mz_timestamp'}
JSON_NUMBER = re.compile(r'-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z')


# ---------------------------------------------------------------------------
# The expected JSON of a value, from the column type (not from the daemon)
# ---------------------------------------------------------------------------

def num(text):
    return ('num', text)


def expected_value(col, text):
    if text is None:
        return None
    base = col.base
    if col.is_array:
        return text
    if base in NUMBER_TYPES:
        return num(text) if JSON_NUMBER.match(text) else text
    if base == 'bool':
        return {'t': True, 'f': False}.get(text, text)
    if base in ('json', 'jsonb'):
        return json.loads(text, parse_int=num, parse_float=num)
    return text


def canon(value):
    """A hashable, order-preserving canonical form of one row."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def daemon_row(row):
    """row: parsed with num() for numbers (Run.dump)."""
    return canon(row)


class Model:
    """The scenario's history as the daemon should publish it."""

    def __init__(self, path):
        self.scn = mzserver.Scenario(path)
        self.cols = self.scn.columns
        self.changes = collections.OrderedDict()   # ts -> Counter
        for e in self.scn.events:
            if e.kind != 'row':
                continue
            row = canon([expected_value(c, v)
                         for c, v in zip(self.cols, e.vals)])
            self.changes.setdefault(e.ts, collections.Counter())[row] += e.diff
        progress = [e.ts for e in self.scn.events if e.kind == 'progress']
        closed_below = float('inf') if self.scn.idle_progress else \
            (max(progress) if progress else 0)
        data_ts = [t for t, c in self.changes.items()
                   if t < closed_below and any(v for v in c.values())]
        self.final = max(data_ts) if data_ts else None

    def state_at(self, cursor):
        s = collections.Counter()
        for ts, ch in self.changes.items():
            if ts <= cursor:
                s.update(ch)
        return +s   # drop zero counts

    def changed_at(self, ts):
        return any(v for v in self.changes.get(ts, {}).values())


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

class Run:
    """One mzserver + one tailgated in a private directory."""

    def __init__(self, scenario, server_args=(), feed=None, view=None,
                 env=None, daemon_args=(), conninfo_extra='', conf_extra=''):
        self.dir = tempfile.mkdtemp(prefix='tailgate-mz.')
        self.ring_dir = os.path.join(self.dir, 'ring')
        os.mkdir(self.ring_dir)
        self.events_path = os.path.join(self.dir, 'events.jsonl')
        self.log_path = os.path.join(self.dir, 'tailgated.log')
        self.hold_dir = os.path.join(self.dir, 'holds')
        os.mkdir(self.hold_dir)
        self.server = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'mzserver', 'mzserver.py'),
             '--port', '0', '--scenario', scenario,
             '--events', self.events_path, '--hold-dir', self.hold_dir]
            + list(server_args),
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.dir, 'mzserver.err'), 'w'),
            text=True)
        line = self.server.stdout.readline()   # blocks until listening
        m = re.match(r'PORT=(\d+)', line)
        if not m:
            raise RuntimeError('mzserver did not start: %r' % line)
        self.port = int(m.group(1))
        scn = mzserver.Scenario(scenario)
        self.feed = feed or scn.name.replace('_', '-')
        self.conf_path = os.path.join(self.dir, 'tailgated.conf')
        with open(self.conf_path, 'w') as f:
            f.write('source = materialize\n'
                    'conninfo = host=127.0.0.1 port=%d user=materialize%s\n'
                    'ring_dir = %s\n'
                    'backoff_min_ms = 20\n'
                    'backoff_max_ms = 200\n'
                    '%s'
                    '[feed %s]\n'
                    'view = %s\n' % (self.port, conninfo_extra, self.ring_dir,
                                     conf_extra, self.feed, view or scn.name))
        wrap = []
        if os.environ.get('TAILGATE_VALGRIND'):
            # Memory errors or definite leaks make the exit status 99,
            # which check_stop reports.
            wrap = ['valgrind', '-q', '--error-exitcode=99', '--leak-check=full',
                    '--errors-for-leak-kinds=definite',
                    '--log-file=%s' % os.path.join(self.dir, 'valgrind.log')]
        self.argv = wrap + [TAILGATED, '-c', self.conf_path, '-d'] + list(daemon_args)
        self.env = env
        self.daemon = subprocess.Popen(self.argv, stderr=open(self.log_path, 'w'), env=env)

    def restart_daemon(self, sig=signal.SIGTERM):
        """Stop the daemon (SIGTERM, or SIGKILL as a crash) and start a new
        one on the same configuration, ring directory and mzserver; its log
        is appended.  Returns the old daemon's exit status."""
        self.daemon.send_signal(sig)
        rc = self.daemon.wait(timeout=10)
        self.daemon = subprocess.Popen(self.argv, stderr=open(self.log_path, 'a'),
                                       env=self.env)
        return rc

    def write_conf(self, feeds):
        """Replace the configuration: feeds is [(name, view, extra lines)]."""
        with open(self.conf_path, 'w') as f:
            f.write('source = materialize\n'
                    'conninfo = host=127.0.0.1 port=%d user=materialize\n'
                    'ring_dir = %s\n'
                    'backoff_min_ms = 20\n'
                    'backoff_max_ms = 200\n' % (self.port, self.ring_dir))
            for name, view, extra in feeds:
                f.write('[feed %s]\nview = %s\n%s' % (name, view, extra))

    def ring_path(self, feed):
        return os.path.join(self.ring_dir, feed + '.ring')

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def events(self, kind=None):
        return read_events(self.events_path, kind)

    def dump(self, feed=None):
        """The ring as [(cursor, batch)], snapshot first; None if absent."""
        p = subprocess.run([RINGTOOL, '-d', self.ring_dir, 'dump', feed or self.feed],
                           capture_output=True, text=True)
        if p.returncode != 0:
            return None
        out = []
        for line in p.stdout.splitlines():
            d = json.loads(line, parse_int=num, parse_float=num)
            if d.get('restart'):
                out = []
                continue
            out.append((int(d['cursor']), d['batch']))
        # Numbers came back as ['num', text]: JSON has no tuples.
        return out

    def info(self):
        p = subprocess.run([RINGTOOL, '-d', self.ring_dir, 'info', self.feed],
                           capture_output=True, text=True)
        return p.stdout if p.returncode == 0 else ''

    def wait_for(self, cond, what, timeout=DEADLINE):
        """Poll cond() every 20 ms until true or the deadline."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = cond()
            if v:
                return v
            if self.daemon.poll() is not None:
                break
            time.sleep(0.02)
        return ok(False, 'waiting for %s' % what,
                  'daemon exit %s; log tail:\n%s' % (self.daemon.poll(),
                                                    self.log()[-3000:]))

    def head_at_least(self, cursor, feed=None):
        d = self.dump(feed)
        return d if d and d[-1][0] >= cursor else None

    def stop(self):
        rc = None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                rc = self.daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.server.terminate()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        return rc

    def cleanup(self):
        if os.environ.get('TAILGATE_KEEP'):
            print('# kept %s' % self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# The checks every scenario gets
# ---------------------------------------------------------------------------

def check_ring(name, run, model):
    """Rebuild from the snapshot and batches; compare at every cursor."""
    ring = run.wait_for(lambda: run.head_at_least(model.final),
                        '%s: the ring reaches %s' % (name, model.final))
    if not ring:
        return None
    snap_cursor, snap = ring[0]
    ok(snap['deleted'] == [] and snap['timestamp'] == str(snap_cursor),
       '%s: the snapshot is a batch with nothing deleted, at its cursor' % name)
    bad = []
    state = collections.Counter()
    for r in snap['inserted']:
        state[daemon_row(r)] += 1
    want = model.state_at(snap_cursor)
    if state != want:
        bad.append('snapshot at %d: got %s want %s' % (snap_cursor, state, want))
    last = snap_cursor
    unchanged = []
    for cursor, b in ring[1:]:
        if cursor <= last:
            bad.append('cursor %d after %d' % (cursor, last))
        if b['timestamp'] != str(cursor):
            bad.append('batch timestamp %s at cursor %d' % (b['timestamp'], cursor))
        if not b['inserted'] and not b['deleted']:
            bad.append('empty batch at %d' % cursor)
        if not model.changed_at(cursor) and cursor not in run.diff_cursors:
            unchanged.append(cursor)
        for r in b['inserted']:
            state[daemon_row(r)] += 1
        for r in b['deleted']:
            k = daemon_row(r)
            state[k] -= 1
            if state[k] < 0:
                bad.append('at %d: deleted a row not held: %s' % (cursor, k))
        state = +state
        want = model.state_at(cursor)
        if state != want:
            extra = state - want
            missing = want - state
            bad.append('state at %d differs: extra %s missing %s'
                       % (cursor, dict(extra), dict(missing)))
        last = cursor
    ok(not bad, '%s: state from snapshot + %d batches equals the scenario at '
                'every cursor' % (name, len(ring) - 1), '\n'.join(bad[:10]))
    ok(not unchanged, '%s: every batch is at a timestamp where the scenario '
                      'changed' % name, unchanged)
    return ring


def check_stop(name, run):
    rc = run.stop()
    vg = os.path.join(run.dir, 'valgrind.log')
    vglog = open(vg).read() if os.path.exists(vg) else ''
    ok(rc == 0, '%s: SIGTERM stops tailgated with status 0 (got %s)%s'
       % (name, rc, ', valgrind-clean' if os.path.exists(vg) else ''),
       vglog[-3000:] or run.log()[-2000:])
    ok('state        closed' in run.info(),
       '%s: the segment is marked closed' % name, run.info())


def scenario_run(file, name=None, server_args=(), extra=None, diff_cursors=()):
    name = name or file[:-4]
    model = Model(os.path.join(SCENARIOS, file))
    run = Run(os.path.join(SCENARIOS, file), server_args)
    run.diff_cursors = set(diff_cursors)
    try:
        ring = check_ring(name, run, model)
        if extra is not None and ring is not None:
            extra(name, run, model, ring)
        check_stop(name, run)
    finally:
        run.stop()
        run.cleanup()


# ---------------------------------------------------------------------------
# Scenario-specific checks
# ---------------------------------------------------------------------------

def subscribes(run):
    return run.events('subscribe')


def resumed_ok(name, run, model, ring, reconnects=1):
    subs = subscribes(run)
    ok(len(subs) >= 1 + reconnects,
       '%s: %d subscriptions (at least %d reconnect)' % (name, len(subs), reconnects),
       json.dumps(subs)[:2000])
    later = subs[1:]
    ok(later and all(s.get('snapshot') is False and s.get('requested_as_of') is not None
                     for s in later),
       '%s: every reconnect resumes AS OF without a snapshot' % name,
       json.dumps(later)[:2000])
    ok('resuming AS OF' in run.log(), '%s: the log says it resumed' % name)


def check_types(name, run, model, ring):
    cols = json.loads(re.search(r'columns\s+(.*)', run.info()).group(1))
    ok([c['name'] for c in cols] == [c.name for c in model.cols],
       '%s: the segment lists the columns in order' % name, cols)
    scalar = [(c['type'], m.base) for c, m in zip(cols, model.cols) if not m.is_array]
    ok(all(t == b for t, b in scalar),
       '%s: scalar column types named as the database names them' % name, scalar)
    # Raw text checks on the snapshot line: numbers keep their digits.
    p = subprocess.run([RINGTOOL, '-d', run.ring_dir, 'dump', run.feed],
                       capture_output=True, text=True)
    first = p.stdout.splitlines()[0]
    for frag, what in [
            ('123456789012345678901234567890.123456789012345678901234567890',
             'a 60-digit numeric keeps every digit'),
            ('-9223372036854775808', 'int8 minimum'),
            ('"NaN"', 'NaN is a string'),
            ('"-Infinity"', '-Infinity is a string'),
            ('3.4028235e+38', 'float4 text kept'),
            ('[1,7,42,1.5,2.25,3.14159,10.50,true,', 'numbers and bools typed'),
            ('{"a": 1, "b": [1, 2]}', 'json embedded'),
            ('"tab\\there"', 'tab escaped'),
            ('"new\\nline and\\r\\ncrlf"', 'newline and CR escaped'),
            ('"controls \\b \\f \\u000b \\u0001 \x7f end"', 'control characters escaped'),
            ('"back\\\\slash \\\\N \\\\t literal"', 'backslashes and a literal \\N'),
            ('"\\\\N"', 'the text \\N is not NULL'),
            ('null,null,null', 'NULLs'),
            (',"just a string","\xe9\\n",', 'JSON string values embedded')]:
        ok(frag in first, '%s: %s' % (name, what), first[:3000])


def check_mz_types(name, run, model, ring):
    cols = json.loads(re.search(r'columns\s+(.*)', run.info()).group(1))
    types = [(c['type'], m.base) for c, m in zip(cols, model.cols)]
    ok(all(t == b for t, b in types),
       '%s: Materialize types named by their built-in OIDs (uint8, mz_timestamp, '
       'list, map, record)' % name, types)
    ok('encoding those columns as strings' not in run.log(),
       '%s: no type went unnamed' % name, run.log()[-2000:])
    p = subprocess.run([RINGTOOL, '-d', run.ring_dir, 'dump', run.feed],
                       capture_output=True, text=True)
    text = p.stdout
    for frag, what in [
            ('[1,0,0,0,0,999999999999999999999999999999999999999,',
             'uint2/4/8 and mz_timestamp are numbers; numeric keeps 39 digits'),
            ('65535,4294967295,18446744073709551615,18446744073709551615,'
             '-0.000000000000000000000000000000000000001,', 'extremes keep their digits'),
            ('"{1,2,NULL}","{a=>1,b=>NULL}","(1,\\"a b\\")",{"a": 1, "b": [true, null]}]',
             'list, map and record as strings, jsonb embedded'),
            ('"NaN"', 'numeric NaN is a string'),
            ('"(\\"tab\\there\\",)"', 'a record with an escaped tab'),
            ('1234567890123456789.01234567890123456789,', 'numeric with 39 digits and a scale'),
            (',12345678901234567890123456789]', 'a big jsonb number embedded')]:
        ok(frag in text, '%s: %s' % (name, what), text[:3000])


def unconsolidated_extra(name, run, model, ring):
    log = run.log()
    ok(log.count('sent a row twice in one timestamp (its output') == 1,
       '%s: the first repeated row is refused once, with the feed and the row' % name,
       '\n'.join(l for l in log.splitlines() if 'twice' in l))
    ok('it does not consolidate its output; summing' in log,
       '%s: the resent timestamp repeating rows again is summed, and said so' % name,
       log[-2000:])


def complete_extra(name, run, model, ring):
    d = run.wait_for(lambda: run.head_at_least(1700000002000),
                     '%s: the last timestamp, with no progress row after it' % name)
    state = collections.Counter()
    for _, b in d or []:
        state.update(daemon_row(r) for r in b['inserted'])
        state.subtract(daemon_row(r) for r in b['deleted'])
    ok(d and d[-1][0] == 1700000002000 and +state == model.state_at(1700000002000),
       '%s: the COPY ending (all updates presented) publishes the last timestamp' % name,
       d and [(c, b) for c, b in d])
    ok('the SUBSCRIBE completed' in run.log(), '%s: the log says the SUBSCRIBE completed'
       % name, run.log()[-2000:])
    # The daemon's backoff is well under a second: a resubscription would
    # show within 3 s.
    again = wait_until(lambda: len(subscribes(run)) > 1, 3)
    ok(not again and 'state        live' in run.info(),
       '%s: no resubscription; the feed stays live with the final state' % name,
       (json.dumps(subscribes(run))[:1000], run.info()))
    # A daemon restarted with a short stall_timeout_ms adopts the segment,
    # resumes, finds the SUBSCRIBE complete again, and keeps the final state
    # confirmed: final, not stalled.
    with open(run.conf_path) as f:
        conf = f.read()
    with open(run.conf_path, 'w') as f:
        f.write('stall_timeout_ms = 300\n' + conf)
    log_at = len(run.log())
    run.restart_daemon()
    ok(run.wait_for(lambda: 'the SUBSCRIBE completed' in run.log()[log_at:],
                    '%s: completed again after a restart' % name),
       '%s: after a restart the resumed SUBSCRIBE completes again' % name)
    stalled = wait_until(lambda: 'stalled' in run.info(), 1.5)
    info = run.info()
    ok(not stalled and 'state        live' in info and 'confirmed' in info,
       '%s: a completed feed is not called stalled (stall_timeout_ms 300)' % name, info)
    d = run.dump()
    ok(d and d[-1][0] == 1700000002000, '%s: ...and holds the same head' % name,
       d and [c for c, _ in d])


def wait_until(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def sparse_test():
    """A row at a later timestamp completes the earlier ones."""
    name = 'sparse_progress'
    path = os.path.join(SCENARIOS, 'sparse_progress.scn')
    model = Model(path)
    run = Run(path)
    run.diff_cursors = set()
    try:
        if run.wait_for(lambda: reached(run, 'after-three'), 'hold after-three'):
            d = run.wait_for(lambda: run.head_at_least(1700000002000),
                             'batch 1700000002000 before any progress row closes it')
            ok(d and d[-1][0] == 1700000002000,
               '%s: a row at 1700000003000 publishes 1700000002000 (no progress row '
               'yet), and nothing of the open 1700000003000' % name,
               d and [c for c, _ in d])
        release(run, 'after-three')
        check_ring(name, run, model)
        check_stop(name, run)
    finally:
        run.stop()
        run.cleanup()


def reached(run, hold):
    return os.path.exists(os.path.join(run.hold_dir, hold + '.reached'))


def release(run, hold):
    open(os.path.join(run.hold_dir, hold), 'w').close()


def holds_test():
    """Open timestamps stay invisible until their progress row."""
    name = 'holds'
    path = os.path.join(SCENARIOS, 'holds.scn')
    model = Model(path)
    run = Run(path)
    run.diff_cursors = set()
    try:
        if run.wait_for(lambda: reached(run, 'first-live-progress'),
                        'hold first-live-progress'):
            d = run.wait_for(lambda: run.head_at_least(1700000005000),
                             'the first live batch')
            ok(d and d[-1][0] == 1700000005000,
               '%s: at the first hold the ring ends at 1700000005000' % name,
               d and [c for c, _ in d])
        release(run, 'first-live-progress')
        if run.wait_for(lambda: reached(run, 'mid-ts'), 'hold mid-ts'):
            # The open timestamp's first row has been sent; give the daemon
            # the chance to (wrongly) publish by waiting for its heartbeat
            # to move, then check.
            d = run.dump()
            ok(d and all(c < 1700000008000 for c, _ in d),
               '%s: inside timestamp 1700000008000 nothing of it is visible' % name,
               d and [c for c, _ in d])
        release(run, 'mid-ts')
        if run.wait_for(lambda: reached(run, 'mid-ts-closed'), 'hold mid-ts-closed'):
            d = run.wait_for(lambda: run.head_at_least(1700000008000),
                             'batch 1700000008000 after its progress row')
            ok(d and d[-1][0] == 1700000008000,
               '%s: after its progress row timestamp 1700000008000 is one batch' % name)
        release(run, 'mid-ts-closed')
        release(run, 'near-end')
        check_ring(name, run, model)
        check_stop(name, run)
    finally:
        run.stop()
        run.cleanup()


def since_extra(name, run, model, ring):
    log = run.log()
    ok('cannot resume AS OF' in log,
       '%s: the refused AS OF is logged' % name, log[-2000:])
    ok(re.search(r'resuming failed \(SQLSTATE (XX000|22000)\): (Timestamp|could not find)', log),
       '%s: with its SQLSTATE and message' % name)
    subs = subscribes(run)
    fresh = [s for s in subs[1:] if s.get('requested_as_of') is None]
    ok(fresh, '%s: then a fresh subscription with a snapshot' % name,
       json.dumps(subs)[:2000])
    cursors = [c for c, _ in ring]
    ok(1700000017000 in cursors and 1700000014000 not in cursors
       and 1700000015000 not in cursors and 1700000016000 not in cursors,
       '%s: the difference is one batch at the new as-of 1700000017000' % name,
       cursors)
    ok('fresh snapshot at 1700000017000 differs' in log,
       '%s: the diff is logged' % name)


def malformed_extra(name, run, model, ring):
    log = run.log()
    for why in ['fields, the description has', 'backslash at the end of the row',
                'invalid UTF-8', 'no row terminator', 'raw newline',
                'mz_diff is not a non-zero integer',
                'below the frontier']:
        ok(why in log, '%s: refused with "%s"' % (name, why),
           '\n'.join(l for l in log.splitlines() if 'error' in l)[-3000:])
    ok(log.count('dropping the session') >= 10,
       '%s: each of the 10 bad rows ended its session' % name)
    ok(re.search(r'error feed=winning-bids: malformed row from the upstream', log),
       '%s: errors name the feed' % name)


def error_extra(name, run, model, ring):
    log = run.log()
    ok('streaming failed (SQLSTATE XX000): Evaluation error: division by zero' in log,
       '%s: the mid-stream error is logged with SQLSTATE and message' % name,
       log[-2000:])
    ok('57P01' in log, '%s: the FATAL 57P01 is logged' % name)
    resumed_ok(name, run, model, ring, reconnects=2)


def async_extra(name, run, model, ring):
    log = run.log()
    for text in ['upstream NOTICE (SQLSTATE 01000): a notice between the halves of an update',
                 'upstream WARNING (SQLSTATE 01000): a warning too',
                 'upstream NOTICE (SQLSTATE 01000): a notice after a progress row']:
        ok(re.search(r'info feed=items: ' + re.escape(text), log),
           '%s: logged with the feed name: %s' % (name, text), log[-2000:])
    subs = subscribes(run)
    ok(len(subs) == 1, '%s: notices and ParameterStatus between CopyData end no '
                       'session (%d subscriptions)' % (name, len(subs)),
       json.dumps(subs)[:2000])


def dropped_extra(name, run, model, ring):
    log = run.log()
    ok(re.search(r'streaming failed \(SQLSTATE XX000\): subscribe has been terminated '
                 r'because underlying relation "materialize.public.items" was dropped', log),
       '%s: the documented error is logged with SQLSTATE and message' % name, log[-2000:])
    ok('dropped the relation under the SUBSCRIBE' in log,
       '%s: the log says the next subscription takes a snapshot and why' % name)
    subs = subscribes(run)
    ok(len(subs) >= 2 and subs[1].get('requested_as_of') is None
       and subs[1].get('snapshot') is not False,
       '%s: the subscription after the drop is fresh (no AS OF, a snapshot), not a '
       'resume' % name, json.dumps(subs)[:2000])
    later = subs[2:]
    ok(later and all(s.get('requested_as_of') is not None and s.get('snapshot') is False
                     for s in later),
       '%s: once that snapshot completed, reconnects resume AS OF again' % name,
       json.dumps(subs)[:2000])


def quiet_test():
    """An upstream that stops sending progress: reported stalled, then not."""
    name = 'quiet'
    path = os.path.join(SCENARIOS, 'quiet.scn')
    model = Model(path)
    run = Run(path, conf_extra='stall_timeout_ms = 300\n')
    run.diff_cursors = set()
    try:
        if run.wait_for(lambda: reached(run, 'quiet'), 'hold quiet'):
            d = run.wait_for(lambda: run.head_at_least(1700000002000),
                             'batch 1700000002000')
            ok(d and d[-1][0] == 1700000002000,
               '%s: at the hold the ring ends at 1700000002000' % name,
               d and [c for c, _ in d])
            ok(run.wait_for(lambda: 'stalled' in run.info(), 'the feed called stalled', 5),
               '%s: no progress for longer than stall_timeout_ms: the feed is stalled'
               % name, run.info())
            ok(len(subscribes(run)) == 1,
               '%s: a quiet upstream is not dropped (one subscription)' % name)
        release(run, 'quiet')
        check_ring(name, run, model)
        ok(run.wait_for(lambda: 'stalled' not in run.info(), 'the feed no longer stalled', 5),
           '%s: progress rows again: not stalled any more' % name, run.info())
        check_stop(name, run)
    finally:
        run.stop()
        run.cleanup()


def rss_kb(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def huge_multiplicity_test():
    """mz_diff in int8's range: what no batch can hold is refused, clearly."""
    for diff, why in [(3000000000, 'copies exceed half the ring'),
                      (9223372036854775807, 'multiplicity overflow')]:
        name = 'huge-multiplicity %d' % diff
        tmp = tempfile.mkdtemp(prefix='tailgate-mzscn.')
        path = os.path.join(tmp, 'huge.scn')
        with open(os.path.join(SCENARIOS, 'huge_multiplicity.scn')) as f:
            text = f.read().replace('+3000000000 ["c"]', '+%d ["c"]' % diff)
        with open(path, 'w') as f:
            f.write(text)
        model = Model(path)
        run = Run(path, conf_extra='ring_size = 1M\n')
        try:
            d = run.wait_for(lambda: run.head_at_least(1700000002000), 'batch 1700000002000')
            # 1000 copies, then 999 deleted: in the snapshot at 1700000001000
            # and the batch at 1700000002000, or (the snapshot rewritten
            # once the batch outweighed it) one copy in a later snapshot.
            at = dict(d or [])
            ok(d and (at.get(1700000001000, {}).get('inserted', []).count(['a']) == 1000
                      and at[1700000002000]['deleted'].count(['a']) == 999
                      or d[0][0] == 1700000002000
                      and d[0][1]['inserted'].count(['a']) == 1),
               '%s: 1000 copies of a row are 1000 rows, 999 deleted are 999' % name,
               d and [(c, len(b['inserted']), len(b['deleted'])) for c, b in d])
            ok(run.wait_for(lambda: run.log().count(why) >= 2, 'the refusal, twice', 20),
               '%s: the timestamp is refused ("%s"), again after the resume' % (name, why),
               run.log()[-2000:])
            ok(re.search(r'error feed=counts: upstream .* at 1700000004000: row \["c"\] '
                         r'held 0 times, change \+%d; nothing published' % diff, run.log()),
               '%s: the error names the row, its change and the timestamp' % name,
               run.log()[-1500:])
            d = run.dump()
            ok(d and d[-1][0] == 1700000002000 and run.daemon.poll() is None,
               '%s: the daemon lives, the ring ends at the last good timestamp' % name,
               d and [c for c, _ in d])
            state = collections.Counter()
            for _, b in d or []:
                for r in b['inserted']:
                    state[daemon_row(r)] += 1
                for r in b['deleted']:
                    state[daemon_row(r)] -= 1
            ok(+state == model.state_at(1700000002000),
               '%s: nothing lost or doubled' % name, dict(state))
            rss = rss_kb(run.daemon.pid)
            ok(rss is not None and rss < 200000 or os.environ.get('TAILGATE_VALGRIND'),
               '%s: no copies laid out (RSS %s kB)' % (name, rss))
            check_stop(name, run)
        finally:
            run.stop()
            run.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)


def cluster_test():
    """options=--cluster=NAME selects the cluster; an unknown one is named."""
    name = 'cluster'
    path = os.path.join(SCENARIOS, 'multiplicity.scn')
    model = Model(path)
    run = Run(path, server_args=['--clusters', 'feeds'])
    try:
        ok(run.wait_for(lambda: 'unknown cluster' in run.log(), 'unknown cluster in the log',
                        20),
           '%s: without options the default cluster is unknown: logged' % name)
        ok(re.search(r'error feed=order-lines: .*\(SQLSTATE 42704\): unknown cluster '
                     r"'quickstart'", run.log()),
           '%s: the error names the SQLSTATE and the cluster' % name, run.log()[-1500:])
    finally:
        run.stop()
        run.cleanup()
    run = Run(path, server_args=['--clusters', 'feeds'],
              conninfo_extra=' options=--cluster=feeds')
    run.diff_cursors = set()
    try:
        check_ring(name, run, model)
        subs = subscribes(run)
        ok(subs and all(s.get('cluster') == 'feeds' for s in subs),
           '%s: options=--cluster=feeds runs the SUBSCRIBE on cluster feeds' % name,
           json.dumps(subs)[:1000])
        check_stop(name, run)
    finally:
        run.stop()
        run.cleanup()


def wide_test():
    """Very wide rows: 300 columns, a 200 kB value, escapes in both."""
    name = 'wide'
    tmp = tempfile.mkdtemp(prefix='tailgate-mzscn.')
    path = os.path.join(tmp, 'wide.scn')
    ncol = 300
    big = ''.join('line %d\twith tab \\ and \u00e9\n' % i for i in range(8000))
    with open(path, 'w') as f:
        f.write('relation wide\n')
        for i in range(ncol):
            f.write('column c%d %s\n' % (i, 'text' if i % 2 else 'int8'))
        f.write('since 1700000000000\nstart 1700000001000\nts 1700000000000\n')
        f.write('+1 %s\n' % json.dumps([i if i % 2 == 0 else 'v%d' % i for i in range(ncol)]))
        f.write('progress 1700000001000\nts 1700000002000\n')
        f.write('+2 %s\n' % json.dumps([i if i % 2 == 0 else big for i in range(ncol)][:2] +
                                        [None] * (ncol - 2)))
        f.write('progress 1700000003000\n')
    try:
        ok(len(big) > 200000, '%s: a %d-byte value' % (name, len(big)))
        scenario_run(path, name=name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def restart_test():
    """A daemon restart adopts the segment and resumes AS OF its frontier."""
    name = 'restart'
    path = os.path.join(SCENARIOS, 'multiplicity.scn')
    model = Model(path)
    run = Run(path)
    run.diff_cursors = set()
    try:
        ring = check_ring(name, run, model)
        if ring is None:
            return
        ino = os.stat(run.ring_path(run.feed)).st_ino
        head = ring[-1][0]
        for sig, how in ((signal.SIGTERM, 'SIGTERM'), (signal.SIGKILL, 'kill -9')):
            # The ring's frontier: complete through the last progress row
            # - 1, at or past the head (quiet progress moves it on).
            frontier = int(re.search(r'frontier +(\d+)', run.info()).group(1))
            log_at = len(run.log())
            nsubs = len(subscribes(run))
            run.restart_daemon(sig)
            ok(run.wait_for(lambda: len(subscribes(run)) > nsubs and
                            'resuming AS OF' in run.log()[log_at:], 'the new subscription'),
               '%s: after %s the new daemon subscribes again' % (name, how))
            log = run.log()[log_at:]
            ok('adopted the existing segment' in log,
               '%s: after %s the feed adopts its segment' % (name, how), log[-2000:])
            sub = subscribes(run)[-1]
            as_of = sub.get('requested_as_of') or 0
            ok(sub.get('snapshot') is False and as_of >= frontier >= head,
               '%s: after %s it resumes AS OF the frontier (%d or later; head %d) '
               'without a snapshot' % (name, how, frontier, head), json.dumps(sub))
            ok(os.stat(run.ring_path(run.feed)).st_ino == ino and
               run.wait_for(lambda: 'state        live' in run.info(), 'live again'),
               '%s: after %s the same segment is live again' % (name, how), run.info())
            again = run.dump()
            ok(again is not None and [c for c, _ in again] == [c for c, _ in ring],
               '%s: after %s the batches are the same, none repeated' % (name, how),
               again and [c for c, _ in again])
        check_ring(name, run, model)
        check_stop(name, run)
    finally:
        run.stop()
        run.cleanup()


def reload_test():
    """SIGHUP: a bad file is refused; feeds removed, added and changed."""
    name = 'reload'
    a_path = os.path.join(SCENARIOS, 'multiplicity.scn')
    b_path = os.path.join(SCENARIOS, 'top10.scn')
    ma, mb = Model(a_path), Model(b_path)
    run = Run(a_path, server_args=['--scenario', b_path], feed='a',
              view=ma.scn.name, daemon_args=['--remove-on-exit'])
    try:
        run.wait_for(lambda: run.head_at_least(ma.final, 'a'), 'feed a reaches its end')
        ino_a = os.stat(run.ring_path('a')).st_ino

        with open(run.conf_path, 'a') as f:
            f.write('bogus = 1\n')
        run.daemon.send_signal(signal.SIGHUP)
        ok(run.wait_for(lambda: 'reload refused' in run.log(), 'the refusal'),
           '%s: a bad file is refused on SIGHUP' % name)
        ok(re.search(r'reload refused.*tailgated.conf:\d+: unknown key "bogus"', run.log()),
           '%s: the refusal names file:line and reason' % name)
        ok(os.path.exists(run.ring_path('a')) and run.daemon.poll() is None,
           '%s: and feed a keeps running' % name)

        run.write_conf([('a', ma.scn.name, ''), ('b', mb.scn.name, '')])
        run.daemon.send_signal(signal.SIGHUP)
        ok(run.wait_for(lambda: run.head_at_least(mb.final, 'b'), 'feed b'),
           '%s: an added feed starts' % name)
        ok(os.stat(run.ring_path('a')).st_ino == ino_a,
           '%s: the unchanged feed keeps its segment' % name)
        ino_b = os.stat(run.ring_path('b')).st_ino

        run.write_conf([('b', mb.scn.name, 'ring_size = 2M\n')])
        run.daemon.send_signal(signal.SIGHUP)
        ok(run.wait_for(lambda: not os.path.exists(run.ring_path('a')), 'a removed'),
           '%s: a removed feed\'s segment is unlinked' % name)
        ok(run.wait_for(lambda: os.path.exists(run.ring_path('b')) and
                        os.stat(run.ring_path('b')).st_ino != ino_b and
                        run.head_at_least(mb.final, 'b'), 'b restarted'),
           '%s: a changed feed restarts on a new segment and catches up' % name)
        log = run.log()
        ok('feed=a: removed from the configuration' in log and
           'feed=b: definition changed' in log and 'feed=b: added' in log,
           '%s: each change is logged' % name, log[-1500:])
        rc = run.stop()
        vg = os.path.join(run.dir, 'valgrind.log')
        ok(rc == 0, '%s: SIGTERM exits 0' % name,
           open(vg).read()[-3000:] if os.path.exists(vg) else None)
        ok(not os.path.exists(run.ring_path('b')) and
           not os.path.exists(os.path.join(run.ring_dir, 'b.snap')),
           '%s: --remove-on-exit unlinks the segment and snapshot' % name,
           os.listdir(run.ring_dir))
    finally:
        run.stop()
        run.cleanup()


def main():
    if not os.path.exists(TAILGATED):
        print('1..0 # SKIP tailgated not built')
        return 0
    print('# tailgated against mzserver, scenarios in %s' % SCENARIOS)
    scenario_run('multiplicity.scn')
    scenario_run('mz_types.scn', extra=check_mz_types)
    scenario_run('unconsolidated.scn', extra=unconsolidated_extra)
    sparse_test()
    scenario_run('complete.scn', extra=complete_extra)
    scenario_run('types.scn', extra=check_types)
    scenario_run('types.scn', name='types-exotic-escapes',
                 server_args=['--copy-escapes', 'exotic'])
    scenario_run('types.scn', name='types-pg-escapes',
                 server_args=['--copy-escapes', 'pg'])
    scenario_run('winning_bids.scn')
    scenario_run('top10.scn')
    scenario_run('fault_drop_mid_ts.scn', extra=resumed_ok)
    scenario_run('fault_drop_between_ts.scn',
                 extra=lambda n, r, m, g: resumed_ok(n, r, m, g, reconnects=2))
    scenario_run('fault_error_mid_stream.scn', extra=error_extra)
    scenario_run('fault_since.scn', extra=since_extra,
                 diff_cursors=[1700000017000])
    # Newer Materialize words the refusal differently (22000).
    scenario_run('fault_since.scn', name='fault_since-current-wording',
                 server_args=['--asof-error', 'current'], extra=since_extra,
                 diff_cursors=[1700000017000])
    scenario_run('fault_snapshot.scn')
    scenario_run('fault_stall.scn')
    scenario_run('fault_malformed.scn', extra=malformed_extra)
    holds_test()
    scenario_run('async_messages.scn', extra=async_extra)
    scenario_run('dropped.scn', extra=dropped_extra)
    quiet_test()
    huge_multiplicity_test()
    cluster_test()
    wide_test()
    restart_test()
    reload_test()
    status = done()
    if failed():
        print('# %d of %d failed' % (failed(), count()))
    return status


if __name__ == '__main__':
    sys.exit(main())
