INSERT INTO stress_strategy_log SELECT 'burst', tokens_allocated, burst_tokens, emergency_tokens FROM allocate_tokens('stress_burst', 5000, 'low', NULL, NULL, '{"burst_mode": true}');
