-- A call that finds one live counter and then must evict expired counters to
-- create another must still charge both: eviction shifts slots in the
-- table, and the charge must land on the counters' new places.
-- The test server's table holds 400 counters in one partition.  Each round
-- fills it with counters that expire and one live user counter, then makes
-- one call that finds the user counter and creates a new endpoint counter;
-- 30 rounds make sure that, whatever the random hash key, many of them shift
-- the live counter.
\i test/sql_helpers/fresh_start.sql
SET rate_limiter.debug_time_offset = '8000d';   -- far from the wall clock's windows
SELECT set_default_rate_limit(10, '1 hour');
DO $$
DECLARE
  round int;
  offset_s bigint := 8000 * 86400;
  wrong int := 0;
  granted bigint;
  user_used bigint;
  endpoint_used bigint;
BEGIN
  FOR round IN 1..30 LOOP
    PERFORM set_rate_limit('shift_' || round, 1000, '3650 days');
    PERFORM set_api_token_limit('shift_api_' || round, 1000000, '3650 days');
    -- Fill all but one place with one-hour counters (the live counters of
    -- earlier rounds stay) ...
    PERFORM allocate_tokens('fill_' || round || '_' || g, 1, 'high')
       FROM generate_series(1, (SELECT (m->>'keys_capacity')::int - (m->>'keys_in_use')::int - 1
                                  FROM get_performance_metrics() m)) g;
    -- ... then create the live user counter, which likely lands displaced
    -- from its home slot behind fillers.
    PERFORM allocate_tokens('shift_' || round, 1, 'high');
    -- Two hours later the fillers have expired; the next call finds the user
    -- counter and needs an eviction to create the endpoint counter.
    offset_s := offset_s + 7200;
    PERFORM set_config('rate_limiter.debug_time_offset', offset_s::text, true);
    SELECT tokens_allocated INTO granted
      FROM allocate_tokens('shift_' || round, 10, 'high', 'shift_api_' || round);
    SELECT used INTO user_used FROM get_rate_limit_status('shift_' || round) WHERE scope = 'user';
    SELECT used INTO endpoint_used FROM get_rate_limit_status('shift_' || round)
     WHERE scope = 'endpoint' AND api_endpoint = 'shift_api_' || round;
    IF granted <> 10 OR user_used <> 11 OR endpoint_used <> 10 THEN
      wrong := wrong + 1;
      RAISE NOTICE 'round %: granted %, user used %, endpoint used %', round, granted, user_used, endpoint_used;
    END IF;
  END LOOP;
  RAISE NOTICE 'rounds with a lost charge: %', wrong;
END $$;
RESET rate_limiter.debug_time_offset;
SELECT remove_default_rate_limit();
