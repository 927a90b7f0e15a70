#!/usr/bin/env python3
"""Seeded SQL fuzzer for every SQL function of rate_limiter.

Lists the extension's functions from pg_proc via pg_depend, then makes
--calls random calls of each (NULLs, extremes, multibyte and huge text,
random jsonb, intervals, NaN/Infinity, now and then an argument of the
wrong type), each one inside a plpgsql EXCEPTION block (a savepoint) so an
error never stops the run.  The wrapper records every call's SQLSTATE in a
table; the run fails when any SQLSTATE is of class XX (internal error),
when the server restarted (pg_postmaster_start_time() changed), or when a
batch lost its connection.

  sql_fuzz.py [--seed N] [--calls N] [--jobs N] [psql connection options...]

Prints the seed, the calls per function and the SQLSTATE histogram; exits
non-zero on failure.  Runs as a superuser, so the administration functions
are exercised too.
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile

SETUP = r"""
DROP TABLE IF EXISTS rl_fuzz_log;
CREATE UNLOGGED TABLE rl_fuzz_log (fn text, state text, msg text, q text);
CREATE OR REPLACE FUNCTION rl_fuzz_call(fn text, q text) RETURNS void
LANGUAGE plpgsql AS $fzw$
DECLARE
  s text;
  m text;
BEGIN
  EXECUTE q;
  INSERT INTO rl_fuzz_log VALUES (fn, '00000', NULL, NULL);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
  -- Only internal errors keep their text: the log stays small.
  INSERT INTO rl_fuzz_log VALUES (fn, s, CASE WHEN s LIKE 'XX%' THEN m END,
                                  CASE WHEN s LIKE 'XX%' THEN left(q, 2000) END);
END $fzw$;
"""

FUNCTIONS = r"""
SELECT p.oid::regprocedure::text, p.proname,
       coalesce((SELECT string_agg(format_type(t, NULL), ',' ORDER BY i)
                 FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(t, i)), '')
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
WHERE e.extname = 'rate_limiter'
ORDER BY 1
"""

WORDS = ['high', 'medium', 'low', 'HIGH', 'fixed_window', 'sliding_window', 'token_bucket',
         'gcra', 'tokens', 'requests', 'user', 'api', 'default', 'endpoint', 'u1', 'u2',
         '/v1/chat', 'all_or_nothing', 'emergency_override', '0', '-1', 'NaN', 'null']
CHARS = 'abcxyz019 _-/\'"\\%$\t\né日本語🙂\u0301'


def lit(s):
    """A standard-conforming SQL string literal (E'' for backslashes)."""
    return "'" + s.replace("'", "''") + "'"


def rand_text(r):
    k = r.random()
    if k < 0.30:
        return lit(r.choice(WORDS))
    if k < 0.35:
        return "''"
    if k < 0.40:
        return "repeat(%s, %d)" % (lit(r.choice('xé')), r.choice([255, 256, 1000, 65536, 1048576]))
    n = r.choice([1, 2, 5, 20, 64, 200])
    return lit(''.join(r.choice(CHARS) for _ in range(n)))


def rand_bigint(r):
    return r.choice(['0', '1', '-1', '2', '10', '100', '1000000000000000', '1000000000000001',
                     '9223372036854775807', '(-9223372036854775807 - 1)',
                     str(r.randint(-2**63, 2**63 - 1)), str(r.randint(1, 1000))]) + '::bigint'


def rand_int(r):
    return r.choice(['0', '1', '-1', '7', '3650', '3651', '2147483647', '(-2147483647 - 1)',
                     str(r.randint(-2**31, 2**31 - 1))]) + '::integer'


def rand_float(r):
    return r.choice(["'NaN'", "'Infinity'", "'-Infinity'", '0', '0.5', '1', '-1', '1e308',
                     '-1e-308', '100', '101', repr(r.uniform(-10, 10))]) + '::float8'


def rand_interval(r):
    return r.choice(["'0'", "'-1 day'", "'1000000 years'", "'1 second'", "'1 microsecond'",
                     "'1 month'", "'3650 days'", "'3651 days'", "'-178000000 years'",
                     "'%d seconds'" % r.randint(-10**9, 10**9),
                     "'%d ms'" % r.randint(0, 10**6)]) + '::interval'


def rand_json(r, depth=0):
    k = r.random()
    if k < 0.05:
        d = r.choice([10, 100, 1000, 5000])
        return "(repeat('[', %d) || repeat(']', %d))::jsonb" % (d, d)
    if k < 0.10:
        d = r.choice([10, 100, 2000])
        return "(repeat('{\"a\":', %d) || '1' || repeat('}', %d))::jsonb" % (d, d)
    if k < 0.55:
        keys = r.sample(['all_or_nothing', 'emergency_override', 'x', 'é', ''], r.randint(0, 2))
        vals = ['true', 'false', 'null', '1', '"true"', '[]', '{}']
        return lit('{' + ', '.join('"%s": %s' % (key, r.choice(vals)) for key in keys) + '}') + '::jsonb'
    return lit(r.choice(['{}', '[]', 'null', '1', '"s"', 'true', '[1, {"a": 2}]',
                         '{"all_or_nothing": {"deep": [1]}}'])) + '::jsonb'


def rand_bool(r):
    return r.choice(['true', 'false'])


def rand_bytea(r):
    n = r.choice([0, 1, 15, 16, 17, 64])
    return "'\\x" + ''.join('%02x' % r.randint(0, 255) for _ in range(n)) + "'::bytea"


def rand_timestamptz(r):
    return r.choice(["now()", "'infinity'", "'-infinity'", "'2000-01-01'", "'294276-12-31'",
                     "'4713-01-01 BC'"]) + '::timestamptz'


GEN = {'text': rand_text, 'bigint': rand_bigint, 'integer': rand_int,
       'double precision': rand_float, 'interval': rand_interval, 'jsonb': rand_json,
       'boolean': rand_bool, 'bytea': rand_bytea, 'timestamp with time zone': rand_timestamptz}


def rand_arg(r, typ):
    k = r.random()
    if k < 0.12:
        return 'NULL::' + typ
    if k < 0.15:  # a value of another type: no such function (or a cast error)
        return r.choice(list(GEN.values()))(r)
    return GEN.get(typ, lambda r: 'NULL::' + typ)(r)


def main():
    ap = argparse.ArgumentParser(add_help=False)  # -h is psql's host
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--calls', type=int, default=10000)
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--batch', type=int, default=5000)
    args, conn = ap.parse_known_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randint(1, 2**31)
    print('seed: %d' % seed, flush=True)
    r = random.Random(seed)
    psql = ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0'] + conn

    def run_sql(sql, capture=True):
        return subprocess.run(psql + ['-At', '-c', sql], capture_output=capture, text=True)

    started = run_sql('SELECT pg_postmaster_start_time()').stdout.strip()
    if not started:
        print('FAIL: cannot connect')
        return 1
    run_sql(SETUP)
    funcs = [line.split('|') for line in run_sql(FUNCTIONS).stdout.splitlines() if line]
    print('functions: %d' % len(funcs), flush=True)

    calls = []
    for sig, name, types in funcs:
        tl = types.split(',') if types else []
        for _ in range(args.calls):
            q = 'SELECT %s(%s)' % (name, ', '.join(rand_arg(r, t) for t in tl))
            calls.append('SELECT rl_fuzz_call(%s, $fz$%s$fz$);' % (lit(sig), q.replace('$fz$', '')))
    r.shuffle(calls)

    tmp = tempfile.mkdtemp(prefix='rl_sql_fuzz.')
    files = []
    for i in range(0, len(calls), args.batch):
        path = os.path.join(tmp, 'batch_%04d.sql' % (i // args.batch))
        with open(path, 'w') as f:
            # Each call is its own statement (autocommit) and its own
            # savepoint (the wrapper's EXCEPTION block).  A call that waits
            # too long is cancelled rather than hanging the run.
            f.write("SET statement_timeout = '10s';\nSET client_min_messages = error;\n")
            f.write('\n'.join(calls[i:i + args.batch]) + '\n')
        files.append(path)

    failed = False
    toplevel = 0
    pending = list(files)
    running = []
    while pending or running:
        while pending and len(running) < args.jobs:
            path = pending.pop(0)
            running.append((path, subprocess.Popen(psql + ['-f', path], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.PIPE, text=True)))
        path, proc = running.pop(0)
        _, err = proc.communicate()
        for line in err.splitlines():
            if 'ERROR:' in line:
                toplevel += 1  # not caught by the wrapper (e.g. a statement timeout)
            if 'server closed the connection' in line or 'connection to server' in line:
                print('FAIL: %s: %s' % (os.path.basename(path), line))
                failed = True
        os.unlink(path)
    os.rmdir(tmp)

    now = run_sql('SELECT pg_postmaster_start_time()').stdout.strip()
    if now != started:
        print('FAIL: the server restarted (%s, was %s)' % (now, started))
        failed = True
    per_fn = run_sql('SELECT fn, count(*) FROM rl_fuzz_log GROUP BY fn ORDER BY fn').stdout
    print('calls per function:')
    short = []
    for line in per_fn.splitlines():
        fn, n = line.rsplit('|', 1)
        print('  %7s  %s' % (n, fn))
        if int(n) < args.calls:
            short.append(fn)
    hist = run_sql('SELECT state, count(*) FROM rl_fuzz_log GROUP BY state ORDER BY 2 DESC, 1').stdout
    print('SQLSTATE histogram:')
    for line in hist.splitlines():
        state, n = line.split('|')
        print('  %s %8s' % (state, n))
    print('top-level errors (outside the wrapper): %d' % toplevel)
    xx = run_sql("SELECT fn || ': ' || state || ' ' || msg || E'\\n    ' || q FROM rl_fuzz_log "
                 "WHERE state LIKE 'XX%' LIMIT 20").stdout
    if xx.strip():
        print('FAIL: internal errors:\n' + xx)
        failed = True
    if short:
        print('FAIL: fewer than %d recorded calls: %s' % (args.calls, ', '.join(short)))
        failed = True
    print('seed: %d' % seed)
    print('FAIL: sql fuzz' if failed else 'PASS: sql fuzz (%d calls)' % len(calls))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
