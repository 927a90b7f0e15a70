INSERT INTO stress_strategy_log SELECT 'emergency', tokens_allocated, burst_tokens, emergency_tokens FROM allocate_tokens('stress_emergency', 50, 'low', NULL, NULL, '{"emergency_override": true}');
