-- The extension installs (the test harness preloads the library), owns its
-- objects, and starts empty with no default limit.
\i test/sql_helpers/fresh_start.sql
SELECT extname, extversion, extrelocatable FROM pg_extension WHERE extname = 'rate_limiter';

SELECT count(*) AS config_tables
  FROM pg_extension e, unnest(e.extconfig) AS c(relid)
 WHERE e.extname = 'rate_limiter';
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS x(relid) JOIN pg_class c ON c.oid = x.relid
 WHERE e.extname = 'rate_limiter' ORDER BY 1;

SELECT count(*) FROM token_limits;
SELECT count(*) FROM request_limits;
SELECT count(*) FROM token_usage;
SELECT count(*) FROM token_revocations;

-- Settings and their defaults (max_keys is set small by the test config).
SELECT name, setting, unit, context FROM pg_settings
 WHERE name LIKE 'rate_limiter.%' ORDER BY name;

-- A fresh installation has no default limit: anyone is allowed.
SELECT success, tokens_allocated, tokens_remaining, allocation_strategy, reason
  FROM allocate_tokens('install_user', 5, 'low');
SELECT allowed, "limit", remaining, reason FROM check_rate_limit('install_user');

-- Every SQL object explains itself.
SELECT p.proname
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'rate_limiter'
 WHERE obj_description(p.oid, 'pg_proc') IS NULL;
