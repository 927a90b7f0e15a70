-- rate_limiter 1.2 -> 1.3 update script: ALTER EXTENSION rate_limiter UPDATE
-- applies it to an installation of 1.2.  CREATE EXTENSION installs the current
-- version directly (the newest rate_limiter--<version>.sql, built from sql/schema).

\echo Use "ALTER EXTENSION rate_limiter UPDATE TO '1.3'" to load this file. \quit

-- Privileges survive the update.  The rule for every update script: a
-- function whose signature and result stay is changed with CREATE OR
-- REPLACE, which keeps its privileges; one that must be dropped and created
-- again has its ACL saved before the DROP and applied to the new function
-- at the end (see rate_limiter--1.0--1.1.sql).  Here: settle_tokens is
-- replaced in place; rate_limiter_schedule_refund, internal, is dropped for
-- good.

-- ==== exact settle ====

-- Each grant keeps who made it and what it charged, so that settle_tokens
-- gives back exactly what the grant took from each quota (README,
-- "Reserve, then settle").  Rows written before this version have neither:
-- administrators may still settle them, without a refund.
ALTER TABLE token_usage
  ADD COLUMN granted_to name,
  ADD COLUMN charges bytea;
-- A role name, not an oid or regrole: a dump restored into another cluster
-- must neither fail on a missing role nor hand the grant to whichever role
-- has that oid there.
COMMENT ON COLUMN token_usage.granted_to IS
  'The role that made the call (current_user of allocate_tokens): with its members and the extension''s administrators, the only roles that may settle the grant';
COMMENT ON COLUMN token_usage.charges IS
  'Internal: the token quotas the grant charged and how much, for settle_tokens; NULL for counted checks and rows before 1.3';

-- settle_tokens in C: it must know the calling role (a SECURITY DEFINER
-- function does not), and it refunds from token_usage.charges.  The
-- signature and the result stay; the function now runs as the caller and
-- reads token_usage as the extension owner internally.
CREATE OR REPLACE FUNCTION settle_tokens(allocation_id bigint, tokens_used bigint,
                                         OUT tokens_granted bigint, OUT tokens_refunded bigint)
RETURNS record AS 'MODULE_PATHNAME', 'settle_tokens' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION settle_tokens(bigint, bigint) IS
  'Settles a grant with the tokens actually used: at commit each token quota the grant charged gets back the unused part, at most what it was charged (never the emergency allowance or burst budget); only the allocating role, its members and administrators may settle';

-- The refund helper of the PL/pgSQL settle_tokens before 1.3.
DROP FUNCTION rate_limiter_schedule_refund(text, text, bigint, timestamptz);

-- ==== end exact settle ====
