-- check_rate_limit counts a request when allowed; enforce_rate_limit raises
-- RL429 with DETAIL (limit, remaining) and HINT (retry delay).
\i test/sql_helpers/fresh_start.sql
SELECT set_user_rate_limit('c_user', 3, '3650 days');
SELECT allowed, "limit", remaining, retry_after, limit_kind, scope, reason FROM check_rate_limit('c_user');
SELECT allowed, "limit", remaining, retry_after, limit_kind, scope, reason FROM check_rate_limit('c_user');
SELECT allowed, "limit", remaining, retry_after, limit_kind, scope, reason FROM check_rate_limit('c_user');
SELECT allowed, "limit", remaining, retry_after > interval '0' AS positive_retry,
       retry_after <= interval '3650 days' AS retry_within_window, reason
  FROM check_rate_limit('c_user');
-- Denials are not counted.
SELECT used FROM get_rate_limit_status('c_user') WHERE scope = 'user';

-- A user without limits is allowed and told so.
SELECT allowed, "limit", remaining, reset_at, retry_after, reason FROM check_rate_limit('free_user');

-- A token quota is exhausted when not even a high-priority request could get
-- a whole token (here: 1 left, floor(0.5 * 1) = 0).  Exhaustion denies checks
-- too, and a check charges no tokens.
SELECT set_rate_limit('t_user', 4, '3650 days');
SELECT allowed, "limit", remaining, limit_kind FROM check_rate_limit('t_user');
SELECT tokens_allocated FROM allocate_tokens('t_user', 1, 'high');
SELECT tokens_allocated FROM allocate_tokens('t_user', 1, 'high');
SELECT tokens_allocated FROM allocate_tokens('t_user', 1, 'high');
SELECT allowed, "limit", remaining, limit_kind, reason FROM check_rate_limit('t_user');
SELECT tokens_allocated FROM allocate_tokens('t_user', 1, 'high');
SELECT allowed, "limit", remaining, limit_kind, reason FROM check_rate_limit('t_user');

-- enforce_rate_limit returns the record while allowed ...
SELECT set_user_rate_limit('e_user', 1, '3650 days', 'chat/completions');
SELECT allowed, remaining, scope FROM enforce_rate_limit('e_user', 'chat/completions');
-- ... and raises RL429 when denied.  The hint's delay changes with the
-- clock, so digits are masked.
DO $$
DECLARE
  e record;
BEGIN
  SELECT * INTO e FROM pg_temp.error_of($q$SELECT enforce_rate_limit('e_user', 'chat/completions')$q$);
  IF e.code = 'no error' THEN
    RAISE NOTICE 'not raised';
  ELSE
    RAISE NOTICE 'sqlstate: %', e.code;
    RAISE NOTICE 'message: %', e.message;
    RAISE NOTICE 'detail: %', e.detail;
    RAISE NOTICE 'hint: %', regexp_replace(e.hint, '[0-9]+', 'N', 'g');
  END IF;
END $$;
-- The error can be caught by its SQLSTATE.
DO $$
BEGIN
  PERFORM enforce_rate_limit('e_user', 'chat/completions');
EXCEPTION WHEN SQLSTATE 'RL429' THEN
  RAISE NOTICE 'caught RL429';
END $$;
-- Other endpoints of the same user are not affected by a user+endpoint limit.
SELECT allowed, reason FROM enforce_rate_limit('e_user', 'embeddings');

-- Request limits over a token quota: enforce reports the binding limit.
SELECT set_user_rate_limit('t_user', 100, '3650 days');
DO $$
DECLARE detail text;
BEGIN
  PERFORM enforce_rate_limit('t_user');
EXCEPTION WHEN SQLSTATE 'RL429' THEN
  GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
  RAISE NOTICE 'detail: %', detail;
END $$;

-- Each counted check wrote a usage row with 0 tokens and no priority.
SELECT count(*), sum(tokens_used), count(priority_level) FROM token_usage WHERE user_id = 'c_user';
