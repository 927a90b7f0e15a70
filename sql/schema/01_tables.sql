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
@OPTION_COLUMNS@
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
@OPTION_COLUMNS@
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
