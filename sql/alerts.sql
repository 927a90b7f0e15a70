-- Alerts (rate_limit_alerts, NOTIFY) and shadow mode.  The clock is frozen
-- (rate_limiter.debug_clock, testing only) at 2027-01-15 08:00:00 UTC, so
-- windows and payload timestamps are fixed.  This database has a worker
-- (test/regress.conf); rate_limiter_flush() waits for it to write the
-- queued alerts, so nothing sleeps.
\i test/sql_helpers/fresh_start.sql
SET rate_limiter.debug_clock = 1800000000;
SELECT current_setting('rate_limiter.alert_channel') AS channel,
       current_setting('rate_limiter.alert_thresholds') AS thresholds;
SELECT get_performance_metrics() AS m0 \gset
SELECT set_user_rate_limit('al_user', 20, '1 hour');
-- 80% of the limit (16 of 20).  The NOTIFY itself is checked by
-- test/t/008_alert_notify.pl: psql prints notifications with the flusher's
-- PID, which pg_regress cannot mask.
SELECT count(*) FILTER (WHERE (c).allowed) AS allowed
  FROM (SELECT check_rate_limit('al_user') AS c FROM generate_series(1, 16) OFFSET 0) s;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT kind, user_id, api_endpoint, scope FROM rate_limit_alerts WHERE user_id = 'al_user' ORDER BY id;

-- 95% (19 of 20) and exhausted (20 of 20); the 21st call is denied.
SELECT g, (c).allowed, (c).remaining, (c).reason
  FROM (SELECT g, check_rate_limit('al_user') AS c FROM generate_series(17, 21) g OFFSET 0) s;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT kind, scope, payload FROM rate_limit_alerts WHERE user_id = 'al_user' ORDER BY id;

-- Crossing the thresholds again in the same window raises nothing new.
SELECT reset_rate_limit('al_user');
SELECT count(*) FILTER (WHERE (c).allowed) AS allowed
  FROM (SELECT check_rate_limit('al_user') AS c FROM generate_series(1, 20) OFFSET 0) s;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT kind, count(*) FROM rate_limit_alerts WHERE user_id = 'al_user' GROUP BY 1 ORDER BY 1;

-- The next window alerts again (its own window_start).
SET rate_limiter.debug_time_offset = 3600;
SELECT count(*) FILTER (WHERE (c).allowed) AS allowed
  FROM (SELECT check_rate_limit('al_user') AS c FROM generate_series(1, 16) OFFSET 0) s;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT kind, payload->>'window_start' AS window_start, payload->>'used' AS used
  FROM rate_limit_alerts WHERE user_id = 'al_user' ORDER BY id;
RESET rate_limiter.debug_time_offset;

-- Abuse: more than abuse_denials denials of one user in abuse_window.  The
-- 4th denial raises the alert, later ones in the window do not.
SET rate_limiter.abuse_denials = 3;
SELECT set_user_rate_limit('al_abuse', 1, '1 hour');
SELECT g, (c).allowed, (c).reason
  FROM (SELECT g, check_rate_limit('al_abuse', 'ep') AS c FROM generate_series(1, 7) g OFFSET 0) s;
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT kind, api_endpoint, scope, payload FROM rate_limit_alerts
 WHERE user_id = 'al_abuse' AND kind = 'abuse' ORDER BY id;
RESET rate_limiter.abuse_denials;

-- Every emergency override raises one alert per window and limit.
SELECT set_rate_limit('al_em', 100, '1 hour');
SELECT success, tokens_allocated, allocation_strategy
  FROM allocate_tokens('al_em', 10, 'low', 'ep', NULL, '{"emergency_override": true}');
SELECT success, tokens_allocated, allocation_strategy
  FROM allocate_tokens('al_em', 10, 'low', 'ep', NULL, '{"emergency_override": true}');
SELECT rate_limiter_flush() >= 0 AS flushed;
SELECT kind, api_endpoint, scope, payload FROM rate_limit_alerts
 WHERE user_id = 'al_em' ORDER BY id;

-- Shadow mode per limit: counted, never enforced; reason says what would
-- have happened.
SELECT set_user_rate_limit('al_shadow', 2, '1 hour', shadow_mode => true);
SELECT shadow_mode FROM request_limits WHERE user_id = 'al_shadow';
SELECT g, (c).allowed, (c).remaining, (c).reason
  FROM (SELECT g, check_rate_limit('al_shadow') AS c FROM generate_series(1, 3) g OFFSET 0) s;
SELECT allowed, reason FROM enforce_rate_limit('al_shadow');  -- no error
SELECT count(*) AS usage_rows FROM token_usage WHERE user_id = 'al_shadow';
SELECT set_rate_limit('al_shadow_t', 100, '1 hour', shadow_mode => true);
SELECT success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('al_shadow_t', 300, 'high');
SELECT success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('al_shadow_t', 10, 'high');
-- An enforcing limit still denies next to a shadow one.
SELECT set_api_rate_limit('al_shadow_ep', 1, '1 hour');
SELECT g, (c).allowed, (c).reason
  FROM (SELECT g, check_rate_limit('al_shadow', 'al_shadow_ep') AS c FROM generate_series(1, 2) g OFFSET 0) s;
-- Setting the limit again without shadow_mode enforces it.
SELECT set_user_rate_limit('al_shadow', 2, '1 hour');
SELECT allowed, reason FROM check_rate_limit('al_shadow');
SELECT set_user_rate_limit('al_shadow', 2, '1 hour', shadow_mode => true);

-- Shadow mode for every limit: rate_limiter.shadow_mode (superuser).
SELECT set_user_rate_limit('al_guc', 1, '1 hour');
SET rate_limiter.shadow_mode = on;
SELECT g, (c).allowed, (c).reason
  FROM (SELECT g, check_rate_limit('al_guc') AS c FROM generate_series(1, 2) g OFFSET 0) s;
RESET rate_limiter.shadow_mode;
SELECT allowed, reason FROM check_rate_limit('al_guc');  -- the shadow calls were counted

SELECT (m->>'shadow_denials')::bigint - (:'m0'::jsonb->>'shadow_denials')::bigint AS shadow_denials,
       (m->>'alerts_dropped')::bigint - (:'m0'::jsonb->>'alerts_dropped')::bigint AS alerts_dropped,
       (m->>'alerts_sent')::bigint > (:'m0'::jsonb->>'alerts_sent')::bigint AS alerts_sent
  FROM get_performance_metrics() m;

-- Threshold setting validation.
SET rate_limiter.alert_thresholds = '50, 101';
SET rate_limiter.alert_thresholds = '90,50,90';
SHOW rate_limiter.alert_thresholds;
RESET rate_limiter.alert_thresholds;

RESET rate_limiter.debug_clock;
