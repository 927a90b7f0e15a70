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
