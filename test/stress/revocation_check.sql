-- Readers: is a random session id revoked?  (Shared-cache lookups, and loads
-- after the writers' reloads.)
\set t random(0, 40)
SELECT success, reason FROM allocate_tokens('stress_rv_user', 1, 'high', session_id => 'stress_rv_' || :t);
