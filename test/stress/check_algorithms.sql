SELECT allowed FROM check_rate_limit('stress_gcra');
SELECT allowed FROM check_rate_limit('stress_sliding');
SELECT allowed FROM check_rate_limit('stress_bucket');
