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
