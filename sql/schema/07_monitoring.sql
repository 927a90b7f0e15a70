------------------------------------------------------------------------------
-- Metrics: get_performance_metrics() (counters, gauges, latency
-- percentiles, a moving average, lock waits); the counters can be reset.
------------------------------------------------------------------------------
CREATE FUNCTION get_performance_metrics() RETURNS jsonb
AS 'MODULE_PATHNAME', 'get_performance_metrics' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION get_performance_metrics() IS
  'Cluster-wide counters and gauges from shared memory; times are in seconds (README, "Monitoring")';

CREATE FUNCTION reset_performance_metrics() RETURNS void
AS 'MODULE_PATHNAME', 'reset_performance_metrics' LANGUAGE C VOLATILE;
-- Administrators only: a reset changes what every monitoring client sees.
REVOKE ALL ON FUNCTION reset_performance_metrics() FROM PUBLIC;
COMMENT ON FUNCTION reset_performance_metrics() IS
  'Zeroes the counters and latency statistics of get_performance_metrics() (not the gauges)';

CREATE VIEW rate_limiter_metrics AS
  SELECT m.key AS name, (m.value #>> '{}')::numeric AS value
    FROM jsonb_each(get_performance_metrics()) m;
-- The same figures get_performance_metrics() gives to everyone.
GRANT SELECT ON rate_limiter_metrics TO PUBLIC;
COMMENT ON VIEW rate_limiter_metrics IS
  'get_performance_metrics() as rows (name, value), for monitoring queries';

------------------------------------------------------------------------------
-- rate_limiter_counters: the live counters in shared memory.  Shared memory
-- holds keyed hashes only, so the view computes the key of every candidate
-- counter and joins: each rule row's own scope, and for the default rules
-- every user with a token_usage row in the last two longest default windows
-- (two: a sliding window still counts the previous window).  Counters that
-- match no candidate (other databases, users whose usage rows are gone or
-- still queued, rules deleted since) are not shown.
------------------------------------------------------------------------------
-- Counter keys carry the limit's shape (algorithm, window): a window change
-- starts a new counter, so one made in a transaction that rolls back does
-- not wipe the committed counter.  The view computes keys the same way.
-- The three functions are open to PUBLIC, so that GRANT SELECT ON
-- rate_limiter_counters TO monitoring works (a view calls its functions as
-- the querying role): rate_limiter_counter_slots() itself requires SELECT
-- on the view, the other two only compute from their arguments.
CREATE FUNCTION rate_limiter_counter_key(scope text, user_id text, api_endpoint text,
                                         limit_kind text, role text, algorithm text,
                                         window_duration interval)
RETURNS text AS 'MODULE_PATHNAME', 'rate_limiter_counter_key' LANGUAGE C STABLE;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_key(text, text, text, text, text, text, interval) TO PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_key(text, text, text, text, text, text, interval) IS
  'Internal: the shared-memory key of one counter of this installation, in hex';

CREATE FUNCTION rate_limiter_counter_slots(
  OUT key text, OUT algorithm text, OUT window_micros bigint, OUT "limit" bigint, OUT state bytea)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'rate_limiter_counter_slots' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_slots() TO PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_slots() IS
  'Internal: every live counter slot of this database in shared memory, read partition by partition (requires SELECT on rate_limiter_counters)';

CREATE FUNCTION rate_limiter_counter_usage(
  state bytea, rule_algorithm text, rule_limit bigint, rule_window interval, rule_burst bigint,
  OUT used bigint, OUT "limit" bigint, OUT remaining bigint, OUT window_start timestamptz,
  OUT reset_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'rate_limiter_counter_usage' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_usage(bytea, text, bigint, interval, bigint) TO PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_usage(bytea, text, bigint, interval, bigint) IS
  'Internal: a counter state read now under a rule (NULL: the rule the state was built for)';

CREATE VIEW rate_limiter_counters AS
  WITH rules AS (
    SELECT t.user_id AS uid, t.api_endpoint AS ep, 'tokens'::text AS kind,
           t.max_tokens_per_period AS lim, t.period_interval AS win, t.algorithm AS alg,
           t.burst AS bst
      FROM token_limits t
    UNION ALL
    SELECT r.user_id, r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration,
           r.algorithm, r.burst
      FROM request_limits r
  ), default_users AS (
    SELECT DISTINCT u.user_id
      FROM token_usage u
     WHERE u."timestamp" >= now() - 2 * (SELECT max(d.win) FROM rules d
                                          WHERE d.uid IS NULL AND d.ep IS NULL)
  ), candidates AS (
    SELECT CASE WHEN r.ep IS NULL THEN 'user' WHEN r.uid IS NULL THEN 'endpoint'
                ELSE 'user_endpoint' END AS scope, r.*
      FROM rules r
     WHERE r.uid IS NOT NULL OR r.ep IS NOT NULL
    UNION ALL
    -- The default applies per kind to users without their own rule of that
    -- kind, and counts in the user's own counter.
    SELECT 'default', d.user_id, NULL, r.kind, r.lim, r.win, r.alg, r.bst
      FROM rules r CROSS JOIN default_users d
     WHERE r.uid IS NULL AND r.ep IS NULL
       AND NOT EXISTS (SELECT 1 FROM rules o
                        WHERE o.uid = d.user_id AND o.ep IS NULL AND o.kind = r.kind)
  ), keyed AS (
    SELECT c.*, ro.role,
           rate_limiter_counter_key(CASE c.scope WHEN 'default' THEN 'user' ELSE c.scope END,
                                    c.uid, c.ep, c.kind, ro.role, c.alg, c.win) AS key
      FROM candidates c
           CROSS JOIN (VALUES ('limit'), ('burst_cap'), ('burst_budget'), ('emergency')) ro (role)
  )
  SELECT k.scope, k.uid AS user_id, k.ep AS api_endpoint, k.kind AS limit_kind, k.role,
         CASE WHEN k.role = 'limit' THEN k.alg ELSE s.algorithm END AS algorithm,
         u.used, u."limit", u.remaining, u.window_start, u.reset_at
    FROM rate_limiter_counter_slots() s
         JOIN keyed k ON k.key = s.key
         -- A limit's own counter is read under its current rule (as
         -- get_rate_limit_status does); the strategy and burst-cap counters
         -- are fixed windows whose rule the state records.
         CROSS JOIN LATERAL rate_limiter_counter_usage(
           s.state,
           CASE WHEN k.role = 'limit' THEN k.alg END, CASE WHEN k.role = 'limit' THEN k.lim END,
           CASE WHEN k.role = 'limit' THEN k.win END, CASE WHEN k.role = 'limit' THEN k.bst END) u;
-- It names users: administrators only, unless granted
-- (GRANT SELECT ON rate_limiter_counters TO monitoring).
REVOKE ALL ON rate_limiter_counters FROM PUBLIC;
COMMENT ON VIEW rate_limiter_counters IS
  'One row per live counter of this database in shared memory (scope, user, endpoint, usage); '
  'default-rule counters are shown for users with usage rows in the last two longest default windows';

------------------------------------------------------------------------------
-- rate_limiter_usage_daily: the usage log summed per user, endpoint and UTC day.
------------------------------------------------------------------------------
CREATE VIEW rate_limiter_usage_daily AS
  SELECT u.user_id, u.api_endpoint, (u."timestamp" AT TIME ZONE 'UTC')::date AS day,
         sum(u.tokens_used) AS tokens, count(*) AS requests,
         count(u.priority_level) AS allocations,
         min(u."timestamp") AS first_seen, max(u."timestamp") AS last_seen
    FROM token_usage u
   GROUP BY u.user_id, u.api_endpoint, (u."timestamp" AT TIME ZONE 'UTC')::date;
-- It names users, like token_usage: administrators only, unless granted.
REVOKE ALL ON rate_limiter_usage_daily FROM PUBLIC;
COMMENT ON VIEW rate_limiter_usage_daily IS
  'Usage per user_id, api_endpoint and UTC day from token_usage: tokens, requests (rows), '
  'allocations (rows of allocate_tokens), first and last call';

