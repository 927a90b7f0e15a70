-- Least privilege: the hot path (allocate/check/enforce) and the metrics are
-- open to PUBLIC; everything that changes or reads limits and usage is
-- granted explicitly (GRANT EXECUTE ON FUNCTION ... TO some_admin_role).
REVOKE ALL ON FUNCTION remove_rate_limit(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_api_rate_limit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_default_rate_limit() FROM PUBLIC;
REVOKE ALL ON FUNCTION reset_rate_limit(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION reset_api_rate_limit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION reload_rate_limits() FROM PUBLIC;
REVOKE ALL ON FUNCTION get_rate_limit_history(text, integer) FROM PUBLIC;

-- Every database where the extension is installed gets its own worker:
-- register this one, so that its worker starts when the transaction commits.
SELECT @extschema@.rate_limiter_serve_database();
