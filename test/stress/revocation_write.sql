-- Writers: revoke, unrevoke, and now and then make the cache reload, so
-- that loads race with commits.
\set t random(0, 40)
\set op random(0, 99)
SELECT CASE WHEN :op < 45 THEN (SELECT revoke_token('stress_rv_' || :t))::text
            WHEN :op < 90 THEN unrevoke_token('stress_rv_' || :t)::text
            ELSE (SELECT reload_revocations())::text END;
