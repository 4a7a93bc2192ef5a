#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""mzserver -- a Materialize SUBSCRIBE test server.

It stands in for Materialize (which cannot be installed on our machines) in
tailgate's tests.  It speaks the PostgreSQL frontend/backend protocol v3 the way
Materialize does, and answers SUBSCRIBE from a *scenario*: a scripted history
of one relation (timestamps, update rows with any multiplicity, progress
frontiers, retained-history "since" and connection faults).  Python 3 standard
library only.

It was written from Materialize's documentation and source (SUBSCRIBE, durable
subscriptions, pgwire) and the PostgreSQL protocol/COPY documentation, never
from what tailgate's daemon sends.  Facts implemented, with where they come from:

  [SUB-1] SUBSCRIBE output columns: mz_timestamp numeric, mz_progressed bool
          (only WITH (PROGRESS)), mz_diff int8, then the relation's columns.
          (materialize.com/docs/sql/subscribe, "Output")
  [SUB-2] A progress row has mz_progressed = t and NULL in every other column;
          it means "no more rows at times < mz_timestamp".  The first row WITH
          PROGRESS is a progress row at the AS OF time.  Not every timestamp
          gets a progress row: several timestamps may precede one progress row.
          (docs "PROGRESS"; adapter active_compute_sink.rs: initialize() emits
          the as-of progress, then one progress row per batch upper)
  [SUB-3] The snapshot is a series of updates at the AS OF timestamp
          (fast-forwarded); SNAPSHOT = false suppresses it, and then only
          updates at times strictly greater than AS OF are emitted.
          (docs "SNAPSHOT"; compute sink/subscribe.rs should_emit: as_of <= t
          with snapshot, as_of < t without)
  [SUB-4] Within a batch updates are consolidated (each distinct row at most
          once per timestamp, diff any non-zero integer) and sorted by time
          only, so a retraction may precede or follow the insertion.
          (compute sink consolidate_updates; adapter sorts by time only)
  [SUB-5] AS OF t with t older than the retained history fails: legacy text
          "Timestamp (t) is not valid for all inputs: [Antichain { elements:
          [since] }]" (XX000, an unstructured adapter error); newer Materialize
          (after MaterializeInc/materialize#34712) says "could not find a valid
          timestamp for the query" (22000).  AS OF AT LEAST t may advance t.
          UP TO is exclusive; UP TO < AS OF is an error; AS OF = UP TO ends
          with no rows.  (docs "AS OF", "UP TO"; issues #11188, #18910)
  [SUB-6] An error inside a running subscribe reaches the client as an
          ErrorResponse with SQLSTATE XX000 (PeekResponseUnary::Error ->
          INTERNAL_ERROR); cancel is 57014 "canceling statement due to user
          request".  (pgwire protocol.rs send_rows/copy_rows)
  [SUB-7] One timeline for all sessions: timestamps are milliseconds of
          wall-clock time, and under the default strict serializable
          isolation the logical time is kept close to the wall clock, so a
          time t is complete at one wall-clock moment for every session.
          Two subscriptions receive the same updates at the same
          timestamps; one started AS OF an earlier time receives what lies
          between its AS OF and the present at once, then follows live.
          (docs "Isolation levels": strict serializable provides
          linearizability; "now and mz_now": the logical timestamp stays
          within a few seconds of the wall clock; "SUBSCRIBE", "AS OF")
  [WIRE-1] COPY (SUBSCRIBE ...) TO STDOUT: CopyOutResponse (text, one format
          code per column), then each row in its own CopyData, flushed per
          batch; CopyDone + "COPY n" only if the subscribe finishes.  Text
          format escapes backslash, newline, carriage return and tab; NULL is
          \\N.  (pgwire copy_rows; pgcopy encode_copy_row_text)  PostgreSQL's
          own COPY TO additionally emits \\b \\f \\v and never octal/hex
          (postgresql.org/docs COPY "File Formats") -> --copy-escapes.
  [WIRE-2] Startup: SSLRequest/GSSENCRequest answered 'N'; protocol 3.0;
          options parsed like Materialize (--key=value, -c key=value,
          -ckey=value, backslash-escaped spaces), so options=--cluster=NAME
          sets the cluster; AuthenticationOk (or cleartext password),
          ParameterStatus for the notify set (application_name,
          client_encoding, DateStyle, integer_datetimes, server_version=9.5.0,
          standard_conforming_strings, TimeZone, IntervalStyle, cluster,
          cluster_replica, database, search_path, mz_version),
          BackendKeyData, ReadyForQuery.  (pgwire protocol.rs run(),
          parse_options; session vars notify_set)
  [WIRE-3] ErrorResponse carries S, C, M and optionally D, H, P fields;
          notices use the same layout with 'N'.  RowDescription uses table
          oid 0 and attribute number 0.  (pgwire codec.rs, message.rs)
  [WIRE-5] NoticeResponse and ParameterStatus are asynchronous: a server may
          send them at any time, between the CopyData messages of a COPY
          OUT too, and a client must accept them there.  Materialize sends
          notices of its own this way (AdapterNotice, e.g. a SUBSCRIBE
          whose relation was dropped).  (postgresql.org/docs protocol-flow
          "COPY Operations" and "Asynchronous Operations"; adapter
          notice.rs) -> the "notice" and "parameter" directives.
  [WIRE-4] SUBSCRIBE outside COPY/FETCH first sends a NoticeResponse
          "streaming SUBSCRIBE rows directly requires a client that does not
          buffer output" then DataRows; FETCH returns at most count rows
          (no count = 1), waits for the first rows when no timeout is given,
          or up to the timeout; CommandComplete "FETCH n".  DECLARE/FETCH
          must run inside BEGIN ... COMMIT.  (protocol.rs fetch/send_rows;
          docs "Subscribing with FETCH")

Scenario file format (".scn", one directive per line, '#' starts a comment
line; full description in README.md):

    relation winning_bids                 # name SUBSCRIBE/SELECT refer to
    column auction_id int8                # PostgreSQL type name ...
    column price numeric(10,2)            # ... with typmod, arrays "int4[]",
    column x mytype oid=16464 len=8       # ... or an explicit OID
    since 1700000000000                   # initial oldest readable time
    start 1700000005000                   # default AS OF of the first client
    retain 30000                          # since follows upper - 30000
    autoprogress on                       # progress T+1 after each ts block
    idle_progress 1000                    # after the history: progress/1s
    snapshot-fault drop after=3           # fault while sending the snapshot

    ts 1700000001000                      # start of the updates at time T
    +1 [1, 10, "pizza", null, 3.50]       # diff, then a JSON array of values
    -2 ["text with\ttab", true]           # (strings = PostgreSQL text form)
    progress 1700000002000                # frontier: no more rows < P
    drop [rst] [once|always|conn=N]       # close the connection here
    error XX000 "message" [severity=FATAL] [detail=".."] [once|always|conn=N]
    stall 2.5 [once|always|conn=N]        # send nothing for 2.5 s
    malformed KIND [ARG] [once|...]       # opt-in protocol violation row
    notice 01000 "text" [once|...]        # NoticeResponse here [WIRE-5]
    parameter NAME VALUE [once|...]       # ParameterStatus here [WIRE-5]
    hold NAME                             # pause until released (see below)
    since T                               # retained history advances to T
    sleep MS                              # pacing pause (every connection)
    end close|hang|drop                   # what happens after the history

Holds: a stream reaching "hold NAME" (or, with --step, every progress row,
named "progress-<T>") pauses until the hold is released: by the control
channel ("release NAME"), by creating the file <hold-dir>/NAME, or by SIGUSR1
(releases every hold currently waited on).  When reached, <hold-dir>/NAME.reached
is created and control "wait-hold NAME" returns.  A released hold stays
released (later connections pass it).

Fault scope: "once" (default) fires on the first subscription that reaches
the line, "always" on every one, "conn=N" on the N-th subscription started.
A connection replays the scenario from its own AS OF; events at or before it
are folded into the snapshot and not replayed.

Control channel (--control-port, one command per line, JSON replies):
status, statements, wait-hold NAME [secs], release [NAME|*], wait-subs N,
wait-upper [REL] T, since [REL] T, drop [CONN|all] [rst],
error [CONN|all] CODE TEXT, cancel [CONN|all], ping.

Run "mzserver.py --help" for the command line; README.md has the details
and examples.
"""

import argparse
import asyncio
import collections
import datetime
import json
import os
import random
import re
import shlex
import signal
import socket
import struct
import sys
import time
import uuid

# ---------------------------------------------------------------------------
# PostgreSQL type catalog (pg_type.dat OIDs and typlen)
# ---------------------------------------------------------------------------

BASE_TYPES = {
    'bool': (16, 1), 'bytea': (17, -1), 'char': (18, 1), 'name': (19, 64),
    'int8': (20, 8), 'int2': (21, 2), 'int4': (23, 4), 'text': (25, -1),
    'oid': (26, 4), 'json': (114, -1), 'xml': (142, -1), 'float4': (700, 4),
    'float8': (701, 8), 'bpchar': (1042, -1), 'varchar': (1043, -1),
    'date': (1082, 4), 'time': (1083, 8), 'timestamp': (1114, 8),
    'timestamptz': (1184, 8), 'interval': (1186, 16), 'timetz': (1266, 12),
    'numeric': (1700, -1), 'uuid': (2950, 16), 'jsonb': (3802, -1),
    'record': (2249, -1), 'int4range': (3904, -1), 'numrange': (3906, -1),
    'tsrange': (3908, -1), 'tstzrange': (3910, -1), 'daterange': (3912, -1),
    'int8range': (3926, -1),
}
ARRAY_OIDS = {
    'bool': 1000, 'bytea': 1001, 'char': 1002, 'name': 1003, 'int2': 1005,
    'int4': 1007, 'text': 1009, 'bpchar': 1014, 'varchar': 1015, 'int8': 1016,
    'float4': 1021, 'float8': 1022, 'oid': 1028, 'timestamp': 1115,
    'date': 1182, 'time': 1183, 'timestamptz': 1185, 'interval': 1187,
    'numeric': 1231, 'timetz': 1270, 'uuid': 2951, 'json': 199, 'jsonb': 3807,
}
TYPE_ALIASES = {
    'bigint': 'int8', 'integer': 'int4', 'int': 'int4', 'smallint': 'int2',
    'real': 'float4', 'double precision': 'float8', 'double': 'float8',
    'float': 'float8', 'boolean': 'bool', 'character varying': 'varchar',
    'character': 'bpchar', 'decimal': 'numeric', 'string': 'text',
    'timestamp with time zone': 'timestamptz',
    'timestamp without time zone': 'timestamp',
    'time without time zone': 'time', 'time with time zone': 'timetz',
}
OID_NUMERIC, OID_BOOL, OID_INT8, OID_INT4, OID_TEXT = 1700, 16, 20, 23, 25


class Column:
    """One output column: name and the type facts RowDescription needs."""
    __slots__ = ('name', 'type', 'oid', 'typlen', 'typmod', 'is_array', 'base')

    def __init__(self, name, type_name, oid, typlen=-1, typmod=-1,
                 is_array=False, base=None):
        self.name, self.type, self.oid = name, type_name, oid
        self.typlen, self.typmod = typlen, typmod
        self.is_array, self.base = is_array, base or type_name

    def renamed(self, name):
        return Column(name, self.type, self.oid, self.typlen, self.typmod,
                      self.is_array, self.base)

    def as_json(self):
        return {'name': self.name, 'type': self.type, 'oid': self.oid}


def parse_type(spec, oid=None, typlen=None, typmod=None):
    """'numeric(10,2)', 'int4[]', 'timestamp with time zone' -> Column args."""
    m = re.fullmatch(r'\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*'
                     r'(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*((?:\[\s*\])*)\s*',
                     spec)
    if not m:
        raise ValueError('bad type %r' % spec)
    base = ' '.join(m.group(1).lower().split())
    base = TYPE_ALIASES.get(base, base)
    is_array = bool(m.group(4))
    if oid is None:
        if base not in BASE_TYPES:
            raise ValueError('unknown type %r (give oid=N)' % spec)
        oid = ARRAY_OIDS.get(base) if is_array else BASE_TYPES[base][0]
        if oid is None:
            raise ValueError('no array type for %r' % base)
    if typlen is None:
        typlen = -1 if is_array else BASE_TYPES.get(base, (0, -1))[1]
    if typmod is None:
        typmod = -1
        p, s = m.group(2), m.group(3)
        if p is not None:
            if base == 'numeric':
                typmod = ((int(p) << 16) | int(s or 0)) + 4
            elif base in ('varchar', 'bpchar'):
                typmod = int(p) + 4
            else:
                typmod = int(p)
    name = base + ('[]' if is_array else '')
    return dict(type_name=name, oid=oid, typlen=typlen, typmod=typmod,
                is_array=is_array, base=base)


def make_column(name, spec, **kw):
    return Column(name, **parse_type(spec, **kw))


MZ_TIMESTAMP = Column('mz_timestamp', 'numeric', OID_NUMERIC, -1, -1)
MZ_PROGRESSED = Column('mz_progressed', 'bool', OID_BOOL, 1, -1)
MZ_DIFF = Column('mz_diff', 'int8', OID_INT8, 8, -1)


def subscribe_columns(cols, progress):
    """[SUB-1] output columns of a SUBSCRIBE."""
    head = [MZ_TIMESTAMP] + ([MZ_PROGRESSED] if progress else []) + [MZ_DIFF]
    return head + list(cols)


# ---------------------------------------------------------------------------
# Values: scenario JSON -> PostgreSQL text form; COPY text escaping
# ---------------------------------------------------------------------------

def _array_elem(e):
    if e is None:
        return 'NULL'
    if isinstance(e, list):
        return pg_array_literal(e)
    if e is True:
        return 't'
    if e is False:
        return 'f'
    s = json.dumps(e, ensure_ascii=False, separators=(', ', ': ')) \
        if isinstance(e, dict) else str(e)
    if s == '' or s.upper() == 'NULL' or re.search(r'[{},"\\\s]', s):
        return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'
    return s


def pg_array_literal(items):
    """A JSON list -> PostgreSQL array text, e.g. [1, null, "a b"] ->
    {1,NULL,"a b"} (array_out quoting rules)."""
    return '{' + ','.join(_array_elem(e) for e in items) + '}'


def render_value(raw, structured, col):
    """raw: json parsed with numbers kept as their source text; structured:
    the same value parsed normally (used to re-serialize json objects)."""
    if raw is None:
        return None
    if raw is True:
        return 't'
    if raw is False:
        return 'f'
    if isinstance(raw, list) and col.is_array:
        return pg_array_literal(raw)
    if isinstance(raw, (list, dict)):
        return json.dumps(structured, ensure_ascii=False,
                          separators=(', ', ': '))
    return raw


# [WIRE-1] Materialize's encode_copy_row_text escapes exactly these four.
ESC_MZ = {ord('\\'): '\\\\', ord('\n'): '\\n', ord('\r'): '\\r',
          ord('\t'): '\\t'}
# PostgreSQL's CopyAttributeOutText also uses \b \f \v for those controls.
ESC_PG = dict(ESC_MZ)
ESC_PG.update({8: '\\b', 12: '\\f', 11: '\\v'})
# "exotic": everything a COPY text reader must accept -- letter escapes,
# 3-digit octal for the other control characters, 2-digit hex for ASCII
# punctuation.  Still decodes to exactly the same values.
ESC_EXOTIC = dict(ESC_PG)
for _c in list(range(32)) + [127]:
    ESC_EXOTIC.setdefault(_c, '\\%03o' % _c)
for _ch in '!#$%&()*+,-./:;<=>?@[]^_`{|}~"\'':
    ESC_EXOTIC[ord(_ch)] = '\\x%02x' % ord(_ch)
ESCAPES = {'mz': ESC_MZ, 'pg': ESC_PG, 'exotic': ESC_EXOTIC}


# ---------------------------------------------------------------------------
# Wire protocol message builders (backend side)
# ---------------------------------------------------------------------------

_I = struct.Struct('!I')
_i = struct.Struct('!i')
_h = struct.Struct('!h')


def msg(tag, payload=b''):
    return tag + _I.pack(len(payload) + 4) + payload


def cstr(s):
    return s.encode('utf-8') + b'\0'


def m_row_description(cols):
    out = [_h.pack(len(cols))]
    for c in cols:
        out.append(cstr(c.name) + struct.pack('!IhIhih', 0, 0, c.oid, c.typlen,
                                              c.typmod, 0))
    return msg(b'T', b''.join(out))


def m_data_row(fields):
    out = [_h.pack(len(fields))]
    for f in fields:
        if f is None:
            out.append(_i.pack(-1))
        else:
            out.append(_i.pack(len(f)))
            out.append(f)
    return msg(b'D', b''.join(out))


def m_error(severity, code, message, detail=None, hint=None, position=None):
    """[WIRE-3] ErrorResponse ('E'), or NoticeResponse ('N') below ERROR."""
    body = b'S' + cstr(severity) + b'C' + cstr(code) + b'M' + cstr(message)
    if detail:
        body += b'D' + cstr(detail)
    if hint:
        body += b'H' + cstr(hint)
    if position:
        body += b'P' + cstr(str(position))
    tag = b'E' if severity in ('ERROR', 'FATAL', 'PANIC') else b'N'
    return msg(tag, body + b'\0')


def m_command_complete(tag):
    return msg(b'C', cstr(tag))


def m_ready(status):
    return msg(b'Z', status.encode())


def m_param_status(name, value):
    return msg(b'S', cstr(name) + cstr(value))


def m_copy_out(ncols):
    return msg(b'H', struct.pack('!bh', 0, ncols) + b'\0\0' * ncols)


M_COPY_DONE = msg(b'c')
M_EMPTY_QUERY = msg(b'I')
M_PARSE_COMPLETE = msg(b'1')
M_BIND_COMPLETE = msg(b'2')
M_CLOSE_COMPLETE = msg(b'3')
M_NO_DATA = msg(b'n')
M_PORTAL_SUSPENDED = msg(b's')


class PgError(Exception):
    """An error to report to the client as an ErrorResponse."""

    def __init__(self, code, message, severity='ERROR', detail=None,
                 hint=None, position=None):
        super().__init__(message)
        self.code, self.message, self.severity = code, message, severity
        self.detail, self.hint, self.position = detail, hint, position

    def encode(self):
        return m_error(self.severity, self.code, self.message, self.detail,
                       self.hint, self.position)


# ---------------------------------------------------------------------------
# Stream items: what a subscription producer hands to a connection
# ---------------------------------------------------------------------------
# A data or progress row is a plain tuple (ts, diff, values): diff None means
# a progress row [SUB-2].  Everything else is one of these classes.

class End:
    """The subscribe finished (UP TO reached / "end close")."""


class Drop:
    """Close the TCP connection now (FIN, or RST with rst=True)."""

    def __init__(self, rst=False):
        self.rst = rst


class ErrorItem:
    """Send an ErrorResponse and end the statement (FATAL: and close)."""

    def __init__(self, code, message, severity='ERROR', detail=None, hint=None):
        self.err = PgError(code, message, severity, detail, hint)


class Malformed:
    """An opt-in protocol violation row (never sent by Materialize)."""

    def __init__(self, kind, arg, ts, template):
        self.kind, self.arg, self.ts, self.template = kind, arg, ts, template


class Async:
    """A NoticeResponse or ParameterStatus sent between rows [WIRE-5]: not a
    row, not the end of the statement."""

    def __init__(self, data):
        self.data = data


class Chunk:
    """Pre-encoded CopyData messages (generator fast path)."""

    def __init__(self, data, nrows):
        self.data, self.nrows = data, nrows


TERMINALS = (End, Drop, ErrorItem)
MALFORMED_KINDS = ('extra_column', 'missing_column', 'trailing_backslash',
                   'bad_utf8', 'octal_bad_utf8', 'no_newline', 'two_rows',
                   'bad_diff', 'zero_diff', 'null_diff', 'bad_progressed',
                   'ts_backwards', 'unconsolidated', 'raw')


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

class Ev:
    """One scenario event.  kind: row tsmark progress fault hold since sleep
    end.  'at' is the scenario line number (for messages and fault ids)."""
    __slots__ = ('kind', 'ts', 'diff', 'vals', 'args', 'at')

    def __init__(self, kind, at, ts=None, diff=None, vals=None, args=None):
        self.kind, self.at, self.ts, self.diff = kind, at, ts, diff
        self.vals, self.args = vals, args or {}


class ScenarioError(Exception):
    pass


def _split_scope(words):
    """Pull once/always/conn=N and key=value words out of a fault line."""
    scope, kv, rest = 'once', {}, []
    for w in words:
        if w in ('once', 'always'):
            scope = w
        elif re.fullmatch(r'conn=\d+', w):
            scope = int(w.split('=')[1])
        elif re.fullmatch(r'[a-z_]+=.*', w, re.S):
            k, v = w.split('=', 1)
            kv[k] = v
        else:
            rest.append(w)
    return scope, kv, rest


class Scenario:
    """A parsed .scn file: one relation and its full history."""

    def __init__(self, path=None, text=None):
        self.path = path or '<string>'
        self.name = None
        self.columns = []
        self.events = []
        self.since = 0
        self.start = None
        self.retain = None
        self.autoprogress = False
        self.idle_progress = None
        self.allow_negative = False
        self.snapshot_faults = []
        self._snap_cache = {}
        self._cut_cache = {}
        if text is None:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        self._parse(text)

    # -- parsing -----------------------------------------------------------
    def _err(self, lineno, message):
        raise ScenarioError('%s:%d: %s' % (self.path, lineno, message))

    def _parse(self, text):
        cur_ts = None            # time of the open ts block
        block_rows = None        # distinct rows seen at cur_ts
        unconsolidated = False
        last_prog = None
        counts = collections.Counter()
        in_header = True
        need_autoprog = False
        for lineno, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if not s or s.startswith('#'):
                continue
            if s[0] in '+-' or s[0].isdigit():
                if cur_ts is None:
                    self._err(lineno, 'update row before the first "ts" line')
                self._parse_row(lineno, s, cur_ts, block_rows, unconsolidated,
                                counts)
                need_autoprog = True
                continue
            try:
                words = shlex.split(s, comments=True)
            except ValueError as e:
                self._err(lineno, 'cannot split line: %s' % e)
            if not words:
                continue
            d = words[0].lower()
            args = words[1:]

            def want(n, usage):
                if len(args) < n:
                    self._err(lineno, 'usage: ' + usage)

            def ts_arg(w):
                if not re.fullmatch(r'\d+', w):
                    self._err(lineno, 'timestamp must be an integer: %r' % w)
                return int(w)

            if in_header and d in ('relation', 'column', 'since', 'start',
                                   'retain', 'autoprogress', 'idle_progress',
                                   'snapshot-fault', 'allow_negative'):
                if d == 'relation':
                    want(1, 'relation NAME')
                    self.name = args[0]
                elif d == 'column':
                    want(2, 'column NAME TYPE [oid=N] [len=N] [typmod=N]')
                    kw = {}
                    tw = []
                    for w in args[1:]:
                        m = re.fullmatch(r'(oid|len|typmod)=(-?\d+)', w)
                        if m:
                            kw[{'len': 'typlen'}.get(m.group(1), m.group(1))] = \
                                int(m.group(2))
                        else:
                            tw.append(w)
                    try:
                        self.columns.append(make_column(args[0], ' '.join(tw),
                                                        **kw))
                    except ValueError as e:
                        self._err(lineno, str(e))
                elif d == 'since':
                    want(1, 'since T')
                    self.since = ts_arg(args[0])
                elif d == 'start':
                    want(1, 'start T')
                    self.start = ts_arg(args[0])
                elif d == 'retain':
                    want(1, 'retain MS')
                    self.retain = ts_arg(args[0])
                elif d == 'autoprogress':
                    self.autoprogress = bool(args) and args[0].lower() in (
                        'on', 'true', '1', 'yes')
                elif d == 'idle_progress':
                    want(1, 'idle_progress MS')
                    self.idle_progress = ts_arg(args[0])
                elif d == 'allow_negative':
                    self.allow_negative = True
                elif d == 'snapshot-fault':
                    want(1, 'snapshot-fault FAULT... after=N')
                    ev = self._parse_fault(lineno, args[0].lower(), args[1:])
                    ev.args.setdefault('after', '0')
                    if not re.fullmatch(r'\d+', ev.args['after']):
                        self._err(lineno, 'after=N must be an integer')
                    self.snapshot_faults.append(ev)
                continue
            if d == 'ts':
                in_header = False
                want(1, 'ts T [unconsolidated]')
                t = ts_arg(args[0])
                if cur_ts is not None and t < cur_ts:
                    self._err(lineno, 'timestamps must not go backwards '
                                      '(%d after %d)' % (t, cur_ts))
                if last_prog is not None and t < last_prog:
                    self._err(lineno, 'ts %d is before the last progress %d '
                                      '[SUB-2]' % (t, last_prog))
                if self.autoprogress and need_autoprog and t > cur_ts:
                    self._add_progress(cur_ts + 1, lineno)
                    last_prog = cur_ts + 1
                    need_autoprog = False
                if t != cur_ts:
                    block_rows = set()
                cur_ts = t
                unconsolidated = 'unconsolidated' in args[1:]
                self.events.append(Ev('tsmark', lineno, ts=t))
            elif d == 'progress':
                in_header = False
                want(1, 'progress T')
                p = ts_arg(args[0])
                if last_prog is not None and p <= last_prog:
                    self._err(lineno, 'progress must increase (%d after %d)'
                              % (p, last_prog))
                if cur_ts is not None and p <= cur_ts:
                    self._err(lineno, 'progress %d must be beyond the data '
                                      'time %d [SUB-2]' % (p, cur_ts))
                self._add_progress(p, lineno)
                last_prog = p
                need_autoprog = False
            elif d in ('drop', 'error', 'stall', 'malformed', 'notice',
                       'parameter'):
                in_header = False
                ev = self._parse_fault(lineno, d, args)
                ev.ts = cur_ts
                self.events.append(ev)
            elif d == 'hold':
                in_header = False
                want(1, 'hold NAME')
                self.events.append(Ev('hold', lineno, ts=cur_ts,
                                      args={'name': args[0]}))
            elif d == 'since':
                self.events.append(Ev('since', lineno, ts=ts_arg(args[0])))
            elif d == 'sleep':
                want(1, 'sleep MS')
                self.events.append(Ev('sleep', lineno,
                                      args={'ms': float(args[0])}))
            elif d == 'end':
                want(1, 'end close|hang|drop')
                if args[0] not in ('close', 'hang', 'drop'):
                    self._err(lineno, 'usage: end close|hang|drop')
                if self.autoprogress and need_autoprog:
                    self._add_progress(cur_ts + 1, lineno)
                    need_autoprog = False
                self.events.append(Ev('end', lineno, args={'how': args[0]}))
            else:
                self._err(lineno, 'unknown directive %r' % words[0])
        if self.autoprogress and need_autoprog:
            self._add_progress(cur_ts + 1, 0)
        if not self.name:
            self._err(1, 'missing "relation NAME"')
        if not self.columns:
            self._err(1, 'missing "column NAME TYPE" lines')
        if self.start is None:
            first = [e.ts for e in self.events if e.kind == 'tsmark']
            self.start = first[0] if first else max(self.since, 1)
        self.template = next((e.vals for e in self.events if e.kind == 'row'),
                             tuple('x' for _ in self.columns))

    def _add_progress(self, p, lineno):
        self.events.append(Ev('progress', lineno, ts=p))

    def _parse_row(self, lineno, s, ts, block_rows, unconsolidated, counts):
        m = re.match(r'([+-]?\d+)\s+', s)
        if not m:
            self._err(lineno, 'row must be "<diff> [values...]"')
        diff = int(m.group(1))
        if diff == 0:
            self._err(lineno, 'diff must be non-zero [SUB-4]')
        txt = s[m.end():]
        try:
            raw, end = json.JSONDecoder(parse_int=str, parse_float=str,
                                        parse_constant=str).raw_decode(txt)
            structured, _ = json.JSONDecoder(
                parse_constant=float).raw_decode(txt)
        except ValueError as e:
            self._err(lineno, 'values are not a JSON array: %s' % e)
        rest = txt[end:].strip()
        if rest and not rest.startswith('#'):
            self._err(lineno, 'trailing text after the values: %r' % rest)
        if not isinstance(raw, list):
            self._err(lineno, 'values must be a JSON array')
        if len(raw) != len(self.columns):
            self._err(lineno, 'expected %d values, got %d'
                      % (len(self.columns), len(raw)))
        vals = tuple(render_value(r, st, c) for r, st, c
                     in zip(raw, structured, self.columns))
        if vals in block_rows and not unconsolidated:
            self._err(lineno, 'row appears twice at time %d; write it once '
                              'with the summed diff [SUB-4]' % ts)
        block_rows.add(vals)
        counts[vals] += diff
        if counts[vals] < 0 and not self.allow_negative:
            self._err(lineno, 'multiplicity of this row becomes %d (add '
                              '"allow_negative" to permit)' % counts[vals])
        self.events.append(Ev('row', lineno, ts=ts, diff=diff, vals=vals))

    def _parse_fault(self, lineno, d, args):
        scope, kv, rest = _split_scope(args)
        a = dict(kv, scope=scope)
        if d == 'drop':
            a['rst'] = 'rst' in rest
        elif d == 'error':
            if len(rest) < 2 or not re.fullmatch(r'[0-9A-Z]{5}', rest[0]):
                self._err(lineno, 'usage: error SQLSTATE "message" '
                                  '[severity=FATAL] [detail=..] [hint=..]')
            a['code'], a['message'] = rest[0], ' '.join(rest[1:])
            a['severity'] = kv.get('severity', 'ERROR').upper()
        elif d == 'notice':
            if len(rest) < 2 or not re.fullmatch(r'[0-9A-Z]{5}', rest[0]):
                self._err(lineno, 'usage: notice SQLSTATE "message" '
                                  '[severity=NOTICE|WARNING|INFO]')
            a['code'], a['message'] = rest[0], ' '.join(rest[1:])
            a['severity'] = kv.get('severity', 'NOTICE').upper()
        elif d == 'parameter':
            if len(rest) != 2:
                self._err(lineno, 'usage: parameter NAME VALUE')
            a['name'], a['value'] = rest
        elif d == 'stall':
            if not rest:
                self._err(lineno, 'usage: stall SECONDS')
            a['seconds'] = float(rest[0])
        elif d == 'malformed':
            if not rest or rest[0] not in MALFORMED_KINDS:
                self._err(lineno, 'usage: malformed KIND [ARG]; KIND is one '
                                  'of ' + ', '.join(MALFORMED_KINDS))
            a['what'] = rest[0]
            a['arg'] = rest[1] if len(rest) > 1 else None
        else:
            self._err(lineno, 'unknown fault %r' % d)
        a['fault'] = d
        return Ev('fault', lineno, args=a)

    # -- queries on the history ----------------------------------------------
    def cut_index(self, as_of):
        """Index of the first event that belongs after AS OF: data or
        progress at a time > as_of, or the end of the history (every
        subscription ends as the scenario says, also one whose AS OF is
        past the last update: a finished relation stays finished).
        Everything before it is history folded into the snapshot (faults
        there are not replayed)."""
        c = self._cut_cache.get(as_of)
        if c is None:
            c = len(self.events)
            for i, e in enumerate(self.events):
                if (e.kind in ('row', 'tsmark', 'progress') and e.ts > as_of) or \
                        e.kind == 'end':
                    c = i
                    break
            self._cut_cache[as_of] = c
        return c

    def snapshot(self, as_of):
        """[SUB-3] Consolidated state at as_of: list of (values, count)."""
        s = self._snap_cache.get(as_of)
        if s is None:
            acc = {}
            for e in self.events[:self.cut_index(as_of)]:
                if e.kind == 'row' and e.ts <= as_of:
                    acc[e.vals] = acc.get(e.vals, 0) + e.diff
            s = [(v, n) for v, n in acc.items() if n != 0]
            self._snap_cache[as_of] = s
        return s

    def summary(self):
        rows = [e for e in self.events if e.kind == 'row']
        ts = sorted({e.ts for e in rows})
        return {'relation': self.name, 'path': self.path,
                'columns': [c.as_json() for c in self.columns],
                'since': self.since, 'start': self.start,
                'rows': len(rows), 'timestamps': len(ts),
                'first_ts': ts[0] if ts else None,
                'last_ts': ts[-1] if ts else None,
                'progress_rows': sum(e.kind == 'progress' for e in self.events),
                'faults': sum(e.kind == 'fault' for e in self.events)}


class SubOpts:
    """Parsed SUBSCRIBE options."""

    def __init__(self):
        self.progress = False
        self.snapshot = True
        self.as_of = None
        self.at_least = False
        self.up_to = None


class Sub:
    """Bookkeeping for one running subscription (shown by "status")."""

    def __init__(self, sid, session, rel, sql, opts, as_of, mode):
        self.id, self.conn = sid, session.id
        self.relation, self.sql, self.mode = rel, sql, mode
        self.as_of = as_of
        self.requested_as_of = opts.as_of
        self.at_least = opts.at_least
        self.snapshot, self.progress, self.up_to = (opts.snapshot,
                                                    opts.progress, opts.up_to)
        self.cluster = session.vars.get('cluster')
        self.rows_sent = 0
        self.last_progress = None
        self.started = time.time()
        self.ended = None

    def as_json(self):
        return {k: getattr(self, k) for k in (
            'id', 'conn', 'relation', 'sql', 'mode', 'as_of',
            'requested_as_of', 'at_least', 'snapshot', 'progress', 'up_to',
            'cluster', 'rows_sent', 'last_progress', 'started', 'ended')}


class Runtime:
    """Live state of one scenario shared by all connections: the retained
    history frontier (since), the live edge (upper) and fired faults."""

    def __init__(self, server, scn):
        self.srv, self.scn = server, scn
        self.name = scn.name
        self.columns = scn.columns
        self.since = scn.since
        self.upper = scn.start + 1      # default AS OF = upper - 1 = start
        self.fired = set()

    def advance_upper(self, p):
        if p > self.upper:
            self.upper = p
            if self.scn.retain is not None:
                self.advance_since(p - self.scn.retain)

    def advance_since(self, t):
        if t > self.since:
            self.since = t
            if t >= self.upper:         # the live edge is never behind since
                self.upper = t + 1
            self.srv.event('since', relation=self.name, since=t)

    def resolve_as_of(self, opts):
        """[SUB-5] The subscribe's as-of, or a PgError."""
        if opts.as_of is None:
            a = max(self.upper - 1, self.since)
        elif opts.at_least:
            a = max(opts.as_of, self.since)
        elif opts.as_of < self.since:
            if self.srv.args.asof_error == 'current':
                raise PgError('22000', 'could not find a valid timestamp for '
                                       'the query')
            raise PgError('XX000', 'Timestamp (%d) is not valid for all inputs:'
                                   ' [Antichain { elements: [%d] }]'
                          % (opts.as_of, self.since))
        else:
            a = opts.as_of
        if opts.up_to is not None and opts.up_to < a:
            raise PgError('XX000', 'subscription lower ("as of") bound is '
                                   'beyond its upper ("up to") bound: %d < %d'
                          % (opts.up_to, a))
        return a

    def should_fire(self, ev, sub):
        scope = ev.args.get('scope', 'once')
        if scope == 'always':
            return True
        if isinstance(scope, int):
            return sub.id == scope
        key = (ev.at, id(ev))
        if key in self.fired:
            return False
        self.fired.add(key)
        return True

    def state_at(self, as_of, proj):
        snap = self.scn.snapshot(as_of)
        return consolidate_proj(snap, proj) if proj else snap

    async def stream(self, sub, proj, mode, pace):
        """The producer: an async generator of batches (lists of items) for
        one subscription, replaying the scenario from sub.as_of."""
        scn, srv = self.scn, self.srv
        a, opts_progress = sub.as_of, sub.progress
        up_to = sub.up_to
        batch = []
        pending = {}            # projected rows awaiting consolidation

        def take():
            nonlocal batch
            if pending:
                for vals, n in pending.items():
                    if n:
                        batch.append((cur_ts, n, vals))
                pending.clear()
            b, batch = batch, []
            return b

        cur_ts = a
        if up_to is not None and up_to <= a:            # [SUB-5] zero rows
            yield [End()]
            return
        if opts_progress:                               # [SUB-2]
            batch.append((a, None, None))
            sub.last_progress = a
        last_prog = a
        if sub.snapshot:                                # [SUB-3]
            sfaults = [f for f in scn.snapshot_faults]
            for k, (vals, n) in enumerate(self.state_at(a, proj)):
                for f in sfaults:
                    if int(f.args['after']) == k and self.should_fire(f, sub):
                        for item in self._fault_items(f, sub, a):
                            if isinstance(item, float):
                                yield take()
                                await asyncio.sleep(item)
                            elif isinstance(item, TERMINALS):
                                yield take() + [item]
                                return
                            else:
                                batch.append(item)
                batch.append((a, n, vals))
                if len(batch) >= 1024:
                    yield take()
        if batch:
            yield take()
        prev_time = a
        evs = scn.events
        for i in range(scn.cut_index(a), len(evs)):
            ev = evs[i]
            k = ev.kind
            if k == 'row':
                if up_to is not None and ev.ts >= up_to:
                    yield take() + [End()]
                    return
                if ev.ts != cur_ts and pending:
                    batch = take()      # consolidate per timestamp
                cur_ts = ev.ts
                if proj is None:
                    batch.append((ev.ts, ev.diff, ev.vals))
                else:
                    pv = proj(ev.vals)
                    pending[pv] = pending.get(pv, 0) + ev.diff
                if len(batch) >= 1024:
                    yield take()
            elif k == 'tsmark':
                if pace:
                    d = pace(prev_time, ev.ts, 'ts')
                    if d > 0:
                        yield take()
                        await asyncio.sleep(d)
                prev_time = ev.ts
            elif k == 'progress':
                p = ev.ts
                if pace:
                    d = pace(prev_time, p, 'progress' if evs[i - 1].kind
                             == 'row' else 'progress-no-data')
                    if d > 0:
                        yield take()
                        await asyncio.sleep(d)
                prev_time = p
                if p > last_prog:
                    if opts_progress:
                        batch = take()
                        batch.append((p, None, None))
                        sub.last_progress = p
                    last_prog = p
                self.advance_upper(p)
                if up_to is not None and p >= up_to:
                    yield take() + [End()]
                    return
                yield take()
                if srv.args.step:
                    await srv.holds.wait('progress-%d' % p, sub)
            elif k == 'fault':
                if not self.should_fire(ev, sub):
                    continue
                srv.event('fault', conn=sub.conn, sub=sub.id,
                          fault=ev.args['fault'], line=ev.at)
                for item in self._fault_items(ev, sub, cur_ts, last_prog):
                    if isinstance(item, float):
                        yield take()
                        await asyncio.sleep(item)
                    elif isinstance(item, TERMINALS):
                        yield take() + [item]
                        return
                    else:
                        batch = take()
                        batch.append(item)
            elif k == 'hold':
                yield take()
                await srv.holds.wait(ev.args['name'], sub)
            elif k == 'since':
                self.advance_since(ev.ts)
            elif k == 'sleep':
                yield take()
                await asyncio.sleep(ev.args['ms'] / 1000.0)
            elif k == 'end':
                how = ev.args['how']
                if how == 'close':
                    yield take() + [End()]
                    return
                if how == 'drop':
                    yield take() + [Drop()]
                    return
                break
        b = take()
        if b:
            yield b
        # The history is exhausted: Materialize keeps the statement open.
        if scn.idle_progress:
            # Materialize keeps advancing the frontier of an idle relation:
            # a progress row every idle_progress ms (of timestamp; paced by
            # --realtime/--tick-ms if given, else wall-clock).
            step = scn.idle_progress
            while True:
                d = pace(last_prog, last_prog + step, 'progress-no-data') \
                    if pace else step / 1000.0
                await asyncio.sleep(d)
                last_prog += step
                self.advance_upper(last_prog)
                out = []
                if opts_progress:
                    sub.last_progress = last_prog
                    out.append((last_prog, None, None))
                if up_to is not None and last_prog >= up_to:
                    yield out + [End()]
                    return
                if out:
                    yield out
        await asyncio.Future()          # hang until cancelled

    def _fault_items(self, ev, sub, cur_ts, last_prog=None):
        """Translate a fault event into stream items (floats are sleeps)."""
        a = ev.args
        f = a['fault']
        if f == 'drop':
            return [Drop(a.get('rst', False))]
        if f == 'error':
            return [ErrorItem(a['code'], a['message'], a['severity'],
                              a.get('detail'), a.get('hint'))]
        if f == 'stall':
            return [float(a['seconds'])]
        if f == 'notice':
            return [Async(m_error(a['severity'], a['code'], a['message']))]
        if f == 'parameter':
            return [Async(m_param_status(a['name'], a['value']))]
        if f == 'malformed':
            ts = cur_ts if cur_ts is not None else sub.as_of
            if a['what'] == 'ts_backwards':
                ts = (last_prog if last_prog is not None else ts) - 1
            return [Malformed(a['what'], a.get('arg'), ts, self.scn.template)]
        return []


def consolidate_proj(snap, proj):
    acc = {}
    for vals, n in snap:
        pv = proj(vals)
        acc[pv] = acc.get(pv, 0) + n
    return [(v, n) for v, n in acc.items() if n]


# ---------------------------------------------------------------------------
# Generator mode: a large synthetic 10-column stream for benchmarks
# ---------------------------------------------------------------------------

GEN_TYPES = ['int8', 'text', 'int4', 'float8', 'numeric', 'bool',
             'timestamptz', 'text', 'int8', 'jsonb']


class Generator:
    """--generate rows=N,cols=C,rows_per_ts=K[,snapshot=S][,name=R][,end=E]

    Timestamp i (start+1+i) inserts block i%M of K/2 rows and deletes block
    (i-W)%M, so every row has multiplicity 0 or 1, a timestamp never holds a
    row twice, and the state stays W blocks big.  A progress row follows each
    timestamp.  Blocks are pre-encoded per (PROGRESS, escape style) with the
    13-digit timestamp left as a join point, so sending is bytes.join."""

    W = 4

    def __init__(self, server, spec):
        self.srv = server
        p = dict(rows=1000000, cols=10, rows_per_ts=1000, snapshot=0,
                 name='bench', end='hang', start=1700000000000)
        for part in filter(None, spec.split(',')):
            if '=' not in part:
                raise ValueError('bad --generate item %r' % part)
            k, v = part.split('=', 1)
            if k not in p:
                raise ValueError('unknown --generate key %r' % k)
            p[k] = v if k in ('name', 'end') else int(v)
        if p['end'] not in ('hang', 'close', 'drop'):
            raise ValueError('end= must be hang, close or drop')
        self.p = p
        self.name = p['name']
        self.cols = max(1, p['cols'])
        self.columns = [make_column('c%d' % j, GEN_TYPES[j % len(GEN_TYPES)])
                        for j in range(self.cols)]
        self.half = max(1, p['rows_per_ts'] // 2)
        self.M = self.W + 4
        self.since = 0
        self.start = p['start']
        self.upper = self.start + 1
        self.fired = set()
        self._tpl = {}
        self.pool = [[self.row_values(b * self.half + j) for j in range(self.half)]
                     for b in range(self.M)]

    def row_values(self, r):
        out = []
        for j in range(self.cols):
            t = GEN_TYPES[j % len(GEN_TYPES)]
            if t == 'int8':
                out.append(str(r if j == 0 else (r * 7919 + j) % 1000003))
            elif t == 'text':
                out.append('item %d' % (r % 97) if j == 1
                           else 'tab\there "q" back\\slash #%d' % r)
            elif t == 'int4':
                out.append(str(r % 1000))
            elif t == 'float8':
                out.append(repr((r % 10000) / 8.0))
            elif t == 'numeric':
                out.append('%d.%06d' % (r, (r * 37) % 1000000))
            elif t == 'bool':
                out.append('t' if r % 2 else 'f')
            elif t == 'timestamptz':
                out.append(datetime.datetime.fromtimestamp(
                    1700000000 + r % 86400, datetime.timezone.utc)
                    .strftime('%Y-%m-%d %H:%M:%S+00'))
            else:
                out.append('{"k": %d, "v": "x"}' % r)
        return tuple(out)

    # Same interface as Runtime ------------------------------------------------
    def advance_upper(self, p):
        self.upper = max(self.upper, p)

    def resolve_as_of(self, opts):
        return self.start

    def state_at(self, as_of, proj):
        snap = [(self.row_values(10 ** 9 + r), 1)
                for r in range(self.p['snapshot'])]
        return consolidate_proj(snap, proj) if proj else snap

    def _templates(self, progress, esc):
        key = (progress, id(esc))
        t = self._tpl.get(key)
        if t is None:
            mid = '\tf\t' if progress else '\t'

            def block(rows, diff):
                pieces, cur = [], b''
                for vals in rows:
                    body = '\t'.join(v.translate(esc) for v in vals)
                    line = (mid + diff + '\t' + body + '\n').encode()
                    pieces.append(cur + b'd' + _I.pack(4 + 13 + len(line)))
                    cur = line
                pieces.append(cur)
                return pieces
            ins = [block(b, '1') for b in self.pool]
            dele = [block(b, '-1') for b in self.pool]
            ptail = ('\tt\t\\N' + '\t\\N' * self.cols + '\n').encode()
            t = (ins, dele, b'd' + _I.pack(4 + 13 + len(ptail)), ptail)
            self._tpl[key] = t
        return t

    async def stream(self, sub, proj, mode, pace):
        p = self.p
        a = self.start
        progress = sub.progress
        total = p['rows']
        if progress:
            yield [(a, None, None)]
        if sub.snapshot and p['snapshot']:
            snap = self.state_at(a, proj)
            for k in range(0, len(snap), 1024):
                yield [(a, n, v) for v, n in snap[k:k + 1024]]
        fast = mode == 'copy' and proj is None
        if fast:
            ins, dele, phead, ptail = self._templates(
                progress, ESCAPES[self.srv.args.copy_escapes])
        sent = 0
        i = 0
        chunks, nrows = [], 0
        while sent < total:
            ts = a + 1 + i
            b_in, b_del = i % self.M, (i - self.W) % self.M
            if fast:
                tsb = str(ts).encode()
                chunks.append(tsb.join(ins[b_in]))
                n = self.half
                if i >= self.W:
                    chunks.append(tsb.join(dele[b_del]))
                    n += self.half
                if progress:
                    chunks.append(phead + str(ts + 1).encode() + ptail)
                nrows += n
                sent += n
                if nrows >= 4096 or sent >= total:
                    yield [Chunk(b''.join(chunks), nrows)]
                    chunks, nrows = [], 0
            else:
                items = [(ts, 1, v) for v in self.pool[b_in]]
                if i >= self.W:
                    items += [(ts, -1, v) for v in self.pool[b_del]]
                if proj:
                    items = [(ts, n, v) for v, n in consolidate_proj(
                        [(v, d) for _, d, v in items], proj)]
                if progress:
                    items.append((ts + 1, None, None))
                sent += len(items) - (1 if progress else 0)
                yield items
            self.advance_upper(ts + 1)
            sub.last_progress = ts + 1
            i += 1
        if p['end'] == 'close':
            yield [End()]
        elif p['end'] == 'drop':
            yield [Drop()]
        else:
            await asyncio.Future()


# ---------------------------------------------------------------------------
# Holds (test-controlled pauses)
# ---------------------------------------------------------------------------

class Holds:
    def __init__(self, server, hold_dir):
        self.srv, self.dir = server, hold_dir
        self.released = set()
        self.reached = collections.Counter()
        self.release_ev = {}
        self.reach_ev = {}
        self.waiting = collections.defaultdict(set)

    def _rev(self, name):
        return self.release_ev.setdefault(name, asyncio.Event())

    def reach_event(self, name):
        return self.reach_ev.setdefault(name, asyncio.Event())

    async def wait(self, name, sub):
        if name in self.released:
            return
        self.reached[name] += 1
        self.reach_event(name).set()
        self.waiting[name].add(sub.conn)
        self.srv.event('hold-reached', hold=name, conn=sub.conn, sub=sub.id)
        if self.dir:
            try:
                with open(os.path.join(self.dir, name + '.reached'), 'w') as f:
                    f.write('%d\n' % sub.conn)
            except OSError:
                pass
        ev = self._rev(name)
        try:
            while not ev.is_set():
                if self.dir and os.path.exists(os.path.join(self.dir, name)):
                    self.release(name)
                    break
                try:
                    await asyncio.wait_for(ev.wait(),
                                           0.05 if self.dir else None)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.waiting[name].discard(sub.conn)
        self.srv.event('hold-passed', hold=name, conn=sub.conn)

    def release(self, name):
        if name == '*':
            for n in list(self.waiting):
                self.release(n)
            return
        self.released.add(name)
        self._rev(name).set()

    def release_waiting(self):
        for n, who in list(self.waiting.items()):
            if who:
                self.release(n)

    def as_json(self):
        return {'released': sorted(self.released),
                'reached': dict(self.reached),
                'waiting': {n: sorted(w) for n, w in self.waiting.items() if w}}


# ---------------------------------------------------------------------------
# A subscription feed: the producer runs as a task filling a queue, so that
# FETCH can wait with a timeout and cancel can interrupt any wait
# ---------------------------------------------------------------------------

class Feed:
    def __init__(self, server, agen, sub):
        self.srv, self.sub = server, sub
        self.q = asyncio.Queue(maxsize=16)
        self.buf = collections.deque()
        self.finished = None        # terminal item once seen
        self.task = asyncio.ensure_future(self._pump(agen))

    async def _pump(self, agen):
        try:
            async for batch in agen:
                if batch:
                    await self.q.put(batch)
        except asyncio.CancelledError:
            raise
        except Exception as e:          # a bug here must not hang the client
            self.srv.log('producer failed: %r' % e)
            await self.q.put([ErrorItem('XX000', 'mzserver internal error: %r'
                                        % e)])
        finally:
            await agen.aclose()

    async def next_batch(self, timeout=None):
        if self.buf:
            b = list(self.buf)
            self.buf.clear()
            return b
        if timeout is None:
            return await self.q.get()
        if timeout <= 0:
            return self.q.get_nowait() if not self.q.empty() else None
        try:
            return await asyncio.wait_for(self.q.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def pushback(self, items):
        self.buf.extendleft(reversed(items))

    def close(self):
        self.task.cancel()
        if self.sub.ended is None:
            self.sub.ended = time.time()


# ---------------------------------------------------------------------------
# Row encoders (COPY text and DataRow)
# ---------------------------------------------------------------------------

def make_copy_encoder(ncols, progress, esc):
    """[WIRE-1] one CopyData message per row."""
    cache = {}
    nulls = '\t\\N' * ncols
    prog_tail = '\tt\t\\N' + nulls + '\n'
    mid = '\tf\t' if progress else '\t'
    pack = _I.pack

    def body(vals):
        b = cache.get(vals)
        if b is None:
            b = ''.join('\t\\N' if v is None else '\t' + v.translate(esc)
                        for v in vals)
            if len(cache) < 200000:
                cache[vals] = b
        return b

    def enc(item):
        ts, diff, vals = item
        if diff is None:
            line = (str(ts) + prog_tail).encode()
        else:
            line = ('%d%s%d%s\n' % (ts, mid, diff, body(vals))).encode()
        return b'd' + pack(len(line) + 4) + line

    def line_fields(ts, diff, vals):
        """Escaped fields of a data row (for malformed variants)."""
        f = [str(ts)] + (['f'] if progress else []) + [str(diff)]
        return f + ['\\N' if v is None else v.translate(esc) for v in vals]

    enc.line_fields = line_fields
    return enc


def make_datarow_encoder(ncols, progress):
    cache = {}

    def enc(item):
        ts, diff, vals = item
        head = [str(ts).encode()]
        if progress:
            head.append(b't' if diff is None else b'f')
        if diff is None:
            return m_data_row(head + [None] * (ncols + 1))
        ev = cache.get(vals)
        if ev is None:
            ev = [None if v is None else v.encode() for v in vals]
            if len(cache) < 200000:
                cache[vals] = ev
        return m_data_row(head + [str(diff).encode()] + ev)
    return enc


def malformed_copy(item, enc, progress):
    """Opt-in protocol violations in COPY text form (list of CopyData)."""
    k, ts, tpl = item.kind, item.ts, item.template
    f = enc.line_fields(ts, 1, tpl)
    first_val = 3 if progress else 2
    payloads = None
    if k == 'extra_column':
        f.append('extra')
    elif k == 'missing_column':
        f.pop()
    elif k == 'trailing_backslash':
        f[-1] = f[-1] + '\\'
    elif k == 'octal_bad_utf8':
        f[-1] = f[-1] + '\\377'
    elif k == 'bad_diff':
        f[first_val - 1] = 'one'
    elif k == 'zero_diff':
        f[first_val - 1] = '0'
    elif k == 'null_diff':
        f[first_val - 1] = '\\N'
    elif k == 'bad_progressed':
        if progress:
            f[1] = 'maybe'
        else:
            f[first_val - 1] = 'maybe'
    elif k == 'unconsolidated':
        line = ('\t'.join(f) + '\n').encode()
        payloads = [line, line]
    elif k == 'raw':
        payloads = [(item.arg or '').encode('utf-8', 'surrogateescape')]
    line = ('\t'.join(f) + '\n').encode()
    if k == 'bad_utf8':
        line = line[:-1] + b'\xff\xfe\n'
    elif k == 'no_newline':
        line = line[:-1]
    elif k == 'two_rows':
        line = line + line
    if payloads is None:
        payloads = [line]
    return [b'd' + _I.pack(len(p) + 4) + p for p in payloads]


def malformed_datarow(item, progress):
    k, ts, tpl = item.kind, item.ts, item.template
    f = [str(ts).encode()] + ([b'f'] if progress else []) + [b'1'] + \
        [None if v is None else v.encode() for v in tpl]
    d = 2 if progress else 1
    if k in ('extra_column', 'two_rows'):
        f.append(b'extra')
    elif k in ('missing_column', 'no_newline'):
        f.pop()
    elif k in ('bad_utf8', 'octal_bad_utf8', 'trailing_backslash', 'raw'):
        f[-1] = (f[-1] or b'') + b'\xff\xfe'
    elif k == 'bad_diff':
        f[d] = b'one'
    elif k == 'zero_diff':
        f[d] = b'0'
    elif k == 'null_diff':
        f[d] = None
    elif k == 'bad_progressed':
        f[1 if progress else d] = b'maybe'
    elif k == 'unconsolidated':
        return [m_data_row(f), m_data_row(f)]
    return [m_data_row(f)]


# ---------------------------------------------------------------------------
# A small SQL front end: tokenizer and parser for the statements we serve
# ---------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<estr>[eE]'(?:[^'\\]|\\.|'')*')
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"(?:[^"]|"")*")
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<param>\$\d+)
  | (?P<id>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
  | (?P<op>::|<=|>=|<>|!=|=>|[(),;=.*+\-/<>\[\]:%])
""", re.S | re.X)


class Tok:
    __slots__ = ('kind', 'val', 'pos', 'quoted', 'text')

    def __init__(self, kind, val, pos, text, quoted=False):
        self.kind, self.val, self.pos = kind, val, pos
        self.text, self.quoted = text, quoted


def _unescape_e(body):
    m = {'n': '\n', 't': '\t', 'r': '\r', 'b': '\b', 'f': '\f', '\\': '\\',
         "'": "'"}
    return re.sub(r"\\(.)|''", lambda x: m.get(x.group(1), x.group(1))
                  if x.group(1) else "'", body, flags=re.S)


def tokenize(sql):
    toks, pos = [], 0
    while pos < len(sql):
        m = _TOKEN_RE.match(sql, pos)
        if not m:
            if sql[pos] == "'" or sql[pos:pos + 2].lower() == "e'":
                raise PgError('42601', 'unterminated quoted string',
                              position=pos + 1)
            if sql[pos] == '"':
                raise PgError('42601', 'unterminated quoted identifier',
                              position=pos + 1)
            raise PgError('42601', 'unexpected character %r' % sql[pos],
                          position=pos + 1)
        kind, text = m.lastgroup, m.group()
        if kind == 'ws':
            pass
        elif kind == 'str':
            toks.append(Tok('str', text[1:-1].replace("''", "'"), pos, text))
        elif kind == 'estr':
            toks.append(Tok('str', _unescape_e(text[2:-1]), pos, text))
        elif kind == 'qid':
            toks.append(Tok('id', text[1:-1].replace('""', '"'), pos, text,
                            quoted=True))
        elif kind == 'id':
            toks.append(Tok('id', text.lower(), pos, text))
        else:
            toks.append(Tok(kind, text, pos, text))
        pos = m.end()
    return toks


def split_statements(sql):
    """Split a Query string at top-level semicolons -> [(text, tokens)]."""
    toks = tokenize(sql)
    out, cur, depth, start = [], [], 0, 0
    for t in toks:
        if t.kind == 'op' and t.val == '(':
            depth += 1
        elif t.kind == 'op' and t.val == ')':
            depth -= 1
        if t.kind == 'op' and t.val == ';' and depth <= 0:
            if cur:
                out.append((sql[start:t.pos].strip(), cur))
            cur, start, depth = [], t.pos + 1, 0
            continue
        if not cur:
            start = t.pos
        cur.append(t)
    if cur:
        out.append((sql[start:].strip(), cur))
    return out


RESERVED_AFTER_FROM = {'limit', 'where', 'order', 'group', 'having', 'join',
                       'left', 'right', 'inner', 'outer', 'cross', 'full',
                       'union', 'offset', 'natural', 'on', 'as', 'within',
                       'with', 'up', 'envelope', 'fetch', 'for', 'window',
                       'except', 'intersect', 'using', 'lateral'}


class Parser:
    def __init__(self, toks):
        self.toks, self.i = toks, 0

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    @staticmethod
    def is_kw(t, kw):
        return t is not None and t.kind == 'id' and not t.quoted and t.val == kw

    def at(self, *kws):
        return all(self.is_kw(self.peek(j), kw) for j, kw in enumerate(kws))

    def accept(self, *kws):
        if self.at(*kws):
            self.i += len(kws)
            return True
        return False

    def expect(self, *kws):
        if not self.accept(*kws):
            self.fail('Expected %s, found %s'
                      % (' '.join(k.upper() for k in kws), self.desc()))

    def at_op(self, op):
        t = self.peek()
        return t is not None and t.kind == 'op' and t.val == op

    def accept_op(self, op):
        if self.at_op(op):
            self.i += 1
            return True
        return False

    def expect_op(self, op):
        if not self.accept_op(op):
            self.fail('Expected %s, found %s' % (op, self.desc()))

    def ident(self):
        t = self.peek()
        if t is None or t.kind != 'id':
            self.fail('Expected identifier, found %s' % self.desc())
        self.i += 1
        return t.val

    def qualified_name(self):
        parts = [self.ident()]
        while self.accept_op('.'):
            parts.append(self.ident())
        return parts

    def done(self):
        return self.i >= len(self.toks)

    def desc(self):
        t = self.peek()
        if t is None:
            return 'end of input'
        if t.kind == 'id':
            return ('identifier "%s"' % t.val) if t.quoted else \
                ('keyword %s' % t.val.upper() if t.val in _KEYWORDS
                 else 'identifier "%s"' % t.val)
        if t.kind == 'str':
            return 'string literal %s' % t.text
        if t.kind == 'num':
            return 'number "%s"' % t.text
        return 'operator "%s"' % t.text

    def fail(self, message):
        t = self.peek()
        raise PgError('42601', message,
                      position=(t.pos + 1) if t is not None else None)

    def balanced(self):
        """Skip a parenthesized group (the '(' already consumed)."""
        depth = 1
        while depth:
            t = self.peek()
            if t is None:
                self.fail('Expected ), found end of input')
            if t.kind == 'op' and t.val == '(':
                depth += 1
            elif t.kind == 'op' and t.val == ')':
                depth -= 1
            self.i += 1


_KEYWORDS = {'select', 'from', 'where', 'limit', 'subscribe', 'with', 'as',
             'of', 'at', 'least', 'up', 'to', 'copy', 'stdout', 'declare',
             'cursor', 'for', 'fetch', 'close', 'begin', 'commit', 'rollback',
             'set', 'show', 'reset', 'all', 'order', 'group', 'by', 'envelope',
             'within', 'timestamp'}


def parse_bool_word(p):
    t = p.peek()
    if t is None:
        p.fail('Expected boolean, found end of input')
    v = t.val.lower() if t.kind in ('id', 'str', 'num') else None
    if v in ('true', 'on', 't', '1', 'yes'):
        p.i += 1
        return True
    if v in ('false', 'off', 'f', '0', 'no'):
        p.i += 1
        return False
    p.fail('Expected boolean, found %s' % p.desc())


def iso_to_ms(s):
    s = s.strip().replace(' ', 'T', 1)
    if s.endswith('Z') or s.endswith('z'):
        s = s[:-1] + '+00:00'
    if re.search(r'[+-]\d\d$', s):
        s += ':00'
    d = datetime.datetime.fromisoformat(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp() * 1000)


def parse_ts_expr(p):
    """AS OF / UP TO expression: an integer, a numeric string, or a
    timestamp literal (TIMESTAMP '...' or '...'::timestamp[tz])."""
    t = p.peek()
    if t is None:
        p.fail('Expected expression, found end of input')
    try:
        if t.kind == 'num':
            p.i += 1
            if not re.fullmatch(r'\d+', t.text):
                raise PgError('22P02', 'invalid input syntax for type '
                                       'mz_timestamp: "%s"' % t.text)
            return int(t.text)
        if p.is_kw(t, 'timestamp') or p.is_kw(t, 'timestamptz'):
            p.i += 1
            s = p.peek()
            if s is None or s.kind != 'str':
                p.fail('Expected string literal, found %s' % p.desc())
            p.i += 1
            return iso_to_ms(s.val)
        if t.kind == 'str':
            p.i += 1
            if p.accept_op('::'):
                ty = p.ident()
                if ty in ('timestamp', 'timestamptz'):
                    while p.accept('with') or p.accept('without') or \
                            p.accept('time') or p.accept('zone'):
                        pass
                    return iso_to_ms(t.val)
            if re.fullmatch(r'\s*\d+\s*', t.val):
                return int(t.val)
            return iso_to_ms(t.val)
    except ValueError:
        raise PgError('22007', 'invalid input syntax for type timestamp: '
                               '"%s"' % t.val)
    raise PgError('0A000', 'mzserver: unsupported AS OF/UP TO expression '
                           'starting at %s' % p.desc())


def parse_interval_seconds(s):
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(ms|milliseconds?|s|secs?|"
                     r"seconds?|m|mins?|minutes?|h|hours?)?\s*", s, re.I)
    if not m:
        raise PgError('22007', 'invalid input syntax for type interval: "%s"'
                      % s)
    n = float(m.group(1))
    u = (m.group(2) or 's').lower()
    if u.startswith('ms') or u.startswith('milli'):
        return n / 1000.0
    if u.startswith('h'):
        return n * 3600
    if u.startswith('m'):
        return n * 60
    return n


# -- query model ---------------------------------------------------------------

class Query:
    """SELECT <items> FROM <relation or subquery> [LIMIT n], or a constant
    SELECT.  proj maps the relation's values to the output values."""

    def __init__(self, rt, cols, items, limit):
        self.rt, self.cols, self.items, self.limit = rt, cols, items, limit
        if rt is not None and all(k == 'col' for k, _ in items) and \
                [i for _, i in items] == list(range(len(rt.columns))):
            self.proj = None
        elif rt is not None:
            idx = [(k, v) for k, v in items]

            def proj(vals, idx=idx):
                return tuple(vals[v] if k == 'col' else v for k, v in idx)
            self.proj = proj
        else:
            self.proj = None


def parse_select(p, server, top=True):
    """Subset of SELECT: constant lists, or * / column lists from one
    relation or subquery, with optional alias and LIMIT."""
    p.expect('select')
    if p.at('distinct'):
        raise PgError('0A000', 'mzserver: SELECT DISTINCT is not supported')
    star = False
    items = []                  # (kind, value, type_col, name)
    if p.accept_op('*'):
        star = True
    else:
        while True:
            items.append(parse_select_item(p))
            if not p.accept_op(','):
                break
    src = None
    if p.accept('from'):
        if p.accept_op('('):
            src = parse_select(p, server, top=False)
            p.expect_op(')')
        else:
            name = p.qualified_name()
            rt = server.relation(name[-1])
            if rt is None:
                raise PgError('42P01', "unknown catalog item '%s'"
                              % '.'.join(name))
            cols = list(rt.columns)
            src = Query(rt, cols, [('col', i) for i in range(len(cols))], None)
        if p.accept('as'):
            p.ident()
        elif p.peek() is not None and p.peek().kind == 'id' and \
                p.peek().val not in RESERVED_AFTER_FROM:
            p.ident()
    limit = None
    if p.accept('limit'):
        t = p.peek()
        if p.accept('all'):
            limit = None
        elif t is not None and t.kind == 'num' and t.text.isdigit():
            p.i += 1
            limit = int(t.text)
        else:
            p.fail('Expected LIMIT count, found %s' % p.desc())
    if not p.done() and not (not top and p.at_op(')')):
        raise PgError('0A000', 'mzserver: unsupported SELECT clause at %s'
                      % p.desc(), position=p.peek().pos + 1)
    if src is None:
        if star:
            raise PgError('42601', 'SELECT * with no tables specified is not '
                                   'valid')
        for kind, v, _, _ in items:
            if kind == 'col':
                raise PgError('42703', 'column "%s" does not exist' % v)
        return Query(None, [c for _, _, c, _ in items],
                     [(k, v) for k, v, _, _ in items], limit)
    if star:
        cols, out_items = src.cols, None
    else:
        cols, out_items = [], []
        for kind, v, col, name in items:
            if kind == 'col':
                idx = [j for j, c in enumerate(src.cols) if c.name == v]
                if not idx:
                    raise PgError('42703', 'column "%s" does not exist' % v)
                cols.append(src.cols[idx[0]].renamed(name))
                out_items.append(src.items[idx[0]])
            elif kind == 'const':
                cols.append(col)
                out_items.append(('const', v))
            else:
                raise PgError('0A000', 'mzserver: functions are only '
                                       'supported without FROM')
    q = Query(src.rt, cols, out_items if out_items is not None else
              src.items, limit)
    if src.limit is not None:
        q.limit = src.limit if limit is None else min(limit, src.limit)
    return q


def parse_select_item(p):
    t = p.peek()
    if t is None:
        p.fail('Expected expression, found end of input')
    name = '?column?'
    if t.kind == 'num':
        p.i += 1
        if re.fullmatch(r'\d+', t.text):
            n = int(t.text)
            kind, val, col = 'const', t.text, make_column(
                '?column?', 'int4' if n < 2 ** 31 else 'int8'
                if n < 2 ** 63 else 'numeric')
        else:
            kind, val, col = 'const', t.text, make_column('?column?', 'numeric')
    elif t.kind == 'str':
        p.i += 1
        kind, val, col = 'const', t.val, make_column('?column?', 'text')
    elif t.kind == 'op' and t.val == '-' and p.peek(1) is not None and \
            p.peek(1).kind == 'num':
        p.i += 2
        kind, val = 'const', '-' + p.peek(-1).text
        col = make_column('?column?', 'int4' if p.peek(-1).text.isdigit()
                          else 'numeric')
    elif p.is_kw(t, 'true') or p.is_kw(t, 'false'):
        p.i += 1
        kind, val, col = 'const', t.val[0], make_column('?column?', 'bool')
    elif p.is_kw(t, 'null'):
        p.i += 1
        kind, val, col = 'const', None, make_column('?column?', 'text')
    elif t.kind == 'id':
        parts = p.qualified_name()
        if p.accept_op('('):
            args = []
            while not p.accept_op(')'):
                a = p.peek()
                if a is None:
                    p.fail('Expected ), found end of input')
                if a.kind in ('str', 'num', 'id'):
                    args.append(a.val if a.kind != 'num' else a.text)
                p.i += 1
            name = parts[-1]
            kind, val = 'func', (parts[-1], args)
            col = make_column(name, 'int4' if parts[-1] == 'pg_backend_pid'
                              else 'text')
        elif parts[-1] in ('current_user', 'session_user', 'current_role',
                           'user', 'current_schema', 'current_catalog'):
            name = parts[-1]
            kind, val, col = 'func', (parts[-1], []), make_column(name, 'text')
        else:
            name = parts[-1]
            kind, val, col = 'col', parts[-1], None
    else:
        p.fail('Expected expression, found %s' % p.desc())
    if p.accept_op('::'):
        tn = p.ident()
        if kind == 'col':
            raise PgError('0A000', 'mzserver: casts of columns are not '
                                   'supported')
        col = make_column(name, tn)
    if p.accept('as'):
        name = p.ident()
    elif p.peek() is not None and p.peek().kind == 'id' and \
            p.peek().val not in RESERVED_AFTER_FROM and \
            p.peek().val != 'from':
        name = p.ident()
    if col is not None:
        col = col.renamed(name)
    return kind, val, col, name


def parse_subscribe(p, server):
    """SUBSCRIBE [TO] name | (SELECT ...) [WITH (opts)] [AS OF [AT LEAST] t]
    [UP TO t]"""
    p.expect('subscribe')
    p.accept('to')
    if p.accept_op('('):
        if not p.at('select'):
            p.fail('Expected SELECT, found %s' % p.desc())
        q = parse_select(p, server, top=False)
        p.expect_op(')')
        if q.rt is None:
            raise PgError('0A000', 'mzserver: SUBSCRIBE to a constant query '
                                   'is not supported')
    else:
        name = p.qualified_name()
        rt = server.relation(name[-1])
        if rt is None:
            raise PgError('42P01', "unknown catalog item '%s'" % '.'.join(name))
        q = Query(rt, list(rt.columns),
                  [('col', i) for i in range(len(rt.columns))], None)
    if q.limit is not None:
        raise PgError('0A000', 'mzserver: LIMIT inside SUBSCRIBE is not '
                               'supported')
    opts = SubOpts()
    if p.at('envelope') or p.at('within'):
        raise PgError('0A000', 'mzserver: ENVELOPE and WITHIN TIMESTAMP ORDER '
                               'BY are not implemented')
    if p.accept('with'):
        p.expect_op('(')
        while True:
            name = p.ident()
            if name not in ('progress', 'snapshot'):
                p.i -= 1
                p.fail('Expected one of PROGRESS or SNAPSHOT, found %s'
                       % p.desc())
            val = True
            if p.accept_op('='):
                val = parse_bool_word(p)
            elif not (p.at_op(',') or p.at_op(')')):
                val = parse_bool_word(p)
            setattr(opts, name, val)
            if p.accept_op(')'):
                break
            p.expect_op(',')
    if p.accept('as', 'of'):
        opts.at_least = p.accept('at', 'least')
        opts.as_of = parse_ts_expr(p)
    if p.accept('up', 'to'):
        opts.up_to = parse_ts_expr(p)
    if not p.done() and not p.at_op(')'):
        p.fail('Expected end of statement, found %s' % p.desc())
    return q, opts


# -- plans ---------------------------------------------------------------------

class Plan:
    kind = None
    tag = None
    rows_desc = None            # list of Column, or None (NoData)

    def __init__(self, sql, **kw):
        self.sql = sql
        self.__dict__.update(kw)


SESSION_VARS = {
    # canonical name: default (None = taken from the session/server)
    'application_name': '', 'client_encoding': 'UTF8',
    'DateStyle': 'ISO, MDY', 'integer_datetimes': 'on',
    'server_version': None, 'server_version_num': None,
    'standard_conforming_strings': 'on', 'TimeZone': 'UTC',
    'IntervalStyle': 'postgres', 'cluster': None, 'cluster_replica': '',
    'database': 'materialize', 'search_path': 'public', 'mz_version': None,
    'transaction_isolation': 'strict serializable',
    'extra_float_digits': '3', 'client_min_messages': 'notice',
    'statement_timeout': '10 s', 'idle_in_transaction_session_timeout':
    '2 min', 'emit_timestamp_notice': 'off', 'emit_trace_id_notice': 'off',
    'real_time_recency': 'off', 'max_query_result_size': '1GB',
    'welcome_message': 'on', 'is_superuser': 'off',
}
READ_ONLY_VARS = {'server_version', 'server_version_num', 'integer_datetimes',
                  'mz_version', 'is_superuser'}
NOTIFY_SET = ['application_name', 'client_encoding', 'DateStyle',
              'integer_datetimes', 'server_version',
              'standard_conforming_strings', 'TimeZone', 'IntervalStyle',
              'cluster', 'cluster_replica', 'database', 'search_path',
              'mz_version']
VAR_CANON = {k.lower(): k for k in SESSION_VARS}
VAR_CANON.update({'timezone': 'TimeZone', 'datestyle': 'DateStyle',
                  'intervalstyle': 'IntervalStyle',
                  'transaction isolation': 'transaction_isolation'})


def plan_statement(server, text, toks):
    p = Parser(toks)
    t0 = p.peek()
    kw = t0.val if (t0.kind == 'id' and not t0.quoted) else None
    if kw in ('begin', 'start'):
        p.i += 1
        if kw == 'start':
            p.expect('transaction')
        return Plan(text, kind='txn', action='begin', tag='BEGIN')
    if kw in ('commit', 'end'):
        return Plan(text, kind='txn', action='commit', tag='COMMIT')
    if kw in ('rollback', 'abort'):
        return Plan(text, kind='txn', action='rollback', tag='ROLLBACK')
    if kw == 'set':
        p.i += 1
        if p.accept('session', 'characteristics'):
            return Plan(text, kind='noop', tag='SET')
        p.accept('session') or p.accept('local')
        if p.accept('time', 'zone'):
            name = 'timezone'
        elif p.accept('transaction', 'isolation', 'level') or \
                p.accept('transaction_isolation'):
            name = 'transaction_isolation'
            vals = []
            while not p.done():
                vals.append(p.peek().val)
                p.i += 1
            return Plan(text, kind='set', name=name, value=' '.join(vals),
                        tag='SET')
        else:
            name = p.ident()
            while p.accept_op('.'):
                name += '.' + p.ident()
            if not (p.accept_op('=') or p.accept('to')):
                p.fail('Expected equals sign or TO, found %s' % p.desc())
        vals = []
        if p.accept('default'):
            value = None
        else:
            while not p.done():
                t = p.peek()
                if t.kind == 'op' and t.val == ',':
                    p.i += 1
                    continue
                sign = ''
                if t.kind == 'op' and t.val in '+-' and p.peek(1) is not None:
                    sign = t.val if t.val == '-' else ''
                    p.i += 1
                    t = p.peek()
                vals.append(sign + (t.val if t.kind != 'num' else t.text))
                p.i += 1
            if not vals:
                p.fail('Expected variable value, found end of input')
            value = ', '.join(vals)
        return Plan(text, kind='set', name=name, value=value, tag='SET')
    if kw == 'reset':
        p.i += 1
        name = 'all' if p.accept('all') else p.ident()
        return Plan(text, kind='set', name=name, value=None, tag='RESET')
    if kw == 'show':
        p.i += 1
        if p.accept('transaction', 'isolation', 'level'):
            name = 'transaction_isolation'
        elif p.accept('time', 'zone'):
            name = 'timezone'
        else:
            name = p.ident()
        canon = VAR_CANON.get(name.lower())
        if canon is None:
            raise PgError('42704', 'unrecognized configuration parameter "%s"'
                          % name)
        return Plan(text, kind='show', name=canon, tag='SHOW',
                    rows_desc=[make_column(name.lower(), 'text')])
    if kw == 'select':
        q = parse_select(p, server)
        return Plan(text, kind='select', query=q, rows_desc=q.cols)
    if kw == 'subscribe':
        q, opts = parse_subscribe(p, server)
        return Plan(text, kind='subscribe', query=q, opts=opts,
                    rows_desc=subscribe_columns(q.cols, opts.progress))
    if kw == 'tail':
        raise PgError('42601', 'Expected a keyword at the beginning of a '
                               'statement, found identifier "tail"',
                      hint='TAIL was renamed SUBSCRIBE')
    if kw == 'copy':
        p.i += 1
        if not p.accept_op('('):
            raise PgError('0A000', 'mzserver: only COPY (query) TO STDOUT is '
                                   'supported')
        start = p.i
        p.balanced()
        inner_toks = toks[start:p.i - 1]
        inner_text = text[inner_toks[0].pos - toks[0].pos:
                          toks[p.i - 1].pos - toks[0].pos] if inner_toks \
            else ''
        p.expect('to')
        if not p.accept('stdout'):
            raise PgError('0A000', 'mzserver: only COPY ... TO STDOUT is '
                                   'supported')
        fmt = 'text'
        if p.accept('with') or p.at_op('('):
            p.expect_op('(')
            while not p.accept_op(')'):
                o = p.ident()
                if o == 'format':
                    t = p.peek()
                    if t is not None and t.kind == 'str':
                        p.i += 1
                        fmt = t.val.lower()
                    else:
                        fmt = p.ident()
                else:
                    raise PgError('0A000', 'mzserver: COPY option %s is not '
                                           'supported' % o.upper())
                p.accept_op(',')
        if fmt != 'text':
            raise PgError('0A000', 'mzserver: COPY format %s is not supported'
                                   ' (text only)' % fmt)
        if not p.done():
            p.fail('Expected end of statement, found %s' % p.desc())
        inner = plan_statement(server, inner_text, inner_toks)
        if inner.kind not in ('subscribe', 'select'):
            raise PgError('0A000', 'COPY (%s) TO is not supported'
                          % inner.kind.upper())
        return Plan(text, kind='copy', inner=inner, tag='COPY')
    if kw == 'declare':
        p.i += 1
        name = p.ident()
        if p.accept('binary'):
            raise PgError('0A000', 'mzserver: BINARY cursors are not '
                                   'supported')
        p.accept('no', 'scroll') or p.accept('scroll')
        p.expect('cursor')
        p.accept('without', 'hold')
        if p.at('with', 'hold'):
            raise PgError('0A000', 'WITH HOLD cursors are not supported')
        p.expect('for')
        start = p.i
        inner = plan_statement(server, text[toks[start].pos - toks[0].pos:]
                               if start < len(toks) else '', toks[start:])
        if inner.kind not in ('subscribe', 'select'):
            raise PgError('42601', 'Expected SELECT, VALUES, or SUBSCRIBE, '
                                   'found %s' % inner.kind.upper())
        return Plan(text, kind='declare', name=name, inner=inner,
                    tag='DECLARE CURSOR')
    if kw == 'fetch':
        p.i += 1
        p.accept('forward')
        count = 1
        t = p.peek()
        if p.accept('all'):
            count = None
        elif p.accept('next'):
            count = 1
        elif t is not None and t.kind == 'num':
            if not t.text.isdigit():
                p.fail('Expected a non-negative integer, found %s' % p.desc())
            count = int(t.text)
            p.i += 1
        p.accept('from') or p.accept('in')
        name = p.ident()
        timeout = None
        if p.accept('with'):
            p.expect_op('(')
            while not p.accept_op(')'):
                o = p.ident()
                if o != 'timeout':
                    p.i -= 1
                    p.fail('Expected TIMEOUT, found %s' % p.desc())
                p.accept_op('=')
                v = p.peek()
                if v is None:
                    p.fail('Expected value, found end of input')
                p.i += 1
                timeout = parse_interval_seconds(v.val if v.kind != 'num'
                                                 else v.text)
                p.accept_op(',')
        if not p.done():
            p.fail('Expected end of statement, found %s' % p.desc())
        return Plan(text, kind='fetch', name=name, count=count,
                    timeout=timeout)
    if kw == 'close':
        p.i += 1
        name = None if p.accept('all') else p.ident()
        return Plan(text, kind='close', name=name,
                    tag='CLOSE CURSOR ALL' if name is None else 'CLOSE CURSOR')
    if kw == 'discard':
        return Plan(text, kind='discard', tag='DISCARD ALL')
    if kw == 'deallocate':
        p.i += 1
        p.accept('prepare')
        name = None if p.accept('all') else p.ident()
        return Plan(text, kind='deallocate', name=name,
                    tag='DEALLOCATE ALL' if name is None else 'DEALLOCATE')
    if kw in ('create', 'drop', 'alter', 'insert', 'update', 'delete',
              'grant', 'revoke', 'explain', 'prepare', 'execute', 'values',
              'with', 'table', 'listen', 'notify', 'vacuum', 'analyze',
              'comment', 'truncate', 'lock'):
        raise PgError('0A000', 'mzserver: %s is not supported by the test '
                               'server' % kw.upper())
    raise PgError('42601', 'Expected a keyword at the beginning of a '
                           'statement, found %s' % p.desc(), position=1)


# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------

class Dropped(Exception):
    """The connection is gone (closed by us or by the peer)."""


class Cursor:
    def __init__(self, name, plan):
        self.name, self.plan = name, plan
        self.feed = None
        self.rows = None
        self.pos = 0


class Portal:
    def __init__(self, name, plan):
        self.name, self.plan = name, plan
        self.feed = None
        self.rows = None
        self.pos = 0


def parse_startup_options(value):
    """[WIRE-2] Materialize's split_options + parse_option: split on
    unescaped spaces; accept --key=value, -c key=value, -ckey=value."""
    strs, cur, was_slash = [], [], False
    for c in value:
        if c == ' ':
            if was_slash:
                cur.append(' ')
            elif cur:
                strs.append(''.join(cur))
                cur = []
            was_slash = False
        elif c == '\\':
            if was_slash:
                cur.append('\\')
                was_slash = False
            else:
                was_slash = True
        else:
            cur.append(c)
            was_slash = False
    if cur:
        strs.append(''.join(cur))
    pairs, seen_c = [], False
    for o in strs:
        if seen_c:
            if '=' not in o:
                return None
            k, v = o.split('=', 1)
            pairs.append((k, v))
            seen_c = False
        elif o == '-c':
            seen_c = True
        else:
            if '=' not in o:
                return None
            k, v = o.split('=', 1)
            if k.startswith('-c'):
                k = k[2:]
            elif k.startswith('--'):
                k = k[2:].replace('-', '_')
            else:
                return None
            pairs.append((k, v))
    return pairs


class Session:
    """One client connection after startup."""

    def __init__(self, server, reader, writer, conn_id, peer):
        self.srv, self.r, self.w = server, reader, writer
        self.id = conn_id
        self.secret = random.getrandbits(31)
        self.peer = peer
        self.user = ''
        self.vars = {}
        self.txn = 'I'
        self.cursors = {}
        self.prepared = {}
        self.portals = {}
        self.inbox = asyncio.Queue()
        self.interruptible = None
        self.interrupt = None
        self.skip_to_sync = False
        self.state = 'startup'
        self.last_sql = None
        self.subs = []
        self.opened = time.time()
        self.dropped = False

    # -- plumbing -----------------------------------------------------------
    def send(self, data):
        if not self.dropped:
            self.w.write(data)

    async def drain(self):
        try:
            await self.w.drain()
        except (ConnectionError, OSError):
            raise Dropped()

    def ready(self):
        self.send(m_ready(self.txn))

    def as_json(self):
        return {'id': self.id, 'peer': self.peer, 'user': self.user,
                'database': self.vars.get('database'),
                'cluster': self.vars.get('cluster'),
                'application_name': self.vars.get('application_name'),
                'state': self.state, 'txn': self.txn,
                'last_sql': self.last_sql,
                'cursors': sorted(self.cursors),
                'subs': [s.id for s in self.subs],
                'opened': self.opened}

    def interrupt_now(self, reason):
        """Interrupt a running statement (cancel, drop, injected error)."""
        t = self.interruptible
        if t is not None and not t.done():
            self.interrupt = reason
            t.cancel()
            return True
        return False

    def hard_drop(self, rst=False):
        if self.dropped:
            return
        self.dropped = True
        tr = self.w.transport
        if rst:
            try:
                sock = tr.get_extra_info('socket')
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack('ii', 1, 0))
            except OSError:
                pass
            tr.abort()
        else:
            tr.close()

    async def run_interruptible(self, coro):
        task = asyncio.ensure_future(coro)
        self.interruptible, self.interrupt = task, None
        try:
            return await task
        except asyncio.CancelledError:
            if self.interrupt is None or not task.cancelled():
                raise
            return ('interrupted', self.interrupt)
        finally:
            self.interruptible = None

    def interrupted_item(self, reason):
        if reason == 'cancel':
            return ErrorItem('57014', 'canceling statement due to user request')
        if reason == 'lost':
            raise Dropped()
        if isinstance(reason, tuple) and reason[0] == 'drop':
            return Drop(reason[1])
        if isinstance(reason, tuple) and reason[0] == 'error':
            return reason[1]
        return ErrorItem('XX000', 'interrupted: %r' % (reason,))

    # -- startup ------------------------------------------------------------
    async def startup(self, params, minor):
        args = self.srv.args
        unrecognized = [k for k in params if k.startswith('_pq_.')]
        if minor > 0 or unrecognized:
            body = struct.pack('!ii', 0, len(unrecognized)) + \
                b''.join(cstr(k) for k in unrecognized)
            self.send(msg(b'v', body))
        self.user = params.get('user', '')
        if not self.user:
            self.send(m_error('FATAL', '28000', 'no PostgreSQL user name '
                                                'specified in startup packet'))
            return False
        if args.password is not None:
            self.send(msg(b'R', _I.pack(3)))      # AuthenticationCleartext
            await self.drain()
            t, body = await read_message(self.r)
            if t != b'p':
                self.send(m_error('FATAL', '28000', 'expected Password message'))
                return False
            if body.rstrip(b'\0').decode('utf-8', 'replace') != args.password:
                self.send(m_error('FATAL', '28P01', 'invalid password'))
                return False
        v = {k: d for k, d in SESSION_VARS.items()}
        v['server_version'] = args.server_version
        v['server_version_num'] = '%d%02d%02d' % tuple(
            (list(map(int, re.findall(r'\d+', args.server_version))) +
             [0, 0, 0])[:3])
        v['mz_version'] = args.mz_version
        v['cluster'] = args.default_cluster
        self.vars = v
        notices = []
        settings = []
        for k, val in params.items():
            if k in ('user', 'replication') or k.startswith('_pq_.'):
                continue
            if k == 'options':
                pairs = parse_startup_options(val)
                if pairs is None:
                    notices.append('startup setting options not set: could '
                                   'not parse')
                    continue
                settings.extend(pairs)
            else:
                settings.append((k, val))
        for k, val in settings:
            canon = VAR_CANON.get(k.lower())
            if canon is None:
                notices.append('startup setting %s not set: unrecognized '
                               'configuration parameter "%s"' % (k, k))
            elif canon in READ_ONLY_VARS:
                notices.append('startup setting %s not set: parameter "%s" '
                               'cannot be changed' % (k, canon))
            elif canon == 'client_encoding':
                if val.upper().replace('-', '') not in ('UTF8', 'UNICODE'):
                    notices.append('startup setting client_encoding not set: '
                                   'invalid value for parameter '
                                   '"client_encoding": "%s"' % val)
            else:
                v[canon] = val
        out = [msg(b'R', _I.pack(0))]
        for name in NOTIFY_SET:
            out.append(m_param_status(name, v.get(name) or ''))
        out.append(msg(b'K', struct.pack('!II', self.id, self.secret)))
        for n in notices:
            out.append(m_error('NOTICE', '01000', n))
        out.append(m_ready('I'))
        self.send(b''.join(out))
        await self.drain()
        self.state = 'idle'
        self.srv.event('connect', conn=self.id, user=self.user,
                       database=v.get('database'), cluster=v.get('cluster'),
                       application_name=v.get('application_name'),
                       peer=self.peer)
        return True

    # -- main loop ------------------------------------------------------------
    async def read_loop(self):
        try:
            while True:
                m = await read_message(self.r)
                await self.inbox.put(m)
                if m[0] == b'X':
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError,
                ValueError):
            pass
        finally:
            self.interrupt_now('lost')
            await self.inbox.put(None)

    async def run(self):
        reader_task = asyncio.ensure_future(self.read_loop())
        try:
            while True:
                m = await self.inbox.get()
                if m is None or m[0] == b'X':
                    break
                t, body = m
                if self.skip_to_sync and t != b'S':
                    continue
                try:
                    await self.dispatch(t, body)
                    await self.drain()
                except Dropped:
                    break
        finally:
            reader_task.cancel()
            self.close_all_cursors()
            for po in self.portals.values():
                if po.feed:
                    po.feed.close()
            self.hard_drop()
            self.srv.event('disconnect', conn=self.id)

    async def dispatch(self, t, body):
        if t == b'Q':
            await self.simple_query(body.rstrip(b'\0').decode('utf-8',
                                                               'replace'))
        elif t == b'P':
            await self.ext_parse(body)
        elif t == b'B':
            self.ext_bind(body)
        elif t == b'D':
            self.ext_describe(body)
        elif t == b'E':
            await self.ext_execute(body)
        elif t == b'C':
            self.ext_close(body)
        elif t == b'S':
            self.skip_to_sync = False
            po = self.portals.pop('', None)     # ends with the implicit txn
            if po is not None and po.feed is not None:
                po.feed.close()
            self.state = 'idle'
            self.ready()
        elif t == b'H':
            pass
        elif t in (b'd', b'c', b'f'):
            pass                                  # no COPY FROM here
        else:
            self.send(m_error('FATAL', '08P01', 'invalid frontend message '
                                                'type %r' % t))
            self.hard_drop()
            raise Dropped()

    def fail(self, err, extended=False):
        """Report a statement error; explicit transactions become failed."""
        self.send(err.encode())
        if err.severity in ('FATAL', 'PANIC'):
            self.hard_drop()
            raise Dropped()
        if self.txn == 'T':
            self.txn = 'E'
        if extended:
            self.skip_to_sync = True

    # -- simple query -----------------------------------------------------------
    async def simple_query(self, sql):
        self.last_sql = sql
        self.srv.statement(self, sql)
        try:
            stmts = split_statements(sql)
        except PgError as e:
            self.fail(e)
            self.ready()
            return
        if not stmts:
            self.send(M_EMPTY_QUERY)
            self.ready()
            return
        for text, toks in stmts:
            if self.txn == 'E' and not Parser.is_kw(toks[0], 'commit') and \
                    not Parser.is_kw(toks[0], 'rollback') and \
                    not Parser.is_kw(toks[0], 'abort') and \
                    not Parser.is_kw(toks[0], 'end'):
                self.fail(PgError('25P02', 'current transaction is aborted, '
                                           'commands ignored until end of '
                                           'transaction block'))
                break
            try:
                plan = plan_statement(self.srv, text, toks)
                ok = await self.execute(plan, extended=False)
            except PgError as e:
                self.fail(e)
                break
            if not ok:
                break
        self.state = 'idle'
        self.ready()

    # -- statement execution (shared by simple and extended protocol) ---------
    async def execute(self, plan, extended, portal=None, max_rows=0):
        """Run one planned statement.  Returns False if it ended in an error
        (already reported).  Raises PgError for errors before any output."""
        k = plan.kind
        if k == 'txn':
            return self.exec_txn(plan)
        if k == 'set':
            return self.exec_set(plan)
        if k == 'show':
            if not extended:
                self.send(m_row_description(plan.rows_desc))
            self.send(m_data_row([self.vars.get(plan.name, '').encode()]))
            self.send(m_command_complete('SHOW'))
            return True
        if k == 'select':
            rows = self.select_rows(plan.query)
            return self.send_rows_result(plan, rows, extended, portal,
                                         max_rows, 'SELECT')
        if k == 'subscribe':
            return await self.exec_subscribe(plan, extended, portal, max_rows)
        if k == 'copy':
            return await self.exec_copy(plan)
        if k == 'declare':
            if self.txn == 'I':
                raise PgError('25P01', 'DECLARE CURSOR can only be used in '
                                       'transaction blocks')
            if plan.name in self.cursors:
                raise PgError('42P03', 'cursor "%s" already exists'
                              % plan.name)
            self.cursors[plan.name] = Cursor(plan.name, plan.inner)
            self.send(m_command_complete('DECLARE CURSOR'))
            return True
        if k == 'fetch':
            return await self.exec_fetch(plan, extended)
        if k == 'close':
            if plan.name is None:
                self.close_all_cursors()
            else:
                c = self.cursors.pop(plan.name, None)
                if c is None:
                    raise PgError('34000', 'cursor "%s" does not exist'
                                  % plan.name)
                if c.feed:
                    c.feed.close()
            self.send(m_command_complete(plan.tag))
            return True
        if k == 'discard':
            self.close_all_cursors()
            self.prepared.clear()
            self.send(m_command_complete('DISCARD ALL'))
            return True
        if k == 'deallocate':
            if plan.name is None:
                self.prepared.clear()
            elif self.prepared.pop(plan.name, None) is None:
                raise PgError('26000', 'prepared statement "%s" does not '
                                       'exist' % plan.name)
            self.send(m_command_complete(plan.tag))
            return True
        if k == 'noop':
            self.send(m_command_complete(plan.tag))
            return True
        raise PgError('XX000', 'mzserver: cannot execute %s' % k)

    def exec_txn(self, plan):
        a = plan.action
        if a == 'begin':
            if self.txn != 'I':
                self.send(m_error('WARNING', '25001', 'there is already a '
                                                      'transaction in progress'))
            else:
                self.txn = 'T'
            self.send(m_command_complete('BEGIN'))
            return True
        failed = self.txn == 'E'
        if self.txn == 'I':
            self.send(m_error('WARNING', '25P01', 'there is no transaction in '
                                                  'progress'))
        self.txn = 'I'
        self.close_all_cursors()
        self.send(m_command_complete('ROLLBACK' if failed or a == 'rollback'
                                     else 'COMMIT'))
        return True

    def close_all_cursors(self):
        for c in self.cursors.values():
            if c.feed:
                c.feed.close()
        self.cursors.clear()

    def exec_set(self, plan):
        name = plan.name
        if name == 'all' and plan.tag == 'RESET':
            self.send(m_command_complete('RESET'))
            return True
        canon = VAR_CANON.get(name.lower())
        if canon is None:
            raise PgError('42704', 'unrecognized configuration parameter "%s"'
                          % name)
        if canon in READ_ONLY_VARS:
            raise PgError('55P02', 'parameter "%s" cannot be changed' % canon)
        val = plan.value
        if val is None:
            val = {'cluster': self.srv.args.default_cluster}.get(
                canon, SESSION_VARS.get(canon) or '')
        if canon == 'client_encoding' and \
                val.upper().replace('-', '') not in ('UTF8', 'UNICODE'):
            raise PgError('22023', 'invalid value for parameter '
                                   '"client_encoding": "%s"' % val)
        if canon == 'TimeZone' and val.upper() not in ('UTC', 'GMT',
                                                       '+00:00', 'Z', '0'):
            raise PgError('22023', 'invalid value for parameter "TimeZone": '
                                   '"%s"' % val)
        if canon == 'client_encoding':
            val = 'UTF8'
        self.vars[canon] = val
        if canon in NOTIFY_SET:
            self.send(m_param_status(canon, val))
        self.srv.event('set', conn=self.id, name=canon, value=val)
        self.send(m_command_complete(plan.tag))
        return True

    def check_cluster(self):
        allowed = self.srv.args.clusters
        c = self.vars.get('cluster')
        if allowed and c not in allowed:
            raise PgError('42704', "unknown cluster '%s'" % c)

    def eval_func(self, fname, args):
        if fname == 'version':
            return 'PostgreSQL %s on x86_64-unknown-linux-gnu, compiled by ' \
                   'mzserver, Materialize %s' % (self.vars['server_version'],
                                                 self.vars['mz_version'])
        if fname == 'mz_version':
            return self.vars['mz_version']
        if fname == 'mz_environment_id':
            # Materialize: "a string containing a uuid uniquely identifying
            # the Materialize environment" (functions reference), e.g.
            # local-az1-<uuid>-0; one per server process unless given.
            return self.srv.args.environment_id
        if fname in ('current_database', 'current_catalog'):
            return self.vars.get('database')
        if fname in ('current_user', 'session_user', 'current_role', 'user'):
            return self.user
        if fname == 'current_schema':
            return self.vars.get('search_path', 'public').split(',')[0].strip()
        if fname == 'pg_backend_pid':
            return str(self.id)
        if fname == 'current_setting':
            canon = VAR_CANON.get((args[0] if args else '').lower())
            if canon is None:
                raise PgError('42704', 'unrecognized configuration parameter '
                                       '"%s"' % (args[0] if args else ''))
            return self.vars.get(canon, '')
        raise PgError('42883', 'function %s() does not exist' % fname)

    def select_rows(self, q):
        """Rows (lists of text|None) of a SELECT, the state at "now"."""
        if q.rt is None:
            row = [self.eval_func(*v) if k == 'func' else v
                   for k, v in q.items]
            rows = [row]
        else:
            self.check_cluster()
            rt = q.rt
            a = max(rt.upper - 1, rt.since)
            rows = []
            for vals, n in rt.state_at(a, q.proj):
                for _ in range(max(n, 0)):
                    rows.append(list(vals))
                    if q.limit is not None and len(rows) >= q.limit:
                        break
        if q.limit is not None:
            rows = rows[:q.limit]
        return rows

    def send_rows_result(self, plan, rows, extended, portal, max_rows, verb):
        if not extended:
            self.send(m_row_description(plan.rows_desc))
        start = portal.pos if portal else 0
        end = len(rows) if not max_rows else min(len(rows), start + max_rows)
        out = [m_data_row([None if v is None else v.encode() for v in r])
               for r in rows[start:end]]
        self.send(b''.join(out))
        if portal is not None:
            portal.pos = end
            if max_rows and end < len(rows):
                self.send(M_PORTAL_SUSPENDED)
                return True
        self.send(m_command_complete('%s %d' % (verb, end - start)))
        return True

    # -- subscriptions ------------------------------------------------------------
    def start_subscription(self, plan, mode):
        """Resolve the as-of and start the producer.  Raises PgError."""
        self.check_cluster()
        q, opts = plan.query, plan.opts
        rt = q.rt
        a = rt.resolve_as_of(opts)
        sub = Sub(self.srv.next_sub_id(), self, rt.name, plan.sql, opts, a,
                  mode)
        self.subs.append(sub)
        self.srv.subs.append(sub)
        self.srv.event('subscribe', conn=self.id, sub=sub.id,
                       relation=rt.name, sql=plan.sql, as_of=a,
                       requested_as_of=opts.as_of, at_least=opts.at_least,
                       snapshot=opts.snapshot, progress=opts.progress,
                       up_to=opts.up_to, mode=mode,
                       cluster=self.vars.get('cluster'))
        pace = self.srv.pacer(rt)
        agen = rt.stream(sub, q.proj, 'copy' if mode == 'copy' else 'rows',
                         pace)
        return Feed(self.srv, agen, sub)

    async def _stream_loop(self, feed, enc, sub, copy, progress):
        """Write batches until a terminal item; returns it.  Like
        Materialize, the messages of one batch are written (flushed)
        together: one CopyData/DataRow message per row."""
        w = self.w
        while True:
            batch = await feed.next_batch()
            n = sub.rows_sent
            out = []
            for item in batch:
                if type(item) is tuple:
                    out.append(enc(item))
                    n += 1
                elif type(item) is Chunk:
                    out.append(item.data)
                    n += item.nrows
                elif type(item) is Async:
                    out.append(item.data)   # [WIRE-5] between CopyData
                elif type(item) is Malformed:
                    out.extend(malformed_copy(item, enc, progress) if copy
                               else malformed_datarow(item, progress))
                    n += 1
                else:
                    w.write(b''.join(out))
                    sub.rows_sent = n
                    return item
            w.write(b''.join(out))
            sub.rows_sent = n
            await self.drain()

    async def finish_stream(self, res, feed, sub, copy_tag):
        """Send the end of a streaming statement.  Returns True on success."""
        feed.close()                    # stop the producer in every case
        if isinstance(res, tuple) and res and res[0] == 'interrupted':
            res = self.interrupted_item(res[1])
        self.srv.event('subscribe-end', conn=self.id, sub=sub.id,
                       rows=sub.rows_sent, how=type(res).__name__)
        if isinstance(res, End):
            if copy_tag:
                self.send(M_COPY_DONE)
            self.send(m_command_complete('%s %d' % (copy_tag or 'SELECT',
                                                    sub.rows_sent)))
            return True
        if isinstance(res, Drop):
            try:
                await asyncio.wait_for(self.w.drain(), 5)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
            self.hard_drop(res.rst)
            raise Dropped()
        if isinstance(res, ErrorItem):
            return self._fail_item(res)
        raise PgError('XX000', 'mzserver: unexpected stream item %r' % res)

    def _fail_item(self, item):
        self.fail(item.err)
        return False

    async def exec_copy(self, plan):
        inner = plan.inner
        if inner.kind == 'select':
            rows = self.select_rows(inner.query)
            ncols = len(inner.rows_desc)
            esc = ESCAPES[self.srv.args.copy_escapes]
            self.send(m_copy_out(ncols))
            for r in rows:
                line = ('\t'.join('\\N' if v is None else v.translate(esc)
                                  for v in r) + '\n').encode()
                self.send(msg(b'd', line))
            self.send(M_COPY_DONE)
            self.send(m_command_complete('COPY %d' % len(rows)))
            return True
        try:
            feed = self.start_subscription(inner, 'copy')
        except PgError:
            # --asof-error-late: the refusal reaches the client as an error
            # of the running COPY ([SUB-6]), after CopyOutResponse and
            # before any row, as an as-of invalidated while the dataflow is
            # being set up would.
            if self.srv.args.asof_error_late:
                self.send(m_copy_out(len(inner.rows_desc)))
            raise
        sub = feed.sub
        ncols = len(inner.query.cols)
        self.send(m_copy_out(len(inner.rows_desc)))
        enc = make_copy_encoder(ncols, sub.progress,
                                ESCAPES[self.srv.args.copy_escapes])
        self.state = 'copy-streaming'
        res = await self.run_interruptible(
            self._stream_loop(feed, enc, sub, True, sub.progress))
        return await self.finish_stream(res, feed, sub, 'COPY')

    def subscribe_notice(self):
        hint = None
        if self.vars.get('application_name') == 'psql':
            hint = 'Wrap your SUBSCRIBE statement in `COPY (SUBSCRIBE ...) ' \
                   'TO STDOUT`.'
        return m_error('NOTICE', '01000', 'streaming SUBSCRIBE rows directly '
                                          'requires a client that does not '
                                          'buffer output', hint=hint)

    async def exec_subscribe(self, plan, extended, portal, max_rows):
        """[WIRE-4] SUBSCRIBE as a plain statement: DataRows."""
        if not extended:
            self.send(m_row_description(plan.rows_desc))
        if portal is not None and portal.feed is not None:
            feed = portal.feed
        else:
            feed = self.start_subscription(plan, 'extended' if extended
                                           else 'simple')
            if portal is not None:
                portal.feed = feed
            self.send(self.subscribe_notice())
        sub = feed.sub
        enc = make_datarow_encoder(len(plan.query.cols), sub.progress)
        self.state = 'streaming'
        if max_rows:
            res = await self.run_interruptible(
                self._fetch_rows(feed, max_rows, float('inf')))
            if isinstance(res, tuple) and res and res[0] == 'interrupted':
                return await self.finish_stream(res, feed, sub, None)
            rows, term = res
            self.send(b''.join(self._encode_rows(rows, enc, sub.progress)))
            sub.rows_sent += len(rows)
            if term is None:
                self.send(M_PORTAL_SUSPENDED)
                return True
            if portal is not None:
                portal.feed = None
            return await self.finish_stream(term, feed, sub, None)
        res = await self.run_interruptible(
            self._stream_loop(feed, enc, sub, False, sub.progress))
        if portal is not None:
            portal.feed = None
        return await self.finish_stream(res, feed, sub, None)

    def _encode_rows(self, rows, enc, progress):
        out = []
        for item in rows:
            if type(item) is tuple:
                out.append(enc(item))
            elif type(item) is Async:
                out.append(item.data)
            else:
                out.extend(malformed_datarow(item, progress))
        return out

    async def _fetch_rows(self, feed, count, timeout):
        """[WIRE-4] FETCH semantics.  count None = ALL.  timeout None = wait
        for the first rows, then take what is ready; a number = keep
        collecting until the deadline or count.  Returns (rows, terminal)."""
        rows = []
        want = float('inf') if count is None else count
        if feed.finished is not None:
            return rows, feed.finished if not isinstance(feed.finished, End) \
                else End()
        deadline = None if timeout is None else time.monotonic() + timeout
        wait_once = timeout is None
        while len(rows) < want:
            if wait_once and rows:
                b = await feed.next_batch(0)
            elif deadline is None:
                b = await feed.next_batch()
            else:
                rem = deadline - time.monotonic()
                b = await feed.next_batch(rem if rem > 0 else 0)
            if b is None:
                break
            for j, item in enumerate(b):
                if isinstance(item, TERMINALS):
                    feed.finished = item
                    return rows, item
                if type(item) is Chunk:
                    raise PgError('XX000', 'mzserver: chunk in row mode')
                if type(item) is Async:
                    self.send(item.data)
                    continue
                rows.append(item)
                if len(rows) >= want:
                    feed.pushback(b[j + 1:])
                    break
        return rows, None

    async def exec_fetch(self, plan, extended):
        c = self.cursors.get(plan.name)
        if c is None:
            raise PgError('34000', 'cursor "%s" does not exist' % plan.name)
        inner = c.plan
        if not extended:
            self.send(m_row_description(inner.rows_desc))
        if inner.kind == 'select':
            if c.rows is None:
                c.rows = self.select_rows(inner.query)
            n = len(c.rows) - c.pos if plan.count is None else plan.count
            rows = c.rows[c.pos:c.pos + n]
            c.pos += len(rows)
            self.send(b''.join(m_data_row([None if v is None else v.encode()
                                           for v in r]) for r in rows))
            self.send(m_command_complete('FETCH %d' % len(rows)))
            return True
        if c.feed is None:
            c.feed = self.start_subscription(inner, 'cursor')
        feed, sub = c.feed, c.feed.sub
        self.state = 'fetch'
        res = await self.run_interruptible(
            self._fetch_rows(feed, plan.count, plan.timeout))
        self.state = 'idle'
        if isinstance(res, tuple) and res and res[0] == 'interrupted':
            item = self.interrupted_item(res[1])
            rows, term = [], item
        else:
            rows, term = res
        enc = make_datarow_encoder(len(inner.query.cols), sub.progress)
        self.send(b''.join(self._encode_rows(rows, enc, sub.progress)))
        sub.rows_sent += len(rows)
        if term is None or isinstance(term, End):
            self.send(m_command_complete('FETCH %d' % len(rows)))
            return True
        c.feed = None
        return await self.finish_stream(term, feed, sub, None)

    # -- extended protocol ------------------------------------------------------
    @staticmethod
    def _cstrings(body, n):
        out, pos = [], 0
        for _ in range(n):
            end = body.index(b'\0', pos)
            out.append(body[pos:end].decode('utf-8', 'replace'))
            pos = end + 1
        return out, pos

    async def ext_parse(self, body):
        try:
            (name, sql), pos = self._cstrings(body, 2)
            nparams = _h.unpack_from(body, pos)[0]
            self.last_sql = sql
            self.srv.statement(self, sql)
            stmts = split_statements(sql)
            if len(stmts) > 1:
                raise PgError('XX000', 'cannot insert multiple commands into '
                                       'a prepared statement')
            if any(t.kind == 'param' for _, ts in stmts for t in ts):
                raise PgError('0A000', 'mzserver: statement parameters are '
                                       'not supported')
            del nparams
            if not stmts:
                plan = Plan(sql, kind='empty')
            else:
                plan = plan_statement(self.srv, *stmts[0])
            if name and name in self.prepared:
                raise PgError('42P05', 'prepared statement "%s" already '
                                       'exists' % name)
            self.prepared[name] = plan
            self.send(M_PARSE_COMPLETE)
        except PgError as e:
            self.fail(e, extended=True)

    def ext_bind(self, body):
        try:
            (pname, sname), pos = self._cstrings(body, 2)
            nfmt = _h.unpack_from(body, pos)[0]
            pos += 2 + 2 * nfmt
            nparams = _h.unpack_from(body, pos)[0]
            pos += 2
            for _ in range(nparams):
                ln = _i.unpack_from(body, pos)[0]
                pos += 4 + max(ln, 0)
            nres = _h.unpack_from(body, pos)[0]
            rfmts = struct.unpack_from('!%dh' % nres, body, pos + 2)
            plan = self.prepared.get(sname)
            if plan is None:
                raise PgError('26000', 'prepared statement "%s" does not '
                                       'exist' % sname)
            if nparams:
                raise PgError('08P01', 'bind message supplies %d parameters, '
                                       'but prepared statement "%s" requires '
                                       '0' % (nparams, sname))
            if any(rfmts):
                raise PgError('0A000', 'mzserver: binary result format is not '
                                       'supported (use text)')
            old = self.portals.pop(pname, None)
            if old and old.feed:
                old.feed.close()
            self.portals[pname] = Portal(pname, plan)
            self.send(M_BIND_COMPLETE)
        except PgError as e:
            self.fail(e, extended=True)
        except (struct.error, ValueError):
            self.fail(PgError('08P01', 'invalid Bind message'), extended=True)

    def _describe_plan(self, plan):
        if plan.kind == 'fetch':
            c = self.cursors.get(plan.name)
            if c is None:
                raise PgError('34000', 'cursor "%s" does not exist'
                              % plan.name)
            return m_row_description(c.plan.rows_desc)
        if plan.rows_desc is not None:
            return m_row_description(plan.rows_desc)
        return M_NO_DATA

    def ext_describe(self, body):
        try:
            kind = body[:1]
            name = body[1:].rstrip(b'\0').decode('utf-8', 'replace')
            if kind == b'S':
                plan = self.prepared.get(name)
                if plan is None:
                    raise PgError('26000', 'prepared statement "%s" does not '
                                           'exist' % name)
                self.send(msg(b't', _h.pack(0)))   # ParameterDescription
                self.send(self._describe_plan(plan))
            else:
                po = self.portals.get(name)
                if po is None:
                    raise PgError('34000', 'portal "%s" does not exist' % name)
                self.send(self._describe_plan(po.plan))
        except PgError as e:
            self.fail(e, extended=True)

    async def ext_execute(self, body):
        try:
            (pname,), pos = self._cstrings(body, 1)
            max_rows = _i.unpack_from(body, pos)[0]
            po = self.portals.get(pname)
            if po is None:
                raise PgError('34000', 'portal "%s" does not exist' % pname)
            if po.plan.kind == 'empty':
                self.send(M_EMPTY_QUERY)
                return
            if self.txn == 'E' and po.plan.kind != 'txn':
                raise PgError('25P02', 'current transaction is aborted, '
                                       'commands ignored until end of '
                                       'transaction block')
            ok = await self.execute(po.plan, extended=True, portal=po,
                                    max_rows=max(max_rows, 0))
            if not ok:
                self.skip_to_sync = True
        except PgError as e:
            self.fail(e, extended=True)

    def ext_close(self, body):
        kind = body[:1]
        name = body[1:].rstrip(b'\0').decode('utf-8', 'replace')
        if kind == b'S':
            self.prepared.pop(name, None)
        else:
            po = self.portals.pop(name, None)
            if po and po.feed:
                po.feed.close()
        self.send(M_CLOSE_COMPLETE)


async def read_message(reader):
    hdr = await reader.readexactly(5)
    n = _I.unpack_from(hdr, 1)[0]
    if n < 4 or n > (1 << 30):
        raise ValueError('bad message length %d' % n)
    body = await reader.readexactly(n - 4) if n > 4 else b''
    return hdr[:1], body


# ---------------------------------------------------------------------------
# The server: listeners, shared state, control channel
# ---------------------------------------------------------------------------

SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102


class Server:
    def __init__(self, args):
        self.args = args
        self.clock0 = time.monotonic()  # --realtime: the timeline's origin
        self.runtimes = {}
        self.sessions = {}
        self.subs = []
        self.statements = collections.deque(maxlen=10000)
        self.conn_seq = 0
        self.sub_seq = 0
        self.sub_ev = asyncio.Event()
        self.holds = Holds(self, args.hold_dir)
        self.events_file = open(args.events, 'a', buffering=1) \
            if args.events else None
        for path in args.scenario or []:
            scn = Scenario(path)
            if scn.name in self.runtimes:
                raise ScenarioError('%s: relation %s defined twice'
                                    % (path, scn.name))
            self.runtimes[scn.name] = Runtime(self, scn)
        if args.generate is not None:
            g = Generator(self, args.generate)
            self.runtimes[g.name] = g

    # -- bookkeeping ------------------------------------------------------------
    def relation(self, name):
        return self.runtimes.get(name)

    def next_sub_id(self):
        self.sub_seq += 1
        self.sub_ev.set()
        self.sub_ev = asyncio.Event()
        return self.sub_seq

    def log(self, text):
        if self.args.verbose:
            sys.stderr.write('mzserver: %s\n' % text)
            sys.stderr.flush()

    def event(self, kind, **fields):
        rec = dict(t=round(time.time(), 6), event=kind, **fields)
        if self.events_file:
            self.events_file.write(json.dumps(rec) + '\n')
        self.log(json.dumps(rec))

    def statement(self, sess, sql):
        self.statements.append({'conn': sess.id, 'sql': sql,
                                't': round(time.time(), 6)})
        self.event('statement', conn=sess.id, sql=sql)

    def pacer(self, rt):
        """Returns pace(prev_time, next_time, kind) -> seconds to sleep, or
        None.  kind: 'ts' (a timestamp's updates start), 'progress' (right
        after updates) or 'progress-no-data'.

        --realtime: one timeline for every session, as in Materialize
        [SUB-7]: time t of relation rt is complete at server start +
        (t - rt's initial live edge) / speed, the same wall-clock moment for
        every subscription; a subscription whose AS OF is behind that
        clock gets everything up to it at once, then follows it.

        --tick-ms sleeps one tick per step of the timeline, per
        subscription: before each timestamp and before each progress row
        that closes no data (a step pace for tests that hold streams)."""
        a = self.args
        if a.realtime:
            speed = a.speed
            origin = getattr(rt, 'start', None)
            if not isinstance(origin, int):
                origin = getattr(getattr(rt, 'scn', None), 'start', None) or 0
            clock0 = self.clock0

            def pace(prev, nxt, kind):
                due = clock0 + (nxt - origin) / 1000.0 / speed
                return max(0.0, due - time.monotonic())
            return pace
        if a.tick_ms:
            tick = a.tick_ms / 1000.0

            def pace(prev, nxt, kind):
                return 0.0 if kind == 'progress' else tick
            return pace
        return None

    def status(self):
        return {'connections': [s.as_json() for s in self.sessions.values()],
                'subscriptions': [s.as_json() for s in self.subs[-200:]],
                'subscription_count': self.sub_seq,
                'relations': {n: {'since': r.since, 'upper': r.upper,
                                  'columns': [c.as_json() for c in r.columns]}
                              for n, r in self.runtimes.items()},
                'holds': self.holds.as_json()}

    # -- connections ------------------------------------------------------------
    async def handle(self, reader, writer):
        peer = writer.get_extra_info('peername')
        peer = '%s:%s' % peer[:2] if isinstance(peer, tuple) else 'unix'
        try:
            writer.transport.set_write_buffer_limits(high=1 << 20)
        except Exception:
            pass
        sess = None
        try:
            while True:
                n = _I.unpack(await reader.readexactly(4))[0]
                if n < 8 or n > 10000:
                    return
                body = await reader.readexactly(n - 4)
                code = _I.unpack_from(body)[0]
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    writer.write(b'N')            # [WIRE-2] no encryption
                    await writer.drain()
                    continue
                if code == CANCEL_REQUEST:
                    pid, secret = struct.unpack_from('!II', body, 4)
                    self.cancel(pid, secret)
                    return
                major, minor = code >> 16, code & 0xffff
                if major != 3:
                    writer.write(m_error('FATAL', '08004', 'server does not '
                                         'support the client\'s requested '
                                         'protocol version'))
                    await writer.drain()
                    return
                params = {}
                parts = body[4:].split(b'\0')
                for k, v in zip(parts[0::2], parts[1::2]):
                    if k:
                        params[k.decode('utf-8', 'replace')] = \
                            v.decode('utf-8', 'replace')
                break
            self.conn_seq += 1
            sess = Session(self, reader, writer, self.conn_seq, peer)
            if not await sess.startup(params, minor):
                await writer.drain()
                return
            self.sessions[sess.id] = sess
            await sess.run()
        except (asyncio.IncompleteReadError, ConnectionError, OSError,
                Dropped, ValueError):
            pass
        finally:
            if sess is not None:
                self.sessions.pop(sess.id, None)
                if not sess.dropped:
                    sess.hard_drop()
            else:
                try:
                    writer.close()
                except Exception:
                    pass

    def cancel(self, pid, secret):
        s = self.sessions.get(pid)
        ok = s is not None and s.secret == secret
        self.event('cancel-request', conn=pid, matched=ok)
        if ok:
            s.interrupt_now('cancel')

    # -- control channel ----------------------------------------------------------
    async def control_client(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    words = shlex.split(line.decode('utf-8', 'replace'))
                except ValueError as e:
                    resp = {'ok': False, 'error': str(e)}
                else:
                    if not words:
                        continue
                    try:
                        resp = await self.control(words)
                    except Exception as e:
                        resp = {'ok': False, 'error': repr(e)}
                writer.write((json.dumps(resp) + '\n').encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _rel(self, words):
        if len(words) >= 2 and words[0] in self.runtimes:
            return self.runtimes[words[0]], words[1:]
        if len(self.runtimes) == 1:
            return next(iter(self.runtimes.values())), words
        raise ValueError('name the relation: one of %s'
                         % ', '.join(self.runtimes))

    def _targets(self, word):
        if word in (None, 'all', '*'):
            return list(self.sessions.values())
        s = self.sessions.get(int(word))
        return [s] if s else []

    async def _wait(self, cond, timeout, ev_get):
        deadline = time.monotonic() + timeout
        while not cond():
            rem = deadline - time.monotonic()
            if rem <= 0:
                return False
            try:
                await asyncio.wait_for(ev_get().wait(), min(rem, 0.05))
            except asyncio.TimeoutError:
                pass
        return True

    async def control(self, w):
        cmd, a = w[0].lower(), w[1:]
        if cmd == 'ping':
            return {'ok': True}
        if cmd == 'status':
            return dict(ok=True, **self.status())
        if cmd == 'statements':
            return {'ok': True, 'statements': list(self.statements)}
        if cmd == 'release':
            for name in a or ['*']:
                self.holds.release(name)
            return {'ok': True, 'holds': self.holds.as_json()}
        if cmd == 'wait-hold':
            name = a[0]
            timeout = float(a[1]) if len(a) > 1 else 30.0
            ok = await self._wait(lambda: self.holds.reached[name] > 0,
                                  timeout, lambda: self.holds.reach_event(name))
            return {'ok': ok, 'hold': name,
                    'waiting': sorted(self.holds.waiting.get(name, ()))}
        if cmd == 'wait-subs':
            n = int(a[0])
            timeout = float(a[1]) if len(a) > 1 else 30.0
            ok = await self._wait(lambda: self.sub_seq >= n, timeout,
                                  lambda: self.sub_ev)
            return {'ok': ok, 'subscription_count': self.sub_seq}
        if cmd == 'wait-upper':
            rt, rest = self._rel(a)
            t = int(rest[0])
            timeout = float(rest[1]) if len(rest) > 1 else 30.0
            dummy = asyncio.Event()
            ok = await self._wait(lambda: rt.upper >= t, timeout,
                                  lambda: dummy)
            return {'ok': ok, 'upper': rt.upper}
        if cmd == 'since':
            rt, rest = self._rel(a)
            rt.advance_since(int(rest[0]))
            return {'ok': True, 'since': rt.since}
        if cmd == 'drop':
            rst = 'rst' in a
            who = [x for x in a if x != 'rst']
            n = 0
            for s in self._targets(who[0] if who else None):
                if not s.interrupt_now(('drop', rst)):
                    s.hard_drop(rst)
                n += 1
            return {'ok': True, 'dropped': n}
        if cmd == 'error':
            who = a[0] if a and (a[0].isdigit() or a[0] == 'all') else None
            rest = a[1:] if who else a
            code = rest[0] if rest else 'XX000'
            text = ' '.join(rest[1:]) or 'injected error'
            sev = 'FATAL' if code == '57P01' else 'ERROR'
            n = 0
            for s in self._targets(who):
                if s.interrupt_now(('error', ErrorItem(code, text, sev))):
                    n += 1
            return {'ok': True, 'interrupted': n}
        if cmd == 'cancel':
            n = sum(s.interrupt_now('cancel') for s in self._targets(
                a[0] if a else None))
            return {'ok': True, 'interrupted': n}
        return {'ok': False, 'error': 'unknown command %r' % cmd}


async def amain(args):
    try:
        srv = Server(args)
    except (ScenarioError, ValueError, OSError) as e:
        sys.stderr.write('mzserver: %s\n' % e)
        return 2
    if args.check:
        for rt in srv.runtimes.values():
            s = rt.scn.summary() if isinstance(rt, Runtime) else \
                {'relation': rt.name, 'generator': rt.p}
            print(json.dumps(s))
        return 0
    if not srv.runtimes:
        sys.stderr.write('mzserver: give --scenario FILE or --generate SPEC\n')
        return 2
    servers = []
    tcp = await asyncio.start_server(srv.handle, args.host, args.port,
                                     reuse_address=True)
    servers.append(tcp)
    port = tcp.sockets[0].getsockname()[1]
    if args.unix_socket_dir:
        path = os.path.join(args.unix_socket_dir, '.s.PGSQL.%d' % port)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        servers.append(await asyncio.start_unix_server(srv.handle, path))
    ctl_port = None
    if args.control_port is not None:
        ctl = await asyncio.start_server(srv.control_client, '127.0.0.1',
                                         args.control_port, reuse_address=True)
        servers.append(ctl)
        ctl_port = ctl.sockets[0].getsockname()[1]
    print('PORT=%d' % port, flush=True)
    if ctl_port is not None:
        print('CONTROL_PORT=%d' % ctl_port, flush=True)
    srv.event('listening', port=port, control_port=ctl_port,
              relations=sorted(srv.runtimes))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, srv.holds.release_waiting)
    await stop.wait()
    for s in servers:
        s.close()
    for s in list(srv.sessions.values()):
        s.hard_drop()
    return 0


def build_argparser():
    ap = argparse.ArgumentParser(
        prog='mzserver.py',
        description='A Materialize SUBSCRIBE test server speaking the '
                    'PostgreSQL wire protocol v3.  Prints PORT=<n> on the '
                    'first line of stdout once listening.',
        epilog='Scenario format and control protocol: see the module '
               'docstring and tests/mzserver/README.md.')
    ap.add_argument('--host', default='127.0.0.1',
                    help='TCP address to listen on (default 127.0.0.1)')
    ap.add_argument('--port', type=int, default=6875,
                    help='TCP port; 0 picks a free one (default 6875)')
    ap.add_argument('--unix-socket-dir', metavar='DIR',
                    help='also listen on DIR/.s.PGSQL.<port>')
    ap.add_argument('--scenario', action='append', metavar='FILE',
                    help='scenario file (repeatable, one relation each)')
    ap.add_argument('--generate', metavar='SPEC',
                    help='synthetic relation: rows=N,cols=C,rows_per_ts=K'
                         '[,snapshot=S][,name=bench][,end=hang|close|drop]')
    ap.add_argument('--password', help='require this cleartext password')
    ap.add_argument('--clusters', type=lambda s: [x for x in s.split(',') if x],
                    default=None, metavar='A,B',
                    help='valid cluster names; others fail with 42704')
    ap.add_argument('--default-cluster', default='quickstart',
                    help='cluster when none is set (default quickstart)')
    ap.add_argument('--tick-ms', type=float, default=0,
                    help='pause this long before each timestamp (0 = as fast '
                         'as possible)')
    ap.add_argument('--realtime', action='store_true',
                    help='pace by the timestamps themselves (ms)')
    ap.add_argument('--speed', type=float, default=1.0,
                    help='--realtime speed-up factor')
    ap.add_argument('--step', action='store_true',
                    help='hold after every progress row ("progress-<T>")')
    ap.add_argument('--hold-dir', metavar='DIR',
                    help='holds are released by creating DIR/<name>; '
                         'DIR/<name>.reached appears when one is reached')
    ap.add_argument('--control-port', type=int, metavar='N',
                    help='line-based control channel on 127.0.0.1:N '
                         '(0 = pick; prints CONTROL_PORT=<n>)')
    ap.add_argument('--events', metavar='FILE',
                    help='append JSON-lines events (statements, subscribes, '
                         'faults, holds) to FILE')
    ap.add_argument('--copy-escapes', choices=sorted(ESCAPES), default='mz',
                    help='COPY text escaping: mz (\\\\ \\n \\r \\t, as '
                         'Materialize), pg (+ \\b \\f \\v), exotic (+ octal '
                         'and hex escapes)')
    ap.add_argument('--asof-error', choices=['legacy', 'current'],
                    default='legacy',
                    help='wording of the AS OF-too-old error')
    ap.add_argument('--asof-error-late', action='store_true',
                    help='send a COPY (SUBSCRIBE) statement error (AS OF too '
                         'old) after CopyOutResponse instead of before it')
    ap.add_argument('--server-version', default='9.5.0')
    ap.add_argument('--mz-version', default='v0.130.0 (mzserver)')
    ap.add_argument('--environment-id',
                    default='local-az1-%s-0' % uuid.uuid4(),
                    help='what mz_environment_id() returns (default: a new '
                         'uuid per server process)')
    ap.add_argument('--check', action='store_true',
                    help='parse the scenarios, print a summary, exit')
    ap.add_argument('-v', '--verbose', action='store_true')
    return ap


def main(argv=None):
    args = build_argparser().parse_args(argv)
    if args.hold_dir:
        os.makedirs(args.hold_dir, exist_ok=True)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 0


if __name__ == '__main__':
    sys.exit(main())
