-- rate_limit_headers(user_id, api_endpoint, tokens): the HTTP headers for
-- the limits that apply now, charging nothing.  The limiter's clock is
-- frozen (rate_limiter.debug_clock = 1800000000, testing only) at
-- 2027-01-15 08:00:00 UTC, the start of a minute and of an hour window.
\i test/sql_helpers/fresh_start.sql
SET rate_limiter.debug_clock = 1800000000;
CREATE FUNCTION hdr(u text, e text DEFAULT NULL, t bigint DEFAULT NULL)
RETURNS TABLE (header text, value text) LANGUAGE sql AS $$
  SELECT h.key, h.value FROM jsonb_each_text(rate_limit_headers(u, e, t)) h ORDER BY h.key
$$;

-- No limit applies: an empty object.
SELECT rate_limit_headers('h_nobody');
SELECT rate_limit_headers('h_nobody', 'chat', 10);

-- A fixed window of 5 requests per minute, a token bucket of 1000 per
-- hour and an endpoint-wide sliding window of 100 per 10 seconds.
SELECT set_user_rate_limit('h_user', 5, '1 minute');
SELECT set_rate_limit('h_user', 1000, '1 hour', algorithm => 'token_bucket');
SELECT set_api_rate_limit('h_chat', 100, '10 seconds', algorithm => 'sliding_window');
-- Fresh: every limit full; the binding one first (as check_rate_limit
-- picks it: the smallest fraction left, then the fewest left, then the
-- narrower scope).
SELECT * FROM hdr('h_user', 'h_chat');
-- Another endpoint: only the user's own limits apply.
SELECT * FROM hdr('h_user', 'h_other');

-- Nothing was charged: the status is still full, no usage row, no counter.
SELECT scope, limit_kind, used FROM get_rate_limit_status('h_user') ORDER BY 1, 2;
SELECT count(*) AS usage_rows FROM token_usage WHERE user_id = 'h_user';
SELECT count(*) AS counters FROM rate_limiter_counters WHERE user_id = 'h_user';

-- After 400 tokens and 4 more requests: the request limit is used up, so a
-- request would be denied for the rest of the minute (Retry-After 60, the
-- same retry_after check_rate_limit reports); the bucket refills 400
-- tokens in 24 minutes; the sliding window counts 5 and resets at the end
-- of the next window.
SELECT success, tokens_allocated FROM allocate_tokens('h_user', 400, 'high', 'h_chat');
SELECT count(*) FILTER (WHERE (check_rate_limit('h_user', 'h_chat')).allowed) AS allowed
  FROM generate_series(1, 4);
SELECT * FROM hdr('h_user', 'h_chat');
SELECT allowed, retry_after, limit_kind, scope, reason FROM check_rate_limit('h_user', 'h_chat');
SELECT (rate_limit_headers('h_user', 'h_chat') ->> 'Retry-After')::bigint
       = ceil(EXTRACT(EPOCH FROM c.retry_after)) AS same_retry
  FROM check_rate_limit('h_user', 'h_chat') c;
-- With tokens: allocate_tokens(user, 10) would be refused by the request
-- limit too.
SELECT * FROM hdr('h_user', 'h_chat', 10) WHERE header IN ('Retry-After', 'RateLimit');
-- 59 s later the wait is 1 s; at 60 s a new window (and the sliding
-- window's previous one counted 5).
SET rate_limiter.debug_time_offset = 59;
SELECT * FROM hdr('h_user', 'h_chat') WHERE header IN ('Retry-After', 'RateLimit', 'x-ratelimit-reset-requests');
SET rate_limiter.debug_time_offset = 60;
SELECT * FROM hdr('h_user', 'h_chat') WHERE header IN ('Retry-After', 'RateLimit', 'x-ratelimit-reset-requests');
RESET rate_limiter.debug_time_offset;

-- A token quota that denies: 100 tokens per hour (fixed window), 99 used,
-- so no priority share is a whole token.  The binding quota comes first,
-- Retry-After is the end of the hour for a request and for tokens alike.
SELECT set_rate_limit('h_tok', 100, '1 hour');
SET rate_limiter.priority_share_high = 1.0;
SELECT tokens_allocated FROM allocate_tokens('h_tok', 99, 'high');
RESET rate_limiter.priority_share_high;
SELECT * FROM hdr('h_tok');
SELECT * FROM hdr('h_tok', NULL, 5) WHERE header = 'Retry-After';
SELECT retry_after FROM allocate_tokens('h_tok', 5);

-- GCRA (redis-cell): 10 per minute, max_burst 2, so a capacity of 3 and
-- one request every 6 s.  After 3 requests the next waits 6 s; the bucket
-- is full again 18 s later.
SELECT set_user_rate_limit('h_gcra', 10, '1 minute', algorithm => 'gcra', burst => 2);
SELECT count(*) FILTER (WHERE (check_rate_limit('h_gcra')).allowed) AS allowed FROM generate_series(1, 3);
SELECT * FROM hdr('h_gcra');

-- A partial grant is still a grant: 40 left of a medium-priority share of
-- 0.3 gives 12, so allocate_tokens('h_part', 50) is allowed (no
-- Retry-After) though 50 do not fit.
SELECT set_rate_limit('h_part', 100, '1 hour');
SET rate_limiter.priority_share_high = 1.0;
SELECT tokens_allocated FROM allocate_tokens('h_part', 60, 'high');
RESET rate_limiter.priority_share_high;
SELECT * FROM hdr('h_part', NULL, 50);

-- A burst cap that denies is listed first, with its own window.
SELECT set_user_rate_limit('h_burst', 1000, '1 hour', burst_limit => 2, burst_window_seconds => 10);
SELECT count(*) FILTER (WHERE (check_rate_limit('h_burst')).allowed) AS allowed FROM generate_series(1, 2);
SELECT * FROM hdr('h_burst');

-- The default rule applies to a user without limits of their own.
SELECT set_default_user_rate_limit(50, '1 hour');
SELECT * FROM hdr('h_newcomer');
SELECT remove_default_rate_limit();

-- Bad input: the same SQLSTATEs as the other functions.
\set VERBOSITY sqlstate
SELECT rate_limit_headers(NULL);
SELECT rate_limit_headers('');
SELECT rate_limit_headers('h_user', '');
SELECT rate_limit_headers('h_user', NULL, 0);
SELECT rate_limit_headers('h_user', NULL, -1);
SELECT rate_limit_headers('h_user', NULL, 1000000000000001);
\set VERBOSITY default

-- Privileges: like get_rate_limit_status, granted explicitly.
CREATE ROLE h_app;
SET ROLE h_app;
\set VERBOSITY sqlstate
SELECT rate_limit_headers('h_user');
SELECT * FROM rate_limiter_preview_decision('h_user', NULL, NULL);
\set VERBOSITY default
RESET ROLE;
GRANT EXECUTE ON FUNCTION rate_limit_headers(text, text, bigint) TO h_app;
SET ROLE h_app;
SELECT rate_limit_headers('h_user') ? 'RateLimit' AS has_ratelimit;
RESET ROLE;
REVOKE EXECUTE ON FUNCTION rate_limit_headers(text, text, bigint) FROM h_app;
DROP ROLE h_app;

-- OpenAI's reset format.
SELECT ms, rate_limiter_duration_text(ms)
  FROM unnest(ARRAY[0, 20, 999, 1000, 1500, 61001, 360000, 3723000, 86400000]::bigint[]) ms;

DROP FUNCTION hdr(text, text, bigint);
SELECT remove_rate_limit(u) FROM unnest(ARRAY['h_user', 'h_tok', 'h_gcra', 'h_part', 'h_burst']) u;
SELECT remove_api_rate_limit('h_chat');
RESET rate_limiter.debug_clock;
