SELECT allowed FROM check_rate_limit('stress_requests');
