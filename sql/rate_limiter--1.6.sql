-- rate_limiter 1.5 install script.
--
-- make builds sql/rate_limiter--1.5.sql from sql/schema/*.sql, in the
-- order of their numbers; edit those files, not the generated script.
-- CREATE EXTENSION rate_limiter runs it for a new installation; an
-- installation of an older version gets the same schema by
-- ALTER EXTENSION rate_limiter UPDATE (the update scripts
-- sql/rate_limiter--X--Y.sql).  test/t/021_schema_versions.pl checks that
-- both ways end in the same catalog.
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
  -- Per-limit algorithm and strategy options (README, "Strategies").  NULL
  -- means "use the setting" (rate_limiter.* GUC); the switches of a token
  -- quota fall back to the request limit of the same scope, then to the GUC.
  -- request_limits has the same columns.
  algorithm                  text NOT NULL DEFAULT 'fixed_window',
  burst                      bigint,
  burst_limit                bigint,
  burst_window_seconds       integer,
  enable_dynamic_allocation  boolean,
  emergency_override_enabled boolean,
  burst_mode_enabled         boolean,
  user_history_weight        float8,
  system_load_weight         float8,
  time_factor_weight         float8,
  emergency_threshold        float8,
  override_percentage        float8,
  burst_multiplier           float8,
  burst_window               interval,
  max_burst_tokens           bigint,
  shadow_mode                boolean,
  period_anchor              timestamptz,
  period_timezone            text,
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
  algorithm                  text NOT NULL DEFAULT 'fixed_window',
  burst                      bigint,
  burst_limit                bigint,
  burst_window_seconds       integer,
  enable_dynamic_allocation  boolean,
  emergency_override_enabled boolean,
  burst_mode_enabled         boolean,
  user_history_weight        float8,
  system_load_weight         float8,
  time_factor_weight         float8,
  emergency_threshold        float8,
  override_percentage        float8,
  burst_multiplier           float8,
  burst_window               interval,
  max_burst_tokens           bigint,
  shadow_mode                boolean,
  period_anchor              timestamptz,
  period_timezone            text,
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
  "timestamp"    timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- settle_tokens: what was granted and when it was settled (allocation_id
  -- is token_usage.id), who made the grant and what it charged.
  tokens_granted bigint CHECK (tokens_granted IS NULL OR tokens_granted >= 0),
  settled_at     timestamptz,
  granted_to     name,
  charges        bytea
);
CREATE INDEX token_usage_user_time_idx ON token_usage (user_id, "timestamp");
COMMENT ON TABLE token_usage IS
  'Usage log: one row per grant (allocate_tokens) and per counted request (check_rate_limit, enforce_rate_limit)';
COMMENT ON COLUMN token_usage.tokens_granted IS
  'Tokens granted by allocate_tokens, kept when settle_tokens replaces tokens_used with the actual usage';
COMMENT ON COLUMN token_usage.settled_at IS 'When settle_tokens settled this allocation; NULL: not settled';
-- A role name, not an oid or regrole: a dump restored into another cluster
-- must neither fail on a missing role nor hand the grant to whichever role
-- has that oid there.
COMMENT ON COLUMN token_usage.granted_to IS
  'The role that made the call (current_user of allocate_tokens): with its members and the extension''s administrators, the only roles that may settle the grant';
COMMENT ON COLUMN token_usage.charges IS
  'Internal: the token quotas the grant charged and how much, for settle_tokens; NULL for counted checks and rows before 1.3';

------------------------------------------------------------------------------
-- Rebuilding counters after a crash or promotion replays the usage rows of
-- each rule's current window: by user (the existing user_id index), by
-- endpoint (this one) and by time for the default rule.
------------------------------------------------------------------------------
CREATE INDEX token_usage_endpoint_time_idx ON token_usage (api_endpoint, "timestamp");

-- The flusher's retention deletes by age, and a rebuild of counters reads
-- the rows of the current windows: both scan by time.
CREATE INDEX token_usage_timestamp_idx ON token_usage ("timestamp");

-- In async mode allocate_tokens draws its allocation_id from this sequence
-- directly (nextval, without inserting).  A per-session cache makes that a
-- memory read for 63 calls out of 64: no lock on the sequence's buffer, no
-- WAL.  Ids stay unique; they are no longer in time order across sessions,
-- and a session that ends leaves the rest of its cache as a gap.
ALTER SEQUENCE token_usage_id_seq CACHE 64;

-- Revoked session ids ("Revocations" in 09_revocations.sql).
CREATE TABLE token_revocations (
  token      text PRIMARY KEY CHECK (octet_length(token) BETWEEN 1 AND 255),
  revoked_at timestamptz NOT NULL DEFAULT now(),
  reason     text
);
COMMENT ON TABLE token_revocations IS
  'Revoked session ids: allocate_tokens denies them (reason revoked). Cached in shared memory; write it with revoke_token/unrevoke_token or directly';

SELECT pg_catalog.pg_extension_config_dump('token_limits', '');
SELECT pg_catalog.pg_extension_config_dump('token_limits_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('request_limits', '');
SELECT pg_catalog.pg_extension_config_dump('request_limits_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('token_usage', '');
SELECT pg_catalog.pg_extension_config_dump('token_usage_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('token_revocations', '');

-- The latest reset of each scope.  A reset clears counters in shared
-- memory; a rebuild after a crash replays token_usage and must not count
-- the rows of a window that was reset after them.
CREATE TABLE rate_limit_resets (
  scope        text NOT NULL CHECK (scope IN ('user', 'user_endpoint', 'endpoint')),
  user_id      text,
  api_endpoint text,
  reset_at     timestamptz NOT NULL,
  CONSTRAINT rate_limit_resets_scope_key UNIQUE NULLS NOT DISTINCT (scope, user_id, api_endpoint)
);
SELECT pg_catalog.pg_extension_config_dump('rate_limit_resets', '');
REVOKE ALL ON rate_limit_resets FROM PUBLIC;
COMMENT ON TABLE rate_limit_resets IS
  'The latest reset_rate_limit / reset_api_rate_limit of each scope: a rebuild of the counters after a crash ignores the usage rows before it';

-- Usage rows that token_usage refused.  A database's worker inserts queued
-- rows in batches; when a batch fails because of its rows (a CHECK
-- constraint or a trigger added to token_usage, a data error; not a lock
-- timeout, a cancel or another transient error, which are retried), it
-- retries smaller batches down to the failing row and sets that row aside
-- here, with the error, so that every other row keeps flowing
-- (usage_dead_letters in get_performance_metrics(), a usage_dead_letter
-- alert).  Their grants were charged, so the counter rebuild after a crash
-- counts these rows as it counts token_usage.  Once the cause is fixed,
-- move them back:
--   WITH moved AS (DELETE FROM token_usage_dead_letters RETURNING *)
--   INSERT INTO token_usage (id, user_id, session_id, tokens_used, api_endpoint, priority_level, "timestamp")
--   SELECT coalesce(id, nextval('token_usage_id_seq')), user_id, session_id, tokens_used, api_endpoint,
--          priority_level, "timestamp" FROM moved;
CREATE TABLE token_usage_dead_letters (
  letter_id      bigserial PRIMARY KEY,
  id             bigint,
  user_id        text NOT NULL,
  session_id     text,
  tokens_used    bigint NOT NULL,
  api_endpoint   text,
  priority_level text,
  "timestamp"    timestamptz NOT NULL,
  error_sqlstate text NOT NULL,
  error_message  text NOT NULL,
  error_detail   text,
  failed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX token_usage_dead_letters_timestamp_idx ON token_usage_dead_letters ("timestamp");
SELECT pg_catalog.pg_extension_config_dump('token_usage_dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('token_usage_dead_letters_letter_id_seq', '');
REVOKE ALL ON token_usage_dead_letters FROM PUBLIC;
COMMENT ON TABLE token_usage_dead_letters IS
  'Usage rows token_usage refused (a constraint or trigger), set aside by the worker with the error; the counter rebuild after a crash counts them';
COMMENT ON COLUMN token_usage_dead_letters.id IS
  'The allocation_id the call returned (NULL for a counted check_rate_limit request)';
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
------------------------------------------------------------------------------
-- Hierarchies (tenant > team > user).  A call for a user is checked and
-- charged against the user's own limits and every ancestor's, all or
-- nothing.  Ids live in the user-id namespace: a tenant's or a team's
-- limits are set with the set_* functions like a user's, and its counters
-- hold the calls of all its descendants and its own.  At most 8 levels of
-- parents above any user.
------------------------------------------------------------------------------

CREATE TABLE rate_limit_parents (
  child_id   text PRIMARY KEY,
  parent_id  text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT rate_limit_parents_ids CHECK (
    child_id <> '' AND parent_id <> '' AND child_id <> parent_id
    AND octet_length(child_id) <= 255 AND octet_length(parent_id) <= 255)
);
CREATE INDEX rate_limit_parents_parent_id ON rate_limit_parents (parent_id);
COMMENT ON TABLE rate_limit_parents IS
  'Hierarchy links: every limit of parent_id (and of its ancestors) also applies to the calls of child_id. Write it with set_parent/remove_parent, which refuse cycles and hierarchies deeper than 8 levels';
SELECT pg_catalog.pg_extension_config_dump('rate_limit_parents', '');
REVOKE ALL ON rate_limit_parents FROM PUBLIC;

-- Like rate_limiter_rules_changed: the link reaches shared memory when the
-- transaction commits, and the transaction itself sees it at once.
CREATE FUNCTION rate_limiter_parents_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'rate_limiter_parents_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION rate_limiter_parents_changed() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_parents_changed() IS
  'Internal: records a change of rate_limit_parents for the shared rule table at commit';
CREATE TRIGGER rate_limiter_parents_changed
  AFTER INSERT OR UPDATE OR DELETE ON rate_limit_parents
  FOR EACH ROW EXECUTE FUNCTION rate_limiter_parents_changed();
CREATE TRIGGER rate_limiter_parents_truncated
  AFTER TRUNCATE ON rate_limit_parents
  FOR EACH STATEMENT EXECUTE FUNCTION rate_limiter_parents_changed();

-- One hierarchy change at a time (a lock on the table until the end of the
-- transaction), so that the cycle and depth checks read a hierarchy no
-- other transaction is changing.  At READ COMMITTED each statement below
-- sees every change committed before the lock was granted; a REPEATABLE
-- READ snapshot may be older, so the function refuses to run there.
CREATE FUNCTION set_parent(child_id text, parent_id text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  path text;
  above integer;
  below integer;
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('child_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('parent_id', $2);
  IF $1 = $2 THEN
    RAISE EXCEPTION 'a user cannot be its own parent ("%")', $1
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'set_parent() must run at READ COMMITTED isolation'
      USING ERRCODE = 'active_sql_transaction',
            DETAIL = 'It checks the whole hierarchy for cycles, which an older snapshot may not show.';
  END IF;
  LOCK TABLE @extschema@.rate_limit_parents IN SHARE ROW EXCLUSIVE MODE;
  -- The ancestors of the new parent, nearest first.  A cycle already in the
  -- table (written with the triggers disabled) ends the walk at 64 steps.
  WITH RECURSIVE up(id, depth, trail) AS (
    SELECT $2, 0, ARRAY[$2]
    UNION ALL
    SELECT p.parent_id, up.depth + 1, up.trail || p.parent_id
      FROM @extschema@.rate_limit_parents p JOIN up ON p.child_id = up.id
     WHERE up.depth < 64 AND NOT p.parent_id = ANY (up.trail))
  SELECT max(up.depth),
         (SELECT array_to_string(u.trail, ' -> ') FROM up u WHERE u.id = $1 LIMIT 1)
    INTO above, path
    FROM up;
  IF path IS NOT NULL THEN
    RAISE EXCEPTION 'set_parent(''%'', ''%'') would make a cycle', $1, $2
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('"%s" is an ancestor of "%s": %s.', $1, $2, path),
            HINT = 'Remove one of the links first: remove_parent(child_id).';
  END IF;
  -- The levels below the child (its descendants), deepest first.
  WITH RECURSIVE down(id, depth) AS (
    SELECT $1, 0
    UNION ALL
    SELECT p.child_id, down.depth + 1
      FROM @extschema@.rate_limit_parents p JOIN down ON p.parent_id = down.id
     WHERE down.depth < 64)
  SELECT max(down.depth) INTO below FROM down;
  -- A user `below` levels under the child would have below + 1 + above
  -- ancestors: those down to the child, the parent and the parent's.
  IF below + above + 1 > 8 THEN
    RAISE EXCEPTION 'set_parent(''%'', ''%'') would make a hierarchy % levels deep', $1, $2,
                    below + above + 2
      USING ERRCODE = 'program_limit_exceeded',
            DETAIL = format('"%s" has %s levels of ancestors and "%s" %s levels of descendants; '
                            'a user may have at most 8 ancestors.', $2, above, $1, below);
  END IF;
  INSERT INTO @extschema@.rate_limit_parents AS p (child_id, parent_id)
  VALUES ($1, $2)
  ON CONFLICT ON CONSTRAINT rate_limit_parents_pkey
  DO UPDATE SET parent_id = EXCLUDED.parent_id, created_at = now()
   WHERE p.parent_id IS DISTINCT FROM EXCLUDED.parent_id;
END $$;
REVOKE ALL ON FUNCTION set_parent(text, text) FROM PUBLIC;
COMMENT ON FUNCTION set_parent(text, text) IS
  'Makes parent_id the parent of child_id: every limit of the parent and of its ancestors also applies to the child''s calls (transactional; refuses cycles and more than 8 levels)';

CREATE FUNCTION remove_parent(child_id text)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('child_id', $1);
  LOCK TABLE @extschema@.rate_limit_parents IN SHARE ROW EXCLUSIVE MODE;
  DELETE FROM @extschema@.rate_limit_parents p WHERE p.child_id = $1;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n > 0;
END $$;
REVOKE ALL ON FUNCTION remove_parent(text) FROM PUBLIC;
COMMENT ON FUNCTION remove_parent(text) IS
  'Removes the parent of child_id (its ancestors'' limits no longer apply to it); returns whether it had one';
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
  OUT scope               text,
  OUT allocation_id       bigint,
  OUT burst_tokens        bigint,
  OUT emergency_tokens    bigint,
  OUT limit_owner         text)
RETURNS record
AS 'MODULE_PATHNAME', 'allocate_tokens' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION allocate_tokens(text, bigint, text, text, text, jsonb) IS
  'Grants up to tokens_requested tokens: at most the priority share (high 0.5, medium 0.3, low 0.2) of the remaining quota of the most restrictive scope, adjusted by the dynamic, burst and emergency strategies; counts one request';

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
  OUT reason      text,
  OUT limit_owner text)
RETURNS record
AS 'MODULE_PATHNAME', 'check_rate_limit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION check_rate_limit(text, text, text) IS
  'Checks every applicable request limit and token quota; counts the request when allowed';

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
  OUT reason      text,
  OUT limit_owner text)
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

-- settle_tokens(allocation_id, tokens_used): the actual usage of a grant.
-- Each grant keeps who made it and what it charged (token_usage.granted_to
-- and charges), so that settle_tokens gives back exactly what the grant
-- took from each quota (README, "Reserve, then settle").  In C: it must
-- know the calling role (a SECURITY DEFINER function does not); it runs as
-- the caller and reads token_usage as the extension owner internally.
CREATE FUNCTION settle_tokens(allocation_id bigint, tokens_used bigint,
                                         OUT tokens_granted bigint, OUT tokens_refunded bigint)
RETURNS record AS 'MODULE_PATHNAME', 'settle_tokens' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION settle_tokens(bigint, bigint) IS
  'Settles a grant with the tokens actually used: at commit each token quota the grant charged gets back the unused part, at most what it was charged (never the emergency allowance or burst budget); only the allocating role, its members and administrators may settle';
------------------------------------------------------------------------------
-- Status and history.
------------------------------------------------------------------------------

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
-- rule or the default (per kind), every ancestor's rules (set_parent), and
-- every endpoint-wide rule, then the user's in-flight limits.  limit_owner: whose counter the limit counts in
-- (the user, an ancestor; NULL for an endpoint-wide limit).  Each branch
-- reads its rows through the scope's unique index (the user's own rows, an
-- ancestor's, the default rows, the endpoint-wide rows), not every rule of
-- both tables.
CREATE FUNCTION get_rate_limit_status(user_id text)
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
REVOKE ALL ON FUNCTION get_rate_limit_status(text) FROM PUBLIC;
COMMENT ON FUNCTION get_rate_limit_status(text) IS
  'One row per limit that applies to the user (its ancestors'' included), with live usage from shared memory';

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

-- The decision a call would get now, charging nothing (no counter is
-- created or advanced, no usage row, no metric, no alert).  tokens NULL: a
-- check; else allocate_tokens(user_id, tokens) with its defaults (medium
-- priority, partial grants).  remaining is the binding limit's after the
-- call would have been charged, as in the result records; checked_at is
-- the limiter's clock at the decision.
CREATE FUNCTION rate_limiter_preview_decision(
  user_id text, api_endpoint text, tokens bigint,
  OUT allowed boolean, OUT "limit" bigint, OUT remaining bigint, OUT reset_at timestamptz,
  OUT retry_after interval, OUT limit_kind text, OUT scope text, OUT reason text,
  OUT algorithm text, OUT window_duration interval, OUT checked_at timestamptz,
  OUT limit_owner text)
RETURNS record AS 'MODULE_PATHNAME', 'rate_limiter_preview_decision' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_preview_decision(text, text, bigint) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_preview_decision(text, text, bigint) IS
  'Internal: the decision check_rate_limit (tokens NULL) or allocate_tokens(user_id, tokens) would make now, without charging anything';

-- A duration in the format OpenAI's x-ratelimit-reset-* headers use (Go's
-- time.Duration): 20ms, 1s, 1.5s, 6m0s, 1h2m3s; milliseconds are the unit.
-- Not STRICT: a NULL argument must reach the privilege check (022_security).
CREATE FUNCTION rate_limiter_duration_text(ms bigint)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE
    WHEN $1 IS NULL THEN NULL
    WHEN $1 <= 0 THEN '0s'
    WHEN $1 < 1000 THEN $1 || 'ms'
    ELSE CASE WHEN $1 >= 3600000 THEN ($1 / 3600000) || 'h' ELSE '' END
      || CASE WHEN $1 >= 60000 THEN ($1 % 3600000 / 60000) || 'm' ELSE '' END
      || ($1 % 60000 / 1000)
      || CASE WHEN $1 % 1000 = 0 THEN ''
              ELSE '.' || rtrim(lpad(($1 % 1000)::text, 3, '0'), '0') END
      || 's'
  END
$$;
REVOKE ALL ON FUNCTION rate_limiter_duration_text(bigint) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_duration_text(bigint) IS
  'Internal: milliseconds as a Go-style duration (20ms, 1.5s, 6m0s, 1h2m3s) for x-ratelimit-reset-*';

-- The HTTP response headers for the limits that apply to user_id on
-- api_endpoint now (docs/http_headers.md): RateLimit-Policy and RateLimit
-- of draft-ietf-httpapi-ratelimit-headers-09, one item per limit with the
-- binding one first; Retry-After when the call (tokens NULL: one request,
-- as check_rate_limit; else allocate_tokens(user_id, tokens)) would be
-- denied now and a wait helps; and OpenAI's x-ratelimit-* for the tightest
-- request limit and token quota.  Charges nothing.  Values are those of
-- get_rate_limit_status (limit, remaining, reset_at by each algorithm) and
-- the decision's exact retry_after; seconds are rounded up, so that a
-- client that waits them is never early.  No limit: an empty object.
CREATE FUNCTION rate_limit_headers(user_id text, api_endpoint text DEFAULT NULL,
                                   tokens bigint DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d record;
  h jsonb := '{}';
  policy text;
  state text;
  l record;
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  PERFORM @extschema@.rate_limiter_check_id('api_endpoint', $2, true);
  d := @extschema@.rate_limiter_preview_decision($1, $2, $3);
  WITH applicable AS (
    SELECT s.scope, s.limit_kind AS kind, s."limit" AS lim, s.remaining AS rem,
           s.window_duration AS win, s.reset_at,
           (s.scope = d.scope AND s.limit_kind = d.limit_kind
            AND s.limit_owner IS NOT DISTINCT FROM d.limit_owner) AS binding,
           CASE s.scope WHEN 'user_endpoint' THEN 1 WHEN 'endpoint' THEN 3 ELSE 2 END AS ord,
           -- An ancestor's limits are named after it (quotes and
           -- backslashes cannot appear in a structured-field string).
           CASE WHEN s.limit_owner IS DISTINCT FROM $1 AND s.scope <> 'endpoint'
                THEN translate(s.limit_owner, '"\', '__') || '/' END AS prefix
      FROM @extschema@.get_rate_limit_status($1) s
     WHERE s.scope IN ('user', 'default')
        OR (s.scope IN ('user_endpoint', 'endpoint') AND s.api_endpoint = $2)
    UNION ALL
    -- A burst cap is not in the status; it is listed when it denies.
    SELECT d.scope, d.limit_kind, d."limit", d.remaining, d.window_duration, d.reset_at, true, 0,
           CASE WHEN d.limit_owner IS DISTINCT FROM $1 AND d.scope <> 'endpoint'
                THEN translate(d.limit_owner, '"\', '__') || '/' END
     WHERE NOT d.allowed AND d.limit_kind IN ('token_burst', 'request_burst')
  ), items AS (
    SELECT a.*,
           pg_catalog.format('"%s%s-%s"', a.prefix, a.scope, a.kind) AS name,
           GREATEST(ceil(EXTRACT(EPOCH FROM a.reset_at - d.checked_at)), 0)::bigint AS reset_s,
           GREATEST(ceil(EXTRACT(EPOCH FROM a.reset_at - d.checked_at) * 1000), 0)::bigint AS reset_ms,
           row_number() OVER (ORDER BY a.binding DESC, a.ord, a.kind DESC) AS pos
      FROM applicable a
  )
  SELECT string_agg(pg_catalog.format('%s;q=%s;w=%s%s', i.name, i.lim,
                                      GREATEST(floor(EXTRACT(EPOCH FROM i.win)), 1)::bigint,
                                      CASE WHEN i.kind IN ('tokens', 'token_burst') THEN ';qu="tokens"'
                                           ELSE '' END), ', ' ORDER BY i.pos),
         string_agg(pg_catalog.format('%s;r=%s;t=%s', i.name, i.rem, i.reset_s), ', ' ORDER BY i.pos)
    INTO policy, state
    FROM items i;
  IF policy IS NULL THEN
    RETURN h;
  END IF;
  h := jsonb_build_object('RateLimit-Policy', policy, 'RateLimit', state);
  IF NOT d.allowed AND d.retry_after IS NOT NULL THEN
    h := h || jsonb_build_object('Retry-After',
                                 ceil(EXTRACT(EPOCH FROM d.retry_after))::bigint::text);
  END IF;
  -- OpenAI's headers: per kind, the binding limit if it is of that kind,
  -- else the one with the fewest left (ties: the narrower scope).
  FOR l IN
    SELECT DISTINCT ON (s.kind) s.kind, s."limit" AS lim, s.remaining AS rem,
           GREATEST(ceil(EXTRACT(EPOCH FROM s.reset_at - d.checked_at) * 1000), 0)::bigint AS reset_ms
      FROM (SELECT g.limit_kind AS kind, g."limit", g.remaining, g.reset_at,
                   (g.scope = d.scope AND g.limit_kind = d.limit_kind
                    AND g.limit_owner IS NOT DISTINCT FROM d.limit_owner) AS binding,
                   CASE g.scope WHEN 'user_endpoint' THEN 1 WHEN 'endpoint' THEN 3 ELSE 2 END AS ord
              FROM @extschema@.get_rate_limit_status($1) g
             WHERE g.scope IN ('user', 'default')
                OR (g.scope IN ('user_endpoint', 'endpoint') AND g.api_endpoint = $2)) s
     ORDER BY s.kind, s.binding DESC, s.remaining, s.ord
  LOOP
    h := h || jsonb_build_object(
      'x-ratelimit-limit-' || l.kind, l.lim::text,
      'x-ratelimit-remaining-' || l.kind, l.rem::text,
      'x-ratelimit-reset-' || l.kind, @extschema@.rate_limiter_duration_text(l.reset_ms));
  END LOOP;
  RETURN h;
END $$;
-- It shows what get_rate_limit_status shows: granted the same way.
REVOKE ALL ON FUNCTION rate_limit_headers(text, text, bigint) FROM PUBLIC;
COMMENT ON FUNCTION rate_limit_headers(text, text, bigint) IS
  'HTTP response headers (RateLimit-Policy, RateLimit, Retry-After, x-ratelimit-*) for the limits that apply to the user on the endpoint now; charges nothing';

------------------------------------------------------------------------------
-- Usage log modes (rate_limiter.usage_log): in async mode the rows reach
-- token_usage through a shared-memory queue and the "rate_limiter flusher"
-- background worker (see README, "Usage log").
------------------------------------------------------------------------------

-- Waits until the flusher has written every usage row queued before the
-- call (and writes this transaction's refund_on_abort rows, which wait for
-- commit otherwise).  An error after 30 s without progress of the flusher.
CREATE FUNCTION rate_limiter_flush_usage() RETURNS void
AS 'MODULE_PATHNAME', 'rate_limiter_flush_usage' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_flush_usage() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_flush_usage() IS
  'Waits until every usage row queued before the call is in token_usage (usage_log = async)';

-- The snapshot half of rate_limiter_flush(), also run by the worker with
-- skip_locked: it must never wait for (or deadlock with) a session that
-- holds a token_limits row.  Both forms lock their rows through a join.
CREATE FUNCTION rate_limiter_snapshot_counters(skip_locked boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  IF $1 THEN
    WITH locked AS (
           SELECT l.id FROM @extschema@.token_limits l
            WHERE l.user_id IS NOT NULL OR l.api_endpoint IS NOT NULL
           FOR UPDATE SKIP LOCKED)
    UPDATE @extschema@.token_limits t
       SET (tokens_used_in_period, period_start) = (
             SELECT c.used, c.window_start
               FROM @extschema@.rate_limiter_peek_counter(
                      CASE WHEN t.user_id IS NULL THEN 'endpoint'
                           WHEN t.api_endpoint IS NULL THEN 'user' ELSE 'user_endpoint' END,
                      t.user_id, t.api_endpoint, 'tokens', t.period_interval, t.algorithm,
                      t.max_tokens_per_period, t.burst) c)
      FROM locked k
     WHERE t.id = k.id;
  ELSE
    UPDATE @extschema@.token_limits t
       SET (tokens_used_in_period, period_start) = (
             SELECT c.used, c.window_start
               FROM @extschema@.rate_limiter_peek_counter(
                      CASE WHEN t.user_id IS NULL THEN 'endpoint'
                           WHEN t.api_endpoint IS NULL THEN 'user' ELSE 'user_endpoint' END,
                      t.user_id, t.api_endpoint, 'tokens', t.period_interval, t.algorithm,
                      t.max_tokens_per_period, t.burst) c)
     WHERE t.user_id IS NOT NULL OR t.api_endpoint IS NOT NULL;
  END IF;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION rate_limiter_snapshot_counters(boolean) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_snapshot_counters(boolean) IS
  'Internal: copies the live token counters of every limit into token_limits.tokens_used_in_period and period_start (skipping rows locked by other sessions when skip_locked); returns the rows updated. rate_limiter_flush() runs it; the workers refresh only the scopes they flushed';


-- The worker's upkeep (every 10 s): the snapshot columns of the token
-- limits whose scopes had usage flushed since the last upkeep, given as
-- the (user_id, api_endpoint) pairs of the flushed rows.  A pair stands for
-- its user_endpoint, user and endpoint scopes.  Each scope is found by
-- its own join on the (user_id, api_endpoint) key, so the work is
-- proportional to the pairs, not to the rules; rows other sessions hold
-- are skipped, never waited for.
CREATE FUNCTION rate_limiter_snapshot_scopes(user_ids text[], api_endpoints text[])
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  WITH pairs AS (
         SELECT DISTINCT p.u, p.e FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS p(u, e)
          WHERE p.u IS NOT NULL),
       by_pair AS (
         SELECT l.id FROM @extschema@.token_limits l
           JOIN pairs p ON l.user_id = p.u AND l.api_endpoint = p.e
         FOR UPDATE OF l SKIP LOCKED),
       by_user AS (
         SELECT l.id FROM @extschema@.token_limits l
           JOIN (SELECT DISTINCT p.u FROM pairs p) p ON l.user_id = p.u AND l.api_endpoint IS NULL
         FOR UPDATE OF l SKIP LOCKED),
       by_endpoint AS (
         SELECT l.id FROM @extschema@.token_limits l
           JOIN (SELECT DISTINCT p.e FROM pairs p WHERE p.e IS NOT NULL) p
             ON l.user_id IS NULL AND l.api_endpoint = p.e
         FOR UPDATE OF l SKIP LOCKED)
  UPDATE @extschema@.token_limits t
     SET (tokens_used_in_period, period_start) = (
           SELECT c.used, c.window_start
             FROM @extschema@.rate_limiter_peek_counter(
                    CASE WHEN t.user_id IS NULL THEN 'endpoint'
                         WHEN t.api_endpoint IS NULL THEN 'user' ELSE 'user_endpoint' END,
                    t.user_id, t.api_endpoint, 'tokens', t.period_interval, t.algorithm,
                    t.max_tokens_per_period, t.burst) c)
    FROM (SELECT k.id FROM by_pair k UNION ALL SELECT k.id FROM by_user k
          UNION ALL SELECT k.id FROM by_endpoint k) k
   WHERE t.id = k.id;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION rate_limiter_snapshot_scopes(text[], text[]) FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_snapshot_scopes(text[], text[]) IS
  'Internal: copies the live token counters of the scopes of these (user_id, api_endpoint) pairs into token_limits.tokens_used_in_period and period_start, skipping rows locked by other sessions; returns the rows updated';

-- Everything queued, then every snapshot: what an administrator runs before
-- reading token_usage or the snapshot columns.
CREATE FUNCTION rate_limiter_flush()
RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_flush_usage();
  RETURN @extschema@.rate_limiter_snapshot_counters(false);
END $$;
REVOKE ALL ON FUNCTION rate_limiter_flush() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_flush() IS
  'Writes every queued usage row into token_usage (waiting for the flusher), then copies the live token counters into token_limits.tokens_used_in_period and period_start; returns the token_limits rows updated';

-- Every database where the extension is installed gets its own worker
-- (README, "Usage log"): the "rate_limiter launcher" background worker
-- starts one per installation it finds in the shared registry.  The
-- install and update scripts register this database's installation here,
-- so that its worker starts as soon as the transaction commits.
CREATE FUNCTION rate_limiter_serve_database() RETURNS void
AS 'MODULE_PATHNAME', 'rate_limiter_serve_database' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION rate_limiter_serve_database() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_serve_database() IS
  'Internal: registers this database''s installation, so that the launcher starts its worker when the transaction commits (called by CREATE EXTENSION and ALTER EXTENSION UPDATE)';
------------------------------------------------------------------------------
-- Metrics: get_performance_metrics() (counters, gauges, latency
-- percentiles, a moving average, lock waits); the counters can be reset.
------------------------------------------------------------------------------
CREATE FUNCTION get_performance_metrics() RETURNS jsonb
AS 'MODULE_PATHNAME', 'get_performance_metrics' LANGUAGE C VOLATILE PARALLEL SAFE;
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
-- Counter keys carry the limit's shape (algorithm, window): a window change
-- starts a new counter, so one made in a transaction that rolls back does
-- not wipe the committed counter.  The view computes keys the same way.
-- The three functions are open to PUBLIC, so that GRANT SELECT ON
-- rate_limiter_counters TO monitoring works (a view calls its functions as
-- the querying role): rate_limiter_counter_slots() itself requires SELECT
-- on the view, the other two only compute from their arguments.
CREATE FUNCTION rate_limiter_counter_key(scope text, user_id text, api_endpoint text,
                                         limit_kind text, role text, algorithm text,
                                         window_duration interval)
RETURNS text AS 'MODULE_PATHNAME', 'rate_limiter_counter_key' LANGUAGE C STABLE;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_key(text, text, text, text, text, text, interval) TO PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_key(text, text, text, text, text, text, interval) IS
  'Internal: the shared-memory key of one counter of this installation, in hex';

CREATE FUNCTION rate_limiter_counter_slots(
  OUT key text, OUT algorithm text, OUT window_micros bigint, OUT "limit" bigint, OUT state bytea)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'rate_limiter_counter_slots' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_slots() TO PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_slots() IS
  'Internal: every live counter slot of this database in shared memory, read partition by partition (requires SELECT on rate_limiter_counters)';

CREATE FUNCTION rate_limiter_counter_usage(
  state bytea, rule_algorithm text, rule_limit bigint, rule_window interval, rule_burst bigint,
  OUT used bigint, OUT "limit" bigint, OUT remaining bigint, OUT window_start timestamptz,
  OUT reset_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'rate_limiter_counter_usage' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_usage(bytea, text, bigint, interval, bigint) TO PUBLIC;
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
                                    c.uid, c.ep, c.kind, ro.role, c.alg, c.win) AS key
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
------------------------------------------------------------------------------
-- Revocations.  allocate_tokens denies a session_id listed in
-- token_revocations (reason 'revoked').  The hot path reads a shared-memory
-- cache of the table, never the table itself; these triggers bring every
-- committed change to the cache at commit (ENABLE ALWAYS, so they fire under
-- logical replication and session_replication_role = replica too).
------------------------------------------------------------------------------

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
-- Least privilege: the hot path (allocate/check/enforce) and the metrics are
-- open to PUBLIC; everything that changes or reads limits and usage is
-- granted explicitly (GRANT EXECUTE ON FUNCTION ... TO some_admin_role).
REVOKE ALL ON FUNCTION remove_rate_limit(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_api_rate_limit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_default_rate_limit() FROM PUBLIC;
REVOKE ALL ON FUNCTION reset_rate_limit(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION reset_api_rate_limit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION reload_rate_limits() FROM PUBLIC;
REVOKE ALL ON FUNCTION get_rate_limit_history(text, integer) FROM PUBLIC;

-- Every database where the extension is installed gets its own worker:
-- register this one, so that its worker starts when the transaction commits.
SELECT @extschema@.rate_limiter_serve_database();
