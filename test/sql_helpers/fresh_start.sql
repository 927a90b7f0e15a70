\set ECHO none
-- The start of every pg_regress file (sql/*.sql):
--
--   \i test/sql_helpers/fresh_start.sql
--
-- pg_regress feeds each file to psql on stdin, with the directory it was
-- started in (the repository root under make installcheck) as the working
-- directory: the path is relative to that.  ECHO is off while this script
-- runs, so an expected output shows the \i line and "\set ECHO none" only,
-- never what follows; an error here still shows.
--
-- A file starts from the state right after CREATE EXTENSION whatever ran
-- before it on the same server: the extension is dropped and created again,
-- which empties its tables and gives it a new installation (fresh counters,
-- revocation cache and queues; the old installation's counters are swept
-- from shared memory).  The cluster-wide metrics start from zero.  A
-- transaction a failed file left prepared would hold locks on the tables:
-- it is rolled back first.  Roles, tables and functions a file creates are
-- its own to drop; SET lasts for the file's session only.
--
-- It also creates pg_temp.error_of(query), the SQLSTATE probe
-- (error_of.sql, next to this file).
SET client_min_messages = warning;
SELECT format('ROLLBACK PREPARED %L', gid) FROM pg_prepared_xacts
 WHERE database = current_database() \gexec
DROP EXTENSION IF EXISTS rate_limiter CASCADE;
CREATE EXTENSION rate_limiter;
SELECT reset_performance_metrics() \gset rl_fresh_start_
\ir error_of.sql
RESET client_min_messages;
\set ECHO all
