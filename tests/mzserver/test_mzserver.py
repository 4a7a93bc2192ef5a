#!/usr/bin/env python3
"""Self-test of mzserver.py: a raw-socket PostgreSQL v3 client plus psql.

Run:  python3 tests/mzserver/test_mzserver.py [-v] [-k SUBSTRING]
Prints one line per test and a final "N passed, M failed"; exits non-zero
on failure.  The checks are written from the protocol and Materialize's
documented SUBSCRIBE semantics, not from the server's code: the COPY text
decoder, the consolidation checks and the expected values are independent.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MZ = os.path.join(HERE, 'mzserver.py')
SCN = os.path.join(HERE, 'scenarios')
PSQL = shutil.which('psql')
VERBOSE = '-v' in sys.argv
ONLY = sys.argv[sys.argv.index('-k') + 1] if '-k' in sys.argv else None

T0 = 1700000000000


# ---------------------------------------------------------------------------
# A minimal frontend
# ---------------------------------------------------------------------------

class ProtocolError(Exception):
    pass


class PgConn:
    def __init__(self, port, host='127.0.0.1', unix_dir=None, user='tester',
                 database='materialize', options=None, params=None,
                 password=None, ssl_request=False, gss_request=False,
                 timeout=10):
        if unix_dir:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(os.path.join(unix_dir, '.s.PGSQL.%d' % port))
        else:
            self.sock = socket.create_connection((host, port), timeout)
        self.sock.settimeout(timeout)
        self.buf = b''
        self.port, self.host = port, host
        if gss_request:
            self.sock.sendall(struct.pack('!II', 8, 80877104))
            assert self.sock.recv(1) == b'N', 'GSSENCRequest not refused'
        if ssl_request:
            self.sock.sendall(struct.pack('!II', 8, 80877103))
            assert self.sock.recv(1) == b'N', 'SSLRequest not refused'
        p = {'user': user, 'database': database}
        if options is not None:
            p['options'] = options
        p.update(params or {})
        body = struct.pack('!I', 196608) + b''.join(
            k.encode() + b'\0' + v.encode() + b'\0' for k, v in p.items()) + b'\0'
        self.sock.sendall(struct.pack('!I', len(body) + 4) + body)
        self.params, self.notices = {}, []
        self.pid = self.secret = None
        self.startup_msgs = []
        while True:
            t, b = self.recv()
            self.startup_msgs.append((t, b))
            if t == b'R':
                code = struct.unpack('!I', b[:4])[0]
                if code == 3:
                    pw = (password or '').encode() + b'\0'
                    self.sock.sendall(b'p' + struct.pack('!I', len(pw) + 4) + pw)
                elif code != 0:
                    raise ProtocolError('auth code %d' % code)
            elif t == b'S':
                k, v = b.split(b'\0')[:2]
                self.params[k.decode()] = v.decode()
            elif t == b'K':
                self.pid, self.secret = struct.unpack('!II', b)
            elif t == b'N':
                self.notices.append(err_fields(b))
            elif t == b'E':
                self.error = err_fields(b)
                raise ProtocolError('startup error %r' % self.error)
            elif t == b'Z':
                self.status = b
                break

    def close(self):
        try:
            self.sock.sendall(b'X\0\0\0\4')
        except OSError:
            pass
        self.sock.close()

    def send(self, tag, payload=b''):
        self.sock.sendall(tag + struct.pack('!I', len(payload) + 4) + payload)

    def _fill(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(1 << 16)
            if not d:
                raise EOFError('connection closed by server')
            self.buf += d

    def recv(self, timeout=None):
        """One message (tag, body); socket.timeout if none in time."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            self._fill(5)
            n = struct.unpack('!I', self.buf[1:5])[0]
            self._fill(1 + n)
            t, b = self.buf[:1], self.buf[5:1 + n]
            self.buf = self.buf[1 + n:]
            return t, b
        finally:
            if timeout is not None:
                self.sock.settimeout(10)

    def query(self, sql):
        """Simple query; all messages up to and including ReadyForQuery."""
        self.send(b'Q', sql.encode() + b'\0')
        return self.until_ready()

    def until_ready(self):
        out = []
        while True:
            t, b = self.recv()
            out.append((t, b))
            if t == b'Z':
                return out


def err_fields(body):
    out = {}
    for part in body.split(b'\0'):
        if part:
            out[chr(part[0])] = part[1:].decode('utf-8', 'replace')
    return out


def row_desc(body):
    n = struct.unpack('!h', body[:2])[0]
    pos, cols = 2, []
    for _ in range(n):
        end = body.index(b'\0', pos)
        name = body[pos:end].decode()
        table, attnum, oid, typlen, typmod, fmt = struct.unpack(
            '!IhIhih', body[end + 1:end + 19])
        cols.append((name, oid, typlen, typmod, fmt, table, attnum))
        pos = end + 19
    return cols


def data_row(body):
    n = struct.unpack('!h', body[:2])[0]
    pos, vals = 2, []
    for _ in range(n):
        ln = struct.unpack('!i', body[pos:pos + 4])[0]
        pos += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(body[pos:pos + ln].decode('utf-8'))
            pos += ln
    return vals


def copy_decode(line):
    """COPY text format (PostgreSQL docs, "File Formats"): tab-separated,
    \\N is NULL, backslash escapes \\b \\f \\n \\r \\t \\v, \\digits
    (octal, 1-3), \\xdigits (hex, 1-2), any other escaped char is itself."""
    if not line.endswith(b'\n'):
        raise ProtocolError('CopyData without row terminator: %r' % line)
    body = line[:-1]
    if b'\n' in body or b'\r' in body:
        raise ProtocolError('unescaped newline/CR in a row: %r' % line)
    out = []
    for f in body.split(b'\t'):
        if f == b'\\N':
            out.append(None)
            continue
        res, i = bytearray(), 0
        while i < len(f):
            c = f[i]
            if c != 0x5c:
                res.append(c)
                i += 1
                continue
            i += 1
            if i >= len(f):
                raise ProtocolError('field ends with a lone backslash')
            e = chr(f[i])
            if e in 'bfnrtv':
                res.append({'b': 8, 'f': 12, 'n': 10, 'r': 13, 't': 9,
                            'v': 11}[e])
                i += 1
            elif e in '01234567':
                j = i
                while j < len(f) and j < i + 3 and chr(f[j]) in '01234567':
                    j += 1
                res.append(int(f[i:j], 8) & 0xff)
                i = j
            elif e == 'x' and i + 1 < len(f) and \
                    chr(f[i + 1]) in '0123456789abcdefABCDEF':
                j = i + 1
                while j < len(f) and j < i + 3 and \
                        chr(f[j]) in '0123456789abcdefABCDEF':
                    j += 1
                res.append(int(f[i + 1:j], 16))
                i = j
            else:
                res.append(f[i])
                i += 1
        out.append(res.decode('utf-8'))
    return out


class CopyStream:
    """Reads a COPY (SUBSCRIBE ...) TO STDOUT stream row by row."""

    def __init__(self, conn, sql):
        self.c = conn
        self.c.send(b'Q', sql.encode() + b'\0')
        self.ncols = None
        self.rows = []          # decoded rows
        self.raw = []           # raw CopyData payloads
        self.end = None         # ('done', tag) | ('error', fields) | ('eof',)
        self.error = None
        self.asyncs = []        # (rows before it, 'N' fields | 'S' (k, v))
        t, b = self.c.recv()
        if t == b'E':
            self.error = err_fields(b)
            self.end = ('error', self.error)
            self.c.until_ready()
            return
        if t != b'H':
            raise ProtocolError('expected CopyOutResponse, got %r' % t)
        fmt, n = struct.unpack('!bh', b[:3])
        codes = struct.unpack('!%dh' % n, b[3:])
        assert fmt == 0 and all(x == 0 for x in codes), 'COPY not text'
        self.ncols = n

    def next(self, timeout=5):
        """Next row, or None when the statement ended (see .end)."""
        if self.end:
            return None
        try:
            t, b = self.c.recv(timeout)
        except EOFError:
            self.end = ('eof',)
            return None
        except ConnectionResetError:
            self.end = ('reset',)
            return None
        if t == b'd':
            self.raw.append(b)
            r = copy_decode(b)
            if len(r) != self.ncols:
                raise ProtocolError('row has %d fields, expected %d: %r'
                                    % (len(r), self.ncols, b))
            self.rows.append(r)
            return r
        if t == b'c':
            t, b = self.c.recv()
            assert t == b'C', t
            self.end = ('done', b.rstrip(b'\0').decode())
            t, b = self.c.recv()
            assert t == b'Z', t
            return None
        if t == b'E':
            self.error = err_fields(b)
            self.end = ('error', self.error)
            if self.error.get('S') != 'FATAL':
                t, b = self.c.recv()
                assert t == b'Z', t
            return None
        if t == b'N':
            self.asyncs.append((len(self.rows), 'N', err_fields(b)))
            return self.next(timeout)
        if t == b'S':
            k, v = b.split(b'\0')[:2]
            self.asyncs.append((len(self.rows), 'S', (k.decode(), v.decode())))
            return self.next(timeout)
        raise ProtocolError('unexpected message %r in COPY' % t)

    def read_all(self, timeout=5):
        while self.next(timeout) is not None:
            pass
        return self.rows

    def read_until_quiet(self, quiet=0.5, limit=20):
        """Read until nothing arrives for `quiet` seconds."""
        deadline = time.time() + limit
        while time.time() < deadline:
            try:
                if self.next(quiet) is None:
                    return
            except socket.timeout:
                return


def check_subscribe_rows(rows, progress=True, as_of=None, snapshot=True):
    """Invariants of a SUBSCRIBE stream from Materialize's documentation:
    first row a progress row at AS OF; snapshot rows carry the AS OF time;
    timestamps never decrease; no row older than a progress row; progress
    rows have NULL diff and NULL columns; consolidation per timestamp; the
    multiset never goes negative.  Returns (state, per-ts batches)."""
    if progress and rows:
        r = rows[0]
        assert r[1] == 't' and r[2] is None, 'first row is not progress: %r' % r
        if as_of is not None:
            assert int(r[0]) == as_of, 'first progress %s != as-of %d' % (
                r[0], as_of)
    last_ts, last_prog = -1, -1
    seen = {}
    state = {}
    batches = []
    for r in rows:
        ts = int(r[0])
        assert ts >= last_ts, 'timestamp went backwards: %r' % r
        last_ts = ts
        if progress and r[1] == 't':
            assert all(v is None for v in r[2:]), 'progress row not NULL %r' % r
            assert ts > last_prog or ts == last_prog == int(rows[0][0]), \
                'progress not increasing %r' % r
            last_prog = ts
            continue
        diff = int(r[2] if progress else r[1])
        vals = tuple(r[3:] if progress else r[2:])
        assert diff != 0, 'zero diff'
        assert ts >= last_prog, 'row at %d after progress %d' % (ts, last_prog)
        if not snapshot and as_of is not None:
            assert ts > as_of, 'SNAPSHOT=false row at as-of'
        key = (ts, vals)
        assert key not in seen, 'row twice in timestamp %d: %r' % (ts, vals)
        seen[key] = diff
        if not batches or batches[-1][0] != ts:
            batches.append((ts, []))
        batches[-1][1].append((diff, vals))
        state[vals] = state.get(vals, 0) + diff
        if state[vals] < 0 and (snapshot or as_of is None):
            raise AssertionError('negative multiplicity for %r' % (vals,))
        if state[vals] == 0:
            del state[vals]
    return state, batches


# ---------------------------------------------------------------------------
# Running servers
# ---------------------------------------------------------------------------

class Server:
    def __init__(self, *args, control=True):
        cmd = [sys.executable, MZ, '--port', '0'] + list(args)
        if control:
            cmd += ['--control-port', '0']
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                  stderr=None if VERBOSE else subprocess.DEVNULL,
                                  text=True)
        line = self.p.stdout.readline()
        if not line.startswith('PORT='):
            raise RuntimeError('server did not start: %r' % line)
        self.port = int(line.split('=')[1])
        self.ctl_port = None
        if control:
            line = self.p.stdout.readline()
            self.ctl_port = int(line.split('=')[1])
        self._ctl = None

    def conn(self, **kw):
        return PgConn(self.port, **kw)

    def ctl(self, command, timeout=30):
        if self._ctl is None:
            self._ctl = socket.create_connection(('127.0.0.1', self.ctl_port))
            self._ctl_f = self._ctl.makefile('rw')
        self._ctl.settimeout(timeout + 5)
        self._ctl_f.write(command + '\n')
        self._ctl_f.flush()
        return json.loads(self._ctl_f.readline())

    def stop(self):
        if self._ctl:
            self._ctl.close()
        self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def psql(port, *commands, host='127.0.0.1', options=None, env=None,
         user='tester', timeout=30):
    conninfo = 'host=%s port=%d user=%s dbname=materialize' % (host, port, user)
    if options:
        conninfo += ' options=%s' % options
    cmd = [PSQL, conninfo, '-X', '-A', '-t', '-v', 'VERBOSITY=verbose']
    for c in commands:
        cmd += ['-c', c]
    e = dict(os.environ, PGCONNECT_TIMEOUT='5')
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=e,
                          timeout=timeout)


def proc_cpu(pid):
    """user+system CPU seconds of a process (Linux /proc)."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def scn_path(name):
    return os.path.join(SCN, name)


def load_scenario(name):
    """An independent reading of a .scn file: ts -> [(diff, values)], with
    values as the JSON array of the file (for cross-checks)."""
    hist, ts = [], None
    for line in open(scn_path(name), encoding='utf-8'):
        s = line.strip()
        if s.startswith('ts '):
            ts = int(s.split()[1])
        elif s[:1] in '+-' and ts is not None:
            d, rest = s.split(None, 1)
            hist.append((ts, int(d), json.loads(rest)))
    return hist


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


MAIN = None         # shared server: winning_bids, top10, types, multiplicity


def main_server():
    global MAIN
    if MAIN is None:
        MAIN = Server('--scenario', scn_path('winning_bids.scn'),
                      '--scenario', scn_path('top10.scn'),
                      '--scenario', scn_path('types.scn'),
                      '--scenario', scn_path('multiplicity.scn'))
    return MAIN


def last_progress(name):
    return max(int(l.split()[1]) for l in open(scn_path(name))
               if l.startswith('progress '))


WB_SINCE, WB_START = T0 + 5000, T0 + 20000
WB_LAST = last_progress('winning_bids.scn')


@test
def help_and_bad_option():
    r = subprocess.run([sys.executable, MZ, '--help'], capture_output=True,
                       text=True)
    assert r.returncode == 0 and 'usage' in r.stdout.lower(), r
    r = subprocess.run([sys.executable, MZ, '--no-such-option'],
                       capture_output=True, text=True)
    assert r.returncode == 2 and 'usage' in r.stderr.lower(), r


@test
def all_scenarios_parse():
    for f in sorted(os.listdir(SCN)):
        if f.endswith('.scn'):
            r = subprocess.run([sys.executable, MZ, '--check', '--scenario',
                                scn_path(f)], capture_output=True, text=True)
            assert r.returncode == 0, (f, r.stderr)
            json.loads(r.stdout)
    bad = tempfile.NamedTemporaryFile('w', suffix='.scn', delete=False)
    bad.write('relation r\ncolumn a int4\nts 5\n+1 [1]\n+1 [1]\n')
    bad.close()
    r = subprocess.run([sys.executable, MZ, '--check', '--scenario', bad.name],
                       capture_output=True, text=True)
    os.unlink(bad.name)
    assert r.returncode == 2 and 'twice' in r.stderr, r.stderr


@test
def startup_handshake():
    s = main_server()
    c = s.conn(ssl_request=True, gss_request=True, options='--cluster=c1',
               params={'application_name': 'selftest'})
    p = c.params
    assert p['server_version'] == '9.5.0', p
    assert p['client_encoding'] == 'UTF8' and p['integer_datetimes'] == 'on'
    assert p['standard_conforming_strings'] == 'on' and \
        p['DateStyle'].startswith('ISO'), p
    assert p['cluster'] == 'c1' and p['application_name'] == 'selftest', p
    assert 'mz_version' in p and p['database'] == 'materialize', p
    assert c.pid and c.status == b'I'
    tags = [t for t, _ in c.startup_msgs]
    assert tags[0] == b'R' and tags[-1] == b'Z' and b'K' in tags, tags
    c.close()
    c = s.conn(options='-c cluster=c2 -capplication_name=x\\ y')
    assert c.params['cluster'] == 'c2', c.params
    assert c.params['application_name'] == 'x y', c.params
    c.close()
    c = s.conn(params={'nonsense_setting': '1'})
    assert any('nonsense_setting' in n['M'] for n in c.notices), c.notices
    c.close()


@test
def psql_basics():
    s = main_server()
    r = psql(s.port, 'SELECT 1', 'SHOW cluster', 'SET cluster = other',
             'SHOW cluster', 'SHOW server_version', options='--cluster=c9')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['1', 'c9', 'SET', 'other', '9.5.0'], r.stdout
    c = s.conn()
    msgs = c.query("SET cluster = 'x y'")
    assert (b'S', b'cluster\0x y\0') in msgs, msgs
    assert msgs[-2] == (b'C', b'SET\0') and msgs[-1] == (b'Z', b'I'), msgs
    msgs = c.query('SELECT 1 AS one, \'a\' AS b; SELECT mz_version()')
    descs = [row_desc(b) for t, b in msgs if t == b'T']
    assert descs[0][0][:2] == ('one', 23) and descs[0][1][:2] == ('b', 25)
    assert descs[1][0][0] == 'mz_version', descs
    c.close()


@test
def errors_and_empty_query():
    s = main_server()
    c = s.conn()
    msgs = c.query('')
    assert [t for t, _ in msgs] == [b'I', b'Z'], msgs
    msgs = c.query('   ;  ')
    assert [t for t, _ in msgs] == [b'I', b'Z'], msgs
    msgs = c.query('frobnicate everything')
    e = err_fields(msgs[0][1])
    assert msgs[0][0] == b'E' and e['C'] == '42601' and e['S'] == 'ERROR', e
    msgs = c.query('SUBSCRIBE no_such_view')
    e = err_fields(msgs[0][1])
    assert e['C'] == '42P01' and 'no_such_view' in e['M'], e
    msgs = c.query('CREATE TABLE x (a int)')
    assert err_fields(msgs[0][1])['C'] == '0A000'
    msgs = c.query('SELECT 1')
    assert msgs[-1] == (b'Z', b'I')
    c.close()
    r = psql(s.port, 'SELEC 1')
    assert r.returncode != 0 and '42601' in r.stderr, r.stderr


@test
def copy_subscribe_progress_snapshot():
    s = main_server()
    c = s.conn()
    st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF %d '
                       'UP TO %d) TO STDOUT' % (WB_START, WB_LAST))
    assert st.ncols == 3 + 8, st.ncols
    rows = st.read_all()
    assert st.end[0] == 'done' and st.end[1] == 'COPY %d' % len(rows), st.end
    state, batches = check_subscribe_rows(rows, True, WB_START)
    snap = [r for r in rows if int(r[0]) == WB_START and r[1] == 'f']
    assert snap, 'no snapshot rows'
    # the snapshot must equal the history folded up to AS OF
    hist = load_scenario('winning_bids.scn')
    want = {}
    for ts, d, vals in hist:
        if ts <= WB_START:
            key = tuple(str(v) for v in vals)
            want[key] = want.get(key, 0) + d
    want = {k: v for k, v in want.items() if v}
    got = {tuple(r[3:]): int(r[2]) for r in snap}
    assert got == want, (len(got), len(want))
    # the final state equals the history folded to the end
    for ts, d, vals in hist:
        if WB_START < ts < WB_LAST:
            key = tuple(str(v) for v in vals)
            want[key] = want.get(key, 0) + d
            if not want[key]:
                del want[key]
    assert state == want
    # retractions before insertions occur within one timestamp
    orders = set()
    for ts, b in batches:
        for (d1, v1), (d2, v2) in zip(b, b[1:]):
            if v1[0] == v2[0] and d1 * d2 < 0:
                orders.add(d1 < 0)
    assert orders == {True, False}, orders
    # progress rows with no data between them, and timestamps sharing a batch
    prog = [int(r[0]) for r in rows if r[1] == 't']
    kinds = [('p' if r[1] == 't' else 'd', r[0]) for r in rows]
    assert any(a[0] == b[0] == 'p' for a, b in zip(kinds, kinds[1:])), \
        'no progress without data'
    data_ts = []
    for k, ts in kinds:
        if k == 'd' and (not data_ts or data_ts[-1][-1] != ts):
            data_ts.append(ts)
    multi = False
    last = None
    for k, ts in kinds:
        if k == 'p':
            last = None
        elif last is not None and last != ts:
            multi = True
        else:
            last = ts
    assert multi, 'no batch spanning several timestamps'
    assert prog == sorted(set(prog))
    # one row per CopyData, newline terminated
    assert all(p.count(b'\n') == 1 and p.endswith(b'\n') for p in st.raw)
    c.close()


@test
def psql_copy_matches_raw():
    s = main_server()
    sql = ('COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF %d UP TO %d) '
           'TO STDOUT' % (WB_START, WB_START + 15000))
    r = psql(s.port, sql)
    assert r.returncode == 0, r.stderr
    c = s.conn()
    st = CopyStream(c, sql)
    st.read_all()
    c.close()
    raw = ''.join(p.decode() for p in st.raw)
    assert r.stdout == raw, 'psql output differs'


@test
def as_of_rules():
    s = main_server()
    c = s.conn()
    st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids AS OF %d) TO STDOUT'
                    % (WB_SINCE - 1))
    assert st.error and st.error['C'] == 'XX000', st.error
    assert st.error['M'] == ('Timestamp (%d) is not valid for all inputs: '
                             '[Antichain { elements: [%d] }]'
                             % (WB_SINCE - 1, WB_SINCE)), st.error
    st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF AT '
                       'LEAST %d UP TO %d) TO STDOUT' % (T0, WB_SINCE + 3000))
    rows = st.read_all()
    assert int(rows[0][0]) == WB_SINCE and rows[0][1] == 't', rows[0]
    check_subscribe_rows(rows, True, WB_SINCE)
    # SNAPSHOT = false: nothing at the AS OF time, only later updates
    st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS, SNAPSHOT '
                       '= false) AS OF %d UP TO %d) TO STDOUT'
                    % (WB_START, WB_START + 10000))
    rows = st.read_all()
    assert rows[0][:3] == [str(WB_START), 't', None]
    assert all(int(r[0]) > WB_START for r in rows[1:]), rows[:3]
    assert any(r[1] == 'f' for r in rows)
    check_subscribe_rows(rows, True, WB_START, snapshot=False)
    # UP TO == AS OF: no rows; UP TO < AS OF: error
    st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF %d '
                       'UP TO %d) TO STDOUT' % (WB_START, WB_START))
    assert st.read_all() == [] and st.end == ('done', 'COPY 0'), st.end
    st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids AS OF %d UP TO %d) TO '
                       'STDOUT' % (WB_START, WB_START - 1))
    assert st.error and 'up to' in st.error['M'], st.error
    # timestamp literal forms
    st = CopyStream(c, "COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF "
                       "TIMESTAMP '2023-11-14 22:13:40+00' UP TO '%d') TO "
                       "STDOUT" % (WB_START + 1))
    rows = st.read_all()
    assert rows and int(rows[0][0]) == WB_START, rows[:1]
    c.close()


@test
def without_progress_columns():
    s = main_server()
    c = s.conn()
    st = CopyStream(c, 'COPY (SUBSCRIBE TO winning_bids AS OF %d UP TO %d) TO '
                       'STDOUT' % (WB_START, WB_START + 8000))
    rows = st.read_all()
    assert st.ncols == 2 + 8 and all(len(r) == 10 for r in rows)
    check_subscribe_rows(rows, False, WB_START)
    assert all(r[1] not in (None,) and int(r[1]) != 0 for r in rows)
    c.close()


EXPECT_TYPES = {
    '5': {8: 'tab\there'},
    '6': {8: 'new\nline and\r\ncrlf', 9: 'cr\r', 10: '"just a string"'},
    '7': {8: 'back\\slash \\N \\t literal', 9: '\\',
          10: '{"esc": "\\\\"}'},
    '8': {8: 'controls \b \f \v \x01 \x7f end'},
    '9': {8: 'unicode: é ü ß 中文 😀 \u00a0nbsp'},
    '3': {3: '-Infinity', 4: '-0', 5: 'NaN', 8: 'N', 9: '\\N',
          16: '\\xdeadbeef', 17: '{NULL,-2147483648,2147483647}',
          18: '{"NULL","","with space","quote\\"d","back\\\\slash",'
              '"{brace}","comma,"}'},
    '2': {3: 'NaN', 4: 'Infinity',
          5: '123456789012345678901234567890.123456789012345678901234567890',
          8: '', 9: '', 10: '[]', 11: '{}', 17: '{}'},
    '1': {10: '{"a": 1, "b": [1, 2]}', 12: '2023-11-14 22:13:20.5+00'},
    '11': dict((i, None) for i in range(1, 20)),
}


def types_rows(port, extra=''):
    c = PgConn(port)
    st = CopyStream(c, 'COPY (SUBSCRIBE types WITH (PROGRESS) AS OF %d UP TO '
                       '%d) TO STDOUT' % (T0 + 1000, T0 + 4000))
    rows = st.read_all()
    c.close()
    return st, rows


@test
def types_and_escapes():
    s = main_server()
    st, rows = types_rows(s.port)
    snap = {r[3]: r[3:] for r in rows if int(r[0]) == T0 + 1000 and r[1] == 'f'}
    assert len(snap) == 11, sorted(snap)
    for key, cols in EXPECT_TYPES.items():
        for i, v in cols.items():
            assert snap[key][i] == v, (key, i, snap[key][i], v)
    # Materialize escapes only \\ \n \r \t: \b \f \v stay raw bytes
    raw8 = [p for p in st.raw if p.split(b'\t')[3] == b'8'][0]
    assert b'\x08' in raw8 and b'\\b' not in raw8, raw8
    raw6 = [p for p in st.raw if p.split(b'\t')[3] == b'6'][0]
    assert b'new\\nline and\\r\\ncrlf' in raw6, raw6
    check_subscribe_rows(rows, True, T0 + 1000)
    # the update that only changes a text column, and +2
    upd = [r for r in rows if int(r[0]) == T0 + 2000 and r[1] == 'f']
    assert ('-1', '5') in [(r[2], r[3]) for r in upd]
    assert ('2', '12') in [(r[2], r[3]) for r in upd], upd
    # RowDescription types via extended protocol
    c = s.conn()
    c.send(b'P', b'\0SUBSCRIBE types\0\0\0')
    c.send(b'D', b'S\0')
    c.send(b'S')
    msgs = c.until_ready()
    cols = row_desc([b for t, b in msgs if t == b'T'][0])
    oids = [x[1] for x in cols]
    assert oids == [1700, 20, 23, 21, 20, 700, 701, 1700, 1700, 16, 25, 1043,
                    114, 3802, 1184, 1114, 1082, 2950, 17, 1007, 1009,
                    1186], oids
    assert cols[8][3] == ((12 << 16) | 2) + 4 and cols[11][3] == 24, cols
    assert all(x[5] == 0 and x[6] == 0 for x in cols)
    c.close()


@test
def other_escape_styles_decode_identically():
    s = main_server()
    _, base = types_rows(s.port)
    for style in ('pg', 'exotic'):
        with Server('--scenario', scn_path('types.scn'), '--copy-escapes',
                    style, control=False) as s2:
            st, rows = types_rows(s2.port)
            assert rows == base, style
            raw8 = [p for p in st.raw if b'controls' in p][0]
            assert b'\\b' in raw8 and b'\\f' in raw8 and b'\\v' in raw8, raw8
            if style == 'exotic':
                assert b'\\001' in raw8 and b'\\x' in b''.join(st.raw)


@test
def multiplicities():
    s = main_server()
    c = s.conn()
    st = CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS) AS OF %d '
                       'UP TO %d) TO STDOUT' % (T0 + 2000, T0 + 12000))
    rows = st.read_all()
    state, batches = check_subscribe_rows(rows, True, T0 + 2000)
    snap = {tuple(r[3:]): int(r[2]) for r in rows
            if r[0] == str(T0 + 2000) and r[1] == 'f'}
    assert snap == {('apple', '1'): 4, ('pear', '5'): 2, ('fig', '3'): 1}, snap
    diffs = {int(r[2]) for r in rows if r[1] == 'f'}
    assert {3, -2, 5, -4, 2}.issubset(diffs), diffs
    assert state == {('apple', '1'): 2, ('fig', '3'): 1, ('kiwi', '1'): 2,
                     ('plum', '10'): 2}, state
    c.close()


@test
def top10_seed_batch():
    s = main_server()
    c = s.conn()
    t1 = 1608081351001
    st = CopyStream(c, 'COPY (SUBSCRIBE top10 WITH (PROGRESS) AS OF %d UP TO '
                       '%d) TO STDOUT' % (t1 - 1000,
                                          last_progress('top10.scn')))
    rows = st.read_all()
    state, batches = check_subscribe_rows(rows, True, t1 - 1000)
    b = dict(batches)[t1]
    assert sorted(b) == sorted([(-1, ('Lockal', '4590')),
                                (1, ('Epidosis', '4595')),
                                (-1, ('Matlin', '5220')),
                                (1, ('Matlin', '5221'))]), b
    assert sum(state.values()) == 10, state
    assert any(abs(d) == 2 for _, bb in batches for d, _ in bb)
    c.close()


@test
def extended_protocol_describe_and_execute():
    s = main_server()
    c = s.conn()
    c.send(b'P', b'sub\0SUBSCRIBE winning_bids WITH (PROGRESS) AS OF %d\0\0\0'
           % WB_START)
    c.send(b'D', b'Ssub\0')
    c.send(b'S')
    msgs = c.until_ready()
    tags = [t for t, _ in msgs]
    assert tags == [b'1', b't', b'T', b'Z'], tags
    assert msgs[1][1] == b'\0\0', 'ParameterDescription not empty'
    cols = row_desc(msgs[2][1])
    assert [(x[0], x[1]) for x in cols[:3]] == [
        ('mz_timestamp', 1700), ('mz_progressed', 16), ('mz_diff', 20)], cols
    assert [x[0] for x in cols[3:]] == ['auction_id', 'bid_id', 'buyer',
                                        'seller', 'item', 'amount',
                                        'bid_time', 'end_time']
    assert [x[1] for x in cols[3:]] == [20, 20, 20, 20, 25, 23, 1184, 1184]
    # Bind + Execute 3 rows -> 3 DataRows + PortalSuspended, then 2 more
    c.send(b'B', b'\0sub\0\0\0\0\0\0\0')
    c.send(b'E', b'\0' + struct.pack('!i', 3))
    c.send(b'E', b'\0' + struct.pack('!i', 2))
    c.send(b'S')
    msgs = c.until_ready()
    tags = [t for t, _ in msgs]
    assert tags == [b'2', b'N', b'D', b'D', b'D', b's', b'D', b'D', b's',
                    b'Z'], tags
    rows = [data_row(b) for t, b in msgs if t == b'D']
    assert rows[0][:3] == [str(WB_START), 't', None], rows[0]
    assert all(r[0] == str(WB_START) and r[1] == 'f' for r in rows[1:])
    # SELECT * FROM (<sql>) LIMIT 0 to learn the columns
    c.send(b'P', b'\0SELECT * FROM (SELECT * FROM winning_bids) AS t LIMIT 0'
           b'\0\0\0')
    c.send(b'D', b'S\0')
    c.send(b'B', b'\0\0\0\0\0\0\0\0')
    c.send(b'E', b'\0\0\0\0\0')
    c.send(b'S')
    msgs = c.until_ready()
    assert [t for t, _ in msgs] == [b'1', b't', b'T', b'2', b'C', b'Z'], msgs
    assert [x[0] for x in row_desc(msgs[2][1])][:2] == ['auction_id', 'bid_id']
    assert msgs[4][1] == b'SELECT 0\0'
    # COPY describes as NoData; a bad statement errors and skips to Sync
    c.send(b'P', b'c\0COPY (SUBSCRIBE winning_bids) TO STDOUT\0\0\0')
    c.send(b'D', b'Sc\0')
    c.send(b'P', b'\0SELECT * FROM nope\0\0\0')
    c.send(b'D', b'S\0')
    c.send(b'S')
    msgs = c.until_ready()
    tags = [t for t, _ in msgs]
    assert tags == [b'1', b't', b'n', b'E', b'Z'], tags
    assert err_fields(msgs[3][1])['C'] == '42P01'
    # binary results are refused explicitly
    c.send(b'P', b'\0SELECT 1\0\0\0')
    c.send(b'B', b'\0\0\0\0\0\0\0\1\0\1')
    c.send(b'S')
    msgs = c.until_ready()
    assert [t for t, _ in msgs] == [b'1', b'E', b'Z'], msgs
    c.close()


@test
def simple_query_subscribe_streams_datarows():
    s = main_server()
    c = s.conn(params={'application_name': 'psql'})
    msgs = c.query('SUBSCRIBE winning_bids WITH (PROGRESS) AS OF %d UP TO %d'
                   % (WB_START, WB_START + 3000))
    tags = [t for t, _ in msgs]
    assert tags[0] == b'T' and tags[1] == b'N', tags[:3]
    note = err_fields(msgs[1][1])
    assert 'does not buffer output' in note['M'] and 'COPY' in note['H'], note
    n = tags.count(b'D')
    assert msgs[-2] == (b'C', b'SELECT %d\0' % n), msgs[-2]
    rows = [data_row(b) for t, b in msgs if t == b'D']
    check_subscribe_rows(rows, True, WB_START)
    c.close()


@test
def cursors_declare_fetch():
    s = main_server()
    c = s.conn()
    msgs = c.query('DECLARE c CURSOR FOR SUBSCRIBE winning_bids')
    assert err_fields(msgs[0][1])['C'] == '25P01', msgs
    msgs = c.query('BEGIN')
    assert msgs[-1] == (b'Z', b'T')
    msgs = c.query('DECLARE c CURSOR FOR SUBSCRIBE winning_bids WITH '
                   '(PROGRESS) AS OF %d' % WB_START)
    assert msgs[0] == (b'C', b'DECLARE CURSOR\0'), msgs
    msgs = c.query('FETCH 2 c')
    assert msgs[0][0] == b'T' and msgs[-2] == (b'C', b'FETCH 2\0'), msgs
    rows = [data_row(b) for t, b in msgs if t == b'D']
    assert rows[0][:3] == [str(WB_START), 't', None]
    msgs = c.query('FETCH c')
    assert msgs[-2] == (b'C', b'FETCH 1\0'), msgs
    rows += [data_row(b) for t_, b in msgs if t_ == b'D']
    t = time.time()
    msgs = c.query("FETCH ALL c WITH (timeout = '0.3s')")
    took = time.time() - t
    more = [data_row(b) for t_, b in msgs if t_ == b'D']
    assert len(more) > 20 and took >= 0.25, (len(more), took)
    assert msgs[-2] == (b'C', b'FETCH %d\0' % len(more)), msgs[-2]
    check_subscribe_rows(rows + more, True, WB_START)
    msgs = c.query("FETCH 5 c WITH (timeout = '0.2s')")
    assert msgs[-2][0] == b'C'
    msgs = c.query('FETCH 1 nope')
    assert err_fields(msgs[0][1])['C'] == '34000' and msgs[-1] == (b'Z', b'E')
    msgs = c.query('SELECT 1')
    assert err_fields(msgs[0][1])['C'] == '25P02'
    msgs = c.query('ROLLBACK')
    assert msgs[0] == (b'C', b'ROLLBACK\0') and msgs[-1] == (b'Z', b'I')
    # psql, inside one transaction
    r = psql(s.port, 'BEGIN', 'DECLARE c CURSOR FOR SUBSCRIBE top10 WITH '
             '(PROGRESS)', "FETCH ALL c WITH (timeout='0.2s')", 'COMMIT')
    assert r.returncode == 0 and 'FETCH' not in r.stderr, r.stderr
    assert '|t||' in r.stdout, r.stdout
    c.close()


@test
def cancel_request_ends_copy():
    s = main_server()
    c = s.conn()
    st = CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS) AS OF %d) '
                       'TO STDOUT' % (T0 + 2000))
    st.read_until_quiet(0.5)
    assert st.end is None and len(st.rows) > 5
    k = socket.create_connection(('127.0.0.1', s.port))
    k.sendall(struct.pack('!IIII', 16, 80877102, c.pid, c.secret))
    assert k.recv(10) == b''           # closed without a reply
    k.close()
    st.read_all()
    assert st.end[0] == 'error' and st.error['C'] == '57014', st.end
    assert st.error['M'] == 'canceling statement due to user request'
    msgs = c.query('SELECT 1')
    assert msgs[-1] == (b'Z', b'I')
    c.close()


@test
def concurrent_connections_agree():
    s = main_server()
    sql = ('COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF %d UP TO %d) '
           'TO STDOUT' % (WB_START, WB_LAST))
    out = [None] * 6

    def run(i):
        c = s.conn()
        st = CopyStream(c, sql)
        st.read_all()
        out[i] = st.raw
        c.close()
    th = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in th:
        t.start()
    for t in th:
        t.join(30)
    assert all(o is not None and o == out[0] for o in out)


@test
def control_status_and_statements():
    s = main_server()
    c = s.conn(options='--cluster=c7')
    CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS, SNAPSHOT = '
                  'false) AS OF %d UP TO %d) TO STDOUT'
               % (T0 + 2000, T0 + 4000)).read_all()
    st = s.ctl('status')
    sub = [x for x in st['subscriptions'] if x['conn'] == c.pid][-1]
    assert sub['as_of'] == T0 + 2000 and sub['snapshot'] is False and \
        sub['progress'] is True and sub['cluster'] == 'c7', sub
    assert sub['requested_as_of'] == T0 + 2000 and sub['up_to'] == T0 + 4000
    stm = s.ctl('statements')['statements']
    assert any(x['conn'] == c.pid and 'SNAPSHOT = false' in x['sql']
               for x in stm)
    c.close()


@test
def default_as_of_follows_live_edge():
    with Server('--scenario', scn_path('multiplicity.scn')) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_until_quiet(0.5)
        assert st.rows[0][:2] == [str(T0 + 2000), 't'], st.rows[0]
        last = max(int(r[0]) for r in st.rows if r[1] == 't')
        c2 = s.conn()
        st2 = CopyStream(c2, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS)) TO '
                             'STDOUT')
        st2.read_until_quiet(0.5)
        assert int(st2.rows[0][0]) == last - 1, (st2.rows[0], last)
        # the second snapshot equals the first stream's final state
        s1, _ = check_subscribe_rows(st.rows, True)
        s2, _ = check_subscribe_rows(st2.rows, True)
        assert s1 == s2
        c.close()
        c2.close()


@test
def password_authentication():
    with Server('--scenario', scn_path('top10.scn'), '--password', 'sekrit',
                control=False) as s:
        try:
            s.conn(password='wrong')
            raise AssertionError('wrong password accepted')
        except ProtocolError as e:
            assert '28P01' in str(e), e
        c = s.conn(password='sekrit')
        assert c.status == b'I'
        c.close()
        r = psql(s.port, 'SELECT 1', env={'PGPASSWORD': 'sekrit'})
        assert r.returncode == 0 and r.stdout.strip() == '1', r.stderr


@test
def unix_socket_and_clusters():
    d = tempfile.mkdtemp()
    try:
        with Server('--scenario', scn_path('top10.scn'), '--unix-socket-dir',
                    d, '--clusters', 'quickstart,feeds', control=False) as s:
            r = psql(s.port, 'SHOW cluster', host=d)
            assert r.returncode == 0 and r.stdout.strip() == 'quickstart'
            r = psql(s.port, 'SELECT count FROM top10 LIMIT 1', host=d,
                     options='--cluster=feeds')
            assert r.returncode == 0, r.stderr
            r = psql(s.port, 'SELECT * FROM top10', options='--cluster=nope')
            assert r.returncode != 0 and '42704' in r.stderr and \
                "unknown cluster 'nope'" in r.stderr, r.stderr
    finally:
        shutil.rmtree(d)


def scenario_rows(name, ts):
    return [(d, v) for t, d, v in load_scenario(name) if t == ts]


@test
def fault_drop_mid_timestamp():
    with Server('--scenario', scn_path('fault_drop_mid_ts.scn')) as s:
        T = T0 + 8000
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_all(5)
        assert st.end == ('eof',), st.end
        last = st.rows[-1]
        assert last[0] == str(T) and last[1] == 'f', last
        at_t = [r for r in st.rows if r[0] == str(T) and r[1] == 'f']
        want = scenario_rows('fault_drop_mid_ts.scn', T)
        assert len(at_t) == 1 < len(want), (len(at_t), len(want))
        lastp = max(int(r[0]) for r in st.rows if r[1] == 't')
        assert lastp == T
        c2 = s.conn()
        st2 = CopyStream(c2, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS, '
                             'SNAPSHOT = false) AS OF %d UP TO %d) TO STDOUT'
                         % (lastp - 1, T + 1))
        rows = st2.read_all()
        assert len([r for r in rows if r[0] == str(T) and r[1] == 'f']) \
            == len(want)
        c2.close()


@test
def fault_drop_between_timestamps():
    with Server('--scenario', scn_path('fault_drop_between_ts.scn')) as s:
        ends = []
        for i in range(3):
            c = s.conn()
            st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) '
                               'TO STDOUT')
            if i < 2:
                st.read_all(5)
                ends.append((st.end, st.rows[-1]))
            else:
                st.read_until_quiet(0.5)
                ends.append((st.end, st.rows[-1]))
            c.close()
        assert ends[0][0] == ('eof',) and ends[0][1][1] == 't', ends[0]
        assert ends[0][1][0] == str(T0 + 10000), ends[0]
        # an RST may discard rows still unread in our receive buffer
        assert ends[1][0] in (('eof',), ('reset',)), ends[1]
        assert int(ends[1][1][0]) <= T0 + 15000, ends[1]
        assert ends[2][0] is None, ends[2]


@test
def fault_errors_mid_stream():
    with Server('--scenario', scn_path('fault_error_mid_stream.scn')) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_all(5)
        assert st.end[0] == 'error' and st.error['C'] == 'XX000', st.end
        assert st.rows[-1][1] == 'f', 'error was not mid-timestamp'
        msgs = c.query('SELECT 1')            # connection still usable
        assert msgs[-1] == (b'Z', b'I')
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_all(5)
        assert st.end[0] == 'error' and st.error['C'] == '57P01' and \
            st.error['S'] == 'FATAL', st.end
        try:
            c.recv(2)
            raise AssertionError('connection not closed after FATAL')
        except (EOFError, ConnectionResetError):
            pass


@test
def async_messages_between_rows():
    """[WIRE-5] NoticeResponse / ParameterStatus between CopyData."""
    with Server('--scenario', scn_path('async_messages.scn')) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE items WITH (PROGRESS)) TO STDOUT')
        st.read_until_quiet(0.5, 10)
        rows = st.rows
        got = [(rows[n - 1][2] if n else None, k,
                f['M'] if k == 'N' else f) for n, k, f in st.asyncs]
        # after the row before it: mz_diff of the row preceding each message
        kinds = [(k, m) for _, k, m in got]
        assert kinds == [
            ('S', ('cluster_replica', 'r2')),
            ('N', 'a notice between the halves of an update'),
            ('N', 'a warning too'),
            ('N', 'a notice after a progress row'),
            ('S', ('TimeZone', 'UTC'))], kinds
        n_half = st.asyncs[1][0]
        assert rows[n_half - 1][2] == '-1' and rows[n_half][2] == '1', \
            'notice not between the -1 and +1 of the update'
        warn = st.asyncs[2][2]
        assert warn['S'] == 'WARNING' and warn['C'] == '01000', warn
        assert st.end is None, st.end     # the statement goes on
        # the snapshot's notice lies before the AS OF: folded, not sent
        assert not any('snapshot' in str(m) for _, _, m in got)


@test
def fault_stall():
    with Server('--scenario', scn_path('fault_stall.scn')) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        stamps = []
        while len(stamps) < 400:
            try:
                r = st.next(6)
            except socket.timeout:
                break
            if r is None:
                break
            stamps.append((time.time(), r))
            if int(r[0]) > T0 + 20000:
                break
        gaps = [(b[0] - a[0], a[1], b[1]) for a, b in zip(stamps, stamps[1:])]
        big = [g for g in gaps if g[0] > 1.5]
        assert len(big) >= 2, [g[0] for g in gaps if g[0] > 0.5]
        g3 = [g for g in big if g[0] > 2.8]
        assert g3 and g3[0][1][1] == 't', g3      # stall after a progress row
        g2 = [g for g in big if 1.8 < g[0] < 2.8]
        assert g2 and g2[0][1][1] == 'f' and g2[0][2][0] == g2[0][1][0], g2
        c.close()


@test
def fault_since_advances():
    with Server('--scenario', scn_path('fault_since.scn')) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_all(5)
        assert st.end == ('eof',), st.end
        lastp = max(int(r[0]) for r in st.rows if r[1] == 't')
        assert lastp == T0 + 13000
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS, '
                           'SNAPSHOT = false) AS OF %d) TO STDOUT' % (lastp - 1))
        assert st.error and st.error['C'] == 'XX000', st.end
        assert st.error['M'] == ('Timestamp (%d) is not valid for all inputs: '
                                 '[Antichain { elements: [%d] }]'
                                 % (lastp - 1, T0 + 17000)), st.error
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_until_quiet(0.5)
        assert st.rows[0][:2] == [str(T0 + 17000), 't'], st.rows[0]
        check_subscribe_rows(st.rows, True, T0 + 17000)
        c.close()
    with Server('--scenario', scn_path('fault_since.scn'), '--asof-error',
                'current', control=False) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids AS OF 1) TO STDOUT')
        assert st.error['C'] == '22000' and 'valid timestamp' in \
            st.error['M'], st.error
        c.close()


@test
def fault_malformed_rows():
    with Server('--scenario', scn_path('fault_malformed.scn')) as s:
        got = []
        for _ in range(3):
            # each reconnect resumes from the start: the faults already
            # fired are skipped, the next one fires
            c = s.conn()
            st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS) '
                               'AS OF %d) TO STDOUT' % (T0 + 5000))
            try:
                st.read_until_quiet(0.5)
                got.append(None)
            except ProtocolError as e:
                got.append(str(e))
            c.close()
        assert 'expected 11' in got[0] and '12 fields' in got[0], got[0]
        assert '10 fields' in got[1], got[1]
        assert 'lone backslash' in got[2] or 'newline' in got[2], got[2]


@test
def fault_during_snapshot():
    with Server('--scenario', scn_path('fault_snapshot.scn')) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_all(5)
        assert st.end == ('eof',) and len(st.rows) == 1 + 3, st.rows
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_all(5)
        assert st.end[0] == 'error' and len(st.rows) == 1 + 5, st.rows
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_until_quiet(0.5)
        assert st.end is None and len(st.rows) > 8
        c.close()


@test
def holds_control_file_and_signal():
    d = tempfile.mkdtemp()
    try:
        with Server('--scenario', scn_path('holds.scn'), '--hold-dir', d) as s:
            c = s.conn()
            st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS)) '
                               'TO STDOUT')
            r = s.ctl('wait-hold first-live-progress 10')
            assert r['ok'] and r['waiting'] == [c.pid], r
            st.read_until_quiet(0.3)
            assert st.rows[-1][1] == 't' and st.rows[-1][0] == str(T0 + 6000)
            assert os.path.exists(os.path.join(d, 'first-live-progress'
                                                  '.reached'))
            assert s.ctl('release first-live-progress')['ok']
            r = s.ctl('wait-hold mid-ts 10')
            assert r['ok'], r
            st.read_until_quiet(0.3)
            assert st.rows[-1][1] == 'f', st.rows[-1]        # open timestamp
            mid_ts = st.rows[-1][0]
            open(os.path.join(d, 'mid-ts'), 'w').close()     # file release
            r = s.ctl('wait-hold mid-ts-closed 10')
            assert r['ok'], r
            st.read_until_quiet(0.3)
            assert st.rows[-1][1] == 't' and int(st.rows[-1][0]) > int(mid_ts)
            s.p.send_signal(signal.SIGUSR1)                   # signal release
            r = s.ctl('wait-hold near-end 10')
            assert r['ok'], r
            s.ctl('release near-end')
            st.read_until_quiet(0.5)
            assert int(st.rows[-1][0]) >= T0 + 24000, st.rows[-1]
            # released holds stay released for the next subscription
            c2 = s.conn()
            st2 = CopyStream(c2, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS) '
                                 'AS OF %d) TO STDOUT' % (T0 + 5000))
            st2.read_until_quiet(0.5)
            assert int(st2.rows[-1][0]) >= T0 + 24000
            c.close()
            c2.close()
    finally:
        shutil.rmtree(d)


@test
def step_mode_pauses_at_every_progress():
    with Server('--scenario', scn_path('multiplicity.scn'), '--step') as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS) AS OF '
                           '%d UP TO %d) TO STDOUT' % (T0 + 2000, T0 + 12000))
        seen = []
        for p in (T0 + 4000, T0 + 6000, T0 + 7000, T0 + 10000):
            r = s.ctl('wait-hold progress-%d 10' % p)
            assert r['ok'], r
            st.read_until_quiet(0.2)
            assert st.rows[-1][:2] == [str(p), 't'], (p, st.rows[-1])
            seen.append(p)
            s.ctl('release progress-%d' % p)
        st.read_all()           # progress 12000 reaches UP TO: no hold
        assert st.end == ('done', 'COPY %d' % len(st.rows)), st.end
        c.close()


@test
def tick_pacing():
    with Server('--scenario', scn_path('multiplicity.scn'), '--tick-ms', '150',
                control=False) as s:
        c = s.conn()
        t = time.time()
        st = CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS) AS OF '
                           '%d UP TO %d) TO STDOUT' % (T0 + 2000, T0 + 12000))
        st.read_all()
        took = time.time() - t
        # 5 timestamps + 1 progress without data after the snapshot
        assert 0.85 < took < 3, took
        c.close()


@test
def realtime_pacing_and_idle_progress():
    with Server('--scenario', scn_path('winning_bids.scn'), '--realtime',
                '--speed', '20', control=False) as s:
        c = s.conn()
        up_to = WB_LAST + 2500          # two idle progress rows past the end
        t = time.time()
        st = CopyStream(c, 'COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF '
                           '%d UP TO %d) TO STDOUT' % (WB_START, up_to))
        rows = st.read_all()
        took = time.time() - t
        want = (WB_LAST + 3000 - WB_START) / 1000.0 / 20
        assert want * 0.8 < took < want + 2, (took, want)
        prog = [int(r[0]) for r in rows if r[1] == 't']
        assert prog[-3:] == [WB_LAST + 1000, WB_LAST + 2000, WB_LAST + 3000]
        assert st.end == ('done', 'COPY %d' % len(rows))
        c.close()


@test
def realtime_one_timeline():
    """[SUB-7] one clock for every session: a subscription started once the
    history is complete gets it at once, with the same updates at the
    same timestamps as one that followed it live."""
    with Server('--scenario', scn_path('winning_bids.scn'), '--realtime',
                '--speed', '20', control=False) as s:
        sql = ('COPY (SUBSCRIBE winning_bids WITH (PROGRESS) AS OF %d UP TO %d) '
               'TO STDOUT' % (WB_START, WB_LAST + 1))
        c1 = s.conn()
        t = time.time()
        live = CopyStream(c1, sql).read_all()
        took_live = time.time() - t
        c2 = s.conn()
        t = time.time()
        late = CopyStream(c2, sql).read_all()
        took_late = time.time() - t
        assert took_live > 1.0, took_live
        assert took_late < took_live / 3, (took_late, took_live)
        data = [r for r in live if r[1] != 't']
        assert data and data == [r for r in late if r[1] != 't']
        c1.close()
        c2.close()


@test
def control_injects_error_and_drop():
    with Server('--scenario', scn_path('multiplicity.scn')) as s:
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_until_quiet(0.3)
        r = s.ctl('error %d XX000 injected failure' % c.pid)
        assert r['interrupted'] == 1, r
        st.read_all()
        assert st.error['C'] == 'XX000' and st.error['M'] == 'injected failure'
        st = CopyStream(c, 'COPY (SUBSCRIBE order_lines WITH (PROGRESS)) TO '
                           'STDOUT')
        st.read_until_quiet(0.3)
        s.ctl('drop all')
        st.read_all()
        assert st.end == ('eof',), st.end
        r = s.ctl('since order_lines %d' % (T0 + 9000))
        assert r['since'] == T0 + 9000
        c = s.conn()
        st = CopyStream(c, 'COPY (SUBSCRIBE order_lines AS OF %d) TO STDOUT'
                        % (T0 + 8000))
        assert st.error and str(T0 + 9000) in st.error['M']
        c.close()


@test
def generator_throughput():
    with Server('--generate', 'rows=1000000,cols=10,rows_per_ts=1000,end=close',
                control=False) as s:
        out = tempfile.TemporaryFile()
        conninfo = 'host=127.0.0.1 port=%d user=tester' % s.port
        cpu0 = proc_cpu(s.p.pid)
        t = time.time()
        r = subprocess.run([PSQL, conninfo, '-X', '-c', 'COPY (SUBSCRIBE bench '
                            'WITH (PROGRESS)) TO STDOUT'], stdout=out,
                           stderr=subprocess.PIPE, timeout=120)
        took = time.time() - t
        cpu = proc_cpu(s.p.pid) - cpu0
        assert r.returncode == 0, r.stderr
        out.seek(0)
        data = prog = 0
        first = []
        for line in out:
            if len(first) < 3:
                first.append(line.decode())
            if line[13:16] == b'\tf\t':
                data += 1
            elif line[13:16] == b'\tt\t':
                prog += 1
        assert 1000000 <= data < 1001000 and 1000 <= prog <= 1010, (data, prog)
        assert first[0].split('\t')[:2] == [str(T0), 't']
        assert len(first[1].split('\t')) == 13, first[1]
        # The sender's capacity is measured in server CPU time (wall time
        # depends on the receiver and on the machine's load).
        print('    generator: %d rows through psql in %.2fs wall (%.0f rows/s), '
              'server CPU %.2fs (%.0f rows per CPU second)'
              % (data, took, data / took, cpu, data / max(cpu, 1e-3)))
        assert data / max(cpu, 1e-3) > 1000000, cpu
        # DataRow path works too
        c = s.conn()
        c.query('BEGIN')
        c.query('DECLARE g CURSOR FOR SUBSCRIBE bench WITH (PROGRESS)')
        msgs = c.query('FETCH 1001 g')
        rows = [data_row(b) for t_, b in msgs if t_ == b'D']
        assert len(rows) == 1001 and rows[1][2] == '1', rows[:2]
        c.close()


def main():
    if not PSQL:
        print('psql not found: psql-based checks will fail')
    passed = failed = 0
    try:
        for fn in TESTS:
            if ONLY and ONLY not in fn.__name__:
                continue
            t = time.time()
            try:
                fn()
            except Exception as e:
                failed += 1
                import traceback
                print('FAIL %s (%.1fs): %s: %s' % (fn.__name__,
                                                   time.time() - t,
                                                   type(e).__name__, e))
                if VERBOSE:
                    traceback.print_exc()
            else:
                passed += 1
                print('ok   %s (%.1fs)' % (fn.__name__, time.time() - t))
            sys.stdout.flush()
    finally:
        if MAIN is not None:
            MAIN.stop()
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
