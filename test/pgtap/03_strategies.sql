-- pgTAP: exact numbers of the dynamic, emergency and burst strategies and of
-- burst caps.  Every parameter has a test whose expected number changes
-- when the parameter is ignored.
--
-- The limiter's clock is frozen (rate_limiter.debug_clock, testing only) at
-- 1800000000 s after the Unix epoch.  Windows are aligned to Monday
-- 1970-01-05 (345600 s), so at that instant:
--   a 1000-second window is at position 400 s (T = 0.4);
--   900-second, 1-hour and 10-second windows start exactly then.
-- debug_time_offset moves the frozen clock forward.
\set QUIET on
SELECT 'tap' || txid_current() || '_' AS run \gset
BEGIN;
SELECT plan(36);
SET LOCAL rate_limiter.debug_clock = 1800000000;

CREATE FUNCTION pg_temp.grant_of(u text, n bigint, p text, ctx jsonb DEFAULT '{}', ep text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
  SELECT a.tokens_allocated || ' ' || a.allocation_strategy || ' burst=' || a.burst_tokens
         || ' emergency=' || a.emergency_tokens
    FROM allocate_tokens(u, n, p, ep, NULL, ctx) a
$$;

------------------------------------------------------------------------------
-- Dynamic priority allocation: share * f, f = 1 - (0.3 H + 0.2 S + 0.1 T)
------------------------------------------------------------------------------
SELECT set_rate_limit(:'run' || 'd0', 1000, '1000 seconds');
SELECT is(pg_temp.grant_of(:'run' || 'd0', 1000, 'high'), '500 priority burst=0 emergency=0',
          'dynamic allocation is off by default: floor(0.5 * 1000)');

SELECT set_rate_limit(:'run' || 'd1', 1000, '1000 seconds', enable_dynamic_allocation => true);
SELECT is(pg_temp.grant_of(:'run' || 'd1', 1000, 'high'), '480 dynamic burst=0 emergency=0',
          'time factor: f = 1 - 0.1 * 0.4 = 0.96, share 0.48');

SELECT set_rate_limit(:'run' || 'd2', 1000, '1000 seconds', enable_dynamic_allocation => true,
                      time_factor_weight => 0.5);
SELECT is(pg_temp.grant_of(:'run' || 'd2', 1000, 'high'), '400 dynamic burst=0 emergency=0',
          'time_factor_weight 0.5: f = 1 - 0.5 * 0.4 = 0.8');

SET LOCAL rate_limiter.time_factor_weight = 0.25;
SELECT set_rate_limit(:'run' || 'd3', 1000, '1000 seconds', enable_dynamic_allocation => true);
SELECT is(pg_temp.grant_of(:'run' || 'd3', 1000, 'high'), '450 dynamic burst=0 emergency=0',
          'rate_limiter.time_factor_weight = 0.25 applies to limits that leave it NULL');
SET LOCAL rate_limiter.time_factor_weight = 0.1;

SET LOCAL rate_limiter.enable_dynamic_allocation = on;
SELECT set_rate_limit(:'run' || 'd4', 1000, '1000 seconds');
SELECT is(pg_temp.grant_of(:'run' || 'd4', 1000, 'high'), '480 dynamic burst=0 emergency=0',
          'rate_limiter.enable_dynamic_allocation = on turns it on for limits that leave it NULL');
SELECT set_rate_limit(:'run' || 'd5', 1000, '1000 seconds', enable_dynamic_allocation => false);
SELECT is(pg_temp.grant_of(:'run' || 'd5', 1000, 'high'), '500 priority burst=0 emergency=0',
          'enable_dynamic_allocation => false on the limit wins over the setting');
SET LOCAL rate_limiter.enable_dynamic_allocation = off;

SELECT set_user_rate_limit(:'run' || 'd6', 100, '1000 seconds', enable_dynamic_allocation => true);
SELECT set_rate_limit(:'run' || 'd6', 1000, '1000 seconds');
SELECT is(pg_temp.grant_of(:'run' || 'd6', 1000, 'high'), '480 dynamic burst=0 emergency=0',
          'a quota without a switch follows the request limit of its scope (RateLimitConfig)');

-- History: the moving average of completed windows' usage.  Window 1 uses
-- 500 of 1000 (u = 0.5), so in window 2 H = (0 + 0.5) / 2 = 0.25.
SELECT set_rate_limit(:'run' || 'h1', 1000, '1000 seconds', enable_dynamic_allocation => true,
                      time_factor_weight => 0);
SELECT set_rate_limit(:'run' || 'h2', 1000, '1000 seconds', enable_dynamic_allocation => true,
                      time_factor_weight => 0, user_history_weight => 1);
SELECT is(pg_temp.grant_of(:'run' || 'h1', 500, 'high'), '500 priority burst=0 emergency=0',
          'no history yet: f = 1');
SELECT is(pg_temp.grant_of(:'run' || 'h2', 500, 'high'), '500 priority burst=0 emergency=0',
          'no history yet: f = 1 whatever the weight');
SET LOCAL rate_limiter.debug_time_offset = 1000;
SELECT is(pg_temp.grant_of(:'run' || 'h1', 1000, 'high'), '462 dynamic burst=0 emergency=0',
          'user_history_weight 0.3, H = 0.25: f = 0.925, share 0.4625');
SELECT is(pg_temp.grant_of(:'run' || 'h2', 1000, 'high'), '375 dynamic burst=0 emergency=0',
          'user_history_weight 1, H = 0.25: f = 0.75, share 0.375');
SET LOCAL rate_limiter.debug_time_offset = 0;

-- System load: the usage of the endpoint-wide limits of the call.  Another
-- user takes 5000 of the endpoint's 10000, so S = 0.5.
SELECT set_api_token_limit(:'run' || 'ep', 10000, '3650 days');
SELECT is(pg_temp.grant_of(:'run' || 'other', 10000, 'high', '{}', :'run' || 'ep'),
          '5000 priority burst=0 emergency=0', 'the endpoint is half used');
SELECT set_rate_limit(:'run' || 'l1', 1000, '1000 seconds', enable_dynamic_allocation => true,
                      time_factor_weight => 0);
SELECT set_rate_limit(:'run' || 'l2', 1000, '1000 seconds', enable_dynamic_allocation => true,
                      time_factor_weight => 0, system_load_weight => 1);
SELECT is(pg_temp.grant_of(:'run' || 'l1', 1000, 'high', '{}', :'run' || 'ep'),
          '450 dynamic burst=0 emergency=0', 'system_load_weight 0.2, S = 0.5: f = 0.9');
SELECT is(pg_temp.grant_of(:'run' || 'l2', 1000, 'high', '{}', :'run' || 'ep'),
          '227 dynamic burst=0 emergency=0',
          'system_load_weight 1, S = 0.545 (l1 took 450 more): f = 0.455, share 0.2275');

------------------------------------------------------------------------------
-- Emergency override
------------------------------------------------------------------------------
SELECT set_rate_limit(:'run' || 'e1', 1000, '3650 days');
SELECT is(pg_temp.grant_of(:'run' || 'e1', 700, 'low', '{"emergency_override": true}'),
          '700 emergency burst=0 emergency=0', 'below the threshold: no share cap, all that remains');
SELECT is(pg_temp.grant_of(:'run' || 'e1', 400, 'low', '{"emergency_override": true}'),
          '300 emergency burst=0 emergency=0', 'usage 0.7 < 0.95: nothing beyond the limit');
SELECT is(pg_temp.grant_of(:'run' || 'e1', 1000, 'low', '{"emergency_override": true}'),
          '800 emergency burst=0 emergency=800', 'past 0.95: override_percentage 0.8 of 1000 beyond the limit');
SELECT is((SELECT reason FROM allocate_tokens(:'run' || 'e1', 1, 'high', context => '{"emergency_override": true}')),
          'token_quota_exhausted', 'the emergency allowance is spent');

SELECT set_rate_limit(:'run' || 'e2', 1000, '3650 days', emergency_threshold => 0.5);
SELECT is(pg_temp.grant_of(:'run' || 'e2', 700, 'low', '{"emergency_override": true}'),
          '700 emergency burst=0 emergency=0', 'usage 0 below 0.5');
SELECT is(pg_temp.grant_of(:'run' || 'e2', 1000, 'low', '{"emergency_override": true}'),
          '1000 emergency burst=0 emergency=700', 'emergency_threshold 0.5: usage 0.7 opens the allowance');

SELECT set_rate_limit(:'run' || 'e3', 1000, '3650 days', override_percentage => 0.25);
SELECT is(pg_temp.grant_of(:'run' || 'e3', 1000, 'low', '{"emergency_override": true}'),
          '1000 emergency burst=0 emergency=0', 'the whole quota first');
SELECT is(pg_temp.grant_of(:'run' || 'e3', 1000, 'low', '{"emergency_override": true}'),
          '250 emergency burst=0 emergency=250', 'override_percentage 0.25: 250 beyond the limit');

SELECT set_rate_limit(:'run' || 'e4', 1000, '3650 days', emergency_override_enabled => false);
SELECT is(pg_temp.grant_of(:'run' || 'e4', 1000, 'high', '{"emergency_override": true}'),
          '500 priority burst=0 emergency=0', 'emergency_override_enabled => false: the normal share');

SELECT set_rate_limit(:'run' || 'e5', 100, '3650 days');
SELECT (get_performance_metrics()->>'emergency_override_refused')::bigint AS refused_before \gset
CREATE ROLE rl_tap_plain;
GRANT USAGE ON SCHEMA public TO rl_tap_plain;
SET LOCAL ROLE rl_tap_plain;
SELECT throws_ok(format($$SELECT allocate_tokens(%L, 10, 'high', context => '{"emergency_override": true}')$$,
                        :'run' || 'e5'),
                 '42501', 'permission denied to use emergency_override',
                 'a role without EXECUTE on rate_limiter_emergency_access() gets 42501');
RESET ROLE;
SELECT is((get_performance_metrics()->>'emergency_override_refused')::bigint, (:refused_before + 1)::bigint,
          'the refused attempt is counted');
GRANT EXECUTE ON FUNCTION rate_limiter_emergency_access() TO rl_tap_plain;
SET LOCAL ROLE rl_tap_plain;
SELECT results_eq(
  format($$SELECT tokens_allocated, allocation_strategy FROM allocate_tokens(%L, 10, 'low', context => '{"emergency_override": true}')$$,
         :'run' || 'e5'),
  $$VALUES (10::bigint, 'emergency'::text)$$,
  'after GRANT EXECUTE ON FUNCTION rate_limiter_emergency_access() the role may use it');
SELECT ok(rate_limiter_emergency_access(), 'the grant gives the privilege');
RESET ROLE;

------------------------------------------------------------------------------
-- Burst mode: cap min(remaining, floor(min(1, share * multiplier) * remaining)),
-- extra tokens from a budget of max_burst_tokens per burst window.
------------------------------------------------------------------------------
SELECT set_rate_limit(:'run' || 'b1', 1000, '3650 days');
SELECT is(pg_temp.grant_of(:'run' || 'b1', 1000, 'high', '{"burst_mode": true}'),
          '1000 burst burst=500 emergency=0', 'burst_multiplier 2: share 0.5 becomes 1.0');

SELECT set_rate_limit(:'run' || 'b2', 1000, '3650 days', burst_multiplier => 1.5);
SELECT is(pg_temp.grant_of(:'run' || 'b2', 1000, 'high', '{"burst_mode": true}'),
          '750 burst burst=250 emergency=0', 'burst_multiplier 1.5: share 0.75');

SELECT set_rate_limit(:'run' || 'b3', 1000, '3650 days', max_burst_tokens => 100);
SELECT is(pg_temp.grant_of(:'run' || 'b3', 1000, 'high', '{"burst_mode": true}'),
          '600 burst burst=100 emergency=0', 'max_burst_tokens 100 bounds the extra');
SELECT is(pg_temp.grant_of(:'run' || 'b3', 1000, 'high', '{"burst_mode": true}'),
          '200 priority burst=0 emergency=0', 'the budget is spent for this burst window');
SET LOCAL rate_limiter.debug_time_offset = 900;
SELECT is(pg_temp.grant_of(:'run' || 'b3', 1000, 'high', '{"burst_mode": true}'),
          '200 burst burst=100 emergency=0', 'a new 15-minute burst window refills the budget');
SET LOCAL rate_limiter.debug_time_offset = 0;

SELECT set_rate_limit(:'run' || 'b4', 1000, '3650 days', max_burst_tokens => 100, burst_window => '1 hour');
SELECT is(pg_temp.grant_of(:'run' || 'b4', 1000, 'high', '{"burst_mode": true}'),
          '600 burst burst=100 emergency=0', 'budget of 100 per hour');
SET LOCAL rate_limiter.debug_time_offset = 900;
SELECT is(pg_temp.grant_of(:'run' || 'b4', 1000, 'high', '{"burst_mode": true}'),
          '200 priority burst=0 emergency=0', 'burst_window 1 hour: 15 minutes later the budget is still spent');
SET LOCAL rate_limiter.debug_time_offset = 0;

SELECT set_rate_limit(:'run' || 'b5', 1000, '3650 days', burst_mode_enabled => false);
SELECT is(pg_temp.grant_of(:'run' || 'b5', 1000, 'high', '{"burst_mode": true}'),
          '500 priority burst=0 emergency=0', 'burst_mode_enabled => false: the normal share');

SELECT set_rate_limit(:'run' || 'b6', 1000, '3650 days', burst_multiplier => 100, max_burst_tokens => 5000);
SELECT is(pg_temp.grant_of(:'run' || 'b6', 5000, 'high', '{"burst_mode": true}'),
          '1000 burst burst=500 emergency=0', 'burst mode never grants more than remains in the period');

SELECT * FROM finish();
ROLLBACK;
