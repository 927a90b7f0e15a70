-- DROP EXTENSION and CREATE EXTENSION start from fresh counters: the
-- extension's OID is part of every counter key.
SELECT set_rate_limit('re_user', 100, '3650 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('re_user', 80, 'high');
DROP EXTENSION rate_limiter;
CREATE EXTENSION rate_limiter;
SELECT tokens_allocated, reason FROM allocate_tokens('re_user', 80, 'high');
SELECT set_rate_limit('re_user', 100, '3650 days');
SELECT tokens_allocated, tokens_remaining FROM allocate_tokens('re_user', 80, 'high');
SELECT count(*) AS usage_rows FROM token_usage;
