-- rate_limiter 1.3 -> 1.4 update script: ALTER EXTENSION rate_limiter UPDATE
-- applies it to an installation of 1.3.  CREATE EXTENSION installs the current
-- version directly (the newest rate_limiter--<version>.sql, built from sql/schema).

\echo Use "ALTER EXTENSION rate_limiter UPDATE TO '1.4'" to load this file. \quit

-- Privileges survive the update.  The rule for every update script: a
-- function whose signature and result stay is changed with CREATE OR
-- REPLACE, which keeps its privileges; one that must be dropped and created
-- again has its ACL saved before the DROP and applied to the new function
-- at the end (see rate_limiter--1.0--1.1.sql).  This script only adds
-- functions.

-- ==== HTTP headers ====

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
  OUT algorithm text, OUT window_duration interval, OUT checked_at timestamptz)
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
           (s.scope = d.scope AND s.limit_kind = d.limit_kind) AS binding,
           CASE s.scope WHEN 'user_endpoint' THEN 1 WHEN 'endpoint' THEN 3 ELSE 2 END AS ord
      FROM @extschema@.get_rate_limit_status($1) s
     WHERE s.scope IN ('user', 'default')
        OR (s.scope IN ('user_endpoint', 'endpoint') AND s.api_endpoint = $2)
    UNION ALL
    -- A burst cap is not in the status; it is listed when it denies.
    SELECT d.scope, d.limit_kind, d."limit", d.remaining, d.window_duration, d.reset_at, true, 0
     WHERE NOT d.allowed AND d.limit_kind IN ('token_burst', 'request_burst')
  ), items AS (
    SELECT a.*,
           pg_catalog.format('"%s-%s"', a.scope, a.kind) AS name,
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
                   (g.scope = d.scope AND g.limit_kind = d.limit_kind) AS binding,
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

-- ==== end HTTP headers ====

-- The description of set_user_rate_limit, as plain facts (installations
-- updated from 1.0 before this version have an older wording).
COMMENT ON FUNCTION set_user_rate_limit(text, bigint, interval, text, text, bigint, bigint, integer, boolean, boolean, boolean, float8, float8, float8, float8, float8, float8, interval, bigint, boolean) IS
  'Sets the request limit of a user (on one endpoint when api_endpoint is given), with its algorithm, burst cap (burst_limit, burst_window_seconds) and strategy options; takes effect at commit';
