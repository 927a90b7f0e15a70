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
