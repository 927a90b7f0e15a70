SELECT allowed FROM enforce_rate_limit('bench_check');
