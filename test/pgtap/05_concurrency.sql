-- pgTAP: in-flight (concurrency) limits.  At most max_in_flight unsettled
-- grants per limited scope; the limit is checked with the token quotas,
-- all or nothing; retry_after is the earliest lease's timeout, exactly
-- (frozen clock, rate_limiter.debug_clock); a lease held by a grant made
-- at T ends at T + lease_timeout.  One transaction, rolled back.
\set QUIET on
SELECT 'tap' || txid_current() || '_' AS run \gset
BEGIN;
SELECT plan(14);
SET LOCAL rate_limiter.debug_clock = 1800000000;
SET LOCAL rate_limiter.usage_log = sync;

SELECT set_concurrency_limit(:'run' || 'u', 3, lease_timeout => '90 seconds');
SELECT set_concurrency_limit(:'run' || 'u', 1, 'chat', '30 seconds');
SELECT set_rate_limit(:'run' || 'u', 100, '1 day');

SELECT is((SELECT count(*) FILTER (WHERE a.success)
             FROM generate_series(1, 5) g, LATERAL allocate_tokens(:'run' || 'u', 1 + 0 * g, 'low') a),
          3::bigint, 'max_in_flight 3: three of five unsettled grants');
SELECT results_eq(
  format($$SELECT success, tokens_allocated, reason, "limit", limit_kind, scope, limit_owner, retry_after
             FROM allocate_tokens(%L, 1, 'high')$$, :'run' || 'u'),
  format($$VALUES (false, 0::bigint, 'concurrency_limit_exceeded'::text, 3::bigint, 'in_flight'::text,
                   'user'::text, %L::text, interval '90 seconds')$$, :'run' || 'u'),
  'the fourth: denied by the user''s in-flight limit, retry when the first lease times out');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'u') WHERE limit_kind = 'tokens'),
          3::bigint, 'the denials charged no tokens');

-- The earliest lease decides retry_after; 30 s later it is 60 s.
SET LOCAL rate_limiter.debug_clock = 1800000030;
SELECT is((SELECT retry_after FROM allocate_tokens(:'run' || 'u', 1, 'low')), interval '60 seconds',
          'retry_after = the earliest lease''s expiry - now');
SET LOCAL rate_limiter.debug_clock = 1800000089;
SELECT is((SELECT reason FROM allocate_tokens(:'run' || 'u', 1, 'low')), 'concurrency_limit_exceeded',
          'one second before the timeout the slots are still held');
SET LOCAL rate_limiter.debug_clock = 1800000090;
SELECT is((SELECT count(*) FILTER (WHERE a.success)
             FROM generate_series(1, 4) g, LATERAL allocate_tokens(:'run' || 'u', 1 + 0 * g, 'low') a),
          3::bigint, 'at T + lease_timeout all three expire together and three new grants fit');

-- The endpoint's limit (1) is the tighter one on chat; it needs a user
-- slot too, and there is none now.
SELECT results_eq(
  format($$SELECT reason, "limit", scope FROM allocate_tokens(%L, 1, 'low', 'chat')$$, :'run' || 'u'),
  $$VALUES ('concurrency_limit_exceeded'::text, 3::bigint, 'user'::text)$$,
  'a chat call needs a slot of both limits: the user''s is full');
SET LOCAL rate_limiter.debug_clock = 1800000180;
SELECT is((SELECT reason FROM allocate_tokens(:'run' || 'u', 1, 'low', 'chat')), 'granted',
          'with user slots free the chat call takes a slot of each');
SELECT results_eq(
  format($$SELECT reason, "limit", scope, retry_after FROM allocate_tokens(%L, 1, 'low', 'chat')$$, :'run' || 'u'),
  $$VALUES ('concurrency_limit_exceeded'::text, 1::bigint, 'user_endpoint'::text, interval '30 seconds')$$,
  'the second chat call: the endpoint''s limit of 1, retry after its 30 s timeout');
SELECT is((SELECT count(*) FROM rate_limiter_leases() l JOIN token_usage t ON t.id = l.allocation_id
            WHERE t.user_id = :'run' || 'u' AND t.api_endpoint = 'chat'), 2::bigint,
          'the chat grant holds two leases, both bound to its allocation');

-- All or nothing the other way: a call the token quota denies takes no
-- slot.  v: 10 tokens, 2 in flight.
SELECT set_rate_limit(:'run' || 'v', 10, '1 day');
SELECT set_concurrency_limit(:'run' || 'v', 2);
SELECT is((SELECT string_agg(a.reason, ',' ORDER BY g)
             FROM (VALUES (1, 5, false), (2, 3, true), (3, 1, false), (4, 1, false)) r(g, n, aon),
                  LATERAL allocate_tokens(:'run' || 'v', r.n, 'high',
                                          context => jsonb_build_object('all_or_nothing', r.aon)) a),
          'granted,insufficient_quota,granted,concurrency_limit_exceeded',
          'the quota-denied call (3 > floor(0.5 * 5)) held no slot: the next one got the second');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'v') WHERE limit_kind = 'tokens'),
          6::bigint, 'and the in-flight denial charged nothing');

-- A hierarchy: the user's in-flight limit and the team's token quota both apply.
SELECT set_rate_limit(:'run' || 'team', 4, '1 day');
SELECT set_parent(:'run' || 'w', :'run' || 'team');
SELECT set_concurrency_limit(:'run' || 'w', 2);
SELECT is((SELECT string_agg(a.reason || ':' || a.tokens_allocated, ',' ORDER BY g)
             FROM generate_series(1, 3) g, LATERAL allocate_tokens(:'run' || 'w', 1 + 0 * g, 'high') a),
          'granted:1,granted:1,concurrency_limit_exceeded:0', 'two in flight of the member, then denied');
SELECT is((SELECT used FROM get_rate_limit_status(:'run' || 'w') WHERE limit_owner = :'run' || 'team'),
          2::bigint, 'the team was charged for the two grants only');

SELECT * FROM finish();
ROLLBACK;
