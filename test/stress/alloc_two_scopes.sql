SELECT tokens_allocated FROM allocate_tokens('stress_multi_' || :client_id, 5, 'medium', 'stress_api');
