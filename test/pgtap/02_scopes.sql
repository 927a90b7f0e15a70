-- pgTAP: the most restrictive scope decides, every scope is charged the
-- same grant, and request limits count calls.
\set QUIET on
SELECT 'tap' || txid_current() || '_' AS run \gset
BEGIN;
SELECT plan(12);

SELECT set_rate_limit(:'run' || 'u', 10000, '3650 days');
SELECT set_rate_limit(:'run' || 'u', 600, '3650 days', :'run' || 'chat');
SELECT set_api_token_limit(:'run' || 'chat', 5000, '3650 days');

SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, "limit", scope FROM allocate_tokens(%L, 1000, 'high', %L)$$,
         :'run' || 'u', :'run' || 'chat'),
  $$VALUES (300::bigint, 300::bigint, 600::bigint, 'user_endpoint'::text)$$,
  'user+endpoint quota of 600 binds: floor(0.5 * 600) = 300');
SELECT results_eq(
  format($$SELECT scope, used FROM get_rate_limit_status(%L) WHERE limit_kind = 'tokens' AND (scope <> 'endpoint' OR api_endpoint = %L) ORDER BY 1$$,
         :'run' || 'u', :'run' || 'chat'),
  $$VALUES ('endpoint'::text, 300::bigint), ('user', 300), ('user_endpoint', 300)$$,
  'all three scopes were charged 300');

-- A second user on the same endpoint shares only the endpoint quota.
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens(%L, 100000, 'high', %L)$$,
         :'run' || 'v', :'run' || 'chat'),
  $$VALUES (2350::bigint, 2350::bigint, 'endpoint'::text)$$,
  'endpoint quota: floor(0.5 * (5000 - 300)) = 2350');
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens(%L, 100000, 'high', %L)$$,
         :'run' || 'u', :'run' || 'chat'),
  $$VALUES (150::bigint, 150::bigint, 'user_endpoint'::text)$$,
  'u: min(300, 9700, 2350) = 300 remaining binds: 150');
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, scope FROM allocate_tokens(%L, 100000, 'high', %L)$$,
         :'run' || 'u', :'run' || 'other'),
  $$VALUES (4775::bigint, 4775::bigint, 'user'::text)$$,
  'other endpoint: only the user quota (9550 left) applies');

-- Request limits count one request per allocation and per check.
SELECT set_user_rate_limit(:'run' || 'r', 5, '3650 days');
SELECT set_api_rate_limit(:'run' || 'api', 3, '3650 days');
SELECT is((SELECT count(*) FILTER (WHERE (check_rate_limit(:'run' || 'r')).allowed) FROM generate_series(1, 8)),
          5::bigint, 'exactly 5 of 8 checks pass a limit of 5');
SELECT is((SELECT count(*) FILTER (WHERE a.success) FROM generate_series(1, 8) g, LATERAL allocate_tokens(:'run' || 'r2', 1 + 0 * g, 'low', :'run' || 'api') a),
          3::bigint, 'exactly 3 of 8 allocations pass an endpoint limit of 3');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'r') WHERE scope = 'user'), 5::bigint,
          'denied checks are not counted');

-- The default limit gives every user a counter of their own.
SELECT set_default_rate_limit(40, '3650 days');
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'd1', 100, 'high')), 20::bigint, 'default: d1 gets 20 of 40');
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'd2', 100, 'high')), 20::bigint, 'default: d2 gets 20 of its own 40');
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'd1', 100, 'high')), 10::bigint, 'default: d1 then gets 10 of 20');
SELECT is((SELECT tokens_remaining FROM allocate_tokens(:'run' || 'u', 1, 'high')), 4774::bigint,
          'a user with an own quota ignores the default');

SELECT * FROM finish();
ROLLBACK;
