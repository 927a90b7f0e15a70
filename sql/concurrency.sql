-- In-flight (concurrency) limits: what a denial says, what frees a slot
-- (settle, the abort of the allocating transaction or savepoint, the
-- timeout, the allocating backend's exit), that a limit change is
-- transactional, the lease table filling up, and the errors.  The
-- limiter's clock is frozen (rate_limiter.debug_clock, testing only) so
-- that retry_after and the timeouts are exact.
\i test/sql_helpers/fresh_start.sql
SET rate_limiter.debug_clock = 1800000000;
SELECT set_rate_limit('cc_user', 1000, '1 day');
SELECT set_concurrency_limit('cc_user', 2, lease_timeout => '5 minutes');
SELECT set_concurrency_limit('cc_user', 1, 'chat', '1 minute');
SELECT user_id, api_endpoint, max_in_flight, lease_timeout FROM concurrency_limits ORDER BY 2 NULLS FIRST;

-- Two slots: the third unsettled grant is denied, and names the limit.
SELECT allocation_id AS g1 FROM allocate_tokens('cc_user', 10, 'high') \gset
SELECT allocation_id AS g2 FROM allocate_tokens('cc_user', 10, 'high', 'batch') \gset
SELECT success, tokens_allocated, reason, "limit", limit_kind, scope, limit_owner,
       reset_at, retry_after, allocation_id IS NULL AS no_id
  FROM allocate_tokens('cc_user', 10, 'high');
-- get_rate_limit_status lists the in-flight limits: used is the slots held,
-- reset_at when the earliest times out.
SELECT scope, api_endpoint, limit_kind, algorithm, "limit", used, remaining, window_duration, reset_at
  FROM get_rate_limit_status('cc_user') WHERE limit_kind = 'in_flight';
-- Nothing was charged by the denial: 20 of 1000 tokens are used.
SELECT used FROM get_rate_limit_status('cc_user') WHERE limit_kind = 'tokens';
SELECT count(*) AS leases, count(allocation_id) AS bound, bool_and(pid = pg_backend_pid()) AS mine,
       min(expires_at - acquired_at) AS timeout
  FROM rate_limiter_leases();

-- settle_tokens frees the slot when it commits, not before.
BEGIN;
SELECT tokens_refunded FROM settle_tokens(:g1, 4);
SELECT count(*) AS leases_before_commit FROM rate_limiter_leases();
COMMIT;
SELECT count(*) AS leases_after_commit FROM rate_limiter_leases();
SELECT success, reason FROM allocate_tokens('cc_user', 10, 'high');
-- A settle whose slot release is pending cannot be prepared (its commit
-- would happen in another session), even with nothing to refund; the
-- failed PREPARE rolls back and the slot stays held.
\set VERBOSITY terse
BEGIN;
SELECT tokens_refunded FROM settle_tokens(:g2, 10);
PREPARE TRANSACTION 'cc_settle';
\set VERBOSITY default
SELECT count(*) AS leases FROM rate_limiter_leases();
-- A settle that rolls back frees nothing.
BEGIN;
SELECT tokens_refunded FROM settle_tokens(:g2, 10);
ROLLBACK;
SELECT count(*) AS leases FROM rate_limiter_leases();

-- The endpoint's own limit (1 in flight, 1 minute) applies on top of the
-- user's; its slot times out after a minute, the user's after five.
SELECT remove_concurrency_limit('cc_user') AS removed;
SELECT success, reason FROM allocate_tokens('cc_user', 1, 'high', 'chat');
SELECT success, reason, "limit", scope, retry_after FROM allocate_tokens('cc_user', 1, 'high', 'chat');
SET rate_limiter.debug_clock = 1800000059;
SELECT success, reason, retry_after FROM allocate_tokens('cc_user', 1, 'high', 'chat');
SET rate_limiter.debug_clock = 1800000060;
SELECT success, reason FROM allocate_tokens('cc_user', 1, 'high', 'chat');
SELECT remove_concurrency_limit('cc_user') AS removed_again, remove_concurrency_limit('cc_user', 'chat') AS removed_chat;

-- Rollback with refund_on_abort: the tokens and the slot come back.
SELECT set_concurrency_limit('cc_abort', 1);
SELECT set_rate_limit('cc_abort', 100, '1 day');
BEGIN;
SELECT success FROM allocate_tokens('cc_abort', 30, 'high', context => '{"refund_on_abort": true}');
SELECT reason FROM allocate_tokens('cc_abort', 30, 'high');
ROLLBACK;
SELECT success, tokens_allocated FROM allocate_tokens('cc_abort', 30, 'high');
SELECT used FROM get_rate_limit_status('cc_abort') WHERE limit_kind = 'tokens';
-- The same for a savepoint: ROLLBACK TO frees the calls made since.
SELECT * FROM settle_tokens((SELECT max(id) FROM token_usage WHERE user_id = 'cc_abort'), 30);
BEGIN;
SAVEPOINT s;
SELECT success FROM allocate_tokens('cc_abort', 5, 'high');
ROLLBACK TO s;
SELECT success FROM allocate_tokens('cc_abort', 5, 'high');
COMMIT;
SELECT count(*) AS cc_abort_rows FROM token_usage WHERE user_id = 'cc_abort';

-- A limit change is transactional: until it commits, only its own
-- transaction sees it.
BEGIN;
SELECT set_concurrency_limit('cc_tx', 1);
SELECT success FROM allocate_tokens('cc_tx', 1, 'high');
SELECT reason FROM allocate_tokens('cc_tx', 1, 'high');
ROLLBACK;
SELECT count(*) AS cc_tx_limits FROM concurrency_limits WHERE user_id = 'cc_tx';
SELECT bool_and(a.success) AS unlimited
  FROM generate_series(1, 3) g, LATERAL allocate_tokens('cc_tx', 1 + 0 * g, 'high') a;

-- check_rate_limit counts requests, holds no slot.
SELECT set_concurrency_limit('cc_check', 1);
SELECT count(*) AS leases_before FROM rate_limiter_leases() \gset
SELECT bool_and(c.allowed) AS checks_allowed
  FROM generate_series(1, 3) g, LATERAL check_rate_limit('cc_check' || repeat('', g)) c;
SELECT count(*) - :leases_before AS leases_taken_by_checks FROM rate_limiter_leases();

-- Bad input.
SELECT error FROM pg_temp.error_of($$SELECT set_concurrency_limit('cc_bad', 0)$$);
SELECT error FROM pg_temp.error_of($$SELECT set_concurrency_limit('cc_bad', NULL)$$);
SELECT error FROM pg_temp.error_of($$SELECT set_concurrency_limit('cc_bad', 2000000)$$);
SELECT error FROM pg_temp.error_of($$SELECT set_concurrency_limit('cc_bad', 1, lease_timeout => '0.5 seconds')$$);
SELECT error FROM pg_temp.error_of($$SELECT set_concurrency_limit('cc_bad', 1, lease_timeout => '8 days')$$);
SELECT error FROM pg_temp.error_of($$SELECT set_concurrency_limit(NULL, 1)$$);
SELECT error FROM pg_temp.error_of($$SELECT set_concurrency_limit('cc_bad', 1, '')$$);
SELECT error FROM pg_temp.error_of($$SELECT remove_concurrency_limit('')$$);
SELECT error FROM pg_temp.error_of($$INSERT INTO concurrency_limits (user_id, max_in_flight) VALUES ('cc_bad', -1)$$);

-- rate_limiter.shadow_mode: a full in-flight limit is counted, never
-- enforced; the slot is taken over the limit and the reason says what
-- would have happened.
SELECT set_concurrency_limit('cc_shadow', 1);
SET rate_limiter.shadow_mode = on;
SELECT string_agg(a.reason, ',' ORDER BY g) AS shadow_reasons
  FROM generate_series(1, 2) g, LATERAL allocate_tokens('cc_shadow', 1 + 0 * g, 'high') a;
SELECT used FROM get_rate_limit_status('cc_shadow') WHERE limit_kind = 'in_flight';
RESET rate_limiter.shadow_mode;
SELECT reason FROM allocate_tokens('cc_shadow', 1, 'high');

-- rate_limiter.usage_log = async without refund_on_abort: the grant's row
-- is queued outside the transaction, so a rollback leaves the grant, and
-- its slot, in place; settle_tokens (which flushes the queue to find the
-- row) frees it.
SET rate_limiter.usage_log = async;
SELECT set_concurrency_limit('cc_async', 1);
BEGIN;
SELECT allocation_id AS ga FROM allocate_tokens('cc_async', 1, 'high') \gset
ROLLBACK;
SELECT reason FROM allocate_tokens('cc_async', 1, 'high');
SELECT tokens_refunded FROM settle_tokens(:ga, 1);
SELECT reason, allocation_id AS gb FROM allocate_tokens('cc_async', 1, 'high') \gset
SELECT :'reason' AS after_settle, tokens_refunded FROM settle_tokens(:gb, 1);
-- With refund_on_abort the rollback frees it (the row was never written).
BEGIN;
SELECT reason FROM allocate_tokens('cc_async', 1, 'high', context => '{"refund_on_abort": true}');
ROLLBACK;
SELECT reason AS after_rollback FROM allocate_tokens('cc_async', 1, 'high');
-- usage_log = off writes no row and no id: nothing can settle the grant,
-- its slot ends with the timeout or the backend.
SET rate_limiter.usage_log = off;
SELECT set_concurrency_limit('cc_off', 1);
SELECT allocation_id IS NULL AS no_id, reason FROM allocate_tokens('cc_off', 1, 'high');
SELECT reason FROM allocate_tokens('cc_off', 1, 'high');
SELECT count(*) FILTER (WHERE allocation_id IS NULL) AS unbound_leases FROM rate_limiter_leases();
RESET rate_limiter.usage_log;

-- The allocating backend's exit frees its slots.
SELECT set_concurrency_limit('cc_exit', 1);
\c
SET rate_limiter.debug_clock = 1800000100;
SELECT success FROM allocate_tokens('cc_exit', 1, 'high');
SELECT pg_backend_pid() AS holder \gset
\c
SET rate_limiter.debug_clock = 1800000100;
-- The holder may still be exiting: wait for it.
CREATE FUNCTION pg_temp.wait_gone(holder integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..1000 LOOP
    -- pg_stat_activity is read once per transaction unless cleared.
    PERFORM pg_stat_clear_snapshot();
    IF NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = holder) THEN RETURN true; END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN false;
END $$;
SELECT pg_temp.wait_gone(:holder) AS holder_gone;
SELECT success, reason FROM allocate_tokens('cc_exit', 1, 'high');

-- The lease table (rate_limiter.max_leases = 16 in test/regress.conf): when
-- every lease is held, a call under a concurrency limit is refused as
-- lease_table_full, and others are not affected.
SELECT set_concurrency_limit('cc_many', 1000);
SELECT count(*) FILTER (WHERE a.success) AS granted,
       min(a.reason) FILTER (WHERE NOT a.success) AS refusal, min(a.limit_kind) AS limit_kind
  FROM generate_series(1, 20) g, LATERAL allocate_tokens('cc_many', 1 + 0 * g, 'high') a;
SELECT success FROM allocate_tokens('cc_free', 1, 'high');
SELECT count(*) AS leases FROM rate_limiter_leases();
SELECT count(*) FROM (SELECT settle_tokens(id, 1) FROM token_usage
                       WHERE user_id = 'cc_many' AND settled_at IS NULL) s;
SELECT count(*) AS leases_after_settle FROM rate_limiter_leases();

RESET rate_limiter.debug_clock;
