-- The library serves only the schema of its own version: in a database
-- still at an older version every function refuses with 55000 and the hint
-- to update (the functions of 1.0 pass other arguments than the library
-- reads, and its tables lack columns), and ALTER EXTENSION ... UPDATE keeps
-- the limits and usage rows written at that version, through 1.1 to the
-- current version.  That every update path ends with the catalog of a
-- fresh install is test/t/021_schema_versions.pl.
\i test/sql_helpers/fresh_start.sql
DROP EXTENSION rate_limiter;
CREATE EXTENSION rate_limiter VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter';
-- Every kind of entry point refuses, clearly, and charges nothing.
SELECT code, message, hint
  FROM pg_temp.error_of($$SELECT set_rate_limit('up_user', 100, '3650 days')$$);
SELECT code, message, hint
  FROM pg_temp.error_of($$SELECT * FROM allocate_tokens('up_user', 80, 'high')$$);
SELECT code, hint FROM pg_temp.error_of($$SELECT * FROM check_rate_limit('up_user')$$);
-- Rows an older library wrote at 1.0 (written here with the rule triggers
-- off, since this library refuses to serve them).
ALTER TABLE token_limits DISABLE TRIGGER USER;
ALTER TABLE request_limits DISABLE TRIGGER USER;
INSERT INTO token_limits (user_id, max_tokens_per_period, period_interval) VALUES ('up_user', 100, '3650 days');
INSERT INTO request_limits (user_id, max_requests_per_window, window_duration) VALUES ('up_user', 5, '3650 days');
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_truncated;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_truncated;
INSERT INTO token_usage (user_id, tokens_used, priority_level) VALUES ('up_user', 50, 'high');
-- With a rule, 1.0's status function reaches the library's counter reader.
SELECT code, hint FROM pg_temp.error_of($$SELECT count(*) FROM get_rate_limit_status('up_user')$$);

ALTER EXTENSION rate_limiter UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter';
-- 1.1 is not the library's version either.
SELECT code, hint FROM pg_temp.error_of($$SELECT * FROM allocate_tokens('up_user', 80, 'high')$$);
SELECT user_id, max_tokens_per_period, algorithm, burst_mode_enabled FROM token_limits;
SELECT user_id, max_requests_per_window, algorithm FROM request_limits;
SELECT count(*) AS usage_rows, count(tokens_granted) AS settled FROM token_usage;

-- Update to the current version: row triggers, the rules kept from 1.0
-- apply, and so does the usage row written at 1.0 (the first call rebuilds
-- the database's counters from token_usage): 50 of 100 tokens were used,
-- high takes half of the rest; the row and this call are 2 of 5 requests.
ALTER EXTENSION rate_limiter UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter';
SELECT tgname, tgtype & 1 = 1 AS per_row FROM pg_trigger
 WHERE tgrelid = 'token_limits'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT tokens_allocated, tokens_remaining, requests_remaining, allocation_id IS NOT NULL AS has_id
  FROM allocate_tokens('up_user', 80, 'high');
SELECT scope, limit_kind, algorithm, "limit", used FROM get_rate_limit_status('up_user') ORDER BY 1, 2;
SELECT set_rate_limit('up_user', 300, '3650 days');
SELECT "limit" FROM allocate_tokens('up_user', 1, 'high');
-- The functions the extension owns after the update (as many as a fresh
-- install has).
SELECT count(*) AS functions FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'rate_limiter') AND d.deptype = 'e';

-- An update that rolls back leaves the old version, and the library treats
-- it as old again (nothing read from the uncommitted row is kept).
DROP EXTENSION rate_limiter;
CREATE EXTENSION rate_limiter VERSION '1.3';
SELECT code FROM pg_temp.error_of($$SELECT is_token_revoked('x')$$);
BEGIN;
ALTER EXTENSION rate_limiter UPDATE;
SELECT is_token_revoked('x') AS revoked_inside;
ROLLBACK;
SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter';
SELECT code FROM pg_temp.error_of($$SELECT is_token_revoked('x')$$);
SELECT code FROM pg_temp.error_of($$SELECT * FROM check_rate_limit('up_user')$$);
BEGIN;
SAVEPOINT s;
ALTER EXTENSION rate_limiter UPDATE;
SELECT is_token_revoked('x') AS revoked_inside;
ROLLBACK TO SAVEPOINT s;
SELECT code FROM pg_temp.error_of($$SELECT is_token_revoked('x')$$);
COMMIT;
DROP EXTENSION rate_limiter;
CREATE EXTENSION rate_limiter;
