-- A 1.0 installation keeps working with the current library (its limits
-- use the defaults), and ALTER EXTENSION ... UPDATE keeps limits, usage and
-- counters, through 1.1 to the current version.
\i test/sql_helpers/fresh_start.sql
DROP EXTENSION rate_limiter;
CREATE EXTENSION rate_limiter VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter';
SELECT set_rate_limit('up_user', 100, '3650 days');
SELECT set_user_rate_limit('up_user', 5, '3650 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('up_user', 80, 'high');
-- 1.0's status function passes its counter reader fewer arguments than the
-- library reads now: a clear error naming the fix, not a crash.
SELECT code, message, hint
  FROM pg_temp.error_of($$SELECT count(*) FROM get_rate_limit_status('up_user')$$);
ALTER EXTENSION rate_limiter UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter';
SELECT user_id, max_tokens_per_period, algorithm, burst_mode_enabled FROM token_limits;
SELECT user_id, max_requests_per_window, algorithm FROM request_limits;
SELECT count(*) AS usage_rows, count(tokens_granted) AS settled FROM token_usage;
-- The counters survive the update: 50 of 100 were used, 25 are granted.
SELECT tokens_allocated, tokens_remaining, requests_remaining, allocation_id IS NOT NULL AS has_id
  FROM allocate_tokens('up_user', 80, 'high');
SELECT scope, limit_kind, algorithm, "limit", used FROM get_rate_limit_status('up_user');
-- The functions the extension owns after the update (a fresh install runs
-- the same script).
SELECT count(*) AS functions FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'rate_limiter') AND d.deptype = 'e';

-- At 1.1 the rule tables have statement triggers: a change reloads the
-- database's rules at commit, and is seen.
SELECT set_rate_limit('up_user', 200, '3650 days');
SELECT "limit" FROM allocate_tokens('up_user', 1, 'high');
-- Update to the current version: row triggers, and the rules still apply.
ALTER EXTENSION rate_limiter UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter';
SELECT tgname, tgtype & 1 = 1 AS per_row FROM pg_trigger
 WHERE tgrelid = 'token_limits'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT set_rate_limit('up_user', 300, '3650 days');
SELECT "limit" FROM allocate_tokens('up_user', 1, 'high');
SELECT count(*) AS functions FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'rate_limiter') AND d.deptype = 'e';
