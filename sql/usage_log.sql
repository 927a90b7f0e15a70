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

-- A charge and its usage row live or die together (README, "Transactions").
-- Where the row is written in the caller's transaction (usage_log = sync, a
-- refund_on_abort call, a row written synchronously because the queue had
-- no room), the charge follows that transaction too: a rollback, or a
-- ROLLBACK TO SAVEPOINT, takes both.  Where the row is queued at once
-- (async without refund_on_abort) both stay, whatever the transaction does.
-- A counter rebuilt from the rows after a crash therefore equals the
-- counter before it.
CREATE FUNCTION pg_temp.fate(u text) RETURNS text LANGUAGE sql AS $$
  SELECT format('used %s, rows %s, tokens %s',
                (SELECT coalesce(sum(used), 0) FROM get_rate_limit_status(u) WHERE scope = 'user'),
                (SELECT count(*) FROM token_usage WHERE user_id = u),
                (SELECT coalesce(sum(tokens_used), 0) FROM token_usage WHERE user_id = u))
$$;
\set VERBOSITY terse

-- Sync mode (the test configuration): a rolled-back savepoint or
-- transaction refunds what its calls charged, together with their rows.
SELECT set_rate_limit('fate_sync', 1000, '3650 days');
BEGIN;
SAVEPOINT s;
SELECT tokens_allocated FROM allocate_tokens('fate_sync', 1000, 'high');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT pg_temp.fate('fate_sync');
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('fate_sync', 100, 'high');
ROLLBACK;
SELECT pg_temp.fate('fate_sync');
SELECT tokens_allocated FROM allocate_tokens('fate_sync', 100, 'high');
SELECT pg_temp.fate('fate_sync');
-- A counted request too.
SELECT set_user_rate_limit('fate_req', 10, '3650 days');
BEGIN;
SAVEPOINT s;
SELECT allowed FROM check_rate_limit('fate_req');
ROLLBACK TO SAVEPOINT s;
SELECT allowed FROM check_rate_limit('fate_req');
COMMIT;
SELECT pg_temp.fate('fate_req');
-- A row that cannot be written (a constraint added to token_usage) takes
-- its charge with it.
ALTER TABLE token_usage ADD CONSTRAINT fate_refused CHECK (user_id <> 'fate_refused');
SELECT set_rate_limit('fate_refused', 1000, '3650 days');
SELECT tokens_allocated FROM allocate_tokens('fate_refused', 100, 'high');
SELECT pg_temp.fate('fate_refused');
ALTER TABLE token_usage DROP CONSTRAINT fate_refused;

-- Async mode, refund_on_abort: settle_tokens (and rate_limiter_flush)
-- write the transaction's pending rows early, inside whatever savepoint is
-- current.  A rollback of that savepoint must not take the rows of calls
-- made before it, whose charges stay.
SET rate_limiter.usage_log = async;
SELECT set_rate_limit('fate_settle', 1000, '3650 days');
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('fate_settle', 1000, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT s;
SELECT settle_tokens(-1, 0);
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_settle');
-- A settle that succeeded in a rolled-back savepoint leaves the grant
-- unsettled, with its row.
BEGIN;
SELECT allocation_id AS fate_id FROM allocate_tokens('fate_settle', 100, 'high', context => '{"refund_on_abort": true}') \gset
SAVEPOINT s;
SELECT tokens_refunded FROM settle_tokens(:fate_id, 40);
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_settle');
SELECT tokens_used, settled_at IS NULL AS unsettled FROM token_usage WHERE id = :fate_id;
-- Written early in a released savepoint, then the whole transaction rolls
-- back: neither the rows nor the charges stay.
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('fate_settle', 100, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT s;
SELECT rate_limiter_flush_usage();
RELEASE SAVEPOINT s;
ROLLBACK;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_settle');
-- A call made in a savepoint, written early in a deeper one that rolls
-- back, then the call's own savepoint released: its row comes at commit.
BEGIN;
SAVEPOINT a;
SELECT tokens_allocated FROM allocate_tokens('fate_settle', 10, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT b;
SELECT rate_limiter_flush_usage();
ROLLBACK TO SAVEPOINT b;
RELEASE SAVEPOINT a;
COMMIT;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_settle');
-- ... and one written early in its own savepoint, which then rolls back:
-- both go.
BEGIN;
SAVEPOINT a;
SELECT tokens_allocated FROM allocate_tokens('fate_settle', 10, 'high', context => '{"refund_on_abort": true}');
SELECT rate_limiter_flush_usage();
ROLLBACK TO SAVEPOINT a;
COMMIT;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_settle');

-- Async without refund_on_abort: the row is queued at once and the charge
-- stays, both through a rollback.
SELECT set_rate_limit('fate_async', 1000, '3650 days');
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('fate_async', 100, 'high');
ROLLBACK;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_async');

-- Two-phase commit.  A prepared transaction's rows are invisible to
-- everyone until COMMIT PREPARED, a counter rebuild after a crash
-- included; so a transaction that wrote a usage row itself cannot be
-- prepared.  Rows that were queued (async, and refund_on_abort rows, which
-- PREPARE queues with their charges kept) do not stop it.
SELECT tokens_allocated FROM allocate_tokens('fate_async', 10, 'high');
SELECT tokens_allocated FROM allocate_tokens('fate_async', 10, 'high', context => '{"refund_on_abort": true}');
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('fate_async', 10, 'high');
SELECT tokens_allocated FROM allocate_tokens('fate_async', 10, 'high', context => '{"refund_on_abort": true}');
PREPARE TRANSACTION 'fate_queued';
ROLLBACK PREPARED 'fate_queued';
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_async');
-- Written early (rate_limiter_flush_usage): refused, and the rollback that
-- follows refunds the refund_on_abort charge with its row.
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('fate_async', 10, 'high', context => '{"refund_on_abort": true}');
SELECT rate_limiter_flush_usage();
PREPARE TRANSACTION 'fate_early';
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT pg_temp.fate('fate_async');
-- Sync mode: refused, and the rollback takes charge and row.
SET rate_limiter.usage_log = sync;
SELECT set_rate_limit('fate_2pc', 1000, '3650 days');
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('fate_2pc', 1000, 'high');
PREPARE TRANSACTION 'fate_sync';
SELECT pg_temp.fate('fate_2pc');
-- (Nothing may be left prepared: it would hold token_usage locks.)
SELECT count(*) > 0 AS leftover FROM pg_prepared_xacts WHERE gid IN ('fate_early', 'fate_sync') \gset
\if :leftover
SELECT gid FROM pg_prepared_xacts WHERE gid IN ('fate_early', 'fate_sync') ORDER BY 1;
ROLLBACK PREPARED 'fate_early';
ROLLBACK PREPARED 'fate_sync';
\endif
RESET rate_limiter.usage_log;
\set VERBOSITY default
