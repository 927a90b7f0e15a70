\set ep random(0, 1)
SELECT tokens_allocated FROM allocate_tokens('stress_h_u' || :client_id, 7, 'high', CASE :ep::int WHEN 1 THEN 'stress_h_chat' END);
