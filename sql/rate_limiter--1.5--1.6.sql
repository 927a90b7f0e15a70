-- rate_limiter 1.5 -> 1.6 update script: ALTER EXTENSION rate_limiter UPDATE
-- applies it to an installation of 1.5.  CREATE EXTENSION installs the current
-- version directly (rate_limiter--1.6.sql, built from sql/schema).
--
-- 1.6: in-flight (concurrency) limits: concurrency_limits,
-- set_concurrency_limit, remove_concurrency_limit, rate_limiter_leases, and
-- the in-flight rows of get_rate_limit_status (same signature: replaced).
-- Calendar periods: the per-limit options period_anchor and
-- period_timezone (token_limits, request_limits, every set_* function).
-- The result columns do not change: a denial says
-- reason = 'concurrency_limit_exceeded' and limit_kind = 'in_flight'.

\echo Use "ALTER EXTENSION rate_limiter UPDATE TO '1.6'" to load this file. \quit

------------------------------------------------------------------------------
-- In-flight (concurrency) limits.  Where one applies, every granted
-- allocate_tokens holds one in-flight slot of the user's (or the user's on
-- one endpoint) until settle_tokens settles that allocation, the backend
-- that allocated exits, or lease_timeout passes, whichever comes first.
-- The slots live in shared memory (rate_limiter.max_leases of them for the
-- whole server); a restart or a crash frees them all, as it ends every
-- backend that held one.
------------------------------------------------------------------------------

CREATE TABLE concurrency_limits (
  user_id       text NOT NULL,
  api_endpoint  text,
  max_in_flight integer NOT NULL,
  lease_timeout interval NOT NULL DEFAULT '10 minutes',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT concurrency_limits_scope_key UNIQUE NULLS NOT DISTINCT (user_id, api_endpoint),
  CONSTRAINT concurrency_limits_user_id_check CHECK (octet_length(user_id) BETWEEN 1 AND 255),
  CONSTRAINT concurrency_limits_api_endpoint_check
    CHECK (api_endpoint IS NULL OR octet_length(api_endpoint) BETWEEN 1 AND 255),
  CONSTRAINT concurrency_limits_max_in_flight_check CHECK (max_in_flight BETWEEN 1 AND 1000000),
  CONSTRAINT concurrency_limits_lease_timeout_check
    CHECK (lease_timeout >= interval '1 second' AND lease_timeout <= interval '7 days')
);
COMMENT ON TABLE concurrency_limits IS
  'In-flight limits: at most max_in_flight granted allocations of user_id (on api_endpoint, or on all endpoints when NULL) outstanding at once; write it with set_concurrency_limit/remove_concurrency_limit';
SELECT pg_catalog.pg_extension_config_dump('concurrency_limits', '');
REVOKE ALL ON concurrency_limits FROM PUBLIC;

-- Like rate_limiter_rules_changed: the limit reaches shared memory when
-- the transaction commits, and the transaction itself sees it at once.
CREATE FUNCTION rate_limiter_concurrency_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'rate_limiter_concurrency_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION rate_limiter_concurrency_changed() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_concurrency_changed() IS
  'Internal: records a change of concurrency_limits for the shared rule table at commit';
CREATE TRIGGER rate_limiter_concurrency_changed
  AFTER INSERT OR UPDATE OR DELETE ON concurrency_limits
  FOR EACH ROW EXECUTE FUNCTION rate_limiter_concurrency_changed();
CREATE TRIGGER rate_limiter_concurrency_truncated
  AFTER TRUNCATE ON concurrency_limits
  FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_concurrency_changed();

CREATE FUNCTION set_concurrency_limit(user_id text, max_in_flight integer,
  api_endpoint text DEFAULT NULL, lease_timeout interval DEFAULT '10 minutes')
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $3, true);
  IF $2 IS NULL THEN
    RAISE EXCEPTION 'max_in_flight must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF $2 < 1 THEN
    RAISE EXCEPTION 'max_in_flight must be at least 1, not %', $2
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF $2 > 1000000 THEN
    RAISE EXCEPTION 'max_in_flight is too large: %', $2
      USING ERRCODE = 'numeric_value_out_of_range', DETAIL = 'The maximum is 1000000.';
  END IF;
  IF $4 IS NULL THEN
    RAISE EXCEPTION 'lease_timeout must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF $4 < interval '1 second' OR $4 > interval '7 days' THEN
    RAISE EXCEPTION 'lease_timeout must be between 1 second and 7 days, not %', $4
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO @extschema@.concurrency_limits AS c
    (user_id, api_endpoint, max_in_flight, lease_timeout)
  VALUES ($1, $3, $2, $4)
  ON CONFLICT ON CONSTRAINT concurrency_limits_scope_key
  DO UPDATE SET max_in_flight = EXCLUDED.max_in_flight,
                lease_timeout = EXCLUDED.lease_timeout, updated_at = now()
   WHERE (c.max_in_flight, c.lease_timeout)
         IS DISTINCT FROM (EXCLUDED.max_in_flight, EXCLUDED.lease_timeout);
END $$;
REVOKE ALL ON FUNCTION set_concurrency_limit(text, integer, text, interval) FROM PUBLIC;
COMMENT ON FUNCTION set_concurrency_limit(text, integer, text, interval) IS
  'Allows at most max_in_flight unsettled grants of a user (on one endpoint when api_endpoint is given) at once; a grant''s slot is freed by settle_tokens, by the exit of the backend that allocated, or after lease_timeout; takes effect at commit';

CREATE FUNCTION remove_concurrency_limit(user_id text, api_endpoint text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $2, true);
  DELETE FROM @extschema@.concurrency_limits c
   WHERE c.user_id = $1 AND c.api_endpoint IS NOT DISTINCT FROM $2;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n > 0;
END $$;
REVOKE ALL ON FUNCTION remove_concurrency_limit(text, text) FROM PUBLIC;
COMMENT ON FUNCTION remove_concurrency_limit(text, text) IS
  'Removes the in-flight limit of a user (or of a user on one endpoint); returns whether there was one. Slots already held stay held until settled, released or timed out';

-- Internal: the live leases of one scope (get_rate_limit_status).
CREATE FUNCTION rate_limiter_in_flight(user_id text, api_endpoint text,
  OUT in_flight integer, OUT next_expiry timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'rate_limiter_in_flight' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_in_flight(text, text) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_in_flight(text, text) IS
  'Internal: how many leases of a concurrency limit are held, and when the earliest times out';

-- The leases held now in this database: one row per limited scope of each
-- unsettled grant.
CREATE FUNCTION rate_limiter_leases(
  OUT allocation_id bigint, OUT pid integer, OUT acquired_at timestamptz,
  OUT expires_at timestamptz)
RETURNS SETOF record
  AS 'MODULE_PATHNAME', 'rate_limiter_leases' LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_leases() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_leases() IS
  'The in-flight leases of this database: the allocation (NULL until its usage row is written, or when the usage log is off), the backend that took it, when, and when it times out';

-- get_rate_limit_status lists the in-flight limits too (sql/schema/05_status.sql).
CREATE OR REPLACE FUNCTION get_rate_limit_status(user_id text)
RETURNS TABLE (scope text, api_endpoint text, limit_kind text, algorithm text, "limit" bigint,
               used bigint, remaining bigint, window_duration interval, window_start timestamptz,
               reset_at timestamptz, limit_owner text)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  RETURN QUERY
  WITH RECURSIVE owners(id, depth, seen) AS (
    SELECT $1, 0, ARRAY[$1]
    UNION ALL
    SELECT p.parent_id, owners.depth + 1, owners.seen || p.parent_id
      FROM @extschema@.rate_limit_parents p JOIN owners ON p.child_id = owners.id
     WHERE owners.depth < 8 AND NOT p.parent_id = ANY (owners.seen)
  ), rules AS (
    SELECT CASE WHEN t.api_endpoint IS NOT NULL THEN 'user_endpoint' ELSE 'user' END AS scope,
           t.api_endpoint AS ep, 'tokens' AS kind, t.max_tokens_per_period AS lim,
           t.period_interval AS win, t.algorithm AS alg, t.burst AS bst, o.id AS owner,
           o.depth AS depth
      FROM owners o JOIN @extschema@.token_limits t ON t.user_id = o.id
    UNION ALL
    SELECT CASE WHEN r.api_endpoint IS NOT NULL THEN 'user_endpoint' ELSE 'user' END,
           r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration, r.algorithm, r.burst,
           o.id, o.depth
      FROM owners o JOIN @extschema@.request_limits r ON r.user_id = o.id
    UNION ALL
    SELECT 'default', NULL, 'tokens', t.max_tokens_per_period, t.period_interval, t.algorithm, t.burst,
           $1, 0
      FROM @extschema@.token_limits t
     WHERE t.user_id IS NULL AND t.api_endpoint IS NULL
       AND NOT EXISTS (SELECT 1 FROM @extschema@.token_limits o WHERE o.user_id = $1 AND o.api_endpoint IS NULL)
    UNION ALL
    SELECT 'default', NULL, 'requests', r.max_requests_per_window, r.window_duration, r.algorithm, r.burst,
           $1, 0
      FROM @extschema@.request_limits r
     WHERE r.user_id IS NULL AND r.api_endpoint IS NULL
       AND NOT EXISTS (SELECT 1 FROM @extschema@.request_limits o WHERE o.user_id = $1 AND o.api_endpoint IS NULL)
    UNION ALL
    SELECT 'endpoint', t.api_endpoint, 'tokens', t.max_tokens_per_period, t.period_interval, t.algorithm, t.burst,
           NULL, 9
      FROM @extschema@.token_limits t WHERE t.user_id IS NULL AND t.api_endpoint IS NOT NULL
    UNION ALL
    SELECT 'endpoint', r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration, r.algorithm,
           r.burst, NULL, 9
      FROM @extschema@.request_limits r WHERE r.user_id IS NULL AND r.api_endpoint IS NOT NULL
  )
  SELECT rules.scope, rules.ep, rules.kind, rules.alg, c.used + c.remaining, c.used, c.remaining,
         rules.win, c.window_start, c.reset_at, rules.owner
    FROM rules,
         LATERAL @extschema@.rate_limiter_peek_counter(
           rules.scope, CASE WHEN rules.scope = 'endpoint' THEN NULL ELSE rules.owner END,
           rules.ep, rules.kind, rules.win, rules.alg, rules.lim, rules.bst) c
   ORDER BY rules.depth,
            CASE rules.scope WHEN 'user_endpoint' THEN 1 WHEN 'user' THEN 2
                             WHEN 'default' THEN 2 ELSE 3 END,
            rules.ep NULLS FIRST, rules.kind;
  -- The user's in-flight limits (set_concurrency_limit): used is the slots
  -- held, reset_at when the earliest of them times out.
  RETURN QUERY
  SELECT CASE WHEN c.api_endpoint IS NOT NULL THEN 'user_endpoint' ELSE 'user' END, c.api_endpoint,
         'in_flight', NULL::text, c.max_in_flight::bigint, f.in_flight::bigint,
         greatest(c.max_in_flight - f.in_flight, 0)::bigint, c.lease_timeout, NULL::timestamptz,
         f.next_expiry, $1
    FROM @extschema@.concurrency_limits c,
         LATERAL @extschema@.rate_limiter_in_flight(c.user_id, c.api_endpoint) f
   WHERE c.user_id = $1
   ORDER BY c.api_endpoint NULLS FIRST;
END $$;

-- ==== calendar periods: period_anchor and period_timezone ====

-- Two per-limit options (sql/schema/options.tsv) for calendar periods of
-- fixed windows (docs/algorithms.md).  The set_* functions and the upsert
-- gain the two arguments: dropped and created again, their privileges
-- saved first and applied at the end (see rate_limiter--1.0--1.1.sql).
CREATE TEMP TABLE rate_limiter_saved_acl AS
  SELECT p.proname, p.proowner, p.proacl
    FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = '@extschema@'::regnamespace
     AND p.proname IN ('rate_limiter_upsert_limit', 'set_rate_limit', 'set_user_rate_limit', 'set_api_rate_limit', 'set_api_token_limit', 'set_default_rate_limit', 'set_default_user_rate_limit');

ALTER TABLE token_limits ADD COLUMN period_anchor timestamptz, ADD COLUMN period_timezone text;
ALTER TABLE request_limits ADD COLUMN period_anchor timestamptz, ADD COLUMN period_timezone text;

-- The row triggers fire for the new columns too.
DROP TRIGGER rate_limiter_rules_changed ON token_limits;
DROP TRIGGER rate_limiter_rules_changed ON request_limits;
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_tokens_per_period, period_interval,
    algorithm, burst, burst_limit, burst_window_seconds, enable_dynamic_allocation,
    emergency_override_enabled, burst_mode_enabled, user_history_weight, system_load_weight,
    time_factor_weight, emergency_threshold, override_percentage, burst_multiplier, burst_window,
    max_burst_tokens, shadow_mode, period_anchor, period_timezone
  ON token_limits FOR EACH ROW EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_requests_per_window, window_duration,
    algorithm, burst, burst_limit, burst_window_seconds, enable_dynamic_allocation,
    emergency_override_enabled, burst_mode_enabled, user_history_weight, system_load_weight,
    time_factor_weight, emergency_threshold, override_percentage, burst_multiplier, burst_window,
    max_burst_tokens, shadow_mode, period_anchor, period_timezone
  ON request_limits FOR EACH ROW EXECUTE FUNCTION rate_limiter_rules_changed();
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;

DROP FUNCTION @extschema@.rate_limiter_upsert_limit(text, text, text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean);
DROP FUNCTION @extschema@.set_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean);
DROP FUNCTION @extschema@.set_user_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean);
DROP FUNCTION @extschema@.set_api_rate_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean);
DROP FUNCTION @extschema@.set_api_token_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean);
DROP FUNCTION @extschema@.set_default_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean);
DROP FUNCTION @extschema@.set_default_user_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean);

CREATE FUNCTION rate_limiter_upsert_limit(
  p_kind text, p_user_id text, p_api_endpoint text, p_max bigint, p_window interval,
  p_algorithm text, p_burst bigint, p_burst_limit bigint, p_burst_window_seconds integer,
  p_enable_dynamic_allocation boolean, p_emergency_override_enabled boolean,
  p_burst_mode_enabled boolean, p_user_history_weight float8, p_system_load_weight float8,
  p_time_factor_weight float8, p_emergency_threshold float8, p_override_percentage float8,
  p_burst_multiplier float8, p_burst_window interval, p_max_burst_tokens bigint,
  p_shadow_mode boolean, p_period_anchor timestamptz, p_period_timezone text
)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  fraction_names text[] := ARRAY['user_history_weight', 'system_load_weight', 'time_factor_weight',
                                 'emergency_threshold', 'override_percentage'];
  fractions float8[] := ARRAY[p_user_history_weight, p_system_load_weight, p_time_factor_weight,
                              p_emergency_threshold, p_override_percentage];
  months integer;
  days integer;
BEGIN
  IF p_kind = 'tokens' THEN
    PERFORM @extschema@.rate_limiter_check_limit('max_tokens_per_period', p_max);
    PERFORM @extschema@.rate_limiter_check_window('period_interval', p_window);
  ELSE
    PERFORM @extschema@.rate_limiter_check_limit('max_requests_per_window', p_max);
    PERFORM @extschema@.rate_limiter_check_window('window_duration', p_window);
  END IF;
  IF p_algorithm IS NULL THEN
    RAISE EXCEPTION 'algorithm must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF p_algorithm NOT IN ('fixed_window', 'sliding_window', 'token_bucket', 'gcra') THEN
    -- Clipped: a 1 MB argument must not become a 1 MB message.
    RAISE EXCEPTION 'unknown algorithm "%"',
      CASE WHEN length(p_algorithm) > 64 THEN left(p_algorithm, 64) || '...' ELSE p_algorithm END
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use ''fixed_window'', ''sliding_window'', ''token_bucket'' or ''gcra''.';
  END IF;
  IF p_burst IS NOT NULL THEN
    IF p_algorithm NOT IN ('token_bucket', 'gcra') THEN
      RAISE EXCEPTION 'burst applies only to the token_bucket and gcra algorithms'
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'For a short-window cap on a window algorithm use burst_limit and burst_window_seconds.';
    END IF;
    IF p_burst < 0 OR p_burst > 1000000000000000 THEN
      RAISE EXCEPTION 'burst must be between 0 and 1000000000000000, not %', p_burst
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END IF;
  IF (p_burst_limit IS NULL) <> (p_burst_window_seconds IS NULL) THEN
    RAISE EXCEPTION 'burst_limit and burst_window_seconds must be given together'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_burst_limit IS NOT NULL THEN
    PERFORM @extschema@.rate_limiter_check_limit('burst_limit', p_burst_limit);
    IF p_burst_window_seconds < 1 OR p_burst_window_seconds * interval '1 second' > p_window THEN
      RAISE EXCEPTION 'burst_window_seconds must be between 1 and the limit''s window (% seconds), not %',
        extract(epoch FROM p_window)::bigint, p_burst_window_seconds
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END IF;
  FOR i IN 1 .. array_length(fractions, 1) LOOP
    IF fractions[i] IS NOT NULL AND NOT (fractions[i] BETWEEN 0 AND 1) THEN
      RAISE EXCEPTION '% must be between 0 and 1, not %', fraction_names[i], fractions[i]
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END LOOP;
  IF p_burst_multiplier IS NOT NULL AND NOT (p_burst_multiplier BETWEEN 1 AND 100) THEN
    RAISE EXCEPTION 'burst_multiplier must be between 1 and 100, not %', p_burst_multiplier
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_burst_window IS NOT NULL THEN
    PERFORM @extschema@.rate_limiter_check_window('burst_window', p_burst_window);
  END IF;
  IF p_max_burst_tokens IS NOT NULL AND (p_max_burst_tokens < 0 OR p_max_burst_tokens > 1000000000000000) THEN
    RAISE EXCEPTION 'max_burst_tokens must be between 0 and 1000000000000000, not %', p_max_burst_tokens
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Calendar periods (docs/algorithms.md): a fixed window only.
  IF (p_period_anchor IS NOT NULL OR p_period_timezone IS NOT NULL) AND p_algorithm <> 'fixed_window' THEN
    RAISE EXCEPTION 'period_anchor and period_timezone apply only to the fixed_window algorithm'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The other algorithms count a window as a fixed length of time.';
  END IF;
  IF p_period_anchor IS NOT NULL
     AND NOT (p_period_anchor BETWEEN timestamptz '1900-01-01 00:00+00' AND timestamptz '2200-01-01 00:00+00') THEN
    RAISE EXCEPTION 'period_anchor must be between 1900 and 2200, not %', p_period_anchor
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- A calendar period (months, or a zone or an anchor): no negative part,
  -- and its longest period (months of 31 days, days of 25 hours) within
  -- the 3650 days every window is bounded by.
  IF p_algorithm = 'fixed_window' AND (extract(year FROM p_window) * 12 + extract(month FROM p_window) <> 0
                                       OR p_period_anchor IS NOT NULL OR p_period_timezone IS NOT NULL) THEN
    months := (extract(year FROM p_window) * 12 + extract(month FROM p_window))::integer;
    days := extract(day FROM p_window)::integer;
    IF months < 0 OR days < 0 OR p_window - make_interval(months => months, days => days) < interval '0' THEN
      RAISE EXCEPTION 'a calendar period cannot have a negative part: %', p_window
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF make_interval(days => months * 31) + make_interval(hours => days * 25)
       + (p_window - make_interval(months => months, days => days)) + interval '1 hour' > interval '3650 days' THEN
      RAISE EXCEPTION 'a calendar period of % can last more than 3650 days', p_window
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Calendar periods of up to 9 years are allowed.';
    END IF;
  END IF;
  IF p_period_timezone IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = p_period_timezone) THEN
    RAISE EXCEPTION 'time zone "%" is not recognized',
      CASE WHEN length(p_period_timezone) > 64 THEN left(p_period_timezone, 64) || '...' ELSE p_period_timezone END
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a name from pg_timezone_names.';
  END IF;

  IF p_kind = 'tokens' THEN
    INSERT INTO @extschema@.token_limits AS t (
      user_id, api_endpoint, max_tokens_per_period, period_interval, algorithm, burst, burst_limit,
      burst_window_seconds, enable_dynamic_allocation, emergency_override_enabled, burst_mode_enabled,
      user_history_weight, system_load_weight, time_factor_weight, emergency_threshold,
      override_percentage, burst_multiplier, burst_window, max_burst_tokens, shadow_mode,
      period_anchor, period_timezone)
    VALUES (p_user_id, p_api_endpoint, p_max, p_window, p_algorithm, p_burst, p_burst_limit,
      p_burst_window_seconds, p_enable_dynamic_allocation, p_emergency_override_enabled,
      p_burst_mode_enabled, p_user_history_weight, p_system_load_weight, p_time_factor_weight,
      p_emergency_threshold, p_override_percentage, p_burst_multiplier, p_burst_window,
      p_max_burst_tokens, p_shadow_mode, p_period_anchor, p_period_timezone)
    ON CONFLICT (user_id, api_endpoint) DO UPDATE SET
      max_tokens_per_period = EXCLUDED.max_tokens_per_period,
      period_interval = EXCLUDED.period_interval,
      algorithm = EXCLUDED.algorithm, burst = EXCLUDED.burst, burst_limit = EXCLUDED.burst_limit,
      burst_window_seconds = EXCLUDED.burst_window_seconds,
      enable_dynamic_allocation = EXCLUDED.enable_dynamic_allocation,
      emergency_override_enabled = EXCLUDED.emergency_override_enabled,
      burst_mode_enabled = EXCLUDED.burst_mode_enabled,
      user_history_weight = EXCLUDED.user_history_weight,
      system_load_weight = EXCLUDED.system_load_weight,
      time_factor_weight = EXCLUDED.time_factor_weight,
      emergency_threshold = EXCLUDED.emergency_threshold,
      override_percentage = EXCLUDED.override_percentage,
      burst_multiplier = EXCLUDED.burst_multiplier, burst_window = EXCLUDED.burst_window,
      max_burst_tokens = EXCLUDED.max_burst_tokens,
      shadow_mode = EXCLUDED.shadow_mode, period_anchor = EXCLUDED.period_anchor,
      period_timezone = EXCLUDED.period_timezone, updated_at = now();
  ELSE
    INSERT INTO @extschema@.request_limits AS r (
      user_id, api_endpoint, max_requests_per_window, window_duration, algorithm, burst, burst_limit,
      burst_window_seconds, enable_dynamic_allocation, emergency_override_enabled, burst_mode_enabled,
      user_history_weight, system_load_weight, time_factor_weight, emergency_threshold,
      override_percentage, burst_multiplier, burst_window, max_burst_tokens, shadow_mode,
      period_anchor, period_timezone)
    VALUES (p_user_id, p_api_endpoint, p_max, p_window, p_algorithm, p_burst, p_burst_limit,
      p_burst_window_seconds, p_enable_dynamic_allocation, p_emergency_override_enabled,
      p_burst_mode_enabled, p_user_history_weight, p_system_load_weight, p_time_factor_weight,
      p_emergency_threshold, p_override_percentage, p_burst_multiplier, p_burst_window,
      p_max_burst_tokens, p_shadow_mode, p_period_anchor, p_period_timezone)
    ON CONFLICT (user_id, api_endpoint) DO UPDATE SET
      max_requests_per_window = EXCLUDED.max_requests_per_window,
      window_duration = EXCLUDED.window_duration,
      algorithm = EXCLUDED.algorithm, burst = EXCLUDED.burst, burst_limit = EXCLUDED.burst_limit,
      burst_window_seconds = EXCLUDED.burst_window_seconds,
      enable_dynamic_allocation = EXCLUDED.enable_dynamic_allocation,
      emergency_override_enabled = EXCLUDED.emergency_override_enabled,
      burst_mode_enabled = EXCLUDED.burst_mode_enabled,
      user_history_weight = EXCLUDED.user_history_weight,
      system_load_weight = EXCLUDED.system_load_weight,
      time_factor_weight = EXCLUDED.time_factor_weight,
      emergency_threshold = EXCLUDED.emergency_threshold,
      override_percentage = EXCLUDED.override_percentage,
      burst_multiplier = EXCLUDED.burst_multiplier, burst_window = EXCLUDED.burst_window,
      max_burst_tokens = EXCLUDED.max_burst_tokens,
      shadow_mode = EXCLUDED.shadow_mode, period_anchor = EXCLUDED.period_anchor,
      period_timezone = EXCLUDED.period_timezone, updated_at = now();
  END IF;
END $$;
REVOKE ALL ON FUNCTION rate_limiter_upsert_limit(text, text, text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_upsert_limit(text, text, text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) IS
  'Internal: validates the options and inserts or updates one token_limits or request_limits row';

CREATE FUNCTION set_rate_limit(user_id text, max_tokens_per_period bigint,
  period_interval interval DEFAULT '1 day',
  api_endpoint text DEFAULT NULL,
  algorithm text DEFAULT 'fixed_window',
  burst bigint DEFAULT NULL,
  burst_limit bigint DEFAULT NULL,
  burst_window_seconds integer DEFAULT NULL,
  enable_dynamic_allocation boolean DEFAULT NULL,
  emergency_override_enabled boolean DEFAULT NULL,
  burst_mode_enabled boolean DEFAULT NULL,
  user_history_weight float8 DEFAULT NULL,
  system_load_weight float8 DEFAULT NULL,
  time_factor_weight float8 DEFAULT NULL,
  emergency_threshold float8 DEFAULT NULL,
  override_percentage float8 DEFAULT NULL,
  burst_multiplier float8 DEFAULT NULL,
  burst_window interval DEFAULT NULL,
  max_burst_tokens bigint DEFAULT NULL,
  shadow_mode boolean DEFAULT NULL,
  period_anchor timestamptz DEFAULT NULL,
  period_timezone text DEFAULT NULL
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', $1, $4, $2, $3,
    $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22);
END $$;
REVOKE ALL ON FUNCTION set_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION set_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) IS
  'Sets the token quota of a user (on one endpoint when api_endpoint is given), with its algorithm and strategy options; takes effect at commit';

CREATE FUNCTION set_user_rate_limit(user_id text, max_requests_per_window bigint,
  window_duration interval,
  api_endpoint text DEFAULT NULL,
  algorithm text DEFAULT 'fixed_window',
  burst bigint DEFAULT NULL,
  burst_limit bigint DEFAULT NULL,
  burst_window_seconds integer DEFAULT NULL,
  enable_dynamic_allocation boolean DEFAULT NULL,
  emergency_override_enabled boolean DEFAULT NULL,
  burst_mode_enabled boolean DEFAULT NULL,
  user_history_weight float8 DEFAULT NULL,
  system_load_weight float8 DEFAULT NULL,
  time_factor_weight float8 DEFAULT NULL,
  emergency_threshold float8 DEFAULT NULL,
  override_percentage float8 DEFAULT NULL,
  burst_multiplier float8 DEFAULT NULL,
  burst_window interval DEFAULT NULL,
  max_burst_tokens bigint DEFAULT NULL,
  shadow_mode boolean DEFAULT NULL,
  period_anchor timestamptz DEFAULT NULL,
  period_timezone text DEFAULT NULL
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', $1, $4, $2, $3,
    $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22);
END $$;
REVOKE ALL ON FUNCTION set_user_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION set_user_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) IS
  'Sets the request limit of a user (on one endpoint when api_endpoint is given), with its algorithm, burst cap (burst_limit, burst_window_seconds) and strategy options; takes effect at commit';

CREATE FUNCTION set_api_rate_limit(api_endpoint text, max_requests_per_window bigint,
  window_duration interval,
  algorithm text DEFAULT 'fixed_window',
  burst bigint DEFAULT NULL,
  burst_limit bigint DEFAULT NULL,
  burst_window_seconds integer DEFAULT NULL,
  enable_dynamic_allocation boolean DEFAULT NULL,
  emergency_override_enabled boolean DEFAULT NULL,
  burst_mode_enabled boolean DEFAULT NULL,
  user_history_weight float8 DEFAULT NULL,
  system_load_weight float8 DEFAULT NULL,
  time_factor_weight float8 DEFAULT NULL,
  emergency_threshold float8 DEFAULT NULL,
  override_percentage float8 DEFAULT NULL,
  burst_multiplier float8 DEFAULT NULL,
  burst_window interval DEFAULT NULL,
  max_burst_tokens bigint DEFAULT NULL,
  shadow_mode boolean DEFAULT NULL,
  period_anchor timestamptz DEFAULT NULL,
  period_timezone text DEFAULT NULL
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', NULL, $1, $2, $3,
    $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21);
END $$;
REVOKE ALL ON FUNCTION set_api_rate_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION set_api_rate_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) IS
  'Sets the request limit of an endpoint, shared by all users; takes effect at commit';

CREATE FUNCTION set_api_token_limit(api_endpoint text, max_tokens_per_period bigint,
  period_interval interval DEFAULT '1 day',
  algorithm text DEFAULT 'fixed_window',
  burst bigint DEFAULT NULL,
  burst_limit bigint DEFAULT NULL,
  burst_window_seconds integer DEFAULT NULL,
  enable_dynamic_allocation boolean DEFAULT NULL,
  emergency_override_enabled boolean DEFAULT NULL,
  burst_mode_enabled boolean DEFAULT NULL,
  user_history_weight float8 DEFAULT NULL,
  system_load_weight float8 DEFAULT NULL,
  time_factor_weight float8 DEFAULT NULL,
  emergency_threshold float8 DEFAULT NULL,
  override_percentage float8 DEFAULT NULL,
  burst_multiplier float8 DEFAULT NULL,
  burst_window interval DEFAULT NULL,
  max_burst_tokens bigint DEFAULT NULL,
  shadow_mode boolean DEFAULT NULL,
  period_anchor timestamptz DEFAULT NULL,
  period_timezone text DEFAULT NULL
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', NULL, $1, $2, $3,
    $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21);
END $$;
REVOKE ALL ON FUNCTION set_api_token_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION set_api_token_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) IS
  'Sets the token quota of an endpoint, shared by all users; takes effect at commit';

CREATE FUNCTION set_default_rate_limit(max_tokens_per_period bigint,
  period_interval interval DEFAULT '1 day',
  algorithm text DEFAULT 'fixed_window',
  burst bigint DEFAULT NULL,
  burst_limit bigint DEFAULT NULL,
  burst_window_seconds integer DEFAULT NULL,
  enable_dynamic_allocation boolean DEFAULT NULL,
  emergency_override_enabled boolean DEFAULT NULL,
  burst_mode_enabled boolean DEFAULT NULL,
  user_history_weight float8 DEFAULT NULL,
  system_load_weight float8 DEFAULT NULL,
  time_factor_weight float8 DEFAULT NULL,
  emergency_threshold float8 DEFAULT NULL,
  override_percentage float8 DEFAULT NULL,
  burst_multiplier float8 DEFAULT NULL,
  burst_window interval DEFAULT NULL,
  max_burst_tokens bigint DEFAULT NULL,
  shadow_mode boolean DEFAULT NULL,
  period_anchor timestamptz DEFAULT NULL,
  period_timezone text DEFAULT NULL
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', NULL, NULL, $1, $2,
    $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20);
END $$;
REVOKE ALL ON FUNCTION set_default_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION set_default_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) IS
  'Sets the token quota of every user who has no token quota of their own';

CREATE FUNCTION set_default_user_rate_limit(max_requests_per_window bigint,
  window_duration interval,
  algorithm text DEFAULT 'fixed_window',
  burst bigint DEFAULT NULL,
  burst_limit bigint DEFAULT NULL,
  burst_window_seconds integer DEFAULT NULL,
  enable_dynamic_allocation boolean DEFAULT NULL,
  emergency_override_enabled boolean DEFAULT NULL,
  burst_mode_enabled boolean DEFAULT NULL,
  user_history_weight float8 DEFAULT NULL,
  system_load_weight float8 DEFAULT NULL,
  time_factor_weight float8 DEFAULT NULL,
  emergency_threshold float8 DEFAULT NULL,
  override_percentage float8 DEFAULT NULL,
  burst_multiplier float8 DEFAULT NULL,
  burst_window interval DEFAULT NULL,
  max_burst_tokens bigint DEFAULT NULL,
  shadow_mode boolean DEFAULT NULL,
  period_anchor timestamptz DEFAULT NULL,
  period_timezone text DEFAULT NULL
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', NULL, NULL, $1, $2,
    $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20);
END $$;
REVOKE ALL ON FUNCTION set_default_user_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION set_default_user_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean, timestamptz, text) IS
  'Sets the request limit of every user who has no request limit of their own';

-- The saved privileges, applied to the functions created again above (as
-- in rate_limiter--1.0--1.1.sql).
DO $$
DECLARE
  s record;
  f record;
  a record;
  initial pg_catalog.aclitem[];
BEGIN
  FOR s IN SELECT * FROM pg_temp.rate_limiter_saved_acl LOOP
    FOR f IN SELECT p.oid, p.oid::pg_catalog.regprocedure AS sig, p.proowner, p.proacl
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = '@extschema@'::regnamespace AND p.proname = s.proname LOOP
      SELECT i.initprivs INTO initial FROM pg_catalog.pg_init_privs i
       WHERE i.objoid = f.oid AND i.classoid = 'pg_catalog.pg_proc'::regclass AND i.objsubid = 0;
      FOR a IN SELECT x.grantee FROM pg_catalog.aclexplode(
                 coalesce(f.proacl, pg_catalog.acldefault('f', f.proowner))) x
                WHERE x.grantee <> f.proowner LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s', f.sig,
          CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(a.grantee::regrole::text) END);
      END LOOP;
      FOR a IN SELECT x.grantee, x.is_grantable FROM pg_catalog.aclexplode(
                 coalesce(s.proacl, pg_catalog.acldefault('f', s.proowner))) x
                WHERE x.grantee <> s.proowner AND x.privilege_type = 'EXECUTE' LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', f.sig,
          CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(a.grantee::regrole::text) END,
          CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
      END LOOP;
      -- The grants just made are the site's, not the extension's: the
      -- initial privileges stay what this script set.
      IF initial IS NULL THEN
        DELETE FROM pg_catalog.pg_init_privs i
         WHERE i.objoid = f.oid AND i.classoid = 'pg_catalog.pg_proc'::regclass AND i.objsubid = 0;
      ELSE
        UPDATE pg_catalog.pg_init_privs i SET initprivs = initial
         WHERE i.objoid = f.oid AND i.classoid = 'pg_catalog.pg_proc'::regclass AND i.objsubid = 0;
      END IF;
    END LOOP;
  END LOOP;
END $$;
DROP TABLE pg_temp.rate_limiter_saved_acl;
