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
-- that carry an id are shown with the id masked.
CREATE FUNCTION pg_temp.error_of(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE query;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'allocation [0-9]+', 'allocation N', 'g');
END $$;
SELECT pg_temp.error_of(format('SELECT settle_tokens(%s, 10)', :first_id));
\set VERBOSITY terse
SELECT settle_tokens(-1, 10);
SELECT allocation_id AS second_id FROM allocate_tokens('s_user', 50, 'high') \gset
SELECT pg_temp.error_of(format('SELECT settle_tokens(%s, 51)', :second_id));
SELECT settle_tokens(:second_id, -1);
SELECT settle_tokens(NULL, 1);
SELECT settle_tokens(:second_id, NULL);
-- A check_rate_limit row is not an allocation.
SELECT set_user_rate_limit('s_req', 10, '3650 days');
SELECT allowed FROM check_rate_limit('s_req');
SELECT pg_temp.error_of('SELECT settle_tokens((SELECT max(id) FROM token_usage WHERE user_id = ''s_req''), 0)');
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
-- transaction, and so does the charge, see usage_row_fate).
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
