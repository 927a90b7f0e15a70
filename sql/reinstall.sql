-- DROP EXTENSION and CREATE EXTENSION start from fresh counters: the
-- extension's OID is part of every counter key.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('re_user', 100, '3650 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('re_user', 80, 'high');
DROP EXTENSION rate_limiter;
CREATE EXTENSION rate_limiter;
SELECT tokens_allocated, reason FROM allocate_tokens('re_user', 80, 'high');
SELECT set_rate_limit('re_user', 100, '3650 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('re_user', 80, 'high');
SELECT count(*) AS usage_rows FROM token_usage;
-- Each function's result row type is kept per backend by function OID
-- (a new execution would otherwise rebuild it from pg_proc): the new
-- functions above got their own, and two functions, a prepared statement
-- run again and again, and a change to pg_proc in between all keep the
-- right columns.
PREPARE re_alloc AS SELECT success, tokens_allocated, reason FROM allocate_tokens('re_user', 1, 'high');
PREPARE re_check AS SELECT allowed, "limit", remaining, limit_kind FROM check_rate_limit('re_user');
EXECUTE re_alloc;
EXECUTE re_check;
EXECUTE re_alloc;
CREATE FUNCTION re_unrelated() RETURNS int LANGUAGE sql AS 'SELECT 1';
EXECUTE re_check;
EXECUTE re_alloc;
DROP FUNCTION re_unrelated();
SELECT (allocate_tokens('re_user', 1, 'high')).tokens_allocated;
DEALLOCATE re_alloc;
DEALLOCATE re_check;
