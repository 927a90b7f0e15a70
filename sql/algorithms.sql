-- Algorithms per limit and burst caps, with the limiter's clock frozen
-- (rate_limiter.debug_clock = 1800000000, testing only).  Windows align to
-- Monday 1970-01-05, so at that instant a 1000-second window is 400 s in
-- and 10-second windows start.  debug_time_offset moves the frozen clock.
\i test/sql_helpers/fresh_start.sql
SET rate_limiter.debug_clock = 1800000000;

-- fixed_window (the default): 3 per 1000 s, reset at the window end (600 s).
SELECT set_user_rate_limit('a_fixed', 3, '1000 seconds');
SELECT g, c.allowed, c."limit", c.remaining, c.retry_after, c.reason
  FROM generate_series(1, 4) g, LATERAL check_rate_limit('a_fixed' || left('', g)) c ORDER BY g;

-- sliding_window: 10 per 1000 s.  Ten now; then the estimate
-- 10 * (1000 - e) / 1000 of the previous window has to fall to 9, which
-- happens 100 s into the next window: 600 + 100 = 700 s from now.
SELECT set_user_rate_limit('a_slide', 10, '1000 seconds', algorithm => 'sliding_window');
SELECT count(*) FILTER (WHERE c.allowed) AS allowed
  FROM generate_series(1, 10) g, LATERAL check_rate_limit('a_slide' || left('', g)) c;
SELECT allowed, "limit", remaining, retry_after, reason FROM check_rate_limit('a_slide');
SET rate_limiter.debug_time_offset = 699;
SELECT allowed, retry_after FROM check_rate_limit('a_slide');
SET rate_limiter.debug_time_offset = 700;
SELECT allowed, remaining FROM check_rate_limit('a_slide');
SELECT allowed, retry_after FROM check_rate_limit('a_slide');
RESET rate_limiter.debug_time_offset;

-- token_bucket: capacity (burst) 5, refilled at 10 per 10 s = 1 per second.
SELECT set_user_rate_limit('a_bucket', 10, '10 seconds', algorithm => 'token_bucket', burst => 5);
SELECT count(*) FILTER (WHERE c.allowed) AS allowed
  FROM generate_series(1, 5) g, LATERAL check_rate_limit('a_bucket' || left('', g)) c;
SELECT allowed, "limit", remaining, retry_after, reset_at - to_timestamp(1800000000) AS full_in
  FROM check_rate_limit('a_bucket');
SET rate_limiter.debug_time_offset = 3;
SELECT count(*) FILTER (WHERE c.allowed) AS allowed_after_3s
  FROM generate_series(1, 4) g, LATERAL check_rate_limit('a_bucket' || left('', g)) c;
RESET rate_limiter.debug_time_offset;

-- gcra, redis-cell's example: max_burst 15, 30 per 60 s.  Limit 16, the
-- first call leaves 15, the 17th waits one emission interval (2 s).
SELECT set_user_rate_limit('a_gcra', 30, '60 seconds', algorithm => 'gcra', burst => 15);
SELECT allowed, "limit", remaining FROM check_rate_limit('a_gcra');
SELECT count(*) FILTER (WHERE c.allowed) AS allowed
  FROM generate_series(1, 15) g, LATERAL check_rate_limit('a_gcra' || left('', g)) c;
SELECT allowed, "limit", remaining, retry_after FROM check_rate_limit('a_gcra');
SET rate_limiter.debug_time_offset = 2;
SELECT allowed, remaining FROM check_rate_limit('a_gcra');
RESET rate_limiter.debug_time_offset;

-- Token quotas take algorithms too: a token bucket of 1000 refilled at
-- 1000 per 1000 s; the priority share applies to what the bucket holds.
SELECT set_rate_limit('a_tokens', 1000, '1000 seconds', algorithm => 'token_bucket');
SELECT tokens_allocated, tokens_remaining, "limit" FROM allocate_tokens('a_tokens', 1000, 'high');
SET rate_limiter.debug_time_offset = 100;
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('a_tokens', 1000, 'high');
SELECT scope, limit_kind, algorithm, "limit", used, remaining, window_start IS NULL AS no_window,
       reset_at - to_timestamp(1800000100) AS full_in
  FROM get_rate_limit_status('a_tokens') WHERE scope = 'user';
RESET rate_limiter.debug_time_offset;

-- Burst caps (the seed's burst_limit over burst_window_seconds): at most 3
-- requests per 10 s on top of 100 per hour.
SELECT set_user_rate_limit('a_cap', 100, '1 hour', burst_limit => 3, burst_window_seconds => 10);
SELECT count(*) FILTER (WHERE c.allowed) AS allowed
  FROM generate_series(1, 3) g, LATERAL check_rate_limit('a_cap' || left('', g)) c;
SELECT allowed, limit_kind, "limit", remaining, retry_after, reason FROM check_rate_limit('a_cap');
SET rate_limiter.debug_time_offset = 10;
SELECT allowed, limit_kind, "limit", remaining FROM check_rate_limit('a_cap');
RESET rate_limiter.debug_time_offset;
\set VERBOSITY terse
SELECT enforce_rate_limit('a_cap') FROM generate_series(1, 3);
\set VERBOSITY default

-- A token burst cap is a hard cap: no priority share applies to it, so
-- 100 of the 500 that the share of the hour's quota would allow.
SELECT set_rate_limit('a_tcap', 1000, '1 hour', burst_limit => 100, burst_window_seconds => 60);
SELECT tokens_allocated, limit_kind, "limit" FROM allocate_tokens('a_tcap', 1000, 'high');

-- Bad options.
\set VERBOSITY terse
SELECT set_user_rate_limit('a_bad', 10, '1 hour', algorithm => 'leaky');
SELECT set_user_rate_limit('a_bad', 10, '1 hour', algorithm => NULL);
SELECT set_user_rate_limit('a_bad', 10, '1 hour', burst => 5);
SELECT set_user_rate_limit('a_bad', 10, '1 hour', algorithm => 'gcra', burst => -1);
SELECT set_user_rate_limit('a_bad', 10, '1 hour', burst_limit => 5);
SELECT set_user_rate_limit('a_bad', 10, '1 hour', burst_limit => 0, burst_window_seconds => 10);
SELECT set_user_rate_limit('a_bad', 10, '1 hour', burst_limit => 5, burst_window_seconds => 7200);
SELECT set_rate_limit('a_bad', 10, '1 hour', user_history_weight => 1.5);
SELECT set_rate_limit('a_bad', 10, '1 hour', system_load_weight => 'NaN');
SELECT set_rate_limit('a_bad', 10, '1 hour', time_factor_weight => -0.1);
SELECT set_rate_limit('a_bad', 10, '1 hour', emergency_threshold => 2);
SELECT set_rate_limit('a_bad', 10, '1 hour', override_percentage => 'Infinity');
SELECT set_rate_limit('a_bad', 10, '1 hour', burst_multiplier => 0.5);
SELECT set_rate_limit('a_bad', 10, '1 hour', burst_window => '0 seconds');
SELECT set_rate_limit('a_bad', 10, '1 hour', max_burst_tokens => -5);
SELECT allocate_tokens('a_bad', 1, context => '{"burst_mode": 1}');
SELECT allocate_tokens('a_bad', 1, context => '{"emergency": true}');
\set VERBOSITY default
SELECT count(*) AS bad_rows FROM token_limits WHERE user_id = 'a_bad';
RESET rate_limiter.debug_clock;
