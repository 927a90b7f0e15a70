-- retry_after is the exact wait for the request that was denied (its
-- tokens, priority and all_or_nothing), and NULL with reason
-- exceeds_capacity when no wait can ever let it through.  The limiter's
-- clock is frozen (rate_limiter.debug_clock = 1800000000, testing only),
-- which is the start of a minute and of an hour window.
\i test/sql_helpers/fresh_start.sql
SET rate_limiter.debug_clock = 1800000000;

-- A token bucket of 10 refilled at 1 per second, 1 token left.  All or
-- nothing 4 at high priority needs 8 in the bucket (the share 0.5): 7 s.
SELECT set_rate_limit('r_bucket', 10, '10 seconds', algorithm => 'token_bucket');
SET rate_limiter.priority_share_high = 1.0;
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('r_bucket', 9, 'high');
RESET rate_limiter.priority_share_high;
SELECT success, reason, tokens_remaining, retry_after
  FROM allocate_tokens('r_bucket', 4, 'high', context => '{"all_or_nothing": true}');
-- At 6 s it is still refused (7 in the bucket: 3 for high), 1 s to go;
-- at 7 s it is granted.
SET rate_limiter.debug_time_offset = 6;
SELECT success, reason, tokens_remaining, retry_after
  FROM allocate_tokens('r_bucket', 4, 'high', context => '{"all_or_nothing": true}');
SET rate_limiter.debug_time_offset = 7;
SELECT success, tokens_allocated, retry_after
  FROM allocate_tokens('r_bucket', 4, 'high', context => '{"all_or_nothing": true}');
RESET rate_limiter.debug_time_offset;

-- Without all_or_nothing a retry waits for a grant of at least one token:
-- 2 in the bucket give high 1.
SELECT set_rate_limit('r_partial', 10, '10 seconds', algorithm => 'token_bucket');
SET rate_limiter.priority_share_high = 1.0;
SELECT tokens_allocated FROM allocate_tokens('r_partial', 9, 'high');
RESET rate_limiter.priority_share_high;
SELECT success, reason, retry_after FROM allocate_tokens('r_partial', 4, 'high');
SET rate_limiter.debug_time_offset = 1;
SELECT success, reason, tokens_allocated FROM allocate_tokens('r_partial', 4, 'high');
RESET rate_limiter.debug_time_offset;

-- A sliding window of 100 per minute, all used.  30 at high needs 60
-- remaining: the estimate ceil(100 * (60 - e) / 60) falls to 40 at
-- e = 36 s into the next minute, 96 s from now.
SELECT set_rate_limit('r_slide', 100, '60 seconds', algorithm => 'sliding_window');
SET rate_limiter.priority_share_high = 1.0;
SELECT tokens_allocated FROM allocate_tokens('r_slide', 100, 'high');
RESET rate_limiter.priority_share_high;
SELECT success, reason, retry_after
  FROM allocate_tokens('r_slide', 30, 'high', context => '{"all_or_nothing": true}');
SET rate_limiter.debug_time_offset = 95;
SELECT success, retry_after
  FROM allocate_tokens('r_slide', 30, 'high', context => '{"all_or_nothing": true}');
SET rate_limiter.debug_time_offset = 96;
SELECT success, tokens_allocated
  FROM allocate_tokens('r_slide', 30, 'high', context => '{"all_or_nothing": true}');
RESET rate_limiter.debug_time_offset;

-- Several limits: the retry waits for the one that takes longest, here
-- the request limit of 1 per minute rather than the bucket's 7 s.
SELECT set_rate_limit('r_multi', 10, '10 seconds', algorithm => 'token_bucket');
SELECT set_user_rate_limit('r_multi', 1, '1 minute');
SET rate_limiter.priority_share_high = 1.0;
SELECT tokens_allocated FROM allocate_tokens('r_multi', 9, 'high');
RESET rate_limiter.priority_share_high;
SELECT success, reason, limit_kind, "limit", retry_after
  FROM allocate_tokens('r_multi', 4, 'high', context => '{"all_or_nothing": true}');

-- Never: more than the high share (0.5) of a whole hourly window of 100,
-- all or nothing: retry_after is NULL.
SELECT set_rate_limit('r_never', 100, '1 hour');
SELECT success, reason, "limit", retry_after IS NULL AS never
  FROM allocate_tokens('r_never', 60, 'high', context => '{"all_or_nothing": true}');
-- 50 fit once per window; the next 50 wait for the next window (1 hour).
SELECT success, tokens_allocated
  FROM allocate_tokens('r_never', 50, 'high', context => '{"all_or_nothing": true}');
SELECT success, reason, retry_after
  FROM allocate_tokens('r_never', 50, 'high', context => '{"all_or_nothing": true}');
-- Without all_or_nothing 60 are served partially: 25 of the 50 left.
SELECT success, reason, tokens_allocated FROM allocate_tokens('r_never', 60, 'high');
-- In the next window 60 all or nothing is still never.
SET rate_limiter.debug_time_offset = 3600;
SELECT success, reason, retry_after IS NULL AS never
  FROM allocate_tokens('r_never', 60, 'high', context => '{"all_or_nothing": true}');
RESET rate_limiter.debug_time_offset;

-- More than a bucket's capacity, even with a share of 1.0.
SELECT set_rate_limit('r_cap', 10, '10 seconds', algorithm => 'token_bucket');
SET rate_limiter.priority_share_high = 1.0;
SELECT success, reason, retry_after IS NULL AS never
  FROM allocate_tokens('r_cap', 11, 'high', context => '{"all_or_nothing": true}');
SELECT success, tokens_allocated
  FROM allocate_tokens('r_cap', 10, 'high', context => '{"all_or_nothing": true}');
RESET rate_limiter.priority_share_high;

-- A quota of 1 token: no share below 1.0 is ever a whole token, so checks
-- are never allowed either; enforce_rate_limit says so in its HINT.
SELECT set_rate_limit('r_tiny', 1, '1 hour');
SELECT allowed, reason, "limit", retry_after IS NULL AS never FROM check_rate_limit('r_tiny');
SELECT enforce_rate_limit('r_tiny');

-- rate_limit_trigger(): a cost above what the limit ever grants at once
-- says so; a cost that fits later says when.
CREATE TABLE llm_calls (id serial, author text, cost bigint);
CREATE TRIGGER llm_calls_quota BEFORE INSERT ON llm_calls
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'llm', 'cost');
SELECT set_rate_limit('carol', 100, '1 hour', 'llm');
INSERT INTO llm_calls (author, cost) VALUES ('carol', 60);
INSERT INTO llm_calls (author, cost) VALUES ('carol', 40);
INSERT INTO llm_calls (author, cost) VALUES ('carol', 40);
SELECT author, cost FROM llm_calls ORDER BY id;
DROP TABLE llm_calls;

RESET rate_limiter.debug_clock;
