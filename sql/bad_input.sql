-- Every bad argument of the hot path gets a clear error with its own
-- SQLSTATE, before anything is charged.
\i test/sql_helpers/fresh_start.sql
\set VERBOSITY default
SELECT * FROM allocate_tokens(NULL, 1);
SELECT * FROM allocate_tokens('', 1);
SELECT * FROM allocate_tokens(repeat('u', 256), 1);
SELECT * FROM allocate_tokens('bad_user', NULL);
SELECT * FROM allocate_tokens('bad_user', 0);
SELECT * FROM allocate_tokens('bad_user', -1);
SELECT * FROM allocate_tokens('bad_user', 1000000000000001);
SELECT * FROM allocate_tokens('bad_user', 9223372036854775807);
SELECT * FROM allocate_tokens('bad_user', 1, NULL);
SELECT * FROM allocate_tokens('bad_user', 1, 'urgent');
SELECT * FROM allocate_tokens('bad_user', 1, ' high');
SELECT * FROM allocate_tokens('bad_user', 1, repeat('h', 10000));
SELECT * FROM allocate_tokens('bad_user', 1, 'high', '');
SELECT * FROM allocate_tokens('bad_user', 1, 'high', repeat('e', 300));
SELECT * FROM allocate_tokens('bad_user', 1, 'high', NULL, '');
SELECT * FROM allocate_tokens('bad_user', 1, 'high', NULL, repeat('s', 256));
SELECT * FROM allocate_tokens('bad_user', 1, 'high', context => '[]');
SELECT * FROM allocate_tokens('bad_user', 1, 'high', context => '"all_or_nothing"');
SELECT * FROM allocate_tokens('bad_user', 1, 'high', context => '{"all_or_nothing": "yes"}');
SELECT * FROM allocate_tokens('bad_user', 1, 'high', context => '{"all_or_nothin": true}');
SELECT * FROM allocate_tokens('bad_user', 1, 'high', context => '{"nested": {"deep": [1, 2, {"x": 1}]}}');
SELECT * FROM allocate_tokens('bad_user', 1, 'high', context => '{');
SELECT * FROM check_rate_limit(NULL);
SELECT * FROM check_rate_limit('');
SELECT * FROM check_rate_limit('bad_user', '');
SELECT * FROM enforce_rate_limit(repeat('é', 200));
\set VERBOSITY terse

-- SQLSTATEs, one per kind of mistake.
DO $$
DECLARE
  probes text[] := ARRAY[
    $q$SELECT allocate_tokens(NULL, 1)$q$,
    $q$SELECT allocate_tokens('', 1)$q$,
    $q$SELECT allocate_tokens(repeat('u', 256), 1)$q$,
    $q$SELECT allocate_tokens('bad_user', 0)$q$,
    $q$SELECT allocate_tokens('bad_user', 1000000000000001)$q$,
    $q$SELECT allocate_tokens('bad_user', 1, 'urgent')$q$,
    $q$SELECT allocate_tokens('bad_user', 1, 'high', context => '[]')$q$,
    $q$SELECT allocate_tokens('bad_user', 1, 'high', context => '{"x": 1}')$q$,
    $q$SELECT allocate_tokens('bad_user', 1, 'high', context => '{')$q$,
    $q$SELECT check_rate_limit(NULL)$q$];
  q text;
BEGIN
  FOREACH q IN ARRAY probes LOOP
    RAISE NOTICE '% -> %', q, (SELECT code FROM pg_temp.error_of(q));
  END LOOP;
END $$;

-- Valid edge values work: the longest id, the largest count, NULL context
-- and explicit empty options.
SELECT success, tokens_allocated FROM allocate_tokens(repeat('u', 255), 1000000000000000, 'high', repeat('e', 255), repeat('s', 255));
SELECT success FROM allocate_tokens('bad_user', 1, 'medium', NULL, NULL, NULL);
SELECT success FROM allocate_tokens('bad_user', 1, 'medium', context => '{}');

-- Only the two valid calls wrote usage.
SELECT count(*) FROM token_usage WHERE user_id = 'bad_user';

-- Hostile input to every SQL function: each call gets a clear error (its
-- SQLSTATE and message pinned here) or a sane result, never a crash or an
-- internal (XX) error.  Each call runs through pg_temp.error_of: its
-- SQLSTATE and message, or 'ok: ' and the result.
\set VERBOSITY terse
\set SHOW_CONTEXT never
CREATE TABLE probes (n serial, q text);
INSERT INTO probes (q) VALUES
  -- NULLs, empty and huge strings, invalid UTF-8.
  ($q$SELECT allocate_tokens(NULL, NULL, NULL, NULL, NULL, NULL)$q$),
  ($q$SELECT allocate_tokens(repeat('x', 1048576), 1)$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, repeat('x', 1048576))$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', repeat('x', 1048576))$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, repeat('x', 1048576))$q$),
  ($q$SELECT allocate_tokens(convert_from('\xc328'::bytea, 'UTF8'), 1)$q$),
  ($q$SELECT (allocate_tokens(E'hi\tuser\n', 1)).tokens_allocated$q$),
  ($q$SELECT check_rate_limit(NULL, NULL, NULL)$q$),
  ($q$SELECT check_rate_limit(repeat('x', 1048576))$q$),
  ($q$SELECT check_rate_limit('hi_user', repeat('x', 1048576))$q$),
  ($q$SELECT check_rate_limit('hi_user', NULL, repeat('x', 1048576))$q$),
  ($q$SELECT enforce_rate_limit('')$q$),
  ($q$SELECT enforce_rate_limit(repeat('x', 1048576))$q$),
  ($q$SELECT is_token_revoked(NULL)$q$),
  ($q$SELECT is_token_revoked('')$q$),
  ($q$SELECT is_token_revoked(repeat('x', 1048576))$q$),
  ($q$SELECT revoke_token(NULL)$q$),
  ($q$SELECT revoke_token('')$q$),
  ($q$SELECT revoke_token(repeat('x', 1048576))$q$),
  ($q$SELECT revoke_token('hi_tok', repeat('r', 1048576))$q$),
  ($q$SELECT unrevoke_token(NULL)$q$),
  ($q$SELECT unrevoke_token(repeat('x', 1048576))$q$),
  ($q$SELECT get_rate_limit_status(NULL)$q$),
  ($q$SELECT get_rate_limit_status(repeat('x', 1048576))$q$),
  ($q$SELECT get_rate_limit_history(NULL, NULL)$q$),
  ($q$SELECT get_rate_limit_history('hi_user', -1)$q$),
  ($q$SELECT get_rate_limit_history('hi_user', 0)$q$),
  ($q$SELECT get_rate_limit_history('hi_user', 2147483647)$q$),
  ($q$SELECT remove_rate_limit(NULL, NULL)$q$),
  ($q$SELECT remove_rate_limit(repeat('x', 1048576))$q$),
  ($q$SELECT reset_rate_limit(NULL, NULL)$q$),
  ($q$SELECT reset_rate_limit('', '')$q$),
  ($q$SELECT remove_api_rate_limit(NULL)$q$),
  ($q$SELECT reset_api_rate_limit(NULL)$q$),
  -- bigint extremes and negatives.
  ($q$SELECT allocate_tokens('hi_user', -9223372036854775808)$q$),
  ($q$SELECT allocate_tokens('hi_user', 9223372036854775807)$q$),
  ($q$SELECT settle_tokens(NULL, NULL)$q$),
  ($q$SELECT settle_tokens(-9223372036854775808, 1)$q$),
  ($q$SELECT settle_tokens(9223372036854775807, 9223372036854775807)$q$),
  ($q$SELECT settle_tokens(1, -1)$q$),
  ($q$SELECT settle_tokens(0, 0)$q$),
  ($q$SELECT set_rate_limit('hi_user', -9223372036854775808)$q$),
  ($q$SELECT set_rate_limit('hi_user', 9223372036854775807)$q$),
  ($q$SELECT set_rate_limit('hi_user', 0)$q$),
  ($q$SELECT set_rate_limit('hi_user', -1)$q$),
  ($q$SELECT set_rate_limit(NULL, 10)$q$),
  ($q$SELECT set_rate_limit('', 10)$q$),
  ($q$SELECT set_rate_limit(repeat('x', 1048576), 10)$q$),
  ($q$SELECT set_rate_limit('hi_user', NULL)$q$),
  ($q$SELECT set_api_rate_limit(NULL, 10, '1 day')$q$),
  ($q$SELECT set_api_rate_limit(repeat('x', 1048576), 10, '1 day')$q$),
  ($q$SELECT set_default_rate_limit(-1)$q$),
  ($q$SELECT set_default_user_rate_limit(9223372036854775807, '1 second')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, burst => -1)$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, burst_limit => -9223372036854775808)$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, burst_window_seconds => -2147483648)$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, max_burst_tokens => -1)$q$),
  -- Intervals: zero, negative, a million years, NULL.
  ($q$SELECT set_rate_limit('hi_user', 10, '0 seconds')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, '-1 day')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, interval '1000000 years')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, NULL)$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, '1 month')$q$),
  ($q$SELECT set_user_rate_limit('hi_user', 10, '1 microsecond')$q$),
  ($q$SELECT set_api_token_limit('hi_api', 10, '-1 microsecond')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, burst_window => '-1 day')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, burst_window => interval '1000000 years')$q$),
  -- NaN and Infinity where floats are taken.
  ($q$SELECT set_rate_limit('hi_user', 10, user_history_weight => 'NaN')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, system_load_weight => 'Infinity')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, time_factor_weight => '-Infinity')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, emergency_threshold => 'NaN')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, override_percentage => 'Infinity')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, burst_multiplier => 'NaN')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, burst_multiplier => -1)$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, override_percentage => 1e308)$q$),
  -- Unknown algorithms and priorities.
  ($q$SELECT set_rate_limit('hi_user', 10, algorithm => 'leaky')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, algorithm => NULL)$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, algorithm => '')$q$),
  ($q$SELECT set_rate_limit('hi_user', 10, algorithm => repeat('x', 1048576))$q$),
  ($q$SELECT (allocate_tokens('hi_user', 1, 'HIGH')).success$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, '')$q$),
  -- JSON: deeply nested, wrong type, huge.
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, (repeat('[', 10000) || repeat(']', 10000))::jsonb)$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, ('{"a":' || repeat('{"a":', 5000) || '1' || repeat('}', 5001))::jsonb)$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, '{"all_or_nothing": {"deep": [1]}}')$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, '{"emergency_override": "true"}')$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, '{"emergency_override": null}')$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, '42')$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, 'null')$q$),
  ($q$SELECT allocate_tokens('hi_user', 1, 'high', NULL, NULL, jsonb_build_object(repeat('k', 1048576), 1))$q$),
  -- Sane results for sane edge values.
  ($q$SELECT set_rate_limit('hi_user', 1000000000000000, '1 second')$q$),
  ($q$SELECT (allocate_tokens('hi_user', 1000000000000000)).success$q$),
  ($q$SELECT remove_rate_limit('hi_user')$q$),
  ($q$SELECT unrevoke_token('hi_tok')$q$);
-- The message whole (over-long echoes would show), the result cut.
SELECT n, CASE code WHEN 'no error' THEN 'ok: ' || coalesce(left(result, 60), 'NULL') ELSE error END AS probe
  FROM probes, LATERAL pg_temp.error_of(q) ORDER BY n;

-- Invalid UTF-8 never reaches the extension: convert_from raises first.
SELECT convert_from('\xc328'::bytea, 'UTF8');
SELECT convert_from('\xff'::bytea, 'UTF8');

-- No limit of this test survived, nothing was charged on bad input.
SELECT count(*) FROM token_limits WHERE user_id = 'hi_user' OR api_endpoint = 'hi_api';
DROP TABLE probes;
\set VERBOSITY default
