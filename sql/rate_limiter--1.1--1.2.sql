-- rate_limiter 1.1 -> 1.2 update script: ALTER EXTENSION rate_limiter UPDATE
-- applies it to an installation of 1.1.  CREATE EXTENSION installs the current
-- version directly (the newest rate_limiter--<version>.sql, built from sql/schema).

\echo Use "ALTER EXTENSION rate_limiter UPDATE TO '1.2'" to load this file. \quit

-- Privileges survive the update.  The rule for every update script: a
-- function whose signature and result stay is changed with CREATE OR
-- REPLACE, which keeps its privileges.  A function that must be dropped and
-- created again (new arguments or result columns) would lose the GRANTs
-- and REVOKEs a site made on it, so its ACL is saved here, before any DROP,
-- and applied at the end of the script to the new function of the same
-- name, whatever its signature.  Here: rate_limiter_counter_key.
CREATE TEMP TABLE rate_limiter_saved_acl AS
  SELECT p.proname, p.proowner, p.proacl
    FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = '@extschema@'::regnamespace
     AND p.proname IN ('rate_limiter_counter_key');

-- ==== production scale: rules in shared memory ====

-- Rules live in one shared-memory table for the whole server (README,
-- "Rules at scale").  The triggers now fire per row, so that the commit of
-- a rule change updates exactly the rules it changed; TRUNCATE still
-- reloads the database's rules.  As before they fire under
-- session_replication_role = replica too, and not for the snapshot
-- columns rate_limiter_flush() writes.
DROP TRIGGER rate_limiter_rules_changed ON token_limits;
DROP TRIGGER rate_limiter_rules_changed ON request_limits;
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_tokens_per_period, period_interval,
    algorithm, burst, burst_limit, burst_window_seconds, enable_dynamic_allocation,
    emergency_override_enabled, burst_mode_enabled, user_history_weight, system_load_weight,
    time_factor_weight, emergency_threshold, override_percentage, burst_multiplier, burst_window,
    max_burst_tokens, shadow_mode
  ON token_limits FOR EACH ROW EXECUTE FUNCTION rate_limiter_rules_changed();
CREATE TRIGGER rate_limiter_rules_changed
  AFTER INSERT OR DELETE OR UPDATE OF user_id, api_endpoint, max_requests_per_window, window_duration,
    algorithm, burst, burst_limit, burst_window_seconds, enable_dynamic_allocation,
    emergency_override_enabled, burst_mode_enabled, user_history_weight, system_load_weight,
    time_factor_weight, emergency_threshold, override_percentage, burst_multiplier, burst_window,
    max_burst_tokens, shadow_mode
  ON request_limits FOR EACH ROW EXECUTE FUNCTION rate_limiter_rules_changed();
ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;
ALTER TABLE request_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed;

COMMENT ON FUNCTION rate_limiter_rules_changed() IS
  'Internal: trigger that brings committed rule changes into the shared rule table (per row; TRUNCATE reloads the database''s rules)';
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

-- get_rate_limit_status read every rule of both tables (a CTE referenced
-- three times is materialized): one scan per call, 320,000 rows at 320,000
-- rules.  Each branch now reads its rows through the scope's unique index:
-- the user's own rows, the default rows, the endpoint-wide rows.
CREATE OR REPLACE FUNCTION get_rate_limit_status(user_id text)
RETURNS TABLE (scope text, api_endpoint text, limit_kind text, algorithm text, "limit" bigint,
               used bigint, remaining bigint, window_duration interval, window_start timestamptz,
               reset_at timestamptz)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM @extschema@.rate_limiter_check_id('user_id', $1);
  RETURN QUERY
  WITH rules AS (
    SELECT CASE WHEN t.api_endpoint IS NOT NULL THEN 'user_endpoint' ELSE 'user' END AS scope,
           t.api_endpoint AS ep, 'tokens' AS kind, t.max_tokens_per_period AS lim,
           t.period_interval AS win, t.algorithm AS alg, t.burst AS bst
      FROM @extschema@.token_limits t WHERE t.user_id = $1
    UNION ALL
    SELECT CASE WHEN r.api_endpoint IS NOT NULL THEN 'user_endpoint' ELSE 'user' END,
           r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration, r.algorithm, r.burst
      FROM @extschema@.request_limits r WHERE r.user_id = $1
    UNION ALL
    SELECT 'default', NULL, 'tokens', t.max_tokens_per_period, t.period_interval, t.algorithm, t.burst
      FROM @extschema@.token_limits t
     WHERE t.user_id IS NULL AND t.api_endpoint IS NULL
       AND NOT EXISTS (SELECT 1 FROM @extschema@.token_limits o WHERE o.user_id = $1 AND o.api_endpoint IS NULL)
    UNION ALL
    SELECT 'default', NULL, 'requests', r.max_requests_per_window, r.window_duration, r.algorithm, r.burst
      FROM @extschema@.request_limits r
     WHERE r.user_id IS NULL AND r.api_endpoint IS NULL
       AND NOT EXISTS (SELECT 1 FROM @extschema@.request_limits o WHERE o.user_id = $1 AND o.api_endpoint IS NULL)
    UNION ALL
    SELECT 'endpoint', t.api_endpoint, 'tokens', t.max_tokens_per_period, t.period_interval, t.algorithm, t.burst
      FROM @extschema@.token_limits t WHERE t.user_id IS NULL AND t.api_endpoint IS NOT NULL
    UNION ALL
    SELECT 'endpoint', r.api_endpoint, 'requests', r.max_requests_per_window, r.window_duration, r.algorithm,
           r.burst
      FROM @extschema@.request_limits r WHERE r.user_id IS NULL AND r.api_endpoint IS NOT NULL
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

-- ==== end production scale: rules in shared memory ====

-- ==== exact on every path ====

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

-- GRANT SELECT ON rate_limiter_counters TO monitoring did not work: a view
-- calls its functions as the querying role, which had no EXECUTE on them.
-- They are open now; rate_limiter_counter_slots() itself requires SELECT on
-- the view (the other two only compute from their arguments).
GRANT EXECUTE ON FUNCTION rate_limiter_counter_slots() TO PUBLIC;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_usage(bytea, text, bigint, interval, bigint) TO PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_slots() IS
  'Internal: every live counter slot of this database in shared memory, read partition by partition (requires SELECT on rate_limiter_counters)';

-- Counter keys carry the limit's shape (algorithm, window): a window change
-- starts a new counter, so one made in a transaction that rolls back no
-- longer wipes the committed counter.  The view computes keys the same way.
CREATE FUNCTION rate_limiter_counter_key(scope text, user_id text, api_endpoint text,
                                         limit_kind text, role text, algorithm text,
                                         window_duration interval)
RETURNS text AS 'MODULE_PATHNAME', 'rate_limiter_counter_key' LANGUAGE C STABLE;
GRANT EXECUTE ON FUNCTION rate_limiter_counter_key(text, text, text, text, text, text, interval) TO PUBLIC;
COMMENT ON FUNCTION rate_limiter_counter_key(text, text, text, text, text, text, interval) IS
  'Internal: the shared-memory key of one counter of this installation, in hex';
CREATE OR REPLACE VIEW rate_limiter_counters AS
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
DROP FUNCTION rate_limiter_counter_key(text, text, text, text, text);

-- ==== end exact on every path ====

-- ==== every database ====

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

-- The full snapshot (rate_limiter_flush(), or skip_locked = true) locks its
-- rows through a join as well: with skip_locked, "id IN (SELECT ... FOR
-- UPDATE SKIP LOCKED)" re-read the whole locked list for every row.
CREATE OR REPLACE FUNCTION rate_limiter_snapshot_counters(skip_locked boolean DEFAULT false)
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
COMMENT ON FUNCTION rate_limiter_snapshot_counters(boolean) IS
  'Internal: copies the live token counters of every limit into token_limits.tokens_used_in_period and period_start (skipping rows locked by other sessions when skip_locked); returns the rows updated. rate_limiter_flush() runs it; the workers refresh only the scopes they flushed';

SELECT @extschema@.rate_limiter_serve_database();

-- ==== end every database ====

-- ==== exact: usage rows and the queue ====

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

-- ==== end exact: usage rows and the queue ====

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

-- rate_limiter_counter_key is open to PUBLIC from this version on (see
-- above), whatever the saved ACL of the old one said.
GRANT EXECUTE ON FUNCTION rate_limiter_counter_key(text, text, text, text, text, text, interval) TO PUBLIC;
