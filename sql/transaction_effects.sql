-- One transaction-effects log: revocations, queued usage rows and counter
-- adjustments recorded in one transaction follow it together, through
-- savepoints, commit, rollback and PREPARE.  Self-contained: its own users,
-- sessions and settings, all removed at the end.  Windows are long so that
-- no boundary falls inside the test.
\i test/sql_helpers/fresh_start.sql
SET rate_limiter.usage_log = async;
SELECT set_rate_limit('te_user', 1000, '3650 days');
SELECT set_rate_limit('te_reset', 1000, '3650 days');
SELECT tokens_allocated FROM allocate_tokens('te_reset', 300, 'high');
SELECT rate_limiter_flush_usage();

-- A savepoint rolled back takes back, at once, everything recorded in it:
-- the revocation, the refund_on_abort grant and its queued row, the reset.
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('te_user', 100, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT s1;
SELECT revoke_token('te-sess');
SELECT tokens_allocated FROM allocate_tokens('te_user', 200, 'high', context => '{"refund_on_abort": true}');
SELECT reset_rate_limit('te_reset');
-- Inside the savepoint the session sees its own revocation.
SELECT success, reason FROM allocate_tokens('te_user', 1, 'high', session_id => 'te-sess');
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
ROLLBACK TO SAVEPOINT s1;
-- The 200 are refunded at once; the revocation and the reset are gone.
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
SELECT success FROM allocate_tokens('te_user', 1, 'high', session_id => 'te-sess');
COMMIT;
SELECT rate_limiter_flush_usage();
-- After commit: 100 + 1 charged, rows for exactly those two grants; the
-- reset did not happen; the session is not revoked.
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
SELECT tokens_used FROM token_usage WHERE user_id = 'te_user' ORDER BY id;
SELECT used FROM get_rate_limit_status('te_reset') WHERE scope = 'user';
SELECT is_token_revoked('te-sess') AS revoked;

-- Commit applies every kind: the revocation, the reset, the rows.
BEGIN;
SELECT revoke_token('te-sess');
SELECT reset_rate_limit('te_reset');
SELECT tokens_allocated FROM allocate_tokens('te_user', 50, 'high', context => '{"refund_on_abort": true}');
COMMIT;
SELECT rate_limiter_flush_usage();
SELECT is_token_revoked('te-sess') AS revoked;
SELECT used FROM get_rate_limit_status('te_reset') WHERE scope = 'user';
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
SELECT count(*) AS rows FROM token_usage WHERE user_id = 'te_user';

-- Rollback undoes every kind.
BEGIN;
SELECT unrevoke_token('te-sess');
SELECT tokens_allocated FROM allocate_tokens('te_user', 70, 'high', context => '{"refund_on_abort": true}');
SELECT tokens_allocated FROM allocate_tokens('te_reset', 10, 'high');
SELECT reset_rate_limit('te_reset');
ROLLBACK;
SELECT rate_limiter_flush_usage();
SELECT is_token_revoked('te-sess') AS revoked;
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
SELECT count(*) AS rows FROM token_usage WHERE user_id = 'te_user';
-- The grant without refund_on_abort keeps its charge; the reset did not run.
SELECT used FROM get_rate_limit_status('te_reset') WHERE scope = 'user';

-- Nested savepoints: an inner rollback keeps the outer's effects, a
-- released inner savepoint's effects belong to the outer one.
BEGIN;
SAVEPOINT outer_sp;
SELECT tokens_allocated FROM allocate_tokens('te_user', 5, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT inner_sp;
SELECT tokens_allocated FROM allocate_tokens('te_user', 7, 'high', context => '{"refund_on_abort": true}');
RELEASE SAVEPOINT inner_sp;
SAVEPOINT inner2;
SELECT tokens_allocated FROM allocate_tokens('te_user', 11, 'high', context => '{"refund_on_abort": true}');
ROLLBACK TO SAVEPOINT inner2;
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
ROLLBACK TO SAVEPOINT outer_sp;
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
SELECT tokens_allocated FROM allocate_tokens('te_user', 13, 'high', context => '{"refund_on_abort": true}');
COMMIT;
SELECT rate_limiter_flush_usage();
SELECT used FROM get_rate_limit_status('te_user') WHERE scope = 'user';
SELECT tokens_used FROM token_usage WHERE user_id = 'te_user' ORDER BY id;

-- PREPARE: one rule for every kind.  Refused while a revocation or a
-- commit-time counter effect is pending, even when recorded alongside
-- others; allowed once a savepoint rollback removed them.
\set VERBOSITY terse
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('te_user', 1, 'high', context => '{"refund_on_abort": true}');
SELECT revoke_token('te-sess-2');
PREPARE TRANSACTION 'te_prepared';
BEGIN;
SELECT reset_rate_limit('te_reset');
PREPARE TRANSACTION 'te_prepared';
\set VERBOSITY default
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('te_user', 2, 'high', context => '{"refund_on_abort": true}');
SAVEPOINT s;
SELECT revoke_token('te-sess-2');
SELECT reset_rate_limit('te_reset');
ROLLBACK TO SAVEPOINT s;
PREPARE TRANSACTION 'te_prepared';
COMMIT PREPARED 'te_prepared';
SELECT rate_limiter_flush_usage();
SELECT is_token_revoked('te-sess-2') AS revoked;
SELECT tokens_used FROM token_usage WHERE user_id = 'te_user' ORDER BY id;

-- Rows written early while the log is compacted under them: after 4096
-- revocation changes, recorded before the calls, a trigger on token_usage
-- revokes a session for each row, which folds the revocations into one
-- reload and moves the calls' entries.  Each row is written
-- once, and the commit queues none of them again.
CREATE FUNCTION te_revoke_on_usage() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO token_revocations (token) VALUES ('te-trig-' || NEW.id) ON CONFLICT DO NOTHING;
  RETURN NEW;
END $$;
CREATE TRIGGER te_revoke_on_usage AFTER INSERT ON token_usage
  FOR EACH ROW EXECUTE FUNCTION te_revoke_on_usage();
BEGIN;
INSERT INTO token_revocations (token) SELECT 'te-bulk-' || g FROM generate_series(1, 4096) g;
SELECT sum(tokens_allocated) AS granted
  FROM generate_series(1, 3) g,
       LATERAL allocate_tokens('te_user', 10 + 0 * g, 'high', context => '{"refund_on_abort": true}');
SELECT rate_limiter_flush_usage();
SELECT count(*) AS rows_in_transaction FROM token_usage WHERE user_id = 'te_user' AND tokens_used = 10;
COMMIT;
SELECT rate_limiter_flush_usage();
SELECT count(*) AS rows_after_commit FROM token_usage WHERE user_id = 'te_user' AND tokens_used = 10;
SELECT is_token_revoked('te-bulk-4096') AS bulk_revoked,
       (SELECT count(*) FROM token_revocations WHERE token LIKE 'te-trig-%') AS trigger_revocations;
DROP TRIGGER te_revoke_on_usage ON token_usage;
DROP FUNCTION te_revoke_on_usage();
DELETE FROM token_revocations WHERE token LIKE 'te-bulk-%' OR token LIKE 'te-trig-%';

-- Clean up.
SELECT unrevoke_token('te-sess');
SELECT remove_rate_limit('te_user');
SELECT remove_rate_limit('te_reset');
DELETE FROM token_usage WHERE user_id IN ('te_user', 'te_reset');
RESET rate_limiter.usage_log;
