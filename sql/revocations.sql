-- Revocations: allocate_tokens denies a session_id listed in
-- token_revocations (reason 'revoked') before any limit is consulted,
-- charging nothing.  Lookups read a shared-memory cache that follows commits
-- (cross-session behaviour: test/specs/revocation_commit.spec; restarts:
-- test/t/004_revocations_restart.pl).  The test server has
-- rate_limiter.max_revocations = 8, so the end of this file fills the cache.
-- Windows are long (3650 days) so that no boundary falls inside the test.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('rv_user', 1000, '3650 days');
SELECT set_user_rate_limit('rv_user', 100, '3650 days');

-- A session that is not revoked is served as usual.
SELECT success, tokens_allocated, reason
  FROM allocate_tokens('rv_user', 10, 'high', session_id => 'sess-1');
SELECT revoke_token('sess-1', 'laptop stolen');
SELECT token, reason FROM token_revocations ORDER BY token;
SELECT is_token_revoked('sess-1') AS revoked_1, is_token_revoked('sess-2') AS revoked_2;

-- Revoked: denied, with no binding limit, nothing charged, no usage row,
-- and counted as a denied decision.
SELECT limit_kind, used FROM get_rate_limit_status('rv_user') WHERE scope = 'user' ORDER BY 1;
SELECT get_performance_metrics() AS m0 \gset
SELECT * FROM allocate_tokens('rv_user', 10, 'high', session_id => 'sess-1');
SELECT get_performance_metrics() AS m1 \gset
SELECT (:'m1'::jsonb->>'total_checks')::bigint - (:'m0'::jsonb->>'total_checks')::bigint AS checks,
       (:'m1'::jsonb->>'denied_requests')::bigint - (:'m0'::jsonb->>'denied_requests')::bigint AS denied;
SELECT limit_kind, used FROM get_rate_limit_status('rv_user') WHERE scope = 'user' ORDER BY 1;
SELECT count(*) AS usage_rows FROM token_usage WHERE session_id = 'sess-1';

-- The user is not revoked: other sessions, and calls without one, go on.
SELECT success, reason FROM allocate_tokens('rv_user', 10, 'high');
SELECT success, reason FROM allocate_tokens('rv_user', 10, 'high', session_id => 'sess-2');
-- Session ids are compared byte for byte.
SELECT success, reason FROM allocate_tokens('rv_user', 10, 'high', session_id => 'SESS-1');

-- Revoking again keeps one row and takes the new reason.
SELECT revoke_token('sess-1', 'confirmed by user');
SELECT token, reason FROM token_revocations ORDER BY token;

-- unrevoke_token says whether there was a revocation to remove.
SELECT unrevoke_token('sess-1') AS removed, unrevoke_token('sess-1') AS removed_again;
SELECT success, reason FROM allocate_tokens('rv_user', 10, 'high', session_id => 'sess-1');

-- Transactions: a revocation counts for everyone at commit; the session
-- that makes it sees it at once; a rollback undoes it.
BEGIN;
SELECT revoke_token('sess-3');
SELECT success, reason FROM allocate_tokens('rv_user', 1, 'high', session_id => 'sess-3');
ROLLBACK;
SELECT success, reason FROM allocate_tokens('rv_user', 1, 'high', session_id => 'sess-3');
SELECT count(*) AS rows FROM token_revocations WHERE token = 'sess-3';

BEGIN;
SAVEPOINT a;
SELECT revoke_token('sess-3');
ROLLBACK TO SAVEPOINT a;
SELECT is_token_revoked('sess-3') AS in_transaction;
COMMIT;
SELECT is_token_revoked('sess-3') AS after_commit;

SELECT revoke_token('sess-4');
BEGIN;
SELECT unrevoke_token('sess-4');
SELECT is_token_revoked('sess-4') AS in_transaction;
ROLLBACK;
SELECT is_token_revoked('sess-4') AS after_rollback;

BEGIN;
SELECT revoke_token('sess-5');
SELECT unrevoke_token('sess-5');
SELECT revoke_token('sess-5');
COMMIT;
SELECT is_token_revoked('sess-5') AS revoked_unrevoked_revoked;

-- Writing the table directly is as good as the functions (the triggers
-- bring every change to the cache).
INSERT INTO token_revocations (token, reason) VALUES ('sess-6', 'direct');
SELECT is_token_revoked('sess-6') AS inserted;
UPDATE token_revocations SET token = 'sess-7' WHERE token = 'sess-6';
SELECT is_token_revoked('sess-6') AS old_token, is_token_revoked('sess-7') AS new_token;
UPDATE token_revocations SET reason = 'only the reason' WHERE token = 'sess-7';
SELECT is_token_revoked('sess-7') AS reason_changed;
DELETE FROM token_revocations WHERE token = 'sess-7';
SELECT is_token_revoked('sess-7') AS deleted;

-- TRUNCATE: the cache reloads the (now empty) table, at commit.
BEGIN;
TRUNCATE token_revocations;
SELECT is_token_revoked('sess-4') AS in_transaction;
ROLLBACK;
SELECT is_token_revoked('sess-4') AS after_rollback;
TRUNCATE token_revocations;
SELECT is_token_revoked('sess-4') AS after_truncate, is_token_revoked('sess-5') AS after_truncate_5;
SELECT state, cached FROM revocation_cache_status();

-- reload_revocations(): for changes made with the triggers disabled.
ALTER TABLE token_revocations DISABLE TRIGGER rate_limiter_revocations_changed;
INSERT INTO token_revocations (token) VALUES ('sess-8');
ALTER TABLE token_revocations ENABLE ALWAYS TRIGGER rate_limiter_revocations_changed;
SELECT is_token_revoked('sess-8') AS before_reload;    -- the cache missed it
SELECT reload_revocations();
SELECT is_token_revoked('sess-8') AS after_reload;

-- Two-phase commit cannot carry the change to the cache.
\set VERBOSITY terse
BEGIN;
SELECT revoke_token('sess-9');
PREPARE TRANSACTION 'rv_prepared';
SELECT is_token_revoked('sess-9') AS prepared;

-- Bad arguments: the same rules and SQLSTATEs as every id.
SELECT revoke_token(NULL);
SELECT revoke_token('');
SELECT revoke_token(repeat('t', 256));
SELECT unrevoke_token(NULL);
SELECT unrevoke_token('');
SELECT is_token_revoked(NULL);
SELECT is_token_revoked(repeat('t', 256));
DO $$
DECLARE
  probes text[] := ARRAY[
    $q$SELECT revoke_token(NULL)$q$,
    $q$SELECT revoke_token('')$q$,
    $q$SELECT revoke_token(repeat('t', 256))$q$,
    $q$SELECT unrevoke_token(NULL)$q$,
    $q$SELECT unrevoke_token('')$q$,
    $q$SELECT unrevoke_token(repeat('t', 256))$q$,
    $q$SELECT is_token_revoked(NULL)$q$,
    $q$SELECT is_token_revoked('')$q$,
    $q$SELECT is_token_revoked(repeat('t', 256))$q$];
  q text;
BEGIN
  FOREACH q IN ARRAY probes LOOP
    RAISE NOTICE '% -> %', q, (SELECT code FROM pg_temp.error_of(q));
  END LOOP;
END $$;
-- The longest token works.
SELECT revoke_token(repeat('t', 255));
SELECT is_token_revoked(repeat('t', 255));
SELECT unrevoke_token(repeat('t', 255));

-- Privileges: everyone may ask (allocate_tokens tells them anyway); only
-- roles granted EXECUTE may revoke, without any table privilege.
SELECT revoke_token('sess-10');
CREATE ROLE rv_app;
SET ROLE rv_app;
SELECT is_token_revoked('sess-10');
SELECT success, reason FROM allocate_tokens('rv_user', 1, 'high', session_id => 'sess-10');
SELECT revoke_token('sess-11');
SELECT unrevoke_token('sess-10');
SELECT reload_revocations();
SELECT * FROM revocation_cache_status();
INSERT INTO token_revocations (token) VALUES ('sess-11');
DELETE FROM token_revocations;
RESET ROLE;
CREATE ROLE rv_admin;
GRANT EXECUTE ON FUNCTION revoke_token(text, text), unrevoke_token(text) TO rv_admin;
SET ROLE rv_admin;
SELECT revoke_token('sess-11', 'by rv_admin');
SELECT unrevoke_token('sess-10');
SELECT reload_revocations();                       -- not granted
SELECT rate_limiter_check_id('token', 'x');        -- internal
RESET ROLE;
SELECT token, reason FROM token_revocations ORDER BY token;
DROP OWNED BY rv_admin;
DROP ROLE rv_admin;
DROP ROLE rv_app;
\set VERBOSITY default

-- A full cache (8 entries here).  Revocations that do not fit are still
-- enforced: the installation is marked overflowed and a token the cache
-- does not hold is looked up in the table.
TRUNCATE token_revocations;
SELECT is_token_revoked('full-0');                 -- loads the empty table
SELECT count(*) AS revoked FROM (SELECT revoke_token('full-' || g) FROM generate_series(1, 10) g) r;
SELECT state, cached, capacity FROM revocation_cache_status();   -- full at commit
SELECT count(*) FILTER (WHERE is_token_revoked('full-' || g)) AS revoked_of_12
  FROM generate_series(1, 12) g;
SELECT count(*) FILTER (WHERE NOT a.success AND a.reason = 'revoked') AS denied_of_12
  FROM generate_series(1, 12) g,
       LATERAL allocate_tokens('rv_user', 1, 'high', session_id => 'full-' || g) a;
-- Loading a table larger than the cache overflows the same way.
SELECT reload_revocations();
SELECT state FROM revocation_cache_status();
SELECT count(*) FILTER (WHERE is_token_revoked('full-' || g)) AS revoked_of_12
  FROM generate_series(1, 12) g;
SELECT state, cached, capacity FROM revocation_cache_status();
-- Unrevoking makes room: the installation reloads, and everything fits again.
SELECT unrevoke_token('full-1'), unrevoke_token('full-2');
SELECT count(*) FILTER (WHERE is_token_revoked('full-' || g)) AS revoked_of_12
  FROM generate_series(1, 12) g;
SELECT state, cached, capacity FROM revocation_cache_status();
TRUNCATE token_revocations;

-- check_rate_limit and enforce_rate_limit take a session_id too.
SELECT revoke_token('chk-session', 'leaked');
SELECT allowed, reason, "limit" FROM check_rate_limit('rv_user', NULL, 'chk-session');
SELECT allowed, reason FROM check_rate_limit('rv_user', NULL, 'other-session');
\set VERBOSITY terse
SELECT enforce_rate_limit('rv_user', NULL, 'chk-session');
\set VERBOSITY default
SELECT unrevoke_token('chk-session');
SELECT allowed, reason FROM check_rate_limit('rv_user', NULL, 'chk-session');
