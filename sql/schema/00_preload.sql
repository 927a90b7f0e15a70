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
