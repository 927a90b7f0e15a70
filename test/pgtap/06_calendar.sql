-- pgTAP: calendar periods.  A fixed_window limit of months, or with a
-- period_timezone or period_anchor, resets on the calendar: the 1st of
-- every month (February included, leap years too), the anchor's day of the
-- month clamped to the month's last day, local midnight of a zone on the
-- 23- and 25-hour days of its clock changes.  reset_at and retry_after are
-- exact; the limiter's clock is frozen (rate_limiter.debug_clock).  One
-- transaction, rolled back.
\set QUIET on
SELECT 'tap' || txid_current() || '_' AS run \gset
BEGIN;
SELECT plan(29);
SET LOCAL rate_limiter.usage_log = sync;
CREATE FUNCTION pg_temp.clock(t timestamptz) RETURNS void LANGUAGE sql AS
  $$SELECT set_config('rate_limiter.debug_clock', extract(epoch FROM t)::bigint::text, true)$$;
CREATE FUNCTION pg_temp.period(u text) RETURNS text LANGUAGE sql AS $$
  SELECT to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' .. ' ||
         to_char(reset_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
    FROM get_rate_limit_status(u) WHERE limit_kind = 'tokens' AND scope = 'user'$$;

-- Monthly, default anchor: the 1st, 00:00 UTC.
SELECT set_rate_limit(:'run' || 'm', 100, '1 month');
SELECT pg_temp.clock('2027-02-14 15:00+00');
SELECT is(pg_temp.period(:'run' || 'm'), '2027-02-01 00:00 .. 2027-03-01 00:00',
          'February 2027: 28 days, from the 1st');
SELECT is((SELECT reset_at FROM allocate_tokens(:'run' || 'm', 50, 'high')),
          timestamptz '2027-03-01 00:00+00', 'reset_at is the 1st of March');
SELECT pg_temp.clock('2027-02-28 23:59:59+00');
SELECT results_eq(
  format($$SELECT success, reason, retry_after FROM allocate_tokens(%L, 30, 'high', context => '{"all_or_nothing": true}')$$,
         :'run' || 'm'),
  $$VALUES (false, 'insufficient_quota'::text, interval '1 second')$$,
  'one second before March: 30 > floor(0.5 * 50) left in February; retry_after 1 s exactly');
SELECT pg_temp.clock('2027-03-01 00:00+00');
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'm', 100, 'high', context => '{"all_or_nothing": false}')),
          50::bigint, 'at the 1st of March the quota is whole again: half of 100 for high');
SELECT is(pg_temp.period(:'run' || 'm'), '2027-03-01 00:00 .. 2027-04-01 00:00', 'March: 31 days');
SELECT is((SELECT used || ' ' || to_char(reset_at AT TIME ZONE 'UTC', 'MM-DD HH24:MI') FROM rate_limiter_counters
            WHERE user_id = :'run' || 'm' AND role = 'limit'),
          '50 04-01 00:00', 'rate_limiter_counters reads the calendar counter in its period');
SELECT pg_temp.clock('2028-02-29 12:00+00');
SELECT is(pg_temp.period(:'run' || 'm'), '2028-02-01 00:00 .. 2028-03-01 00:00',
          'February 2028 (a leap year): 29 days');

-- Quarterly and yearly.
SELECT set_rate_limit(:'run' || 'q', 100, '3 months');
SELECT set_rate_limit(:'run' || 'y', 100, '1 year');
SELECT pg_temp.clock('2027-05-20 00:00+00');
SELECT is(pg_temp.period(:'run' || 'q'), '2027-04-01 00:00 .. 2027-07-01 00:00', 'a quarter: April to June');
SELECT is(pg_temp.period(:'run' || 'y'), '2027-01-01 00:00 .. 2028-01-01 00:00', 'a year: from January 1st');

-- Anchored on the 31st at 09:00: the last day of shorter months.
SELECT set_rate_limit(:'run' || 'a', 100, '1 month', period_anchor => '2027-01-31 09:00+00');
SELECT pg_temp.clock('2027-02-10 00:00+00');
SELECT is(pg_temp.period(:'run' || 'a'), '2027-01-31 09:00 .. 2027-02-28 09:00', 'from January 31st to February 28th');
SELECT pg_temp.clock('2027-03-15 00:00+00');
SELECT is(pg_temp.period(:'run' || 'a'), '2027-02-28 09:00 .. 2027-03-31 09:00', 'and back to the 31st in March');
SELECT pg_temp.clock('2027-04-15 00:00+00');
SELECT is(pg_temp.period(:'run' || 'a'), '2027-03-31 09:00 .. 2027-04-30 09:00', 'April 30th');
SELECT pg_temp.clock('2028-02-15 00:00+00');
SELECT is(pg_temp.period(:'run' || 'a'), '2028-01-31 09:00 .. 2028-02-29 09:00', 'February 29th in 2028');

-- A day in Europe/Berlin: local midnight, 23 and 25 hours at the changes.
SELECT set_rate_limit(:'run' || 'b', 100, '1 day', period_timezone => 'Europe/Berlin');
SELECT pg_temp.clock('2027-01-15 12:00+00');
SELECT is(pg_temp.period(:'run' || 'b'), '2027-01-14 23:00 .. 2027-01-15 23:00', 'winter: midnight is 23:00 UTC');
SELECT pg_temp.clock('2027-03-28 12:00+00');
SELECT is(pg_temp.period(:'run' || 'b'), '2027-03-27 23:00 .. 2027-03-28 22:00',
          'March 28th 2027 (clocks forward): 23 hours');
SELECT pg_temp.clock('2027-10-31 12:00+00');
SELECT is(pg_temp.period(:'run' || 'b'), '2027-10-30 22:00 .. 2027-10-31 23:00',
          'October 31st 2027 (clocks back): 25 hours');
SELECT pg_temp.clock('2027-10-31 22:59:30+00');
SELECT tokens_allocated FROM allocate_tokens(:'run' || 'b', 100, 'high');
SELECT is((SELECT retry_after FROM allocate_tokens(:'run' || 'b', 40, 'high', context => '{"all_or_nothing": true}')),
          interval '30 seconds', 'retry_after runs to Berlin midnight, exactly');

-- Counting in a calendar period: a settle gives back within the period.
SELECT set_rate_limit(:'run' || 's', 1000, '1 month', period_timezone => 'America/New_York');
SELECT pg_temp.clock('2027-06-10 00:00+00');
SELECT allocation_id AS grant_id FROM allocate_tokens(:'run' || 's', 400, 'high') \gset
SELECT is((SELECT tokens_refunded FROM settle_tokens(:grant_id, 100)), 300::bigint, 'settle: 300 unused');
SELECT is(pg_temp.period(:'run' || 's') || ' used ' ||
          (SELECT used FROM get_rate_limit_status(:'run' || 's') WHERE limit_kind = 'tokens'),
          '2027-06-01 04:00 .. 2027-07-01 04:00 used 400', 'New York months start at 04:00 UTC in summer (refund at commit)');

-- Other algorithms keep a fixed length: '1 month' is 30 days there.
SELECT set_rate_limit(:'run' || 'w', 100, '1 month', algorithm => 'sliding_window');
SELECT is((SELECT reset_at - window_start FROM get_rate_limit_status(:'run' || 'w') WHERE limit_kind = 'tokens'),
          interval '30 days', 'sliding_window: a month is 30 days');

-- Moving the anchor never hands out fresh quota: the live count moves into
-- the new alignment's period that contains now.
SELECT set_rate_limit(:'run' || 'n', 100, '1 day', period_timezone => 'UTC');
SELECT pg_temp.clock('2027-05-10 12:00+00');
SELECT tokens_allocated FROM allocate_tokens(:'run' || 'n', 60, 'high', context => '{"all_or_nothing": false}');
SELECT set_rate_limit(:'run' || 'n', 100, '1 day', period_anchor => '2027-01-01 09:00+00');
SELECT is((SELECT used || ' ' || to_char(window_start AT TIME ZONE 'UTC', 'HH24:MI')
             FROM get_rate_limit_status(:'run' || 'n') WHERE limit_kind = 'tokens'),
          '50 09:00', 'a new anchor keeps the day''s count in the period from 09:00');

-- enforce_rate_limit's DETAIL names the period.
CREATE FUNCTION pg_temp.enforce_detail(u text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  d text;
BEGIN
  PERFORM enforce_rate_limit(u);
  RETURN 'allowed';
EXCEPTION WHEN SQLSTATE 'RL429' THEN
  GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
  RETURN d;
END $$;
SELECT set_user_rate_limit(:'run' || 'e', 1, '1 month');
SELECT pg_temp.clock('2027-02-14 15:00+00');
SELECT is(pg_temp.enforce_detail(:'run' || 'e') || ' / ' || pg_temp.enforce_detail(:'run' || 'e'),
          'allowed / Limit: 1 requests per calendar period (28 days this period) (user scope); remaining: 0.',
          'the denial''s DETAIL names the calendar period');

-- Bad input.
SELECT throws_ok(format($$SELECT set_rate_limit(%L, 1, '1 month -3 days')$$, :'run' || 'x'),
                 '22023', NULL, 'a calendar window with a negative part is refused');
SELECT throws_ok(format($$SELECT set_rate_limit(%L, 1, '10 years')$$, :'run' || 'x'),
                 '22023', NULL, 'a calendar period that can last more than 3650 days is refused');
SELECT lives_ok(format($$SELECT set_rate_limit(%L, 1, '9 years')$$, :'run' || 'x'), 'nine years is fine');
SELECT throws_ok(format($$SELECT set_rate_limit(%L, 1, '1 day', period_anchor => '2500-01-01')$$, :'run' || 'x'),
                 '22023', NULL, 'an anchor after 2200 is refused');
SELECT throws_ok(format($$SELECT set_rate_limit(%L, 1, '1 day', period_timezone => 'Mars/Olympus')$$, :'run' || 'x'),
                 '22023', NULL, 'an unknown zone is refused');
SELECT throws_ok(format($$SELECT set_rate_limit(%L, 1, '1 day', algorithm => 'token_bucket', period_anchor => now())$$,
                        :'run' || 'x'),
                 '22023', NULL, 'calendar options need fixed_window');
SELECT throws_ok(format($$SELECT set_user_rate_limit(%L, 1, '1 day', period_anchor => 'infinity')$$, :'run' || 'x'),
                 '22023', NULL, 'an infinite anchor is refused');

SELECT * FROM finish();
ROLLBACK;
