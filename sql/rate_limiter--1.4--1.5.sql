-- rate_limiter 1.4 -> 1.5 update script: ALTER EXTENSION rate_limiter UPDATE
-- applies it to an installation of 1.4.  CREATE EXTENSION installs the current
-- version directly (rate_limiter--1.5.sql, built from sql/schema).
--
-- 1.5: hierarchies (rate_limit_parents, set_parent, remove_parent) and the
-- limit_owner column of the hot-path results and of get_rate_limit_status.

\echo Use "ALTER EXTENSION rate_limiter UPDATE TO '1.5'" to load this file. \quit

-- Privileges survive the update (see rate_limiter--1.0--1.1.sql): the
-- functions that gain a result column are dropped and created again, so
-- their ACLs are saved here and applied to the new ones at the end.
CREATE TEMP TABLE rate_limiter_saved_acl AS
  SELECT p.proname, p.proowner, p.proacl
    FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = '@extschema@'::regnamespace
     AND p.proname IN ('allocate_tokens', 'check_rate_limit', 'enforce_rate_limit',
                       'get_rate_limit_status', 'rate_limiter_preview_decision');

DROP FUNCTION @extschema@.allocate_tokens(text, bigint, text, text, text, jsonb);
DROP FUNCTION @extschema@.check_rate_limit(text, text, text);
DROP FUNCTION @extschema@.enforce_rate_limit(text, text, text);
DROP FUNCTION @extschema@.get_rate_limit_status(text);
DROP FUNCTION @extschema@.rate_limiter_preview_decision(text, text, bigint);

-- ==== hierarchies ====

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

-- ==== results that name the limit's owner ====

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
END $$;
REVOKE ALL ON FUNCTION get_rate_limit_status(text) FROM PUBLIC;
COMMENT ON FUNCTION get_rate_limit_status(text) IS
  'One row per limit that applies to the user (its ancestors'' included), with live usage from shared memory';

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

CREATE OR REPLACE FUNCTION rate_limit_headers(user_id text, api_endpoint text DEFAULT NULL,
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
-- CREATE OR REPLACE: its privileges stay as the site set them.
COMMENT ON FUNCTION rate_limit_headers(text, text, bigint) IS
  'HTTP response headers (RateLimit-Policy, RateLimit, Retry-After, x-ratelimit-*) for the limits that apply to the user on the endpoint now; charges nothing';

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
