-- Limit changes and resets follow the transaction: other sessions see them
-- at commit (see the isolation specs); a rollback undoes them.  Within its
-- own transaction a session sees its own changes.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('x_user', 100, '3650 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('x_user', 10, 'high');

BEGIN;
SELECT set_rate_limit('x_user', 1000, '3650 days');
SELECT "limit", tokens_remaining FROM allocate_tokens('x_user', 10, 'high');   -- own change visible
ROLLBACK;
SELECT "limit", tokens_remaining FROM allocate_tokens('x_user', 10, 'high');   -- back to 100

-- A savepoint rolled back takes its rule change with it.
BEGIN;
SAVEPOINT a;
SELECT set_rate_limit('x_user', 5000, '3650 days');
ROLLBACK TO SAVEPOINT a;
SELECT "limit" FROM allocate_tokens('x_user', 1, 'high');
COMMIT;

-- reset_rate_limit clears the window's usage at commit, not before.
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'user';
BEGIN;
SELECT reset_rate_limit('x_user');
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'user';  -- still counted
COMMIT;
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'user';  -- cleared

SELECT tokens_allocated FROM allocate_tokens('x_user', 30, 'high');
BEGIN;
SELECT reset_rate_limit('x_user');
ROLLBACK;
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'user';  -- rollback: nothing cleared

BEGIN;
SAVEPOINT s;
SELECT reset_rate_limit('x_user');
ROLLBACK TO SAVEPOINT s;
SAVEPOINT t;
SELECT reset_rate_limit('x_user', 'chat');
RELEASE SAVEPOINT t;
COMMIT;
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'user';  -- only the rolled-back reset touched x_user

-- A user reset covers the user's endpoint counters; an endpoint reset only that one.
SELECT set_rate_limit('x_user', 50, '3650 days', 'chat');
SELECT set_rate_limit('x_user', 50, '3650 days', 'code');
SELECT tokens_allocated FROM allocate_tokens('x_user', 10, 'high', 'chat');
SELECT tokens_allocated FROM allocate_tokens('x_user', 10, 'high', 'code');
SELECT reset_rate_limit('x_user', 'chat');
SELECT scope, api_endpoint, used FROM get_rate_limit_status('x_user') WHERE scope <> 'endpoint' ORDER BY 1, 2;
SELECT reset_rate_limit('x_user');
SELECT scope, api_endpoint, used FROM get_rate_limit_status('x_user') WHERE scope <> 'endpoint' ORDER BY 1, 2;

-- Per-API counters are reset with reset_api_rate_limit.
SELECT set_api_rate_limit('x_api', 10, '3650 days');
SELECT allowed FROM check_rate_limit('x_user', 'x_api');
SELECT allowed FROM check_rate_limit('y_user', 'x_api');
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'endpoint' AND api_endpoint = 'x_api';
SELECT reset_api_rate_limit('x_api');
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'endpoint' AND api_endpoint = 'x_api';

-- Two-phase commit cannot carry these effects to another session.
BEGIN;
SELECT set_rate_limit('x_user', 7, '3650 days');
PREPARE TRANSACTION 'rl_prepared';
BEGIN;
SELECT reset_rate_limit('x_user');
PREPARE TRANSACTION 'rl_prepared';
SELECT "limit" FROM allocate_tokens('x_user', 1, 'high');
-- A reset undone by a savepoint leaves nothing pending: PREPARE is allowed,
-- and the session's next reset works normally.
BEGIN;
SAVEPOINT p;
SELECT reset_rate_limit('x_user');
ROLLBACK TO SAVEPOINT p;
PREPARE TRANSACTION 'rl_nothing_pending';
COMMIT PREPARED 'rl_nothing_pending';
SELECT tokens_allocated FROM allocate_tokens('x_user', 4, 'high');
BEGIN;
SELECT reset_rate_limit('x_user');
SELECT reset_rate_limit('x_user', 'chat');
COMMIT;
SELECT used FROM get_rate_limit_status('x_user') WHERE scope = 'user';

-- A usage row written in a rolled-back transaction disappears, and so does
-- its charge (sync mode: a charge and its row share one fate, see
-- usage_log; in async mode both would stay).
SELECT used AS used_before FROM get_rate_limit_status('x_user') WHERE scope = 'user' \gset
BEGIN;
SELECT tokens_allocated FROM allocate_tokens('x_user', 2, 'high', session_id => 'rolled_back');
ROLLBACK;
SELECT used - :used_before AS charged FROM get_rate_limit_status('x_user') WHERE scope = 'user';
SELECT count(*) FROM token_usage WHERE session_id = 'rolled_back';

-- A read-only transaction cannot record usage, so nothing is charged.
BEGIN READ ONLY;
SELECT * FROM allocate_tokens('x_user', 1, 'high');
ROLLBACK;
SELECT used - :used_before AS charged FROM get_rate_limit_status('x_user') WHERE scope = 'user';
