SELECT tokens_allocated FROM allocate_tokens('stress_tokens', 7, 'high');
