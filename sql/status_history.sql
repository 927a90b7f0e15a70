-- get_rate_limit_status: one row per applicable limit, live from shared
-- memory.  get_rate_limit_history: totals, daily and per-endpoint usage.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('h_user', 1000, '3650 days');
SELECT set_rate_limit('h_user', 300, '3650 days', 'chat');
SELECT set_user_rate_limit('h_user', 50, '3650 days');
SELECT set_api_rate_limit('chat', 100000, '3650 days');
SELECT set_api_token_limit('chat', 1000000, '3650 days');
SELECT set_default_user_rate_limit(10, '3650 days');   -- h_user has their own: not listed
SELECT set_default_rate_limit(77, '3650 days');        -- h_user has their own: not listed

SELECT tokens_allocated FROM allocate_tokens('h_user', 100, 'high', 'chat');
SELECT tokens_allocated FROM allocate_tokens('h_user', 20, 'high');
SELECT scope, api_endpoint, limit_kind, "limit", used, remaining, window_duration,
       reset_at - window_start = window_duration AS consistent
  FROM get_rate_limit_status('h_user') WHERE scope <> 'endpoint' OR api_endpoint = 'chat';

-- A user with only defaults sees the default rows, with their own usage.
SELECT tokens_allocated FROM allocate_tokens('h_default', 5, 'high', 'chat');
SELECT scope, api_endpoint, limit_kind, "limit", used, remaining FROM get_rate_limit_status('h_default')
 WHERE scope <> 'endpoint' OR api_endpoint = 'chat';
SELECT remove_default_rate_limit();

-- rate_limiter_flush() copies the live token counters into token_limits.
SELECT rate_limiter_flush() > 0 AS flushed;
SELECT user_id, api_endpoint, tokens_used_in_period, period_start IS NOT NULL AS has_start
  FROM token_limits WHERE user_id = 'h_user' ORDER BY api_endpoint NULLS FIRST;

-- History, over rows with known timestamps.
INSERT INTO token_usage (user_id, session_id, tokens_used, api_endpoint, priority_level, "timestamp") VALUES
  ('hist', 's1', 100, 'chat', 'high',   now() - interval '1 day 1 hour'),
  ('hist', 's1',  50, 'chat', 'low',    now() - interval '1 day 1 hour'),
  ('hist', 's2',  30, NULL,   'medium', now() - interval '2 hours'),
  ('hist', NULL,   0, 'chat', NULL,     now() - interval '2 hours'),
  ('hist', 's3', 999, 'chat', 'high',   now() - interval '30 days'),
  ('other', 's9', 10, 'chat', 'high',   now());
SELECT h->'total_tokens' AS total_tokens, h->'total_requests' AS total_requests,
       h->'total_allocations' AS total_allocations,
       h->'average_tokens_per_request' AS average_tokens_per_request,
       jsonb_array_length(h->'daily_usage') AS days_with_usage,
       h->'endpoint_usage' AS endpoint_usage
  FROM get_rate_limit_history('hist') h;
SELECT (get_rate_limit_history('hist', 60))->'total_tokens' AS sixty_days;
SELECT (get_rate_limit_history('hist', 1))->'total_tokens' AS one_day;
SELECT get_rate_limit_history('nobody_at_all', 7) - 'since';
SELECT jsonb_object_keys(get_rate_limit_history('hist')) ORDER BY 1;

\set VERBOSITY terse
SELECT get_rate_limit_history('hist', 0);
SELECT get_rate_limit_history('hist', NULL);
SELECT get_rate_limit_history(NULL);
SELECT * FROM get_rate_limit_status('');
