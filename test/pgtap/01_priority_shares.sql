-- pgTAP: exact numbers of priority-based allocation.
-- allocated = min(requested, floor(share * remaining)), shares high 0.5,
-- medium 0.3, low 0.2 of what remains in the most restrictive quota.
-- Counters are not transactional, so every id carries a per-run prefix.
-- Calls repeated with generate_series pass "+ 0 * g" so that the function
-- is called once per row rather than once for the whole join.
\set QUIET on
SELECT 'tap' || txid_current() || '_' AS run \gset
BEGIN;
SELECT plan(16);

SELECT set_rate_limit(:'run' || 'h', 1000, '3650 days');
SELECT set_rate_limit(:'run' || 'm', 1000, '3650 days');
SELECT set_rate_limit(:'run' || 'l', 1000, '3650 days');

SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'h', 1000000, 'high')), 500::bigint,
          'high takes floor(0.5 * 1000) = 500');
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'm', 1000000, 'medium')), 300::bigint,
          'medium takes floor(0.3 * 1000) = 300');
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'l', 1000000, 'low')), 200::bigint,
          'low takes floor(0.2 * 1000) = 200');

-- Repeated greedy high-priority requests halve what remains each time.
SELECT is(
  (SELECT array_agg(a.tokens_allocated ORDER BY g)
     FROM generate_series(1, 10) g, LATERAL allocate_tokens(:'run' || 'h', 1000000 + 0 * g, 'high') a),
  ARRAY[250, 125, 62, 31, 16, 8, 4, 2, 1, 0]::bigint[],
  'greedy high requests: 250, 125, 62, 31, 16, 8, 4, 2, 1, then nothing');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'h') WHERE scope = 'user'), 999::bigint,
          'high stops with one token left: 999 of 1000 used');
SELECT is((SELECT reason FROM allocate_tokens(:'run' || 'h', 1, 'high')), 'token_quota_exhausted',
          'one token left is exhausted for every priority');

SELECT is(
  (SELECT array_agg(a.tokens_allocated ORDER BY g)
     FROM generate_series(1, 6) g, LATERAL allocate_tokens(:'run' || 'm', 1000000 + 0 * g, 'medium') a),
  ARRAY[210, 147, 102, 72, 50, 35]::bigint[],
  'greedy medium requests: floor(0.3 * remaining) each time');
SELECT is(
  (SELECT array_agg(a.tokens_allocated ORDER BY g)
     FROM generate_series(1, 6) g, LATERAL allocate_tokens(:'run' || 'l', 1000000 + 0 * g, 'low') a),
  ARRAY[160, 128, 102, 82, 65, 52]::bigint[],
  'greedy low requests: floor(0.2 * remaining) each time');

-- Below the share, the request is granted whole.
SELECT set_rate_limit(:'run' || 'w', 1000, '3650 days');
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, reason FROM allocate_tokens(%L, 199, 'low')$$, :'run' || 'w'),
  $$VALUES (199::bigint, 801::bigint, 'granted'::text)$$,
  '199 <= floor(0.2 * 1000): granted whole');
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, reason FROM allocate_tokens(%L, 161, 'low')$$, :'run' || 'w'),
  $$VALUES (160::bigint, 641::bigint, 'partial_grant'::text)$$,
  '161 > floor(0.2 * 801) = 160: partial grant of 160');
SELECT results_eq(
  format($$SELECT success, tokens_allocated, tokens_remaining, reason FROM allocate_tokens(%L, 129, 'low', context => '{"all_or_nothing": true}')$$, :'run' || 'w'),
  $$VALUES (false, 0::bigint, 641::bigint, 'insufficient_quota'::text)$$,
  'all_or_nothing refuses 129 > floor(0.2 * 641) = 128 and charges nothing');
SELECT results_eq(
  format($$SELECT success, tokens_allocated, tokens_remaining FROM allocate_tokens(%L, 128, 'low', context => '{"all_or_nothing": true}')$$, :'run' || 'w'),
  $$VALUES (true, 128::bigint, 513::bigint)$$,
  'all_or_nothing grants exactly 128');

-- The shares are settings; fixed-point arithmetic keeps floor() exact.
SET rate_limiter.priority_share_medium = 0.29;
SELECT set_rate_limit(:'run' || 'x', 100, '3650 days');
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'x', 1000, 'medium')), 29::bigint,
          'share 0.29 of 100 is exactly 29');
SET rate_limiter.priority_share_high = 1.0;
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'x', 1000, 'high')), 71::bigint,
          'share 1.0 takes everything that remains');
SELECT is((SELECT reason FROM allocate_tokens(:'run' || 'x', 1, 'high')), 'token_quota_exhausted',
          'nothing remains after a full share');
SET rate_limiter.priority_share_low = 0.0;
SELECT set_rate_limit(:'run' || 'z', 100, '3650 days');
SELECT is((SELECT reason || ', retry_after ' || coalesce(retry_after::text, 'NULL')
             FROM allocate_tokens(:'run' || 'z', 1, 'low')),
          'exceeds_capacity, retry_after NULL',
          'a zero share never grants its priority anything: no retry can succeed');

SELECT * FROM finish();
ROLLBACK;
