SELECT allowed FROM check_rate_limit('bench_check');
