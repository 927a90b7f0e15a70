-- get_performance_metrics(): cluster-wide counters in shared memory.
\i test/sql_helpers/fresh_start.sql
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
