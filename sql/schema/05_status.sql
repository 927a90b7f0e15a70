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

