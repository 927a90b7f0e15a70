-- Limits are rows: set_* upsert them, remove_* delete them, and the scope
-- follows from which ids are set.
\i test/sql_helpers/fresh_start.sql
SELECT set_rate_limit('alice', 1000);
SELECT set_rate_limit('alice', 5000, '1 hour', 'chat/completions');
SELECT set_user_rate_limit('alice', 100, '1 minute');
SELECT set_user_rate_limit('alice', 10, '1 second', 'chat/completions');
SELECT set_api_rate_limit('embeddings', 1000, '1 hour');
SELECT set_api_token_limit('embeddings', 1000000, '1 day');
SELECT set_default_rate_limit(200, '1 week');
SELECT set_default_user_rate_limit(60, '1 minute');

SELECT user_id, api_endpoint, max_tokens_per_period, period_interval
  FROM token_limits ORDER BY user_id NULLS LAST, api_endpoint NULLS FIRST;
SELECT user_id, api_endpoint, max_requests_per_window, window_duration
  FROM request_limits ORDER BY user_id NULLS LAST, api_endpoint NULLS FIRST;

-- Setting again updates in place (one row per scope).
SELECT set_rate_limit('alice', 2000, '2 days');
SELECT set_default_rate_limit(300);
SELECT user_id, api_endpoint, max_tokens_per_period, period_interval
  FROM token_limits ORDER BY user_id NULLS LAST, api_endpoint NULLS FIRST;

-- Bad input: each gets its own clear error and SQLSTATE.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT set_rate_limit(NULL, 10);
SELECT set_rate_limit('', 10);
SELECT set_rate_limit(repeat('x', 256), 10);
SELECT set_rate_limit('bob', NULL);
SELECT set_rate_limit('bob', 0);
SELECT set_rate_limit('bob', -5);
SELECT set_rate_limit('bob', 1000000000000001);
SELECT set_rate_limit('bob', 10, NULL);
SELECT set_rate_limit('bob', 10, '0 seconds');
SELECT set_rate_limit('bob', 10, '999 milliseconds');
SELECT set_rate_limit('bob', 10, '-1 day');
SELECT set_rate_limit('bob', 10, '3651 days');
SELECT set_rate_limit('bob', 10, '1 day', '');
SELECT set_user_rate_limit('bob', 10, NULL);
SELECT set_api_rate_limit(NULL, 10, '1 minute');
SELECT set_default_user_rate_limit(10, '0 seconds');
\set VERBOSITY terse
-- The SQLSTATEs of those errors.
DO $$
DECLARE
  probes text[] := ARRAY[
    $q$SELECT set_rate_limit(NULL, 10)$q$,
    $q$SELECT set_rate_limit('', 10)$q$,
    $q$SELECT set_rate_limit(repeat('x', 256), 10)$q$,
    $q$SELECT set_rate_limit('bob', 0)$q$,
    $q$SELECT set_rate_limit('bob', 1000000000000001)$q$,
    $q$SELECT set_rate_limit('bob', 10, '0 seconds')$q$];
  q text;
BEGIN
  FOREACH q IN ARRAY probes LOOP
    RAISE NOTICE '% -> %', q, (SELECT code FROM pg_temp.error_of(q));
  END LOOP;
END $$;
-- Nothing was written by the failed calls.
SELECT count(*) FROM token_limits WHERE user_id = 'bob';

-- The tables' own constraints also hold for direct writes.
INSERT INTO token_limits (user_id, max_tokens_per_period) VALUES ('carol', 0);
INSERT INTO request_limits (user_id, max_requests_per_window, window_duration) VALUES ('carol', 5, '0.5 seconds');
INSERT INTO token_limits (user_id, max_tokens_per_period) VALUES ('alice', 1);

-- remove_* report how many rows they removed.
SELECT remove_rate_limit('alice', 'chat/completions');
SELECT remove_rate_limit('alice');
SELECT remove_rate_limit('alice');
SELECT remove_api_rate_limit('embeddings');
SELECT remove_default_rate_limit();
SELECT count(*) FROM token_limits;
SELECT count(*) FROM request_limits;
