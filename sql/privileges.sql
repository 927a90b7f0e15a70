-- Least privilege: an application role can allocate and check (its usage
-- rows are written on its behalf) but cannot change limits, reset counters
-- or write the tables directly.
\i test/sql_helpers/fresh_start.sql
CREATE ROLE rl_app;
SELECT set_rate_limit('priv_user', 100, '3650 days');
SET ROLE rl_app;
SELECT success, tokens_allocated FROM allocate_tokens('priv_user', 10, 'high');
SELECT allowed FROM check_rate_limit('priv_user');
SELECT allowed FROM enforce_rate_limit('priv_user');
SELECT get_performance_metrics() ? 'total_checks' AS metrics_readable;
\set VERBOSITY terse
SELECT set_rate_limit('priv_user', 100000);
SELECT set_user_rate_limit('priv_user', 100000, '1 day');
SELECT set_api_rate_limit('x', 1, '1 day');
SELECT set_default_rate_limit(1);
SELECT remove_rate_limit('priv_user');
SELECT reset_rate_limit('priv_user');
SELECT reload_rate_limits();
SELECT rate_limiter_schedule_reset('user', 'priv_user', NULL);
SELECT * FROM get_rate_limit_status('priv_user');
SELECT get_rate_limit_history('priv_user');
INSERT INTO token_limits (user_id, max_tokens_per_period) VALUES ('priv_user', 999999);
UPDATE token_limits SET max_tokens_per_period = 999999;
DELETE FROM token_usage;
INSERT INTO token_usage (user_id, tokens_used) VALUES ('priv_user', -5);
SELECT count(*) FROM token_usage;
RESET ROLE;
\set VERBOSITY default
SELECT user_id, tokens_used, priority_level FROM token_usage WHERE user_id = 'priv_user' ORDER BY id;

-- Administration is delegated function by function: a role granted EXECUTE
-- on an admin function can do exactly that, without any table privilege.
CREATE ROLE rl_admin;
GRANT EXECUTE ON FUNCTION set_rate_limit,
                          reset_rate_limit(text, text),
                          get_rate_limit_status(text),
                          get_rate_limit_history(text, integer) TO rl_admin;
SET ROLE rl_admin;
SELECT set_rate_limit('priv_user', 500, '3650 days');
SELECT reset_rate_limit('priv_user');
SELECT scope, "limit", used FROM get_rate_limit_status('priv_user') WHERE scope = 'user';
SELECT (get_rate_limit_history('priv_user'))->'total_requests' AS total_requests;
\set VERBOSITY terse
SELECT set_user_rate_limit('priv_user', 1, '1 day');      -- not granted
SELECT rate_limiter_upsert_limit('tokens', 'priv_user', NULL, 1, '1 day', 'fixed_window', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);   -- internal
SELECT rate_limiter_schedule_reset('user', 'priv_user', NULL);          -- internal
UPDATE token_limits SET max_tokens_per_period = 1;        -- no table privilege
\set VERBOSITY default
RESET ROLE;
SELECT max_tokens_per_period FROM token_limits WHERE user_id = 'priv_user';
DROP OWNED BY rl_admin;
DROP ROLE rl_admin;
DROP ROLE rl_app;
