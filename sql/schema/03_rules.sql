------------------------------------------------------------------------------
-- Rules.  Rules live in one shared-memory table for the whole server
-- (README, "Rules at scale"); rule changes reach it at commit.
------------------------------------------------------------------------------

-- The triggers fire per row, so that the commit of a rule change updates
-- exactly the rules it changed; TRUNCATE reloads the database's rules.
-- They fire under session_replication_role = replica too (logical
-- replication, restores), and not for the snapshot columns
-- rate_limiter_flush() writes.
CREATE FUNCTION rate_limiter_rules_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'rate_limiter_rules_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION rate_limiter_rules_changed() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_rules_changed() IS
  'Internal: trigger that brings committed rule changes into the shared rule table (per row; TRUNCATE reloads the database''s rules)';

CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_tokens_per_period, period_interval,
    @OPTION_NAMES@
  ON token_limits FOR EACH ROW EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_requests_per_window, window_duration,
    @OPTION_NAMES@
  ON request_limits FOR EACH ROW EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_truncated
  AFTER TRUNCATE ON token_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_truncated
  AFTER TRUNCATE ON request_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_truncated;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_truncated;

CREATE FUNCTION reload_rate_limits() RETURNS void
AS 'MODULE_PATHNAME', 'reload_rate_limits' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION reload_rate_limits() IS
  'Reads every rule of this database again from token_limits and request_limits after this transaction commits (for changes made with the triggers disabled)';

-- The shared rule table as this database sees it.
CREATE FUNCTION rule_table_status(
  OUT state text, OUT rules bigint, OUT overflowed boolean, OUT rules_total bigint, OUT capacity bigint,
  OUT tombstones bigint)
RETURNS record AS 'MODULE_PATHNAME', 'rule_table_status' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rule_table_status() FROM PUBLIC;
COMMENT ON FUNCTION rule_table_status() IS
  'The shared rule table: state of this database''s rules (not_loaded, loading, loaded, resetting), rules held for it, whether some are read from their table (rate_limiter.max_rules too small), rules held for all databases, capacity, tombstones of loads under way (all databases)';

------------------------------------------------------------------------------
-- Administration.  These functions are SECURITY DEFINER (they run as the
-- extension owner, with search_path pinned to pg_catalog, pg_temp and every
-- object schema-qualified) and EXECUTE is revoked from PUBLIC: granting
-- EXECUTE on one of them is how a role is allowed to do that one thing.
------------------------------------------------------------------------------

-- Validates the options and writes one row of either rule table; internal.
CREATE FUNCTION rate_limiter_upsert_limit(
  p_kind text, p_user_id text, p_api_endpoint text, p_max bigint, p_window interval,
  @OPTION_UPSERT_PARAMS@
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
REVOKE ALL ON FUNCTION rate_limiter_upsert_limit(text, text, text, bigint, interval, @OPTION_TYPES@) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_upsert_limit(text, text, text, bigint, interval, @OPTION_TYPES@) IS
  'Internal: validates the options and inserts or updates one token_limits or request_limits row';

CREATE FUNCTION set_rate_limit(user_id text, max_tokens_per_period bigint,
  period_interval interval DEFAULT '1 day',
  api_endpoint text DEFAULT NULL,
  @OPTION_PARAMS@
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', $1, $4, $2, $3,
    @OPTION_ARGS(5)@);
END $$;
REVOKE ALL ON FUNCTION set_rate_limit(text, bigint, interval, text, @OPTION_TYPES@) FROM PUBLIC;
COMMENT ON FUNCTION set_rate_limit(text, bigint, interval, text, @OPTION_TYPES@) IS
  'Sets the token quota of a user (on one endpoint when api_endpoint is given), with its algorithm and strategy options; takes effect at commit';

CREATE FUNCTION set_user_rate_limit(user_id text, max_requests_per_window bigint,
  window_duration interval,
  api_endpoint text DEFAULT NULL,
  @OPTION_PARAMS@
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', $1, $4, $2, $3,
    @OPTION_ARGS(5)@);
END $$;
REVOKE ALL ON FUNCTION set_user_rate_limit(text, bigint, interval, text, @OPTION_TYPES@) FROM PUBLIC;
COMMENT ON FUNCTION set_user_rate_limit(text, bigint, interval, text, @OPTION_TYPES@) IS
  'Sets the request limit of a user (on one endpoint when api_endpoint is given), with its algorithm, burst cap (burst_limit, burst_window_seconds) and strategy options; takes effect at commit';

CREATE FUNCTION set_api_rate_limit(api_endpoint text, max_requests_per_window bigint,
  window_duration interval,
  @OPTION_PARAMS@
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', NULL, $1, $2, $3,
    @OPTION_ARGS(4)@);
END $$;
REVOKE ALL ON FUNCTION set_api_rate_limit(text, bigint, interval, @OPTION_TYPES@) FROM PUBLIC;
COMMENT ON FUNCTION set_api_rate_limit(text, bigint, interval, @OPTION_TYPES@) IS
  'Sets the request limit of an endpoint, shared by all users; takes effect at commit';

CREATE FUNCTION set_api_token_limit(api_endpoint text, max_tokens_per_period bigint,
  period_interval interval DEFAULT '1 day',
  @OPTION_PARAMS@
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', NULL, $1, $2, $3,
    @OPTION_ARGS(4)@);
END $$;
REVOKE ALL ON FUNCTION set_api_token_limit(text, bigint, interval, @OPTION_TYPES@) FROM PUBLIC;
COMMENT ON FUNCTION set_api_token_limit(text, bigint, interval, @OPTION_TYPES@) IS
  'Sets the token quota of an endpoint, shared by all users; takes effect at commit';

CREATE FUNCTION set_default_rate_limit(max_tokens_per_period bigint,
  period_interval interval DEFAULT '1 day',
  @OPTION_PARAMS@
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', NULL, NULL, $1, $2,
    @OPTION_ARGS(3)@);
END $$;
REVOKE ALL ON FUNCTION set_default_rate_limit(bigint, interval, @OPTION_TYPES@) FROM PUBLIC;
COMMENT ON FUNCTION set_default_rate_limit(bigint, interval, @OPTION_TYPES@) IS
  'Sets the token quota of every user who has no token quota of their own';

CREATE FUNCTION set_default_user_rate_limit(max_requests_per_window bigint,
  window_duration interval,
  @OPTION_PARAMS@
)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', NULL, NULL, $1, $2,
    @OPTION_ARGS(3)@);
END $$;
REVOKE ALL ON FUNCTION set_default_user_rate_limit(bigint, interval, @OPTION_TYPES@) FROM PUBLIC;
COMMENT ON FUNCTION set_default_user_rate_limit(bigint, interval, @OPTION_TYPES@) IS
  'Sets the request limit of every user who has no request limit of their own';

-- Deletes the token quota and request limit of one scope; internal.
CREATE FUNCTION rate_limiter_delete_scope(p_user_id text, p_api_endpoint text)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
  m bigint;
BEGIN
  DELETE FROM @extschema@.token_limits t
   WHERE t.user_id IS NOT DISTINCT FROM p_user_id AND t.api_endpoint IS NOT DISTINCT FROM p_api_endpoint;
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM @extschema@.request_limits r
   WHERE r.user_id IS NOT DISTINCT FROM p_user_id AND r.api_endpoint IS NOT DISTINCT FROM p_api_endpoint;
  GET DIAGNOSTICS m = ROW_COUNT;
  RETURN n + m;
END $$;
REVOKE ALL ON FUNCTION rate_limiter_delete_scope(text, text) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_delete_scope(text, text) IS
  'Internal: deletes the limits of one scope from both limit tables';

CREATE FUNCTION remove_rate_limit(user_id text, api_endpoint text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $2, true);
  RETURN @extschema@.rate_limiter_delete_scope($1, $2);
END $$;
COMMENT ON FUNCTION remove_rate_limit(text, text) IS
  'Removes the token quota and request limit of a user (or of a user on one endpoint); returns the rows removed';

CREATE FUNCTION remove_api_rate_limit(api_endpoint text)
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  RETURN @extschema@.rate_limiter_delete_scope(NULL, $1);
END $$;
COMMENT ON FUNCTION remove_api_rate_limit(text) IS
  'Removes the limits of an endpoint shared by all users; returns the rows removed';

CREATE FUNCTION remove_default_rate_limit()
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RETURN @extschema@.rate_limiter_delete_scope(NULL, NULL);
END $$;
COMMENT ON FUNCTION remove_default_rate_limit() IS
  'Removes the default limits; returns the rows removed';

CREATE FUNCTION reset_rate_limit(user_id text, api_endpoint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ep text;
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $2, true);
  IF $2 IS NOT NULL THEN
    PERFORM @extschema@.rate_limiter_schedule_reset('user_endpoint', $1, $2);
  ELSE
    -- The user's own counter (explicit or default rule) and every
    -- user+endpoint counter of the user that a rule defines.
    PERFORM @extschema@.rate_limiter_schedule_reset('user', $1, NULL);
    FOR ep IN
      SELECT t.api_endpoint FROM @extschema@.token_limits t
       WHERE t.user_id = $1 AND t.api_endpoint IS NOT NULL
      UNION
      SELECT r.api_endpoint FROM @extschema@.request_limits r
       WHERE r.user_id = $1 AND r.api_endpoint IS NOT NULL
    LOOP
      PERFORM @extschema@.rate_limiter_schedule_reset('user_endpoint', $1, ep);
    END LOOP;
  END IF;
END $$;
COMMENT ON FUNCTION reset_rate_limit(text, text) IS
  'Clears the usage of the current window for a user (all their scopes) or for a user on one endpoint, when the transaction commits';

CREATE FUNCTION reset_api_rate_limit(api_endpoint text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_schedule_reset('endpoint', NULL, $1);
END $$;
COMMENT ON FUNCTION reset_api_rate_limit(text) IS
  'Clears the usage of the current window of an endpoint''s shared limits, when the transaction commits';

CREATE FUNCTION rate_limiter_schedule_reset(scope text, user_id text, api_endpoint text)
RETURNS void AS 'MODULE_PATHNAME', 'rate_limiter_schedule_reset' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_schedule_reset(text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_schedule_reset(text, text, text) IS
  'Internal: clears the scope''s counters when the transaction commits';
