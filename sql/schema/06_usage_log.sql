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
