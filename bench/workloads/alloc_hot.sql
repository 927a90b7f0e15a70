SELECT tokens_allocated FROM allocate_tokens('bench_hot', 1, 'high');
