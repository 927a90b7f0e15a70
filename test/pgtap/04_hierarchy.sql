-- pgTAP: hierarchical quotas (set_parent).  A call is checked and charged
-- against the user's limits and every ancestor's, all or nothing; the
-- most restrictive remaining quota takes the priority share; denials name
-- the owner; settle and refund_on_abort give back to every level.  All in
-- one transaction: the links and limits are this transaction's own
-- (the overlay), which the hot path must see like committed ones.
\set QUIET on
SELECT 'tap' || txid_current() || '_' AS run \gset
BEGIN;
SELECT plan(28);

-- tenant T (1000) > teams A (400), B (300) > users a1 (200), a2, b1.
SELECT set_rate_limit(:'run' || 'T', 1000, '3650 days');
SELECT set_rate_limit(:'run' || 'A', 400, '3650 days');
SELECT set_rate_limit(:'run' || 'B', 300, '3650 days');
SELECT set_rate_limit(:'run' || 'a1', 200, '3650 days');
SELECT set_parent(:'run' || 'A', :'run' || 'T');
SELECT set_parent(:'run' || 'B', :'run' || 'T');
SELECT set_parent(:'run' || 'a1', :'run' || 'A');
SELECT set_parent(:'run' || 'a2', :'run' || 'A');
SELECT set_parent(:'run' || 'b1', :'run' || 'B');

SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, "limit", scope, limit_owner
             FROM allocate_tokens(%L, 300, 'high')$$, :'run' || 'a1'),
  format($$VALUES (100::bigint, 100::bigint, 200::bigint, 'user'::text, %L::text)$$, :'run' || 'a1'),
  'a1: its own 200 is the most restrictive of 200, 400, 1000: floor(0.5 * 200) = 100');
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, "limit", limit_owner
             FROM allocate_tokens(%L, 1000, 'high')$$, :'run' || 'a2'),
  format($$VALUES (150::bigint, 150::bigint, 400::bigint, %L::text)$$, :'run' || 'A'),
  'a2 (no limit of its own): team A has 300 left: floor(0.5 * 300) = 150, owner A');
SELECT results_eq(
  format($$SELECT limit_owner, "limit", used FROM get_rate_limit_status(%L) ORDER BY "limit"$$,
         :'run' || 'a2'),
  format($$VALUES (%L::text, 400::bigint, 250::bigint), (%L, 1000, 250)$$, :'run' || 'A', :'run' || 'T'),
  'status of a2: the inherited limits, whose they are, and both levels charged 100 + 150');
SELECT results_eq(
  format($$SELECT tokens_allocated, limit_owner FROM allocate_tokens(%L, 1000, 'high')$$, :'run' || 'b1'),
  format($$VALUES (150::bigint, %L::text)$$, :'run' || 'B'),
  'b1: team B has 300: 150');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'b1') WHERE limit_owner = :'run' || 'T'),
          400::bigint, 'the tenant counts both teams: 100 + 150 + 150');

-- The tenant becomes the most restrictive level.
SELECT set_rate_limit(:'run' || 'T', 500, '3650 days');
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining, "limit", limit_owner
             FROM allocate_tokens(%L, 1000, 'high')$$, :'run' || 'a2'),
  format($$VALUES (50::bigint, 50::bigint, 500::bigint, %L::text)$$, :'run' || 'T'),
  'T lowered to 500 (100 left) binds over A (150 left): floor(0.5 * 100) = 50');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'a2') WHERE limit_owner = :'run' || 'A'),
          300::bigint, 'team A was charged the same 50');

-- Low priority: the share applies to the most restrictive remaining quota.
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'b1', 1000, 'low')), 10::bigint,
          'b1 at low priority: floor(0.2 * min(150, 50)) = 10');

-- A denial by an ancestor names it, and charges no level.
SELECT set_user_rate_limit(:'run' || 'A', 2, '3650 days');
SELECT is((SELECT allowed FROM check_rate_limit(:'run' || 'a1')), true,
          'a1''s request counts in team A''s request limit of 2');
SELECT is((SELECT allowed FROM check_rate_limit(:'run' || 'a2')), true, 'the second request of team A');
SELECT results_eq(
  format($$SELECT success, tokens_allocated, reason, limit_kind, scope, limit_owner
             FROM allocate_tokens(%L, 10, 'high')$$, :'run' || 'a1'),
  format($$VALUES (false, 0::bigint, 'request_limit_exceeded'::text, 'requests'::text, 'user'::text, %L::text)$$,
         :'run' || 'A'),
  'the third is denied by team A''s request limit, and says so');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'a1') WHERE limit_owner = :'run' || 'a1'
             AND limit_kind = 'tokens'), 100::bigint, 'the denied call charged a1 nothing');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'a1') WHERE limit_owner = :'run' || 'T'),
          460::bigint, '... and the tenant nothing');
SELECT throws_like(format($$SELECT enforce_rate_limit(%L)$$, :'run' || 'a2'),
                   '%rate limit exceeded for user%', 'enforce_rate_limit raises RL429');
SELECT remove_rate_limit(:'run' || 'A');
SELECT set_rate_limit(:'run' || 'A', 400, '3650 days');

-- Per-endpoint limits of an ancestor apply on that endpoint only.
SELECT set_rate_limit(:'run' || 'T', 30, '3650 days', :'run' || 'chat');
SELECT results_eq(
  format($$SELECT tokens_allocated, scope, limit_owner FROM allocate_tokens(%L, 1000, 'high', %L)$$,
         :'run' || 'b1', :'run' || 'chat'),
  format($$VALUES (15::bigint, 'user_endpoint'::text, %L::text)$$, :'run' || 'T'),
  'the tenant''s 30 on chat binds b1 on chat: 15');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'b1')
            WHERE limit_owner = :'run' || 'T' AND scope = 'user'), 475::bigint,
          'the call on chat counts in the tenant''s all-endpoint quota too');

-- settle_tokens gives the unused part back to every level it charged.
SELECT allocation_id AS grant_id FROM allocate_tokens(:'run' || 'a1', 20, 'high') \gset
SELECT results_eq(format('SELECT * FROM settle_tokens(%s, 5)', :grant_id),
                  $$VALUES (12::bigint, 7::bigint)$$,
                  'a1 was granted floor(0.5 * 25) = 12 (the tenant binds); settles 5, 7 back');
SELECT results_eq(
  format($$SELECT limit_owner, used FROM get_rate_limit_status(%L) WHERE scope = 'user' ORDER BY "limit"$$,
         :'run' || 'a1'),
  format($$VALUES (%L::text, 112::bigint), (%L, 312), (%L, 487)$$,
         :'run' || 'a1', :'run' || 'A', :'run' || 'T'),
  'the refund waits for the commit: every level still holds the 12 (regress test hierarchy pins the refund)');

-- refund_on_abort: a rolled-back savepoint gives back to every level.
SAVEPOINT s;
SELECT is((SELECT tokens_allocated FROM allocate_tokens(:'run' || 'a2', 5, 'high', context => '{"refund_on_abort": true}')),
          5::bigint, 'a2 gets 5 inside a savepoint');
ROLLBACK TO SAVEPOINT s;
SELECT results_eq(
  format($$SELECT limit_owner, used FROM get_rate_limit_status(%L) WHERE scope = 'user' ORDER BY "limit"$$,
         :'run' || 'a2'),
  format($$VALUES (%L::text, 312::bigint), (%L, 487)$$, :'run' || 'A', :'run' || 'T'),
  'after ROLLBACK TO SAVEPOINT both levels are back where they were');

-- The hierarchy is transactional, and cycles and depth are refused.
SAVEPOINT s2;
SELECT remove_parent(:'run' || 'a2');
SELECT results_eq(
  format($$SELECT tokens_allocated, tokens_remaining FROM allocate_tokens(%L, 10, 'high')$$, :'run' || 'a2'),
  $$VALUES (10::bigint, NULL::bigint)$$,
  'without its parent a2 has no limit at all');
ROLLBACK TO SAVEPOINT s2;
SELECT is((SELECT limit_owner FROM allocate_tokens(:'run' || 'a2', 1, 'high')), :'run' || 'T',
          'the rolled-back remove_parent is gone: the tenant binds again');
SELECT throws_ok(format($$SELECT set_parent(%L, %L)$$, :'run' || 'T', :'run' || 'a1'), '22023', NULL,
                 'a cycle is refused');
SELECT throws_ok(format($$SELECT set_parent(%L, %L)$$, :'run' || 'T', :'run' || 'T'), '22023', NULL,
                 'a self-link is refused');
-- a1 has 2 ancestors; a chain of 6 more above T gives it 8: allowed.
SELECT set_parent(:'run' || 'T', :'run' || 'L1');
SELECT set_parent(:'run' || 'L' || i, :'run' || 'L' || (i + 1)) FROM generate_series(1, 5) i;
SELECT is((SELECT count(*) FROM get_rate_limit_status(:'run' || 'a1')), 4::bigint,
          'eight levels of ancestors are allowed (those with limits are listed)');
SELECT set_rate_limit(:'run' || 'L6', 4, '3650 days');
SELECT results_eq(
  format($$SELECT tokens_allocated, limit_owner FROM allocate_tokens(%L, 100, 'high')$$, :'run' || 'a1'),
  format($$VALUES (2::bigint, %L::text)$$, :'run' || 'L6'),
  'the eighth ancestor''s limit of 4 applies to a1: 2');
SELECT throws_ok(format($$SELECT set_parent(%L, %L)$$, :'run' || 'L6', :'run' || 'L7'), '54000', NULL,
                 'a ninth level above a1 is refused');
SELECT throws_ok(format($$SELECT set_parent(%L, %L)$$, :'run' || 'x', NULL), '22004', NULL,
                 'a NULL parent is refused');

SELECT * FROM finish();
ROLLBACK;
