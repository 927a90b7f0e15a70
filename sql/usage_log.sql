-- The usage log modes.  The test config writes synchronously; async needs
-- this database to have a worker (test/regress.conf restricts the workers
-- to it with rate_limiter.database).
\i test/sql_helpers/fresh_start.sql
SELECT current_setting('rate_limiter.database') = current_database() AS flusher_database;
SELECT set_rate_limit('ul_user', 1000000, '3650 days');
SELECT get_performance_metrics() AS m0 \gset

-- async: allocation_id comes at once, the row after a flush.
SET rate_limiter.usage_log = async;
SELECT allocation_id AS async_id FROM allocate_tokens('ul_user', 10, 'high', 'ep', 'sess-a') \gset
SELECT allowed FROM check_rate_limit('ul_user', 'ep', 'sess-a');
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT id = :async_id AS same_id, tokens_used, api_endpoint, session_id, priority_level
  FROM token_usage WHERE user_id = 'ul_user' AND priority_level IS NOT NULL;
SELECT count(*) AS check_rows FROM token_usage WHERE user_id = 'ul_user' AND priority_level IS NULL;

-- settle right after allocate: the settle waits for the row.
SELECT allocation_id AS settle_id FROM allocate_tokens('ul_user', 10, 'high') \gset
SELECT * FROM settle_tokens(:settle_id, 4);
SELECT * FROM settle_tokens(-1, 0);

-- Rows flushed by the worker are counted; nothing is left queued.
SELECT (m->>'usage_rows_flushed')::bigint - (:'m0'::jsonb->>'usage_rows_flushed')::bigint AS rows_flushed,
       (m->>'usage_queue_depth')::bigint AS depth,
       (m->>'usage_flush_lag_ms')::bigint AS lag_ms,
       (m->>'usage_sync_fallbacks')::bigint - (:'m0'::jsonb->>'usage_sync_fallbacks')::bigint AS fallbacks
  FROM get_performance_metrics() m;

-- refund_on_abort in async mode: no row after a rollback (nor after a
-- rolled back savepoint), exactly one after commit.
BEGIN;
SELECT success FROM allocate_tokens('ul_abort', 5, 'high', NULL, 'sess-rb', '{"refund_on_abort": true}');
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT success FROM allocate_tokens('ul_abort', 5, 'high', NULL, 'sess-sp', '{"refund_on_abort": true}');
ROLLBACK TO SAVEPOINT s;
SELECT success FROM allocate_tokens('ul_abort', 5, 'high', NULL, 'sess-ok', '{"refund_on_abort": true}');
COMMIT;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT session_id, count(*) FROM token_usage WHERE user_id = 'ul_abort' GROUP BY 1 ORDER BY 1;

-- Settling a refund_on_abort grant in its own transaction: the row is
-- written then, and still follows the transaction.
BEGIN;
SELECT allocation_id AS pending_id FROM allocate_tokens('ul_pending', 10, 'high', NULL, NULL, '{"refund_on_abort": true}') \gset
SELECT * FROM settle_tokens(:pending_id, 3);
ROLLBACK;
SELECT count(*) AS rows_after_rollback FROM token_usage WHERE user_id = 'ul_pending';

-- Without refund_on_abort the charge stays after a rollback, and so does
-- the row in async mode (in sync mode it rolls back with the transaction).
BEGIN;
SELECT success FROM allocate_tokens('ul_kept', 5, 'high');
ROLLBACK;
SET rate_limiter.usage_log = sync;
BEGIN;
SELECT success FROM allocate_tokens('ul_kept', 5, 'high');
ROLLBACK;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT count(*) AS kept_rows FROM token_usage WHERE user_id = 'ul_kept';

-- sync: the row is there at once, in the caller's transaction.
SELECT allocation_id AS sync_id FROM allocate_tokens('ul_sync', 7, 'high') \gset
SELECT tokens_used FROM token_usage WHERE id = :sync_id;

-- off: no row and no allocation_id; the charge still counts.
SET rate_limiter.usage_log = off;
SELECT success, tokens_allocated, allocation_id FROM allocate_tokens('ul_off', 7, 'high');
SELECT allowed FROM check_rate_limit('ul_off');
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT count(*) AS off_rows FROM token_usage WHERE user_id = 'ul_off';
RESET rate_limiter.usage_log;

-- usage_log is for superusers only: 'off' would hide usage.
CREATE ROLE ul_app;
SET ROLE ul_app;
SET rate_limiter.usage_log = off;
RESET ROLE;
DROP ROLE ul_app;
