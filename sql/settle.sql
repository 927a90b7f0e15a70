-- Reserve, then settle: allocation_id is the token_usage row of the grant;
-- settle_tokens returns the unused part to the quota when it commits.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('s_user', 1000, '3650 days');
SELECT allocation_id AS first_id, tokens_allocated AS granted
  FROM allocate_tokens('s_user', 100, 'high') \gset
SELECT :granted AS granted, t.tokens_used, t.priority_level
  FROM token_usage t WHERE t.id = :first_id AND t.user_id = 's_user';
SELECT used FROM get_rate_limit_status('s_user') WHERE scope = 'user';
SELECT * FROM settle_tokens(:first_id, 40);
SELECT used, remaining FROM get_rate_limit_status('s_user') WHERE scope = 'user';
SELECT tokens_used, tokens_granted, settled_at IS NOT NULL AS settled
  FROM token_usage WHERE id = :first_id;

-- Errors: twice, unknown, more than granted, negative, NULL.  Messages
-- that carry an id are shown with the id masked (settle_error_of: the
-- error pg_temp.error_of reports, masked).
CREATE FUNCTION pg_temp.settle_error_of(query text) RETURNS text LANGUAGE sql AS $$
  SELECT regexp_replace(error, 'allocation [0-9]+', 'allocation N', 'g') FROM pg_temp.error_of(query)
$$;
SELECT pg_temp.settle_error_of(format('SELECT settle_tokens(%s, 10)', :first_id));
\set VERBOSITY terse
SELECT settle_tokens(-1, 10);
SELECT allocation_id AS second_id FROM allocate_tokens('s_user', 50, 'high') \gset
SELECT pg_temp.settle_error_of(format('SELECT settle_tokens(%s, 51)', :second_id));
SELECT settle_tokens(:second_id, -1);
SELECT settle_tokens(NULL, 1);
SELECT settle_tokens(:second_id, NULL);
-- A check_rate_limit row is not an allocation.
SELECT set_user_rate_limit('s_req', 10, '3650 days');
SELECT allowed FROM check_rate_limit('s_req');
SELECT pg_temp.settle_error_of('SELECT settle_tokens((SELECT max(id) FROM token_usage WHERE user_id = ''s_req''), 0)');
\set VERBOSITY default

-- A settle that rolls back returns nothing.
BEGIN;
SELECT tokens_refunded FROM settle_tokens(:second_id, 0);
ROLLBACK;
SELECT used FROM get_rate_limit_status('s_user') WHERE scope = 'user';
SELECT tokens_refunded FROM settle_tokens(:second_id, 0);
SELECT used FROM get_rate_limit_status('s_user') WHERE scope = 'user';

-- Refund on abort: tokens granted in a transaction that rolls back go back
-- to the quota when asked for; without it the charge stays (in async mode,
-- where the row is queued at once: in sync mode the row follows the
-- transaction, and so does the charge, see usage_log).
SELECT set_rate_limit('r_user', 1000, '3650 days');
SET rate_limiter.usage_log = async;
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('r_user', 100, 'high');
ROLLBACK;
RESET rate_limiter.usage_log;
SELECT used FROM get_rate_limit_status('r_user') WHERE scope = 'user';
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('r_user', 100, 'high', context => '{"refund_on_abort": true}');
SELECT used FROM get_rate_limit_status('r_user') WHERE scope = 'user';
ROLLBACK;
SELECT used FROM get_rate_limit_status('r_user') WHERE scope = 'user';

-- Savepoints: ROLLBACK TO refunds the calls made since the savepoint, at
-- once; the rest follows the transaction.
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('r_user', 10, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT s1;
SELECT tokens_allocated FROM allocate_tokens('r_user', 20, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT s2;
SELECT tokens_allocated FROM allocate_tokens('r_user', 40, 'high', context => '{"refund_on_abort": true}');
RELEASE SAVEPOINT s2;
SELECT used FROM get_rate_limit_status('r_user') WHERE scope = 'user';
ROLLBACK TO SAVEPOINT s1;
SELECT used FROM get_rate_limit_status('r_user') WHERE scope = 'user';
COMMIT;
SELECT used FROM get_rate_limit_status('r_user') WHERE scope = 'user';

-- The setting applies to every call, check_rate_limit included.
SELECT set_user_rate_limit('r_req', 5, '3650 days');
SET rate_limiter.refund_on_abort = on;
BEGIN;
SELECT allowed FROM check_rate_limit('r_req');
SELECT allowed FROM check_rate_limit('r_req');
ROLLBACK;
RESET rate_limiter.refund_on_abort;
SELECT used FROM get_rate_limit_status('r_req') WHERE scope = 'user';

-- An error aborts the transaction: its refundable charges go back.
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('r_user', 10, 'high', context => '{"refund_on_abort": true}');
SELECT 1 / 0;
ROLLBACK;
SELECT used FROM get_rate_limit_status('r_user') WHERE scope = 'user';

-- settle_tokens gives back exactly what the grant charged, quota by quota,
-- and only its owner (or an administrator) may settle it.  Each block was a
-- way to get quota twice before version 1.3 (issue: exact on every path).
SET rate_limiter.debug_clock = 1900000000;   -- frozen: the numbers are exact
SET rate_limiter.priority_share_high = 1.0;
SET rate_limiter.usage_log = sync;

-- A limit added after the grant gets nothing back: the grant never charged
-- it.  (Before: the 500 went to the new endpoint quota too, 1500 of 1000.)
SELECT set_rate_limit('sx_new', 100000, '1 day');
SELECT allocation_id AS aid FROM allocate_tokens('sx_new', 500, 'high', 'sx_ep') \gset
SELECT set_api_token_limit('sx_ep', 1000, '1 day');
SELECT tokens_allocated FROM allocate_tokens('sx_new', 1000, 'high', 'sx_ep');
SELECT tokens_granted, tokens_refunded FROM settle_tokens(:aid, 0);
SELECT tokens_allocated FROM allocate_tokens('sx_new', 1000, 'high', 'sx_ep');   -- 0
SELECT scope, used FROM get_rate_limit_status('sx_new') WHERE limit_kind = 'tokens' ORDER BY scope;

-- An emergency grant: only the part within the limit comes back, never
-- the allowance.  (Before: all 800 came back, 1800 of 1000.)
SELECT set_rate_limit('sx_em', 1000, '1 day');
SELECT tokens_allocated FROM allocate_tokens('sx_em', 960, 'high');
SELECT allocation_id AS aid, tokens_allocated, emergency_tokens
  FROM allocate_tokens('sx_em', 800, 'high', context => '{"emergency_override": true}') \gset
SELECT :tokens_allocated AS granted, :emergency_tokens AS from_allowance;
SELECT tokens_granted, tokens_refunded FROM settle_tokens(:aid, 0);
SELECT used FROM get_rate_limit_status('sx_em') WHERE limit_kind = 'tokens' AND scope = 'user';                                 -- 960
SELECT tokens_allocated FROM allocate_tokens('sx_em', 1000, 'high');             -- 40

-- A token bucket: a charge that refill has paid back comes back as
-- nothing.  (Before: 150 in one instant from a bucket of 100.)
SELECT set_rate_limit('sx_tb', 100, '1 hour', algorithm => 'token_bucket');
SELECT allocation_id AS aid FROM allocate_tokens('sx_tb', 50, 'high') \gset
SET rate_limiter.debug_clock = 1900003600;                                        -- an hour later: full
SELECT tokens_allocated FROM allocate_tokens('sx_tb', 100, 'high');              -- 100
SELECT tokens_refunded FROM settle_tokens(:aid, 0);
SELECT tokens_allocated FROM allocate_tokens('sx_tb', 100, 'high');              -- 0
-- ... while a recent bucket charge comes back in full.
SET rate_limiter.debug_clock = 1900010000;                                        -- full again
SELECT allocation_id AS aid FROM allocate_tokens('sx_tb', 60, 'high') \gset
SELECT tokens_refunded FROM settle_tokens(:aid, 0);
SELECT tokens_allocated FROM allocate_tokens('sx_tb', 100, 'high');              -- 100
SET rate_limiter.debug_clock = 1900000000;

-- A reset between grant and settle: the fresh window does not get the old
-- grant's tokens.  (Before: 1600 granted in a 1000 window.)
SELECT set_rate_limit('sx_rs', 1000, '1 day');
SELECT allocation_id AS aid FROM allocate_tokens('sx_rs', 600, 'high') \gset
SELECT reset_rate_limit('sx_rs');
SELECT tokens_allocated FROM allocate_tokens('sx_rs', 1000, 'high');             -- 1000
SELECT tokens_refunded FROM settle_tokens(:aid, 0);
SELECT tokens_allocated FROM allocate_tokens('sx_rs', 1000, 'high');             -- 0
-- A grant made while a reset was pending charged the old counter, which
-- the reset's commit cleared: its settle gives nothing back either.
SELECT set_rate_limit('sx_rp', 1000, '1 day');
BEGIN;
SELECT reset_rate_limit('sx_rp');
SELECT allocation_id AS aid FROM allocate_tokens('sx_rp', 700, 'high') \gset
COMMIT;
SELECT tokens_allocated FROM allocate_tokens('sx_rp', 1000, 'high');             -- 1000
SELECT tokens_refunded FROM settle_tokens(:aid, 0);
SELECT tokens_allocated FROM allocate_tokens('sx_rp', 1000, 'high');             -- 0
-- Without a reset the refund is made (the counter still holds the grant).
SELECT set_rate_limit('sx_ok', 100, '1 day');
SELECT allocation_id AS aid FROM allocate_tokens('sx_ok', 100, 'high') \gset
SELECT tokens_refunded FROM settle_tokens(:aid, 30);
SELECT tokens_allocated FROM allocate_tokens('sx_ok', 100, 'high');              -- 70
-- A limit raised since the grant: the window kept the grant's usage, and
-- the refund takes back no more than it; the window then admits its new
-- limit and no more.
SELECT set_rate_limit('sx_ch', 100, '1 day');
SELECT allocation_id AS aid FROM allocate_tokens('sx_ch', 80, 'high') \gset
SELECT set_rate_limit('sx_ch', 200, '1 day');
SELECT tokens_refunded FROM settle_tokens(:aid, 0);
SELECT tokens_allocated FROM allocate_tokens('sx_ch', 300, 'high');              -- 200

-- Who may settle: the role that allocated, its members, administrators.
-- Errors are shown with the allocation id masked (pg_temp.settle_error_of,
-- above).
CREATE ROLE regress_settle_a;
CREATE ROLE regress_settle_b;
CREATE ROLE regress_settle_member IN ROLE regress_settle_a;
SELECT set_rate_limit('sx_own', 1000, '1 day');
SET ROLE regress_settle_a;
SELECT allocation_id AS aid FROM allocate_tokens('sx_own', 300, 'high') \gset
SELECT allocation_id AS aid2 FROM allocate_tokens('sx_own', 200, 'high') \gset
RESET ROLE;
SELECT granted_to FROM token_usage WHERE id = :aid;
SET ROLE regress_settle_b;
-- Refused without a word about the grant (its size, whether it is settled).
SELECT pg_temp.settle_error_of(format('SELECT settle_tokens(%s, 0)', :aid));
SELECT pg_temp.settle_error_of(format('SELECT settle_tokens(%s, 1000000)', :aid));
RESET ROLE;
SELECT tokens_used, settled_at IS NULL AS open FROM token_usage WHERE id = :aid;  -- untouched
SELECT used FROM get_rate_limit_status('sx_own') WHERE limit_kind = 'tokens' AND scope = 'user';                                -- 500
SET ROLE regress_settle_member;
SELECT * FROM settle_tokens(:aid, 100);
RESET ROLE;
SET ROLE regress_settle_a;
SELECT pg_temp.settle_error_of(format('SELECT settle_tokens(%s, 100)', :aid));    -- already settled
RESET ROLE;
SELECT * FROM settle_tokens(:aid2, 50);                                          -- a superuser may
SELECT used FROM get_rate_limit_status('sx_own') WHERE limit_kind = 'tokens' AND scope = 'user';                                -- 150
-- A row recorded without its role (before 1.3): administrators only.
SELECT allocation_id AS aid3 FROM allocate_tokens('sx_own', 10, 'high') \gset
UPDATE token_usage SET granted_to = NULL, charges = NULL WHERE id = :aid3;
SET ROLE regress_settle_a;
SELECT pg_temp.settle_error_of(format('SELECT settle_tokens(%s, 0)', :aid3));
RESET ROLE;
SELECT * FROM settle_tokens(:aid3, 0);                                           -- settled, nothing back
SELECT used FROM get_rate_limit_status('sx_own') WHERE limit_kind = 'tokens' AND scope = 'user';                                -- 160
DROP ROLE regress_settle_member;
DROP ROLE regress_settle_a;
DROP ROLE regress_settle_b;

-- The async log: the grant's charges travel with its queued row.
SET rate_limiter.usage_log = async;
SELECT set_rate_limit('sx_async', 100, '1 day');
SELECT allocation_id AS aid FROM allocate_tokens('sx_async', 100, 'high', 'sx_async_ep') \gset
SELECT tokens_refunded FROM settle_tokens(:aid, 25);
SELECT used FROM get_rate_limit_status('sx_async') WHERE limit_kind = 'tokens' AND scope = 'user';                              -- 25
SELECT octet_length(charges) > 0 AS has_charges, granted_to = current_user AS mine
  FROM token_usage WHERE id = :aid;
-- Counted checks carry their role but no charges.
SELECT allowed FROM check_rate_limit('sx_async');
SELECT rate_limiter_flush_usage();
SELECT charges IS NULL AS no_charges, granted_to IS NOT NULL AS has_role
  FROM token_usage WHERE user_id = 'sx_async' AND priority_level IS NULL;
RESET rate_limiter.usage_log;
RESET rate_limiter.priority_share_high;
RESET rate_limiter.debug_clock;
