-- Hierarchies, committed: links and limits in the shared rule table (a new
-- session reads them from shared memory, and names an ancestor it knows by
-- scope only), settle's refund to every level at commit, the TRUNCATE path
-- (links read from the table until the reload), and the errors.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('h_tenant', 1000, '3650 days');
SELECT set_rate_limit('h_team', 400, '3650 days');
SELECT set_rate_limit('h_team', 100, '3650 days', api_endpoint => 'chat');
SELECT set_parent('h_team', 'h_tenant');
SELECT set_parent('h_alice', 'h_team');
SELECT set_parent('h_bob', 'h_team');
SELECT child_id, parent_id FROM rate_limit_parents ORDER BY child_id;
\c
-- A new backend: the links and the owners' ids come from shared memory,
-- without SQL.
SELECT (get_performance_metrics()->>'rule_sql_lookups')::bigint AS sql_before \gset
SELECT tokens_allocated, tokens_remaining, "limit", scope, limit_owner
  FROM allocate_tokens('h_alice', 1000, 'high');
SELECT tokens_allocated, "limit", scope, limit_owner
  FROM allocate_tokens('h_bob', 1000, 'high', 'chat');
SELECT (get_performance_metrics()->>'rule_sql_lookups')::bigint - :sql_before AS sql_lookups;
SELECT scope, api_endpoint, "limit", used, limit_owner FROM get_rate_limit_status('h_bob');

-- settle_tokens gives back to every level when it commits; the charges
-- were recorded with the owners' ids.
SELECT allocation_id AS grant_id, tokens_allocated FROM allocate_tokens('h_alice', 40, 'high') \gset
SELECT * FROM settle_tokens(:grant_id, 10);
SELECT get_byte(charges, 0) AS charges_version FROM token_usage WHERE id = :grant_id;
SELECT limit_owner, used FROM get_rate_limit_status('h_alice') WHERE scope = 'user' ORDER BY "limit";

-- A committed remove_parent: the team's limits no longer apply.
SELECT remove_parent('h_bob');
SELECT remove_parent('h_bob');
\c
SELECT tokens_allocated, limit_owner FROM allocate_tokens('h_bob', 7, 'high');
SELECT count(*) FROM get_rate_limit_status('h_bob');

-- TRUNCATE: until the commit reloads the rules, this transaction reads its
-- links from the table; after it, nobody has a parent.
BEGIN;
TRUNCATE rate_limit_parents;
SELECT tokens_allocated, limit_owner FROM allocate_tokens('h_alice', 2, 'high');
INSERT INTO rate_limit_parents (child_id, parent_id) VALUES ('h_alice', 'h_tenant');
SELECT tokens_allocated, limit_owner FROM allocate_tokens('h_alice', 2000, 'high');
ROLLBACK;
SELECT tokens_allocated, limit_owner FROM allocate_tokens('h_alice', 2000, 'high');

-- Errors (\c dropped the probe with the session's temporary schema).
\set ECHO none
\i test/sql_helpers/error_of.sql
\set ECHO all
SELECT code, message FROM pg_temp.error_of($$SELECT set_parent('h_tenant', 'h_alice')$$);
SELECT code, message, detail FROM pg_temp.error_of($$SELECT set_parent('h_tenant', 'h_tenant')$$);
SELECT code, message FROM pg_temp.error_of($$SELECT set_parent('', 'h_tenant')$$);
SELECT code, message FROM pg_temp.error_of($$SELECT set_parent(repeat('x', 256), 'h_tenant')$$);
SELECT code, message FROM pg_temp.error_of($$SELECT remove_parent(NULL)$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT code, message FROM pg_temp.error_of($$SELECT set_parent('h_carol', 'h_team')$$);
ROLLBACK;
-- Nine levels above h_alice (h_team, h_tenant, p1 .. p7) are one too many.
SELECT set_parent('h_tenant', 'p1');
SELECT set_parent('p' || i, 'p' || (i + 1)) FROM generate_series(1, 5) i;
SELECT code, message, detail FROM pg_temp.error_of($$SELECT set_parent('p6', 'p7')$$);
-- A cycle written past set_parent (the table directly) cannot make a call
-- loop: the walk stops at a scope it has seen, and so does the status.
INSERT INTO rate_limit_parents (child_id, parent_id) VALUES ('p1', 'h_team')
  ON CONFLICT (child_id) DO UPDATE SET parent_id = EXCLUDED.parent_id;
SELECT tokens_allocated, limit_owner FROM allocate_tokens('h_alice', 4, 'high');
SELECT count(*) FROM get_rate_limit_status('h_alice');

-- A quota alert for an ancestor's limit is the ancestor's: a team's
-- request limit crossing 80% is reported for the team, not the member.
DELETE FROM rate_limit_parents;
SELECT set_user_rate_limit('h_team2', 10, '3650 days');
SELECT set_parent('h_dave', 'h_team2');
SELECT count(*) FILTER (WHERE (c).allowed) AS allowed
  FROM (SELECT check_rate_limit('h_dave') AS c FROM generate_series(1, 8) OFFSET 0) s;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT kind, user_id, scope FROM rate_limit_alerts WHERE user_id IN ('h_dave', 'h_team2') ORDER BY id;
