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
  state text;
BEGIN
  FOREACH q IN ARRAY probes LOOP
    BEGIN
      EXECUTE q;
      RAISE NOTICE '% -> no error', q;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
      RAISE NOTICE '% -> %', q, state;
    END;
  END LOOP;
END $$;

-- Valid edge values work: the longest id, the largest count, NULL context
-- and explicit empty options.
SELECT success, tokens_allocated FROM allocate_tokens(repeat('u', 255), 1000000000000000, 'high', repeat('e', 255), repeat('s', 255));
SELECT success FROM allocate_tokens('bad_user', 1, 'medium', NULL, NULL, NULL);
SELECT success FROM allocate_tokens('bad_user', 1, 'medium', context => '{}');

-- Only the two valid calls wrote usage.
SELECT count(*) FROM token_usage WHERE user_id = 'bad_user';
