-- rate_limiter 1.0 install script, kept for CREATE EXTENSION rate_limiter
-- VERSION '1.0' (the update scripts take such an installation to the
-- current version).  A new installation gets rate_limiter--1.5.sql.
\echo Use "CREATE EXTENSION rate_limiter" to load this file. \quit

-- Fail early and clearly when the library is not preloaded: the counters
-- live in shared memory that only the postmaster can reserve.
CREATE FUNCTION rate_limiter_require_preload() RETURNS void
  AS 'MODULE_PATHNAME', 'rate_limiter_require_preload' LANGUAGE C;
SELECT rate_limiter_require_preload();
REVOKE ALL ON FUNCTION rate_limiter_require_preload() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_require_preload() IS
  'Internal: raises an error unless rate_limiter is in shared_preload_libraries';

------------------------------------------------------------------------------
-- Tables.  Every table is registered with pg_extension_config_dump, so that
-- pg_dump carries limits, usage and revocations with the database.
------------------------------------------------------------------------------

-- Token quotas.  The scope follows from which ids are set:
--   user_id and api_endpoint: one user on one endpoint
--   user_id only:             one user on all endpoints
--   api_endpoint only:        all users together on one endpoint
--   neither:                  the default for every user without a quota of their own
CREATE TABLE token_limits (
  id                    bigserial PRIMARY KEY,
  user_id               text,
  api_endpoint          text,
  max_tokens_per_period bigint NOT NULL,
  period_interval       interval NOT NULL DEFAULT '1 day',
  tokens_used_in_period bigint NOT NULL DEFAULT 0,
  period_start          timestamptz,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT token_limits_scope_key UNIQUE NULLS NOT DISTINCT (user_id, api_endpoint),
  CONSTRAINT token_limits_user_id_check
    CHECK (user_id IS NULL OR octet_length(user_id) BETWEEN 1 AND 255),
  CONSTRAINT token_limits_api_endpoint_check
    CHECK (api_endpoint IS NULL OR octet_length(api_endpoint) BETWEEN 1 AND 255),
  CONSTRAINT token_limits_max_tokens_check
    CHECK (max_tokens_per_period BETWEEN 1 AND 1000000000000000),
  CONSTRAINT token_limits_period_check
    CHECK (period_interval >= interval '1 second' AND period_interval <= interval '3650 days')
);
COMMENT ON TABLE token_limits IS
  'Token quotas: max_tokens_per_period per period_interval. tokens_used_in_period and period_start are a snapshot written by rate_limiter_flush(); the live counters are in shared memory (get_rate_limit_status)';

-- Request limits, with the same scope rules.
CREATE TABLE request_limits (
  id                      bigserial PRIMARY KEY,
  user_id                 text,
  api_endpoint            text,
  max_requests_per_window bigint NOT NULL,
  window_duration         interval NOT NULL,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT request_limits_scope_key UNIQUE NULLS NOT DISTINCT (user_id, api_endpoint),
  CONSTRAINT request_limits_user_id_check
    CHECK (user_id IS NULL OR octet_length(user_id) BETWEEN 1 AND 255),
  CONSTRAINT request_limits_api_endpoint_check
    CHECK (api_endpoint IS NULL OR octet_length(api_endpoint) BETWEEN 1 AND 255),
  CONSTRAINT request_limits_max_requests_check
    CHECK (max_requests_per_window BETWEEN 1 AND 1000000000000000),
  CONSTRAINT request_limits_window_check
    CHECK (window_duration >= interval '1 second' AND window_duration <= interval '3650 days')
);
COMMENT ON TABLE request_limits IS
  'Request limits: max_requests_per_window per window_duration, by the same scopes as token_limits';

-- One row per granted allocation (tokens_used > 0, priority_level set) and
-- per request counted by check_rate_limit/enforce_rate_limit (tokens_used 0,
-- priority_level NULL).
CREATE TABLE token_usage (
  id             bigserial PRIMARY KEY,
  user_id        text NOT NULL,
  session_id     text,
  tokens_used    bigint NOT NULL CHECK (tokens_used >= 0),
  api_endpoint   text,
  priority_level text CHECK (priority_level IN ('high', 'medium', 'low')),
  "timestamp"    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX token_usage_user_time_idx ON token_usage (user_id, "timestamp");
COMMENT ON TABLE token_usage IS
  'Usage log: one row per grant (allocate_tokens) and per counted request (check_rate_limit, enforce_rate_limit)';

-- Revoked sessions/tokens.  (allocate_tokens does not consult it yet.)
CREATE TABLE token_revocations (
  token      text PRIMARY KEY CHECK (octet_length(token) BETWEEN 1 AND 255),
  revoked_at timestamptz NOT NULL DEFAULT now(),
  reason     text
);
COMMENT ON TABLE token_revocations IS 'Revoked session ids and tokens';

SELECT pg_catalog.pg_extension_config_dump('token_limits', '');
SELECT pg_catalog.pg_extension_config_dump('token_limits_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('request_limits', '');
SELECT pg_catalog.pg_extension_config_dump('request_limits_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('token_usage', '');
SELECT pg_catalog.pg_extension_config_dump('token_usage_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('token_revocations', '');

-- Rule changes reach every backend's rule cache at commit.  The trigger
-- fires even under session_replication_role = replica (logical replication,
-- restores), and not for the snapshot columns written by rate_limiter_flush().
CREATE FUNCTION rate_limiter_rules_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'rate_limiter_rules_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION rate_limiter_rules_changed() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_rules_changed() IS
  'Internal: statement trigger that makes every backend reload the rules after commit';

CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_tokens_per_period, period_interval
  ON token_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_truncated
  AFTER TRUNCATE ON token_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_requests_per_window, window_duration
  ON request_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_truncated
  AFTER TRUNCATE ON request_limits FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_rules_changed();
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_truncated;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_truncated;

------------------------------------------------------------------------------
-- Hot path (C).  Not STRICT: NULL arguments get their own clear errors.
------------------------------------------------------------------------------

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
  OUT scope               text)
RETURNS record
AS 'MODULE_PATHNAME', 'allocate_tokens' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION allocate_tokens(text, bigint, text, text, text, jsonb) IS
  'Grants up to tokens_requested tokens: at most the priority share (high 0.5, medium 0.3, low 0.2) of the remaining quota of the most restrictive scope; counts one request';

CREATE FUNCTION check_rate_limit(
  user_id      text,
  api_endpoint text DEFAULT NULL,
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
COMMENT ON FUNCTION check_rate_limit(text, text) IS
  'Checks every applicable request limit and token quota; counts the request when allowed';

CREATE FUNCTION enforce_rate_limit(
  user_id      text,
  api_endpoint text DEFAULT NULL,
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
COMMENT ON FUNCTION enforce_rate_limit(text, text) IS
  'Like check_rate_limit, but raises SQLSTATE RL429 when the request is denied';

CREATE FUNCTION get_performance_metrics() RETURNS jsonb
AS 'MODULE_PATHNAME', 'get_performance_metrics' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION get_performance_metrics() IS
  'Cluster-wide counters from shared memory; average_check_time is in seconds';

------------------------------------------------------------------------------
-- Internal helpers (C) for the administration functions below.
------------------------------------------------------------------------------

CREATE FUNCTION rate_limiter_schedule_reset(scope text, user_id text, api_endpoint text)
RETURNS void AS 'MODULE_PATHNAME', 'rate_limiter_schedule_reset' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_schedule_reset(text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_schedule_reset(text, text, text) IS
  'Internal: clears the scope''s counters when the transaction commits';

CREATE FUNCTION rate_limiter_peek_counter(
  scope text, user_id text, api_endpoint text, limit_kind text, window_duration interval,
  OUT used bigint, OUT window_start timestamptz, OUT reset_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'rate_limiter_peek_counter' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_peek_counter(text, text, text, text, interval) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_peek_counter(text, text, text, text, interval) IS
  'Internal: reads one shared-memory counter without changing it';

CREATE FUNCTION reload_rate_limits() RETURNS void
AS 'MODULE_PATHNAME', 'reload_rate_limits' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION reload_rate_limits() IS
  'Makes every backend reload the limit tables after this transaction commits (needed only after editing them with triggers disabled)';

------------------------------------------------------------------------------
-- Argument checks shared by the SQL-language functions.  Same rules and
-- SQLSTATEs as the C functions: 22004 NULL, 22023 invalid, 22001 too long,
-- 22003 out of range.
------------------------------------------------------------------------------

CREATE FUNCTION rate_limiter_check_id(what text, value text, nullable boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF value IS NULL THEN
    IF nullable THEN RETURN; END IF;
    RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF value = '' THEN
    RAISE EXCEPTION '% must not be empty', what USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF octet_length(value) > 255 THEN
    RAISE EXCEPTION '% is too long (% bytes)', what, octet_length(value)
      USING ERRCODE = 'string_data_right_truncation',
            DETAIL = 'The maximum length is 255 bytes.';
  END IF;
END $$;

CREATE FUNCTION rate_limiter_check_limit(what text, value bigint)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF value IS NULL THEN
    RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF value < 1 THEN
    RAISE EXCEPTION '% must be at least 1, not %', what, value USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF value > 1000000000000000 THEN
    RAISE EXCEPTION '% is too large: %', what, value
      USING ERRCODE = 'numeric_value_out_of_range', DETAIL = 'The maximum is 1000000000000000.';
  END IF;
END $$;

CREATE FUNCTION rate_limiter_check_window(what text, value interval)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF value IS NULL THEN
    RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF value < interval '1 second' OR value > interval '3650 days' THEN
    RAISE EXCEPTION '% must be between 1 second and 3650 days, not %', what, value
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END $$;

COMMENT ON FUNCTION rate_limiter_check_id(text, text, boolean) IS
  'Internal: validates an id argument (NULL, empty, longer than 255 bytes)';
COMMENT ON FUNCTION rate_limiter_check_limit(text, bigint) IS
  'Internal: validates a limit argument (1 .. 10^15)';
COMMENT ON FUNCTION rate_limiter_check_window(text, interval) IS
  'Internal: validates a window argument (1 second .. 3650 days)';
REVOKE ALL ON FUNCTION rate_limiter_check_id(text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION rate_limiter_check_limit(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION rate_limiter_check_window(text, interval) FROM PUBLIC;

------------------------------------------------------------------------------
-- Administration.  These functions are SECURITY DEFINER (they run as the
-- extension owner, with search_path pinned to pg_catalog, pg_temp and every
-- object schema-qualified) and EXECUTE is revoked from PUBLIC: granting
-- EXECUTE on one of them is how a role is allowed to do that one thing.
------------------------------------------------------------------------------

-- Upserts one token quota row; internal.
CREATE FUNCTION rate_limiter_upsert_token_limit(p_user_id text, p_api_endpoint text,
                                                p_max bigint, p_period interval)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_limit('max_tokens_per_period', p_max);
  PERFORM @extschema@.rate_limiter_check_window('period_interval', p_period);
  INSERT INTO @extschema@.token_limits AS t (user_id, api_endpoint, max_tokens_per_period, period_interval)
  VALUES (p_user_id, p_api_endpoint, p_max, p_period)
  ON CONFLICT (user_id, api_endpoint) DO UPDATE
    SET max_tokens_per_period = EXCLUDED.max_tokens_per_period,
        period_interval = EXCLUDED.period_interval,
        updated_at = now();
END $$;

-- Upserts one request limit row; internal.
CREATE FUNCTION rate_limiter_upsert_request_limit(p_user_id text, p_api_endpoint text,
                                                  p_max bigint, p_window interval)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_limit('max_requests_per_window', p_max);
  PERFORM @extschema@.rate_limiter_check_window('window_duration', p_window);
  INSERT INTO @extschema@.request_limits AS t (user_id, api_endpoint, max_requests_per_window, window_duration)
  VALUES (p_user_id, p_api_endpoint, p_max, p_window)
  ON CONFLICT (user_id, api_endpoint) DO UPDATE
    SET max_requests_per_window = EXCLUDED.max_requests_per_window,
        window_duration = EXCLUDED.window_duration,
        updated_at = now();
END $$;
COMMENT ON FUNCTION rate_limiter_upsert_token_limit(text, text, bigint, interval) IS
  'Internal: inserts or updates one token_limits row';
COMMENT ON FUNCTION rate_limiter_upsert_request_limit(text, text, bigint, interval) IS
  'Internal: inserts or updates one request_limits row';
REVOKE ALL ON FUNCTION rate_limiter_upsert_token_limit(text, text, bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION rate_limiter_upsert_request_limit(text, text, bigint, interval) FROM PUBLIC;

CREATE FUNCTION set_rate_limit(user_id text, max_tokens_per_period bigint,
                               period_interval interval DEFAULT '1 day',
                               api_endpoint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_token_limit($1, $4, $2, $3);
END $$;
COMMENT ON FUNCTION set_rate_limit(text, bigint, interval, text) IS
  'Sets the token quota of a user (on one endpoint when api_endpoint is given); takes effect at commit';

CREATE FUNCTION set_user_rate_limit(user_id text, max_requests_per_window bigint,
                                    window_duration interval,
                                    api_endpoint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $4, true);
  PERFORM @extschema@.rate_limiter_upsert_request_limit($1, $4, $2, $3);
END $$;
COMMENT ON FUNCTION set_user_rate_limit(text, bigint, interval, text) IS
  'Sets the request limit of a user (on one endpoint when api_endpoint is given); takes effect at commit';

CREATE FUNCTION set_api_rate_limit(api_endpoint text, max_requests_per_window bigint,
                                   window_duration interval)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_request_limit(NULL, $1, $2, $3);
END $$;
COMMENT ON FUNCTION set_api_rate_limit(text, bigint, interval) IS
  'Sets the request limit of an endpoint, shared by all users; takes effect at commit';

CREATE FUNCTION set_api_token_limit(api_endpoint text, max_tokens_per_period bigint,
                                    period_interval interval DEFAULT '1 day')
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $1);
  PERFORM @extschema@.rate_limiter_upsert_token_limit(NULL, $1, $2, $3);
END $$;
COMMENT ON FUNCTION set_api_token_limit(text, bigint, interval) IS
  'Sets the token quota of an endpoint, shared by all users; takes effect at commit';

CREATE FUNCTION set_default_rate_limit(max_tokens_per_period bigint,
                                       period_interval interval DEFAULT '1 day')
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_token_limit(NULL, NULL, $1, $2);
END $$;
COMMENT ON FUNCTION set_default_rate_limit(bigint, interval) IS
  'Sets the token quota of every user who has no token quota of their own';

CREATE FUNCTION set_default_user_rate_limit(max_requests_per_window bigint,
                                            window_duration interval)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_upsert_request_limit(NULL, NULL, $1, $2);
END $$;
COMMENT ON FUNCTION set_default_user_rate_limit(bigint, interval) IS
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

------------------------------------------------------------------------------
-- Status and history.
------------------------------------------------------------------------------

-- Every limit that applies to the user: their user+endpoint rules, their own
-- rule or the default (per kind), and every endpoint-wide rule.
CREATE FUNCTION get_rate_limit_status(user_id text)
RETURNS TABLE (scope text, api_endpoint text, limit_kind text, "limit" bigint, used bigint,
               remaining bigint, window_duration interval, window_start timestamptz,
               reset_at timestamptz)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  RETURN QUERY
  WITH rules AS (
    SELECT CASE WHEN t.api_endpoint IS NOT NULL THEN 'user_endpoint' ELSE 'user' END AS scope,
           t.api_endpoint, 'tokens' AS kind, t.max_tokens_per_period AS lim, t.period_interval AS win
      FROM @extschema@.token_limits t WHERE t.user_id = $1
    UNION ALL
    SELECT 'default', NULL, 'tokens', t.max_tokens_per_period, t.period_interval
      FROM @extschema@.token_limits t
     WHERE t.user_id IS NULL AND t.api_endpoint IS NULL
       AND NOT EXISTS (SELECT 1 FROM @extschema@.token_limits o
                        WHERE o.user_id = $1 AND o.api_endpoint IS NULL)
    UNION ALL
    SELECT 'endpoint', t.api_endpoint, 'tokens', t.max_tokens_per_period, t.period_interval
      FROM @extschema@.token_limits t WHERE t.user_id IS NULL AND t.api_endpoint IS NOT NULL
    UNION ALL
    SELECT CASE WHEN r.api_endpoint IS NOT NULL THEN 'user_endpoint' ELSE 'user' END,
           r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration
      FROM @extschema@.request_limits r WHERE r.user_id = $1
    UNION ALL
    SELECT 'default', NULL, 'requests', r.max_requests_per_window, r.window_duration
      FROM @extschema@.request_limits r
     WHERE r.user_id IS NULL AND r.api_endpoint IS NULL
       AND NOT EXISTS (SELECT 1 FROM @extschema@.request_limits o
                        WHERE o.user_id = $1 AND o.api_endpoint IS NULL)
    UNION ALL
    SELECT 'endpoint', r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration
      FROM @extschema@.request_limits r WHERE r.user_id IS NULL AND r.api_endpoint IS NOT NULL
  )
  SELECT rules.scope, rules.api_endpoint, rules.kind, rules.lim, c.used,
         GREATEST(rules.lim - c.used, 0), rules.win, c.window_start, c.reset_at
    FROM rules,
         LATERAL @extschema@.rate_limiter_peek_counter(
           rules.scope, CASE WHEN rules.scope = 'endpoint' THEN NULL ELSE $1 END,
           rules.api_endpoint, rules.kind, rules.win) c
   ORDER BY CASE rules.scope WHEN 'user_endpoint' THEN 1 WHEN 'user' THEN 2
                             WHEN 'default' THEN 2 ELSE 3 END,
            rules.api_endpoint NULLS FIRST, rules.kind;
END $$;
COMMENT ON FUNCTION get_rate_limit_status(text) IS
  'One row per limit that applies to the user, with live usage from shared memory';

-- Usage over the last `days` days from token_usage.  Days are UTC dates,
-- like the windows.
CREATE FUNCTION get_rate_limit_history(user_id text, days integer DEFAULT 7)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  since timestamptz;
  result jsonb;
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  IF $2 IS NULL THEN
    RAISE EXCEPTION 'days must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF $2 < 1 OR $2 > 3650 THEN
    RAISE EXCEPTION 'days must be between 1 and 3650, not %', $2
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  since := now() - make_interval(days => $2);
  WITH u AS (
    SELECT t.tokens_used, t.api_endpoint, t.priority_level,
           (t."timestamp" AT TIME ZONE 'UTC')::date AS day
      FROM @extschema@.token_usage t
     WHERE t.user_id = $1 AND t."timestamp" >= since
  )
  SELECT jsonb_build_object(
           'user_id', $1,
           'days', $2,
           'since', since,
           'total_tokens', COALESCE(sum(u.tokens_used), 0),
           'total_requests', count(*),
           'total_allocations', count(*) FILTER (WHERE u.priority_level IS NOT NULL),
           'average_tokens_per_request',
             CASE WHEN count(*) = 0 THEN 0
                  ELSE round(COALESCE(sum(u.tokens_used), 0)::numeric / count(*), 2) END,
           'daily_usage', COALESCE((
             SELECT jsonb_agg(jsonb_build_object('date', d.day, 'tokens', d.tokens,
                                                 'requests', d.requests) ORDER BY d.day)
               FROM (SELECT u2.day, sum(u2.tokens_used) AS tokens, count(*) AS requests
                       FROM u u2 GROUP BY u2.day) d), '[]'::jsonb),
           'endpoint_usage', COALESCE((
             SELECT jsonb_agg(jsonb_build_object('api_endpoint', e.api_endpoint, 'tokens', e.tokens,
                                                 'requests', e.requests)
                              ORDER BY e.tokens DESC, e.api_endpoint NULLS FIRST)
               FROM (SELECT u3.api_endpoint, sum(u3.tokens_used) AS tokens, count(*) AS requests
                       FROM u u3 GROUP BY u3.api_endpoint) e), '[]'::jsonb))
    INTO result
    FROM u;
  RETURN result;
END $$;
COMMENT ON FUNCTION get_rate_limit_history(text, integer) IS
  'Usage of a user over the last days from token_usage: totals, daily_usage and endpoint_usage';

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
                    t.user_id, t.api_endpoint, 'tokens', t.period_interval) c)
   WHERE t.user_id IS NOT NULL OR t.api_endpoint IS NOT NULL;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
COMMENT ON FUNCTION rate_limiter_flush() IS
  'Copies the live token counters into token_limits.tokens_used_in_period and period_start; returns the rows updated';

-- Least privilege: the hot path (allocate/check/enforce) and the metrics are
-- open to PUBLIC; everything that changes or reads limits and usage is
-- granted explicitly (GRANT EXECUTE ON FUNCTION ... TO some_admin_role).
REVOKE ALL ON FUNCTION set_rate_limit(text, bigint, interval, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION set_user_rate_limit(text, bigint, interval, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION set_api_rate_limit(text, bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION set_api_token_limit(text, bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION set_default_rate_limit(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION set_default_user_rate_limit(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_rate_limit(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_api_rate_limit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_default_rate_limit() FROM PUBLIC;
REVOKE ALL ON FUNCTION reset_rate_limit(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION reset_api_rate_limit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION reload_rate_limits() FROM PUBLIC;
REVOKE ALL ON FUNCTION get_rate_limit_status(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION get_rate_limit_history(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION rate_limiter_flush() FROM PUBLIC;
