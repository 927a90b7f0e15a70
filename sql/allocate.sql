-- allocate_tokens: priority shares of the remaining quota, partial grants,
-- all-or-nothing, scopes, request counting and usage rows.  Windows are long
-- (3650 days) so that no boundary falls inside the test.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('p_user', 1000, '3650 days');

-- A request may take at most its share of what remains:
-- high 0.5, medium 0.3, low 0.2 -> floor(share * remaining).
SELECT tokens_allocated, tokens_remaining, success, reason, allocation_strategy, "limit", limit_kind, scope
  FROM allocate_tokens('p_user', 10000, 'high');      -- 500 of 1000
SELECT tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('p_user', 10000, 'medium');    -- 150 of 500
SELECT tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('p_user', 10000, 'low');       -- 70 of 350
SELECT tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('p_user', 10000, 'LOW');       -- 56 of 280 (case-insensitive)
-- Within the share, a request gets all it asks for.
SELECT tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('p_user', 10, 'low');          -- 10 of 224

-- all_or_nothing: a grant smaller than the request is refused, nothing charged.
SELECT success, tokens_allocated, tokens_remaining, reason, retry_after IS NOT NULL AS has_retry
  FROM allocate_tokens('p_user', 200, 'high', context => '{"all_or_nothing": true}');
SELECT success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('p_user', 107, 'high', context => '{"all_or_nothing": true}');
SELECT success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('p_user', 5, 'high', context => '{"all_or_nothing": false}');

-- Retry timing is reported only when denied, and stays inside the window.
SELECT retry_after IS NULL AS no_retry_when_allowed,
       reset_at > now() AS resets_later
  FROM allocate_tokens('p_user', 1, 'medium');

-- Drain to the point where a low share rounds to zero: 4 left, floor(0.2*4) = 0.
SELECT set_rate_limit('q_user', 10, '3650 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('q_user', 6, 'high');   -- 5 of 10
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('q_user', 1, 'high');   -- 1 of 5
SELECT success, tokens_allocated, tokens_remaining, reason,
       retry_after > interval '0' AND retry_after <= interval '3650 days' AS retry_in_window
  FROM allocate_tokens('q_user', 1, 'low');
SELECT success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('q_user', 1, 'high');           -- floor(0.5*4) = 2 >= 1
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('q_user', 9, 'high');   -- 1 of 3
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('q_user', 9, 'high');   -- 1 of 2
SELECT success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('q_user', 1, 'high');           -- 1 left: exhausted for every priority
SELECT set_rate_limit('q_user', 11, '3650 days');      -- raising the limit gives one more
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('q_user', 9, 'high');
SELECT set_rate_limit('q_user', 5, '3650 days');       -- lowering it below usage: 0 left
SELECT success, tokens_remaining, reason FROM allocate_tokens('q_user', 1, 'high');

-- The most restrictive scope decides, and every scope is charged.
SELECT set_rate_limit('s_user', 100000, '3650 days');                   -- user
SELECT set_rate_limit('s_user', 400, '3650 days', 'chat');              -- user + endpoint
SELECT set_api_token_limit('chat', 1000000, '3650 days');               -- endpoint, all users
SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens('s_user', 1000, 'high', 'chat');
SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens('s_user', 1000, 'high', 'other');
SELECT scope, api_endpoint, limit_kind, "limit", used, remaining
  FROM get_rate_limit_status('s_user') WHERE limit_kind = 'tokens';

-- Request limits: allocate_tokens counts one request per call, and is
-- denied once a request limit is used up, charging no scope.
SELECT set_user_rate_limit('r_user', 2, '3650 days');
SELECT set_rate_limit('r_user', 1000, '3650 days');
SELECT success, tokens_allocated, requests_remaining FROM allocate_tokens('r_user', 10, 'high');
SELECT success, tokens_allocated, requests_remaining FROM allocate_tokens('r_user', 10, 'high');
SELECT success, tokens_allocated, tokens_remaining, requests_remaining, reason, limit_kind, "limit"
  FROM allocate_tokens('r_user', 10, 'high');
SELECT limit_kind, used FROM get_rate_limit_status('r_user') WHERE scope = 'user' ORDER BY limit_kind;

-- Per-API request limits are shared by all users.
SELECT set_api_rate_limit('search', 3, '3650 days');
SELECT success, requests_remaining, scope FROM allocate_tokens('a1', 1, 'low', 'search');
SELECT success, requests_remaining, scope FROM allocate_tokens('a2', 1, 'low', 'search');
SELECT success, requests_remaining, scope FROM allocate_tokens('a3', 1, 'low', 'search');
SELECT success, requests_remaining, reason, scope FROM allocate_tokens('a4', 1, 'low', 'search');
SELECT success, reason FROM allocate_tokens('a4', 1, 'low', 'not-search');

-- Default limits apply per user to users without a rule of that kind, each
-- with a counter of its own.
SELECT set_default_rate_limit(100, '3650 days');
SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens('d1', 1000, 'high');
SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens('d2', 1000, 'high');
SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens('d1', 1000, 'high');
SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens('p_user', 1, 'high');  -- own rule wins
SELECT remove_default_rate_limit();
SELECT tokens_allocated, reason FROM allocate_tokens('d1', 1000, 'high');

-- Every grant wrote one usage row with what was granted; denials wrote none.
SELECT user_id, count(*) AS rows, sum(tokens_used) AS tokens
  FROM token_usage WHERE user_id IN ('p_user', 'q_user', 'r_user') GROUP BY user_id ORDER BY user_id;
SELECT tokens_allocated FROM allocate_tokens('p_user', 3, 'Medium', 'chat/completions', 'session_abc');
SELECT user_id, session_id, tokens_used, api_endpoint, priority_level
  FROM token_usage ORDER BY id DESC LIMIT 1;
