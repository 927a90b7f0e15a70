-- Part 7 of run_stress.sh: take a slot of stress_cc (4 in flight), hold it
-- a moment, settle it.  Denied calls hold nothing.  Each grant records how
-- many leases it saw held and an interval that lies inside its lease: from
-- after allocate_tokens returned to before settle_tokens began.
SELECT coalesce(allocation_id, 0) AS aid, success::int AS ok FROM allocate_tokens('stress_cc', 1, 'high') \gset
\if :ok
INSERT INTO stress_cc_seen SELECT :aid, count(*), clock_timestamp() FROM rate_limiter_leases();
SELECT pg_sleep(0.001);
UPDATE stress_cc_seen SET held_to = clock_timestamp() WHERE aid = :aid;
SELECT tokens_refunded FROM settle_tokens(:aid, 1);
\endif
