-- Monitoring: metrics keys, reset, the three views.
\i test/sql_helpers/fresh_start.sql
-- get_performance_metrics(): cluster-wide counters in shared memory.
SELECT jsonb_object_keys(get_performance_metrics()) ORDER BY 1;

SELECT get_performance_metrics() AS m0 \gset
SELECT set_user_rate_limit('m_user', 2, '3650 days');
SELECT allowed FROM check_rate_limit('m_user');
SELECT allowed FROM check_rate_limit('m_user');
SELECT allowed FROM check_rate_limit('m_user');
SELECT success FROM allocate_tokens('m_user', 1, 'low');
SELECT get_performance_metrics() AS m1 \gset

SELECT (:'m1'::jsonb->>'total_checks')::bigint - (:'m0'::jsonb->>'total_checks')::bigint AS checks,
       (:'m1'::jsonb->>'allowed_requests')::bigint - (:'m0'::jsonb->>'allowed_requests')::bigint AS allowed,
       (:'m1'::jsonb->>'denied_requests')::bigint - (:'m0'::jsonb->>'denied_requests')::bigint AS denied,
       (:'m1'::jsonb->>'average_check_time')::float8 > 0 AS timed,
       (:'m1'::jsonb->>'average_check_time')::float8 < 1 AS plausible,
       (:'m1'::jsonb->>'keys_in_use')::bigint > 0 AS keys_in_use,
       (:'m1'::jsonb->>'keys_capacity')::bigint AS capacity;

SELECT jsonb_object_keys(get_performance_metrics()) ORDER BY 1;

-- reset_performance_metrics(): administrators only.
CREATE ROLE mon_plain;
SET ROLE mon_plain;
SELECT reset_performance_metrics();
SELECT count(*) FROM rate_limiter_counters;
SELECT count(*) > 0 AS metrics_readable FROM rate_limiter_metrics;
RESET ROLE;

SELECT set_user_rate_limit('mon_u', 2, '3650 days');
SELECT set_rate_limit('mon_u', 100, '3650 days', 'api/a');
SELECT set_api_rate_limit('api/b', 5, '3650 days');
SELECT set_default_rate_limit(1000, '3650 days');
SELECT reset_performance_metrics();
SELECT name, value FROM rate_limiter_metrics
 WHERE name IN ('total_checks', 'allowed_requests', 'denied_requests', 'lock_waits',
                'check_time_p50', 'average_check_time', 'keys_capacity')
 ORDER BY name;

SELECT allowed FROM check_rate_limit('mon_u');
SELECT allowed FROM check_rate_limit('mon_u', 'api/b');
SELECT allowed FROM check_rate_limit('mon_u');
SELECT tokens_allocated FROM allocate_tokens('mon_u', 30, 'high', 'api/a');
SELECT tokens_allocated FROM allocate_tokens('mon_d', 7, 'high');

SELECT name, value FROM rate_limiter_metrics
 WHERE name IN ('total_checks', 'allowed_requests', 'denied_requests') ORDER BY name;
SELECT (m->>'check_time_p50')::numeric > 0 AS p50_positive,
       (m->>'check_time_p50')::numeric <= (m->>'check_time_p95')::numeric AS p50_le_p95,
       (m->>'check_time_p95')::numeric <= (m->>'check_time_p99')::numeric AS p95_le_p99,
       (m->>'check_time_p99')::numeric < 10 AS p99_plausible,
       (m->>'average_check_time')::numeric > 0 AS average_positive,
       (m->>'keys_in_use')::bigint > 0 AS keys_in_use
  FROM get_performance_metrics() m;

-- One row per live counter, mapped back to its scope.
SELECT scope, user_id, api_endpoint, limit_kind, role, algorithm, used, "limit", remaining,
       window_start IS NOT NULL AS has_window, reset_at > now() AS resets_later
  FROM rate_limiter_counters
 WHERE user_id LIKE 'mon%' OR api_endpoint = 'api/b'
 ORDER BY scope, user_id, api_endpoint, limit_kind, role;

-- Every algorithm reads as get_rate_limit_status does.
SELECT set_user_rate_limit('mon_tb', 10, '1 hour', NULL, 'token_bucket', 4);
SELECT set_user_rate_limit('mon_gc', 10, '1 hour', NULL, 'gcra', 2);
SELECT set_user_rate_limit('mon_sw', 10, '1 hour', NULL, 'sliding_window');
SELECT v.u, c.allowed
  FROM (VALUES ('mon_tb'), ('mon_gc'), ('mon_sw')) v (u), LATERAL check_rate_limit(v.u) c ORDER BY 1;
SELECT c.user_id, c.algorithm, c.used = s.used AS same_used, c."limit" = s."limit" AS same_limit,
       c.remaining = s.remaining AS same_remaining, c."limit", c.used
  FROM rate_limiter_counters c
       JOIN LATERAL get_rate_limit_status(c.user_id) s
         ON s.scope = c.scope AND s.limit_kind = c.limit_kind
 WHERE c.user_id IN ('mon_tb', 'mon_gc', 'mon_sw') AND c.role = 'limit'
 ORDER BY 1, 2;

-- Daily usage from token_usage.
SELECT user_id, api_endpoint, day = (now() AT TIME ZONE 'UTC')::date AS today, tokens, requests,
       allocations, first_seen <= last_seen AS ordered
  FROM rate_limiter_usage_daily WHERE user_id LIKE 'mon%'
 ORDER BY 1, 2 NULLS FIRST;

-- Reset clears the counters, not the gauges.
SELECT reset_performance_metrics();
SELECT (m->>'total_checks')::bigint AS total_checks, (m->>'allowed_requests')::bigint AS allowed,
       (m->>'check_time_p99')::numeric AS p99, (m->>'average_check_time')::numeric AS average,
       (m->>'keys_in_use')::bigint > 0 AS keys_kept, (m->>'keys_capacity')::bigint AS capacity
  FROM get_performance_metrics() m;

SELECT c.relname, obj_description(c.oid, 'pg_class') IS NOT NULL AS commented,
       has_table_privilege('mon_plain', c.oid, 'SELECT') AS plain_can_select
  FROM pg_class c WHERE c.relname IN ('rate_limiter_counters', 'rate_limiter_metrics', 'rate_limiter_usage_daily')
 ORDER BY 1;
DROP ROLE mon_plain;

-- The documented monitoring grant: SELECT on the view is enough, and
-- without it the counters stay closed.
CREATE ROLE mon_grantee;
GRANT SELECT ON rate_limiter_counters TO mon_grantee;
SELECT set_user_rate_limit('mon_user', 5, '1 hour');
SELECT allowed FROM check_rate_limit('mon_user');
SET ROLE mon_grantee;
SELECT scope, user_id, limit_kind, used FROM rate_limiter_counters WHERE user_id = 'mon_user' ORDER BY 1, 3;
RESET ROLE;
CREATE ROLE mon_other;
SET ROLE mon_other;
SELECT count(*) FROM rate_limiter_counter_slots();
RESET ROLE;
SELECT remove_rate_limit('mon_user');
REVOKE SELECT ON rate_limiter_counters FROM mon_grantee;
DROP ROLE mon_grantee;
DROP ROLE mon_other;
