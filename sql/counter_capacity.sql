-- A full counter table.  The test server has rate_limiter.max_keys = 400 in
-- one partition.  Jumping the clock 7300 days ahead expires every counter
-- made before (the longest window is 3650 days): ten are made first, for
-- the table to have expired counters to evict when it fills.
\i test/sql_helpers/fresh_start.sql
SELECT set_default_rate_limit(10, '1 hour');
SELECT count(*) FILTER (WHERE success) AS expiring
  FROM generate_series(1, 10) g, LATERAL allocate_tokens('cap_old_' || g, 1, 'high');
SET rate_limiter.debug_time_offset = '7300d';
SELECT set_default_rate_limit(10, '1 hour');
SELECT get_performance_metrics() AS m0 \gset

-- 400 users fill the table; the insert that finds it full evicts every
-- expired counter.
SELECT count(*) FILTER (WHERE success) AS granted
  FROM generate_series(1, 400) g, LATERAL allocate_tokens('cap_' || g, 1, 'high');
SELECT (get_performance_metrics()->>'evictions')::bigint > (:'m0'::jsonb->>'evictions')::bigint AS evicted;
SELECT (get_performance_metrics()->>'keys_in_use')::bigint AS keys_in_use;

-- failure_mode = closed (the default): a new key is refused with RL507 ...
\set VERBOSITY default
SELECT * FROM allocate_tokens('cap_401', 1, 'high');
\set VERBOSITY terse
-- ... existing keys are still served ...
SELECT success, tokens_remaining FROM allocate_tokens('cap_1', 1, 'high');
-- ... and users without any applicable rule need no counter.
SELECT remove_default_rate_limit();
SELECT success, reason FROM allocate_tokens('cap_401', 1, 'high');
SELECT set_default_rate_limit(10, '1 hour');

-- failure_mode = open: the limit that has no counter is not enforced, and
-- the call says so.
SET rate_limiter.failure_mode = 'open';
SELECT success, tokens_allocated, reason FROM allocate_tokens('cap_402', 1000, 'high');
SELECT allowed, reason FROM check_rate_limit('cap_402');
RESET rate_limiter.failure_mode;

SELECT (get_performance_metrics()->>'fail_closed_decisions')::bigint - (:'m0'::jsonb->>'fail_closed_decisions')::bigint AS fail_closed,
       (get_performance_metrics()->>'fail_open_decisions')::bigint - (:'m0'::jsonb->>'fail_open_decisions')::bigint AS fail_open;

-- Once the windows have ended, their counters are evicted to make room.
SET rate_limiter.debug_time_offset = '7670d';
SELECT success, tokens_allocated, reason FROM allocate_tokens('cap_403', 1000, 'high');
SELECT (get_performance_metrics()->>'keys_in_use')::bigint AS keys_in_use;
RESET rate_limiter.debug_time_offset;
SELECT remove_default_rate_limit();

-- The counter table's exhaustion policy (README "Counter table
-- exhaustion").  The test server has 400 counters in one partition; the
-- policy settings are off in test/regress.conf and set here.  A jump far
-- ahead of every window above makes their counters expired (evicted when
-- room is needed).
SET rate_limiter.debug_time_offset = '20000d';
SET rate_limiter.configured_key_reserve = 0.1;  -- 40 counters only for configured scopes
SET rate_limiter.role_key_share = 0.5;          -- a role holds at most 180 of the other 360
SELECT set_default_rate_limit(10, '1 hour');
SELECT count(*) AS vips FROM (SELECT set_rate_limit('kb_vip_' || g, 10, '1 hour') FROM generate_series(1, 40) g) s;
CREATE ROLE kb_attacker;
CREATE ROLE kb_app;
SELECT get_performance_metrics() AS m0 \gset

-- Calls allocate_tokens for n invented ids and counts the outcomes.
CREATE FUNCTION kb_invent(prefix text, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  granted int := 0;
  refused int := 0;
BEGIN
  FOR g IN 1..n LOOP
    BEGIN
      IF (SELECT success FROM allocate_tokens(prefix || g, 1, 'high')) THEN
        granted := granted + 1;
      END IF;
    EXCEPTION WHEN SQLSTATE 'RL507' THEN
      refused := refused + 1;
    END;
  END LOOP;
  RETURN format('%s granted, %s refused', granted, refused);
END $$;

-- One role inventing user ids gets its share and no more.
SET ROLE kb_attacker;
SELECT kb_invent('kb_inv_', 400);
\set VERBOSITY default
SELECT * FROM allocate_tokens('kb_inv_one_more', 1, 'high');
\set VERBOSITY terse
-- Its existing counters are still served.
SELECT success, tokens_remaining FROM allocate_tokens('kb_inv_7', 1, 'high');
RESET ROLE;

-- failure_mode = open does not turn the refusal into an unlimited grant.
SET rate_limiter.failure_mode = open;
SET ROLE kb_attacker;
SELECT kb_invent('kb_open_', 20);
RESET ROLE;
RESET rate_limiter.failure_mode;

-- Another role still gets counters for its own users ...
SET ROLE kb_app;
SELECT kb_invent('kb_app_', 150);
RESET ROLE;
-- A third role finds the default class nearly full (180 + 150 of 360): it
-- gets the rest, then RL507, and failure_mode = open does not change that
-- (only a table full of live counters fails open).
CREATE ROLE kb_third;
SET rate_limiter.failure_mode = open;
SET ROLE kb_third;
SELECT kb_invent('kb_third_', 50);
-- The refusal says what helps; failure_mode = open is not among it.
SELECT code, message, hint
  FROM pg_temp.error_of($$SELECT * FROM allocate_tokens('kb_third_more', 1, 'high')$$);
RESET ROLE;
RESET rate_limiter.failure_mode;
-- ... and users with a rule of their own find the reserve.
SELECT count(*) FILTER (WHERE success) AS vip_granted
  FROM generate_series(1, 40) g, LATERAL allocate_tokens('kb_vip_' || g, 1, 'high');

SELECT (get_performance_metrics()->>'key_budget_refusals')::bigint
       - (:'m0'::jsonb->>'key_budget_refusals')::bigint AS role_refusals;

-- The share is a superuser's to raise (ALTER ROLE kb_app SET
-- rate_limiter.role_key_share = 1 for a trusted application role); the
-- attacker cannot raise its own.
SET ROLE kb_attacker;
SET rate_limiter.role_key_share = 1;
RESET ROLE;

-- When the windows end, the counters are evicted and the share comes back.
SET rate_limiter.debug_time_offset = '20001d';
SET ROLE kb_attacker;
SELECT kb_invent('kb_later_', 10);
RESET ROLE;

RESET rate_limiter.debug_time_offset;
RESET rate_limiter.configured_key_reserve;
RESET rate_limiter.role_key_share;
SELECT remove_default_rate_limit();
SELECT sum(n) AS removed FROM (SELECT remove_rate_limit('kb_vip_' || g) AS n FROM generate_series(1, 40) g) s;
DROP FUNCTION kb_invent(text, int);
DROP ROLE kb_attacker;
DROP ROLE kb_app;
DROP ROLE kb_third;
