-- Fixed windows are aligned to the calendar (UTC): minutes on the minute,
-- hours on the hour, days at midnight, weeks on Monday.  The testing GUC
-- rate_limiter.debug_time_offset moves the limiter's clock so that window
-- boundaries can be crossed without sleeping.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('w_user', 100, '1 hour');
SELECT set_user_rate_limit('w_user', 2, '1 day');
SELECT tokens_allocated FROM allocate_tokens('w_user', 1000, 'high');

SELECT limit_kind,
       extract(epoch FROM window_start)::bigint % 3600 = 0 AS on_the_hour,
       reset_at - window_start AS length
  FROM get_rate_limit_status('w_user') WHERE scope = 'user' AND limit_kind = 'tokens';
SELECT limit_kind,
       (window_start AT TIME ZONE 'UTC')::time = '00:00' AS at_utc_midnight,
       reset_at - window_start AS length
  FROM get_rate_limit_status('w_user') WHERE scope = 'user' AND limit_kind = 'requests';

SELECT set_rate_limit('week_user', 100, '7 days');
SELECT extract(isodow FROM window_start AT TIME ZONE 'UTC') AS weekday,
       (window_start AT TIME ZONE 'UTC')::time AS at
  FROM get_rate_limit_status('week_user') WHERE scope = 'user';

-- Two hours later the token window has restarted; the day window has not
-- necessarily, so only the token side is asserted.
SET rate_limiter.debug_time_offset = '2h';
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('w_user', 1000, 'high');
-- Two days later both have restarted: two requests again, then denied.
SET rate_limiter.debug_time_offset = '2d';
SELECT success, requests_remaining FROM allocate_tokens('w_user', 1, 'high');
SELECT success, requests_remaining FROM allocate_tokens('w_user', 1, 'high');
SELECT success, reason, retry_after <= interval '1 day' AS within_a_day
  FROM allocate_tokens('w_user', 1, 'high');
RESET rate_limiter.debug_time_offset;

-- Stepping the clock back never returns quota: the counter stays in the
-- window it was last charged in.
SET rate_limiter.debug_time_offset = '30d';
SELECT set_user_rate_limit('back_user', 1, '1 hour');
SELECT allowed FROM check_rate_limit('back_user');
SET rate_limiter.debug_time_offset = '29d';
SELECT allowed, reason, retry_after > interval '0' AS positive, retry_after <= interval '1 hour' AS bounded
  FROM check_rate_limit('back_user');
RESET rate_limiter.debug_time_offset;

-- Changing a limit keeps the usage; changing its window starts a new count.
SELECT set_rate_limit('chg_user', 100, '3650 days');
SELECT tokens_allocated FROM allocate_tokens('chg_user', 40, 'high');
SELECT set_rate_limit('chg_user', 60, '3650 days');
SELECT "limit", used, remaining FROM get_rate_limit_status('chg_user') WHERE scope = 'user';
SELECT set_rate_limit('chg_user', 60, '3000 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('chg_user', 1, 'high');

-- The testing GUCs are for superusers only.
CREATE ROLE rl_window_tester;
SET ROLE rl_window_tester;
SET rate_limiter.debug_time_offset = '1h';
SET rate_limiter.debug_hold_lock_ms = 10;
SET rate_limiter.failure_mode = 'open';
RESET ROLE;
DROP ROLE rl_window_tester;
