-- rate_limiter 1.5 -> 1.6 update script: ALTER EXTENSION rate_limiter UPDATE
-- applies it to an installation of 1.5.  CREATE EXTENSION installs the current
-- version directly (rate_limiter--1.6.sql, built from sql/schema).
--
-- 1.6: in-flight (concurrency) limits: concurrency_limits,
-- set_concurrency_limit, remove_concurrency_limit, rate_limiter_leases, and
-- the in-flight rows of get_rate_limit_status (same signature: replaced).
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
