-- Security: what an application role and a delegated administrator may
-- do; the privilege model, checked from the catalog so that a new function
-- or table of the extension is covered without editing this file; and
-- SECURITY DEFINER code under a hostile search_path.
\i test/sql_helpers/fresh_start.sql
-- Least privilege: an application role can allocate and check (its usage
-- rows are written on its behalf) but cannot change limits, reset counters
-- or write the tables directly.
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
SELECT rate_limiter_upsert_limit('tokens', 'priv_user', NULL, 1, '1 day', 'fixed_window', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);   -- internal
SELECT rate_limiter_schedule_reset('user', 'priv_user', NULL);          -- internal
UPDATE token_limits SET max_tokens_per_period = 1;        -- no table privilege
\set VERBOSITY default
RESET ROLE;
SELECT max_tokens_per_period FROM token_limits WHERE user_id = 'priv_user';
DROP OWNED BY rl_admin;
DROP ROLE rl_admin;
DROP ROLE rl_app;

\set VERBOSITY terse
\set SHOW_CONTEXT never

-- Every object of the extension, from pg_depend.
CREATE VIEW sec_functions AS
  SELECT p.oid, p.oid::regprocedure::text AS signature, p.proname, p.prosecdef, p.proconfig,
         l.lanname, p.prorettype = 'trigger'::regtype AS is_trigger
  FROM pg_proc p
  JOIN pg_language l ON l.oid = p.prolang
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
  WHERE e.extname = 'rate_limiter';
CREATE VIEW sec_tables AS
  SELECT c.oid::regclass AS tab, c.relkind
  FROM pg_class c
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
  WHERE e.extname = 'rate_limiter';
GRANT SELECT ON sec_functions, sec_tables TO PUBLIC;

-- What PUBLIC may execute: exactly the hot path.
CREATE ROLE rl_nobody;
SELECT proname FROM sec_functions
WHERE has_function_privilege('rl_nobody', oid, 'EXECUTE') ORDER BY 1;

-- Every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp
-- (pg_temp last), and so does every SQL/plpgsql function: no rows.
SELECT signature, proconfig FROM sec_functions
WHERE (prosecdef OR lanname <> 'c')
  AND (proconfig IS NULL OR NOT 'search_path=pg_catalog, pg_temp' = ANY (proconfig));

-- PUBLIC has no table privilege but SELECT on rate_limiter_metrics.
SELECT tab, relkind, p.privilege_type
FROM sec_tables, LATERAL unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(privilege_type)
WHERE relkind IN ('r', 'v') AND has_table_privilege('rl_nobody', tab, p.privilege_type)
ORDER BY 1, 3;

-- Every other function raises 42501 for the unprivileged role, whatever
-- its arguments (NULLs of the right types).
SET ROLE rl_nobody;
DO $$
DECLARE
  f record;
  e record;
BEGIN
  FOR f IN SELECT * FROM sec_functions
           WHERE NOT has_function_privilege(oid, 'EXECUTE') ORDER BY signature LOOP
    SELECT * INTO e FROM pg_temp.error_of(
      format('SELECT %s(%s)', f.oid::regproc,
             (SELECT string_agg('NULL::' || format_type(t, NULL), ', ' ORDER BY i)
              FROM unnest((SELECT proargtypes::oid[] FROM pg_proc WHERE oid = f.oid))
                   WITH ORDINALITY AS a(t, i))));
    IF e.code = 'no error' THEN
      RAISE NOTICE '% -> no error', f.signature;
    ELSIF e.code = '42501' THEN
      RAISE NOTICE '% -> 42501', f.proname;
    ELSE
      RAISE NOTICE '% -> % %', f.signature, e.code, e.message;
    END IF;
  END LOOP;
END $$;

-- Direct writes to every extension table raise 42501.
DO $$
DECLARE
  t record;
  stmt text;
BEGIN
  FOR t IN SELECT tab, (SELECT quote_ident(attname) FROM pg_attribute
                        WHERE attrelid = tab AND attnum = 1) AS col
           FROM sec_tables WHERE relkind = 'r' ORDER BY tab::text LOOP
    FOREACH stmt IN ARRAY ARRAY[
        format('INSERT INTO %s DEFAULT VALUES', t.tab),
        format('UPDATE %s SET %s = %s', t.tab, t.col, t.col),
        format('DELETE FROM %s', t.tab),
        format('TRUNCATE %s', t.tab)] LOOP
      RAISE NOTICE '% -> %', stmt, (SELECT code FROM pg_temp.error_of(stmt));
    END LOOP;
  END LOOP;
END $$;

-- The hot path works, and emergency access is refused.
SELECT success FROM allocate_tokens('sec_user', 1, 'high');
SELECT success FROM allocate_tokens('sec_user', 1, 'high', context => '{"emergency_override": true}');
SELECT rate_limiter_emergency_access();
RESET ROLE;

-- A hostile search_path.  The attacker owns a schema it puts first on its
-- search_path, with a shadow token_limits table and an = operator for text
-- that raises if it is ever called.  It has been granted set_rate_limit.
CREATE ROLE rl_evil;
CREATE SCHEMA evil AUTHORIZATION rl_evil;
GRANT EXECUTE ON FUNCTION set_rate_limit, remove_rate_limit(text, text) TO rl_evil;
-- More revoked tokens than the cache holds (rate_limiter.max_revocations =
-- 8), so is_token_revoked asks token_revocations with SQL as the owner.
SELECT count(revoke_token('sec_tok_' || i, 'security test')) FROM generate_series(1, 9) i;
SET ROLE rl_evil;
CREATE FUNCTION evil.texteq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked: evil.texteq called as %', current_user; END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq);
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked: evil.lower called as %', current_user; END $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked: evil.now called as %', current_user; END $$;
CREATE TABLE evil.token_limits (id bigint, user_id text, api_endpoint text);
CREATE TABLE evil.request_limits (id bigint, user_id text, api_endpoint text);
CREATE TABLE evil.token_usage (id bigint, user_id text, tokens_used bigint);
CREATE TABLE evil.token_revocations (token text);
INSERT INTO evil.token_revocations VALUES ('sec_tok_x');
SET search_path = evil, pg_catalog, public;
SELECT 'a'::text = 'b'::text;   -- the trap is armed
SELECT public.set_rate_limit('sec_evil_user', 7, '1 day');
SELECT success, "limit" FROM public.allocate_tokens('sec_evil_user', 1, 'high');
SELECT allowed FROM public.check_rate_limit('sec_evil_user');
SELECT public.is_token_revoked('sec_tok_3') AS revoked, public.is_token_revoked('sec_tok_x') AS not_revoked;
SELECT (SELECT count(*) FROM evil.token_limits) AS shadow_limits,
       (SELECT count(*) FROM evil.token_usage) AS shadow_usage;
RESET search_path;
RESET ROLE;
-- The real tables got the writes.
SELECT user_id, tokens_used FROM token_usage WHERE user_id = 'sec_evil_user' ORDER BY id;
SELECT user_id, max_tokens_per_period FROM token_limits WHERE user_id = 'sec_evil_user';
SET ROLE rl_evil;
SET search_path = evil, pg_catalog, public;
SELECT public.remove_rate_limit('sec_evil_user');
RESET search_path;
RESET ROLE;
SELECT count(*) FROM token_limits WHERE user_id = 'sec_evil_user';

SELECT count(unrevoke_token('sec_tok_' || i)) FROM generate_series(1, 9) i;
DROP SCHEMA evil CASCADE;
REVOKE EXECUTE ON FUNCTION set_rate_limit, remove_rate_limit(text, text) FROM rl_evil;
DROP ROLE rl_evil;
DROP ROLE rl_nobody;
DROP VIEW sec_functions, sec_tables;
\set VERBOSITY default
