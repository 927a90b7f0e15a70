-- rate_limiter 1.0 -> 1.1 update script: ALTER EXTENSION rate_limiter UPDATE
-- applies it to an installation of 1.0.  CREATE EXTENSION installs the current
-- version directly (the newest rate_limiter--<version>.sql, built from sql/schema).
--
-- After installing a new version of the rate_limiter library, run
-- ALTER EXTENSION rate_limiter UPDATE in every database that has the
-- extension: the library assumes the schema of its own version.  Until
-- then the functions of an older installation fail with an error that says
-- so (SQLSTATE 55000, object_not_in_prerequisite_state, with that hint),
-- and its background worker leaves the database alone.
\echo Use "ALTER EXTENSION rate_limiter UPDATE TO '1.1'" to load this file. \quit

-- Privileges survive the update.  The rule for every update script: a
-- function whose signature and result stay is changed with CREATE OR
-- REPLACE, which keeps its privileges.  A function that must be dropped and
-- created again (new arguments or result columns) would lose the GRANTs
-- and REVOKEs a site made on it, so its ACL is saved here, before any DROP,
-- and applied at the end of the script to the new function of the same
-- name, whatever its signature.  Internal functions replaced by one of
-- another name are not carried over (rate_limiter_upsert_token_limit and
-- rate_limiter_upsert_request_limit: rate_limiter_upsert_limit is internal,
-- never granted).
CREATE TEMP TABLE rate_limiter_saved_acl AS
  SELECT p.proname, p.proowner, p.proacl
    FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = '@extschema@'::regnamespace
     AND p.proname IN ('allocate_tokens', 'check_rate_limit', 'enforce_rate_limit',
                       'set_rate_limit', 'set_user_rate_limit', 'set_api_rate_limit',
                       'set_api_token_limit', 'set_default_rate_limit',
                       'set_default_user_rate_limit', 'get_rate_limit_status',
                       'rate_limiter_flush', 'rate_limiter_peek_counter');

-- ==== algorithms, strategies, settle ====

------------------------------------------------------------------------------
-- Per-limit algorithm and strategy columns.  NULL means "use the setting"
-- (rate_limiter.* GUC); the switches of a token quota fall back to the
-- request limit of the same scope, then to the
-- GUC.  Both tables take the same columns; which ones act on which kind of
-- limit is documented in the README ("Strategies").
------------------------------------------------------------------------------
ALTER TABLE token_limits
  ADD COLUMN algorithm text NOT NULL DEFAULT 'fixed_window',
  ADD COLUMN burst bigint,
  ADD COLUMN burst_limit bigint,
  ADD COLUMN burst_window_seconds integer,
  ADD COLUMN enable_dynamic_allocation boolean,
  ADD COLUMN emergency_override_enabled boolean,
  ADD COLUMN burst_mode_enabled boolean,
  ADD COLUMN user_history_weight float8,
  ADD COLUMN system_load_weight float8,
  ADD COLUMN time_factor_weight float8,
  ADD COLUMN emergency_threshold float8,
  ADD COLUMN override_percentage float8,
  ADD COLUMN burst_multiplier float8,
  ADD COLUMN burst_window interval,
  ADD COLUMN max_burst_tokens bigint,
  ADD COLUMN shadow_mode boolean;
ALTER TABLE request_limits
  ADD COLUMN algorithm text NOT NULL DEFAULT 'fixed_window',
  ADD COLUMN burst bigint,
  ADD COLUMN burst_limit bigint,
  ADD COLUMN burst_window_seconds integer,
  ADD COLUMN enable_dynamic_allocation boolean,
  ADD COLUMN emergency_override_enabled boolean,
  ADD COLUMN burst_mode_enabled boolean,
  ADD COLUMN user_history_weight float8,
  ADD COLUMN system_load_weight float8,
  ADD COLUMN time_factor_weight float8,
  ADD COLUMN emergency_threshold float8,
  ADD COLUMN override_percentage float8,
  ADD COLUMN burst_multiplier float8,
  ADD COLUMN burst_window interval,
  ADD COLUMN max_burst_tokens bigint,
  ADD COLUMN shadow_mode boolean;

-- The same CHECK constraints on both tables (NaN fails every range check:
-- it sorts above every number).
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['token_limits', 'request_limits'] LOOP
    EXECUTE format($f$
      ALTER TABLE %1$I
        ADD CONSTRAINT %1$s_algorithm_check
          CHECK (algorithm IN ('fixed_window', 'sliding_window', 'token_bucket', 'gcra')),
        ADD CONSTRAINT %1$s_burst_check
          CHECK (burst IS NULL OR (burst BETWEEN 0 AND 1000000000000000
                                   AND algorithm IN ('token_bucket', 'gcra'))),
        ADD CONSTRAINT %1$s_burst_limit_check
          CHECK ((burst_limit IS NULL) = (burst_window_seconds IS NULL)
                 AND (burst_limit IS NULL OR burst_limit BETWEEN 1 AND 1000000000000000)
                 AND (burst_window_seconds IS NULL OR burst_window_seconds BETWEEN 1 AND 315360000)),
        ADD CONSTRAINT %1$s_weights_check
          CHECK (coalesce(user_history_weight, 0) BETWEEN 0 AND 1
                 AND coalesce(system_load_weight, 0) BETWEEN 0 AND 1
                 AND coalesce(time_factor_weight, 0) BETWEEN 0 AND 1
                 AND coalesce(emergency_threshold, 0) BETWEEN 0 AND 1
                 AND coalesce(override_percentage, 0) BETWEEN 0 AND 1
                 AND coalesce(burst_multiplier, 1) BETWEEN 1 AND 100),
        ADD CONSTRAINT %1$s_burst_window_check
          CHECK (burst_window IS NULL OR burst_window BETWEEN interval '1 second' AND interval '3650 days'),
        ADD CONSTRAINT %1$s_max_burst_tokens_check
          CHECK (max_burst_tokens IS NULL OR max_burst_tokens BETWEEN 0 AND 1000000000000000)
    $f$, t);
  END LOOP;
END $$;

-- The rule triggers fire for the new rule columns too (not for the
-- snapshot columns rate_limiter_flush() writes).
DROP TRIGGER rate_limiter_rules_changed ON token_limits;
DROP TRIGGER rate_limiter_rules_changed ON request_limits;
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_tokens_per_period, period_interval,
    algorithm, burst, burst_limit, burst_window_seconds, enable_dynamic_allocation,
    emergency_override_enabled, burst_mode_enabled, user_history_weight, system_load_weight,
    time_factor_weight, emergency_threshold, override_percentage, burst_multiplier, burst_window,
    max_burst_tokens, shadow_mode
  ON token_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_requests_per_window, window_duration,
    algorithm, burst, burst_limit, burst_window_seconds, enable_dynamic_allocation,
    emergency_override_enabled, burst_mode_enabled, user_history_weight, system_load_weight,
    time_factor_weight, emergency_threshold, override_percentage, burst_multiplier, burst_window,
    max_burst_tokens, shadow_mode
  ON request_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;

------------------------------------------------------------------------------
-- settle_tokens: token_usage remembers what was granted and when it was
-- settled.  allocation_id is token_usage.id.
------------------------------------------------------------------------------
ALTER TABLE token_usage
  ADD COLUMN tokens_granted bigint CHECK (tokens_granted IS NULL OR tokens_granted >= 0),
  ADD COLUMN settled_at timestamptz;
COMMENT ON COLUMN token_usage.tokens_granted IS
  'Tokens granted by allocate_tokens, kept when settle_tokens replaces tokens_used with the actual usage';
COMMENT ON COLUMN token_usage.settled_at IS 'When settle_tokens settled this allocation; NULL: not settled';

------------------------------------------------------------------------------
-- Hot path: new result columns (allocation_id), session_id on check/enforce.
------------------------------------------------------------------------------
DROP FUNCTION allocate_tokens(text, bigint, text, text, text, jsonb);
CREATE FUNCTION allocate_tokens(
  user_id             text,
  tokens_requested    bigint,
  priority_level      text DEFAULT 'medium',
  api_endpoint        text DEFAULT NULL,
  session_id          text DEFAULT NULL,
  context             jsonb DEFAULT '{}',
  OUT success             boolean,
  OUT tokens_allocated    bigint,
  OUT tokens_remaining    bigint,
  OUT allocation_strategy text,
  OUT reason              text,
  OUT "limit"             bigint,
  OUT reset_at            timestamptz,
  OUT retry_after         interval,
  OUT requests_remaining  bigint,
  OUT limit_kind          text,
  OUT scope               text,
  OUT allocation_id       bigint,
  OUT burst_tokens        bigint,
  OUT emergency_tokens    bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'allocate_tokens' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION allocate_tokens(text, bigint, text, text, text, jsonb) IS
  'Grants up to tokens_requested tokens: at most the priority share (high 0.5, medium 0.3, low 0.2) of the remaining quota of the most restrictive scope, adjusted by the dynamic, burst and emergency strategies; counts one request';

DROP FUNCTION check_rate_limit(text, text);
CREATE FUNCTION check_rate_limit(
  user_id      text,
  api_endpoint text DEFAULT NULL,
  session_id   text DEFAULT NULL,
  OUT allowed     boolean,
  OUT "limit"     bigint,
  OUT remaining   bigint,
  OUT reset_at    timestamptz,
  OUT retry_after interval,
  OUT limit_kind  text,
  OUT scope       text,
  OUT reason      text)
RETURNS record
AS 'MODULE_PATHNAME', 'check_rate_limit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION check_rate_limit(text, text, text) IS
  'Checks every applicable request limit and token quota; counts the request when allowed';

DROP FUNCTION enforce_rate_limit(text, text);
CREATE FUNCTION enforce_rate_limit(
  user_id      text,
  api_endpoint text DEFAULT NULL,
  session_id   text DEFAULT NULL,
  OUT allowed     boolean,
  OUT "limit"     bigint,
  OUT remaining   bigint,
  OUT reset_at    timestamptz,
  OUT retry_after interval,
  OUT limit_kind  text,
  OUT scope       text,
  OUT reason      text)
RETURNS record
AS 'MODULE_PATHNAME', 'enforce_rate_limit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION enforce_rate_limit(text, text, text) IS
  'Like check_rate_limit, but raises SQLSTATE RL429 when the request is denied';

-- The privilege to use {"emergency_override": true}: EXECUTE on this
-- function.  GRANT EXECUTE ON FUNCTION rate_limiter_emergency_access() TO oncall;
CREATE FUNCTION rate_limiter_emergency_access() RETURNS boolean
AS 'MODULE_PATHNAME', 'rate_limiter_emergency_access' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION rate_limiter_emergency_access() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_emergency_access() IS
  'Roles with EXECUTE on this function may use {"emergency_override": true}; returns true when the current user may';

-- Internal: gives unused tokens back to the counters of a user's token
-- quotas when the transaction commits (settle_tokens).
CREATE FUNCTION rate_limiter_schedule_refund(user_id text, api_endpoint text, tokens bigint,
                                             charged_at timestamptz)
RETURNS void AS 'MODULE_PATHNAME', 'rate_limiter_schedule_refund' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_schedule_refund(text, text, bigint, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_schedule_refund(text, text, bigint, timestamptz) IS
  'Internal: returns tokens to the token quota counters that applied at charged_at, when the transaction commits';

-- settle_tokens(allocation_id, tokens_used): the actual usage of a grant.
-- The unused part goes back to the quota (at commit), token_usage keeps
-- the actual usage in tokens_used and the grant in tokens_granted.
CREATE FUNCTION settle_tokens(allocation_id bigint, tokens_used bigint,
                              OUT tokens_granted bigint, OUT tokens_refunded bigint)
RETURNS record LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  u record;
BEGIN
  IF $1 IS NULL THEN
    RAISE EXCEPTION 'allocation_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF $2 IS NULL THEN
    RAISE EXCEPTION 'tokens_used must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF $2 < 0 THEN
    RAISE EXCEPTION 'tokens_used must not be negative, not %', $2
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT t.id, t.user_id, t.api_endpoint, t.tokens_used, t.settled_at, t."timestamp", t.priority_level
    INTO u FROM @extschema@.token_usage t WHERE t.id = $1 FOR UPDATE;
  IF NOT FOUND OR u.priority_level IS NULL THEN
    RAISE EXCEPTION 'allocation % does not exist', $1
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'allocation_id is the value allocate_tokens returned for a grant.';
  END IF;
  IF u.settled_at IS NOT NULL THEN
    RAISE EXCEPTION 'allocation % is already settled', $1
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = format('It was settled at %s.', u.settled_at);
  END IF;
  IF $2 > u.tokens_used THEN
    RAISE EXCEPTION 'tokens_used (%) exceeds the % tokens granted to allocation %', $2, u.tokens_used, $1
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE @extschema@.token_usage t
     SET tokens_granted = u.tokens_used, tokens_used = $2, settled_at = clock_timestamp()
   WHERE t.id = $1;
  IF u.tokens_used > $2 THEN
    PERFORM @extschema@.rate_limiter_schedule_refund(u.user_id, u.api_endpoint,
                                                      u.tokens_used - $2, u."timestamp");
  END IF;
  tokens_granted := u.tokens_used;
  tokens_refunded := u.tokens_used - $2;
END $$;
COMMENT ON FUNCTION settle_tokens(bigint, bigint) IS
  'Settles a grant with the tokens actually used: the unused part returns to the quota when the transaction commits';

------------------------------------------------------------------------------
-- Administration with the new options.  The old signatures are replaced
-- (same leading arguments, so existing calls keep working).
------------------------------------------------------------------------------
DROP FUNCTION set_rate_limit(text, bigint, interval, text);
DROP FUNCTION set_user_rate_limit(text, bigint, interval, text);
DROP FUNCTION set_api_rate_limit(text, bigint, interval);
DROP FUNCTION set_api_token_limit(text, bigint, interval);
DROP FUNCTION set_default_rate_limit(bigint, interval);
DROP FUNCTION set_default_user_rate_limit(bigint, interval);
DROP FUNCTION rate_limiter_upsert_token_limit(text, text, bigint, interval);
DROP FUNCTION rate_limiter_upsert_request_limit(text, text, bigint, interval);

-- Validates the options and writes one row of either rule table; internal.
CREATE FUNCTION rate_limiter_upsert_limit(
  p_kind text, p_user_id text, p_api_endpoint text, p_max bigint, p_window interval,
  p_algorithm text, p_burst bigint, p_burst_limit bigint, p_burst_window_seconds integer,
  p_enable_dynamic_allocation boolean, p_emergency_override_enabled boolean,
  p_burst_mode_enabled boolean, p_user_history_weight float8, p_system_load_weight float8,
  p_time_factor_weight float8, p_emergency_threshold float8, p_override_percentage float8,
  p_burst_multiplier float8, p_burst_window interval, p_max_burst_tokens bigint,
  p_shadow_mode boolean)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  fraction_names text[] := ARRAY['user_history_weight', 'system_load_weight', 'time_factor_weight',
                                 'emergency_threshold', 'override_percentage'];
  fractions float8[] := ARRAY[p_user_history_weight, p_system_load_weight, p_time_factor_weight,
                              p_emergency_threshold, p_override_percentage];
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

  IF p_kind = 'tokens' THEN
    INSERT INTO @extschema@.token_limits AS t (
      user_id, api_endpoint, max_tokens_per_period, period_interval, algorithm, burst, burst_limit,
      burst_window_seconds, enable_dynamic_allocation, emergency_override_enabled, burst_mode_enabled,
      user_history_weight, system_load_weight, time_factor_weight, emergency_threshold,
      override_percentage, burst_multiplier, burst_window, max_burst_tokens, shadow_mode)
    VALUES (p_user_id, p_api_endpoint, p_max, p_window, p_algorithm, p_burst, p_burst_limit,
      p_burst_window_seconds, p_enable_dynamic_allocation, p_emergency_override_enabled,
      p_burst_mode_enabled, p_user_history_weight, p_system_load_weight, p_time_factor_weight,
      p_emergency_threshold, p_override_percentage, p_burst_multiplier, p_burst_window,
      p_max_burst_tokens, p_shadow_mode)
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
      shadow_mode = EXCLUDED.shadow_mode, updated_at = now();
  ELSE
    INSERT INTO @extschema@.request_limits AS r (
      user_id, api_endpoint, max_requests_per_window, window_duration, algorithm, burst, burst_limit,
      burst_window_seconds, enable_dynamic_allocation, emergency_override_enabled, burst_mode_enabled,
      user_history_weight, system_load_weight, time_factor_weight, emergency_threshold,
      override_percentage, burst_multiplier, burst_window, max_burst_tokens, shadow_mode)
    VALUES (p_user_id, p_api_endpoint, p_max, p_window, p_algorithm, p_burst, p_burst_limit,
      p_burst_window_seconds, p_enable_dynamic_allocation, p_emergency_override_enabled,
      p_burst_mode_enabled, p_user_history_weight, p_system_load_weight, p_time_factor_weight,
      p_emergency_threshold, p_override_percentage, p_burst_multiplier, p_burst_window,
      p_max_burst_tokens, p_shadow_mode)
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
      shadow_mode = EXCLUDED.shadow_mode, updated_at = now();
  END IF;
END $$;
REVOKE ALL ON FUNCTION rate_limiter_upsert_limit(text, text, text, bigint, interval, text, bigint,
  bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8,
  interval, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_upsert_limit(text, text, text, bigint, interval, text, bigint,
  bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8,
  interval, bigint, boolean) IS
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
  shadow_mode boolean DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', $1, $4, $2, $3,
    $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20);
END $$;
REVOKE ALL ON FUNCTION set_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION set_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) IS
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
  shadow_mode boolean DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', $1, $4, $2, $3,
    $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20);
END $$;
REVOKE ALL ON FUNCTION set_user_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION set_user_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) IS
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
  shadow_mode boolean DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', NULL, $1, $2, $3,
    $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19);
END $$;
REVOKE ALL ON FUNCTION set_api_rate_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION set_api_rate_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) IS
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
  shadow_mode boolean DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', NULL, $1, $2, $3,
    $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19);
END $$;
REVOKE ALL ON FUNCTION set_api_token_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION set_api_token_limit(text, bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) IS
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
  shadow_mode boolean DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_limit('tokens', NULL, NULL, $1, $2,
    $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18);
END $$;
REVOKE ALL ON FUNCTION set_default_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION set_default_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) IS
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
  shadow_mode boolean DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_limit('requests', NULL, NULL, $1, $2,
    $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18);
END $$;
REVOKE ALL ON FUNCTION set_default_user_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION set_default_user_rate_limit(bigint, interval, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) IS
  'Sets the request limit of every user who has no request limit of their own';

------------------------------------------------------------------------------
-- Status reads counters the way their algorithm counts.
------------------------------------------------------------------------------
DROP FUNCTION get_rate_limit_status(text);
DROP FUNCTION rate_limiter_flush();
DROP FUNCTION rate_limiter_peek_counter(text, text, text, text, interval);

CREATE FUNCTION rate_limiter_peek_counter(
  scope text, user_id text, api_endpoint text, limit_kind text, window_duration interval,
  algorithm text, "limit" bigint, burst bigint,
  OUT used bigint, OUT remaining bigint, OUT window_start timestamptz, OUT reset_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'rate_limiter_peek_counter' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_peek_counter(text, text, text, text, interval, text, bigint, bigint)
  FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_peek_counter(text, text, text, text, interval, text, bigint, bigint) IS
  'Internal: reads one shared-memory counter without changing it';

-- Every limit that applies to the user: their user+endpoint rules, their own
-- rule or the default (per kind), and every endpoint-wide rule.
CREATE FUNCTION get_rate_limit_status(user_id text)
RETURNS TABLE (scope text, api_endpoint text, limit_kind text, algorithm text, "limit" bigint,
               used bigint, remaining bigint, window_duration interval, window_start timestamptz,
               reset_at timestamptz)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  RETURN QUERY
  WITH token_rules AS (
    SELECT t.user_id AS uid, t.api_endpoint AS ep, 'tokens' AS kind, t.max_tokens_per_period AS lim,
           t.period_interval AS win, t.algorithm AS alg, t.burst AS bst
      FROM @extschema@.token_limits t
  ), request_rules AS (
    SELECT r.user_id, r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration,
           r.algorithm, r.burst
      FROM @extschema@.request_limits r
  ), all_rules AS (
    SELECT * FROM token_rules UNION ALL SELECT * FROM request_rules
  ), rules AS (
    SELECT CASE WHEN a.ep IS NOT NULL THEN 'user_endpoint' ELSE 'user' END AS scope, a.*
      FROM all_rules a WHERE a.uid = $1
    UNION ALL
    SELECT 'default', a.*
      FROM all_rules a
     WHERE a.uid IS NULL AND a.ep IS NULL
       AND NOT EXISTS (SELECT 1 FROM all_rules o WHERE o.uid = $1 AND o.ep IS NULL AND o.kind = a.kind)
    UNION ALL
    SELECT 'endpoint', a.* FROM all_rules a WHERE a.uid IS NULL AND a.ep IS NOT NULL
  )
  SELECT rules.scope, rules.ep, rules.kind, rules.alg, c.used + c.remaining, c.used, c.remaining,
         rules.win, c.window_start, c.reset_at
    FROM rules,
         LATERAL @extschema@.rate_limiter_peek_counter(
           rules.scope, CASE WHEN rules.scope = 'endpoint' THEN NULL ELSE $1 END,
           rules.ep, rules.kind, rules.win, rules.alg, rules.lim, rules.bst) c
   ORDER BY CASE rules.scope WHEN 'user_endpoint' THEN 1 WHEN 'user' THEN 2
                             WHEN 'default' THEN 2 ELSE 3 END,
            rules.ep NULLS FIRST, rules.kind;
END $$;
REVOKE ALL ON FUNCTION get_rate_limit_status(text) FROM PUBLIC;
COMMENT ON FUNCTION get_rate_limit_status(text) IS
  'One row per limit that applies to the user, with live usage from shared memory';

-- Writes the live token counters into token_limits.tokens_used_in_period and
-- period_start (the snapshot columns).  Returns the rows updated.
CREATE FUNCTION rate_limiter_flush()
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  UPDATE @extschema@.token_limits t
     SET (tokens_used_in_period, period_start) = (
           SELECT c.used, c.window_start
             FROM @extschema@.rate_limiter_peek_counter(
                    CASE WHEN t.user_id IS NULL THEN 'endpoint'
                         WHEN t.api_endpoint IS NULL THEN 'user' ELSE 'user_endpoint' END,
                    t.user_id, t.api_endpoint, 'tokens', t.period_interval, t.algorithm,
                    t.max_tokens_per_period, t.burst) c)
   WHERE t.user_id IS NOT NULL OR t.api_endpoint IS NOT NULL;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION rate_limiter_flush() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_flush() IS
  'Copies the live token counters into token_limits.tokens_used_in_period and period_start; returns the rows updated';

------------------------------------------------------------------------------
-- Rebuilding counters after a crash or promotion replays the usage rows of
-- each rule's current window: by user (the existing user_id index), by
-- endpoint (this one) and by time for the default rule.
------------------------------------------------------------------------------
CREATE INDEX token_usage_endpoint_time_idx ON token_usage (api_endpoint, "timestamp");

-- ==== end algorithms, strategies, settle ====

-- ==== revocations and rate_limit_trigger ====

------------------------------------------------------------------------------
-- Revocations.  allocate_tokens denies a session_id listed in
-- token_revocations (reason 'revoked').  The hot path reads a shared-memory
-- cache of the table, never the table itself; these triggers bring every
-- committed change to the cache at commit (ENABLE ALWAYS, so they fire under
-- logical replication and session_replication_role = replica too).
------------------------------------------------------------------------------

COMMENT ON TABLE token_revocations IS
  'Revoked session ids: allocate_tokens denies them (reason revoked). Cached in shared memory; write it with revoke_token/unrevoke_token or directly';

CREATE FUNCTION rate_limiter_revocations_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'rate_limiter_revocations_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION rate_limiter_revocations_changed() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_revocations_changed() IS
  'Internal: trigger that brings changes to token_revocations to the shared revocation cache at commit';

CREATE TRIGGER rate_limiter_revocations_changed
  AFTER INSERT OR DELETE OR UPDATE OF token
  ON token_revocations FOR EACH ROW EXECUTE FUNCTION rate_limiter_revocations_changed();
CREATE TRIGGER rate_limiter_revocations_truncated
  AFTER TRUNCATE ON token_revocations FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_revocations_changed();
ALTER TABLE token_revocations ENABLE ALWAYS TRIGGER rate_limiter_revocations_changed;
ALTER TABLE token_revocations ENABLE ALWAYS TRIGGER rate_limiter_revocations_truncated;

-- Revokes a session id (or updates the reason of a revoked one).
CREATE FUNCTION revoke_token(token text, reason text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('token', $1);
  INSERT INTO @extschema@.token_revocations AS r (token, reason) VALUES ($1, $2)
  ON CONFLICT ON CONSTRAINT token_revocations_pkey
  DO UPDATE SET reason = EXCLUDED.reason, revoked_at = now();
END $$;
COMMENT ON FUNCTION revoke_token(text, text) IS
  'Revokes a session id: allocate_tokens denies it (reason revoked) in every session once the transaction commits';

-- Removes a revocation; true when the token was revoked.
CREATE FUNCTION unrevoke_token(token text)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('token', $1);
  DELETE FROM @extschema@.token_revocations r WHERE r.token = $1;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n > 0;
END $$;
COMMENT ON FUNCTION unrevoke_token(text) IS
  'Removes the revocation of a session id once the transaction commits; returns true when it was revoked';

-- Reads the shared cache (C): open to PUBLIC like allocate_tokens, which
-- already tells any caller that a session id is revoked.
CREATE FUNCTION is_token_revoked(token text) RETURNS boolean
AS 'MODULE_PATHNAME', 'is_token_revoked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION is_token_revoked(text) IS
  'True when the session id is revoked (committed revocations, and this transaction''s own); counts nothing';

CREATE FUNCTION reload_revocations() RETURNS void
AS 'MODULE_PATHNAME', 'reload_revocations' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION reload_revocations() IS
  'Makes the revocation cache reload token_revocations after this transaction commits (needed only after editing it with triggers disabled)';

CREATE FUNCTION revocation_cache_status(
  OUT state text, OUT cached bigint, OUT cached_total bigint, OUT capacity bigint)
RETURNS record AS 'MODULE_PATHNAME', 'revocation_cache_status' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION revocation_cache_status() IS
  'The shared revocation cache: state of this database (not_loaded, loaded, overflowed, uncached), revocations cached for it and for all databases, capacity (rate_limiter.max_revocations)';

REVOKE ALL ON FUNCTION revoke_token(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION unrevoke_token(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION reload_revocations() FROM PUBLIC;
REVOKE ALL ON FUNCTION revocation_cache_status() FROM PUBLIC;

------------------------------------------------------------------------------
-- rate_limit_trigger(): BEFORE INSERT OR UPDATE ... FOR EACH ROW on an
-- application table.  TG_ARGV: user column, endpoint ('' = none), optional
-- cost (integer or integer column), optional priority (default 'high').
-- EXECUTE stays open to PUBLIC: it only lets a role attach the trigger to
-- tables it owns, and the trigger calls enforce_rate_limit/allocate_tokens
-- only if the table's owner may execute them.
------------------------------------------------------------------------------

CREATE FUNCTION rate_limit_trigger() RETURNS trigger
AS 'MODULE_PATHNAME', 'rate_limit_trigger' LANGUAGE C;
COMMENT ON FUNCTION rate_limit_trigger() IS
  'Trigger: BEFORE INSERT OR UPDATE FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger(user_column, endpoint [, cost [, priority]]); raises RL429 over the limit. endpoint '''' means none; cost is an integer or an integer column (allocates that many tokens, all or nothing; without it each row counts one request); priority defaults to high';

-- ==== end revocations and rate_limit_trigger ====

-- ==== async usage log ====

------------------------------------------------------------------------------
-- Usage log modes (rate_limiter.usage_log): in async mode the rows reach
-- token_usage through a shared-memory queue and the "rate_limiter flusher"
-- background worker (see README, "Usage log").
------------------------------------------------------------------------------

-- The flusher's retention deletes by age, and a rebuild of counters reads
-- the rows of the current windows: both scan by time.
CREATE INDEX token_usage_timestamp_idx ON token_usage ("timestamp");

-- In async mode allocate_tokens draws its allocation_id from this sequence
-- directly (nextval, without inserting).  A per-session cache makes that a
-- memory read for 63 calls out of 64: no lock on the sequence's buffer, no
-- WAL.  Ids stay unique; they are no longer in time order across sessions,
-- and a session that ends leaves the rest of its cache as a gap.
ALTER SEQUENCE token_usage_id_seq CACHE 64;

-- Waits until the flusher has written every usage row queued before the
-- call (and writes this transaction's refund_on_abort rows, which wait for
-- commit otherwise).  An error after 30 s without progress of the flusher.
CREATE FUNCTION rate_limiter_flush_usage() RETURNS void
AS 'MODULE_PATHNAME', 'rate_limiter_flush_usage' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_flush_usage() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_flush_usage() IS
  'Waits until every usage row queued before the call is in token_usage (usage_log = async)';

-- The snapshot half of rate_limiter_flush(), also run by the flusher every
-- 10 s with skip_locked: it must never wait for (or deadlock with) a
-- session that holds a token_limits row.
CREATE FUNCTION rate_limiter_snapshot_counters(skip_locked boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  UPDATE @extschema@.token_limits t
     SET (tokens_used_in_period, period_start) = (
           SELECT c.used, c.window_start
             FROM @extschema@.rate_limiter_peek_counter(
                    CASE WHEN t.user_id IS NULL THEN 'endpoint'
                         WHEN t.api_endpoint IS NULL THEN 'user' ELSE 'user_endpoint' END,
                    t.user_id, t.api_endpoint, 'tokens', t.period_interval, t.algorithm,
                    t.max_tokens_per_period, t.burst) c)
   WHERE (t.user_id IS NOT NULL OR t.api_endpoint IS NOT NULL)
     AND (NOT $1 OR t.id IN (SELECT l.id FROM @extschema@.token_limits l
                              WHERE l.user_id IS NOT NULL OR l.api_endpoint IS NOT NULL
                              FOR UPDATE SKIP LOCKED));
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION rate_limiter_snapshot_counters(boolean) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_snapshot_counters(boolean) IS
  'Internal: copies the live token counters into token_limits.tokens_used_in_period and period_start (skipping rows locked by other sessions when skip_locked); returns the rows updated';

CREATE OR REPLACE FUNCTION rate_limiter_flush()
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_flush_usage();
  RETURN @extschema@.rate_limiter_snapshot_counters(false);
END $$;
COMMENT ON FUNCTION rate_limiter_flush() IS
  'Writes every queued usage row into token_usage (waiting for the flusher), then copies the live token counters into token_limits.tokens_used_in_period and period_start; returns the token_limits rows updated';

-- settle_tokens: as before, but an allocation whose row is not in
-- token_usage yet (usage_log = async: still queued, or pending until this
-- transaction commits) is waited for once before "does not exist".
CREATE OR REPLACE FUNCTION settle_tokens(allocation_id bigint, tokens_used bigint,
                                         OUT tokens_granted bigint, OUT tokens_refunded bigint)
RETURNS record LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  u record;
BEGIN
  IF $1 IS NULL THEN
    RAISE EXCEPTION 'allocation_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF $2 IS NULL THEN
    RAISE EXCEPTION 'tokens_used must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF $2 < 0 THEN
    RAISE EXCEPTION 'tokens_used must not be negative, not %', $2
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT t.id, t.user_id, t.api_endpoint, t.tokens_used, t.settled_at, t."timestamp", t.priority_level
    INTO u FROM @extschema@.token_usage t WHERE t.id = $1 FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM @extschema@.rate_limiter_flush_usage();
    SELECT t.id, t.user_id, t.api_endpoint, t.tokens_used, t.settled_at, t."timestamp", t.priority_level
      INTO u FROM @extschema@.token_usage t WHERE t.id = $1 FOR UPDATE;
  END IF;
  IF NOT FOUND OR u.priority_level IS NULL THEN
    RAISE EXCEPTION 'allocation % does not exist', $1
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'allocation_id is the value allocate_tokens returned for a grant.';
  END IF;
  IF u.settled_at IS NOT NULL THEN
    RAISE EXCEPTION 'allocation % is already settled', $1
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = format('It was settled at %s.', u.settled_at);
  END IF;
  IF $2 > u.tokens_used THEN
    RAISE EXCEPTION 'tokens_used (%) exceeds the % tokens granted to allocation %', $2, u.tokens_used, $1
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE @extschema@.token_usage t
     SET tokens_granted = u.tokens_used, tokens_used = $2, settled_at = clock_timestamp()
   WHERE t.id = $1;
  IF u.tokens_used > $2 THEN
    PERFORM @extschema@.rate_limiter_schedule_refund(u.user_id, u.api_endpoint,
                                                      u.tokens_used - $2, u."timestamp");
  END IF;
  tokens_granted := u.tokens_used;
  tokens_refunded := u.tokens_used - $2;
END $$;

-- ==== end async usage log ====

-- ==== monitoring: metrics and views ====

------------------------------------------------------------------------------
-- Metrics: get_performance_metrics() (1.0) gains latency percentiles, a
-- moving average and lock waits (C only); the counters can be reset.
------------------------------------------------------------------------------
COMMENT ON FUNCTION get_performance_metrics() IS
  'Cluster-wide counters and gauges from shared memory; times are in seconds (README, "Monitoring")';

CREATE FUNCTION reset_performance_metrics() RETURNS void
AS 'MODULE_PATHNAME', 'reset_performance_metrics' LANGUAGE C VOLATILE;
-- Administrators only: a reset changes what every monitoring client sees.
REVOKE ALL ON FUNCTION reset_performance_metrics() FROM PUBLIC;
COMMENT ON FUNCTION reset_performance_metrics() IS
  'Zeroes the counters and latency statistics of get_performance_metrics() (not the gauges)';

CREATE VIEW rate_limiter_metrics AS
  SELECT m.key AS name, (m.value #>> '{}')::numeric AS value
    FROM jsonb_each(get_performance_metrics()) m;
-- The same figures get_performance_metrics() gives to everyone.
GRANT SELECT ON rate_limiter_metrics TO PUBLIC;
COMMENT ON VIEW rate_limiter_metrics IS
  'get_performance_metrics() as rows (name, value), for monitoring queries';

------------------------------------------------------------------------------
-- rate_limiter_counters: the live counters in shared memory.  Shared memory
-- holds keyed hashes only, so the view computes the key of every candidate
-- counter and joins: each rule row's own scope, and for the default rules
-- every user with a token_usage row in the last two longest default windows
-- (two: a sliding window still counts the previous window).  Counters that
-- match no candidate (other databases, users whose usage rows are gone or
-- still queued, rules deleted since) are not shown.
------------------------------------------------------------------------------
CREATE FUNCTION rate_limiter_counter_key(scope text, user_id text, api_endpoint text,
                                         limit_kind text, role text)
RETURNS text AS 'MODULE_PATHNAME', 'rate_limiter_counter_key' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION rate_limiter_counter_key(text, text, text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_key(text, text, text, text, text) IS
  'Internal: the shared-memory key of one counter of this installation, in hex';

CREATE FUNCTION rate_limiter_counter_slots(
  OUT key text, OUT algorithm text, OUT window_micros bigint, OUT "limit" bigint, OUT state bytea)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'rate_limiter_counter_slots' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_counter_slots() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_slots() IS
  'Internal: every live counter slot in shared memory (all databases), read partition by partition';

CREATE FUNCTION rate_limiter_counter_usage(
  state bytea, rule_algorithm text, rule_limit bigint, rule_window interval, rule_burst bigint,
  OUT used bigint, OUT "limit" bigint, OUT remaining bigint, OUT window_start timestamptz,
  OUT reset_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'rate_limiter_counter_usage' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_counter_usage(bytea, text, bigint, interval, bigint) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_usage(bytea, text, bigint, interval, bigint) IS
  'Internal: a counter state read now under a rule (NULL: the rule the state was built for)';

CREATE VIEW rate_limiter_counters AS
  WITH rules AS (
    SELECT t.user_id AS uid, t.api_endpoint AS ep, 'tokens'::text AS kind,
           t.max_tokens_per_period AS lim, t.period_interval AS win, t.algorithm AS alg,
           t.burst AS bst
      FROM token_limits t
    UNION ALL
    SELECT r.user_id, r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration,
           r.algorithm, r.burst
      FROM request_limits r
  ), default_users AS (
    SELECT DISTINCT u.user_id
      FROM token_usage u
     WHERE u."timestamp" >= now() - 2 * (SELECT max(d.win) FROM rules d
                                          WHERE d.uid IS NULL AND d.ep IS NULL)
  ), candidates AS (
    SELECT CASE WHEN r.ep IS NULL THEN 'user' WHEN r.uid IS NULL THEN 'endpoint'
                ELSE 'user_endpoint' END AS scope, r.*
      FROM rules r
     WHERE r.uid IS NOT NULL OR r.ep IS NOT NULL
    UNION ALL
    -- The default applies per kind to users without their own rule of that
    -- kind, and counts in the user's own counter.
    SELECT 'default', d.user_id, NULL, r.kind, r.lim, r.win, r.alg, r.bst
      FROM rules r CROSS JOIN default_users d
     WHERE r.uid IS NULL AND r.ep IS NULL
       AND NOT EXISTS (SELECT 1 FROM rules o
                        WHERE o.uid = d.user_id AND o.ep IS NULL AND o.kind = r.kind)
  ), keyed AS (
    SELECT c.*, ro.role,
           rate_limiter_counter_key(CASE c.scope WHEN 'default' THEN 'user' ELSE c.scope END,
                                    c.uid, c.ep, c.kind, ro.role) AS key
      FROM candidates c
           CROSS JOIN (VALUES ('limit'), ('burst_cap'), ('burst_budget'), ('emergency')) ro (role)
  )
  SELECT k.scope, k.uid AS user_id, k.ep AS api_endpoint, k.kind AS limit_kind, k.role,
         CASE WHEN k.role = 'limit' THEN k.alg ELSE s.algorithm END AS algorithm,
         u.used, u."limit", u.remaining, u.window_start, u.reset_at
    FROM rate_limiter_counter_slots() s
         JOIN keyed k ON k.key = s.key
         -- A limit's own counter is read under its current rule (as
         -- get_rate_limit_status does); the strategy and burst-cap counters
         -- are fixed windows whose rule the state records.
         CROSS JOIN LATERAL rate_limiter_counter_usage(
           s.state,
           CASE WHEN k.role = 'limit' THEN k.alg END, CASE WHEN k.role = 'limit' THEN k.lim END,
           CASE WHEN k.role = 'limit' THEN k.win END, CASE WHEN k.role = 'limit' THEN k.bst END) u;
-- It names users: administrators only, unless granted
-- (GRANT SELECT ON rate_limiter_counters TO monitoring).
REVOKE ALL ON rate_limiter_counters FROM PUBLIC;
COMMENT ON VIEW rate_limiter_counters IS
  'One row per live counter of this database in shared memory (scope, user, endpoint, usage); '
  'default-rule counters are shown for users with usage rows in the last two longest default windows';

------------------------------------------------------------------------------
-- rate_limiter_usage_daily: the usage log summed per user, endpoint and UTC day.
------------------------------------------------------------------------------
CREATE VIEW rate_limiter_usage_daily AS
  SELECT u.user_id, u.api_endpoint, (u."timestamp" AT TIME ZONE 'UTC')::date AS day,
         sum(u.tokens_used) AS tokens, count(*) AS requests,
         count(u.priority_level) AS allocations,
         min(u."timestamp") AS first_seen, max(u."timestamp") AS last_seen
    FROM token_usage u
   GROUP BY u.user_id, u.api_endpoint, (u."timestamp" AT TIME ZONE 'UTC')::date;
-- It names users, like token_usage: administrators only, unless granted.
REVOKE ALL ON rate_limiter_usage_daily FROM PUBLIC;
COMMENT ON VIEW rate_limiter_usage_daily IS
  'Usage per user_id, api_endpoint and UTC day from token_usage: tokens, requests (rows), '
  'allocations (rows of allocate_tokens), first and last call';

-- ==== end monitoring: metrics and views ====
-- ==== monitoring: alerts and shadow mode ====

------------------------------------------------------------------------------
-- Shadow mode (README "Shadow mode"): a shadow limit is evaluated and
-- charged like any other but never denies; the call reports what would have
-- happened (reason 'shadow:...').  NULL: not a shadow limit unless
-- rate_limiter.shadow_mode is on.  Per limit: no fallback to the other kind.
------------------------------------------------------------------------------
COMMENT ON COLUMN token_limits.shadow_mode IS
  'true: count but never deny (shadow mode); NULL: rate_limiter.shadow_mode';
COMMENT ON COLUMN request_limits.shadow_mode IS
  'true: count but never deny (shadow mode); NULL: rate_limiter.shadow_mode';

------------------------------------------------------------------------------
-- Alerts (README "Alerts").  Backends queue alert records in shared memory;
-- the flusher inserts them here with ON CONFLICT DO NOTHING (at most one row
-- per kind, user, endpoint, scope and window; NULL ids compare equal) and
-- sends pg_notify(rate_limiter.alert_channel, payload) for the rows it
-- inserted, in the same transaction.
------------------------------------------------------------------------------
CREATE TABLE rate_limit_alerts (
  id           bigserial PRIMARY KEY,
  kind         text NOT NULL,
  user_id      text,
  api_endpoint text,
  scope        text,
  window_start timestamptz,
  payload      jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT rate_limit_alerts_dedup
    UNIQUE NULLS NOT DISTINCT (kind, user_id, api_endpoint, scope, window_start)
);
CREATE INDEX rate_limit_alerts_created_idx ON rate_limit_alerts (created_at);
COMMENT ON TABLE rate_limit_alerts IS
  'Alerts (quota thresholds, abuse, emergency overrides, degradation), one per kind, user, endpoint, scope and window; written by the flusher, best effort';
SELECT pg_catalog.pg_extension_config_dump('rate_limit_alerts', '');
SELECT pg_catalog.pg_extension_config_dump('rate_limit_alerts_id_seq', '');

-- ==== end monitoring: alerts and shadow mode ====

-- The saved privileges (see the top of this script), on the new functions:
-- every grant but the owner's is replaced by the saved ones.  pg_init_privs
-- keeps what the update itself set, so that pg_dump still dumps the site's
-- grants, as it does for a new installation with the same grants.
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
