\set u random(1, 10000)
SELECT tokens_allocated FROM allocate_tokens('k' || :u, 1, 'high');
