------------------------------------------------------------------------------
-- Hot path (C).  Not STRICT: NULL arguments get their own clear errors.
------------------------------------------------------------------------------

CREATE FUNCTION allocate_tokens(
  user_id             text,
  tokens_requested    bigint,
  priority_level      text DEFAULT 'medium',
  api_endpoint        text DEFAULT NULL,
  session_id          text DEFAULT NULL,
  context             jsonb DEFAULT '{}',
  OUT success             boolean,
  OUT tokens_allocated    bigint,
  OUT tokens_remaining    bigint,
  OUT allocation_strategy text,
  OUT reason              text,
  OUT "limit"             bigint,
  OUT reset_at            timestamptz,
  OUT retry_after         interval,
  OUT requests_remaining  bigint,
  OUT limit_kind          text,
  OUT scope               text,
  OUT allocation_id       bigint,
  OUT burst_tokens        bigint,
  OUT emergency_tokens    bigint,
  OUT limit_owner         text)
RETURNS record
AS 'MODULE_PATHNAME', 'allocate_tokens' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION allocate_tokens(text, bigint, text, text, text, jsonb) IS
  'Grants up to tokens_requested tokens: at most the priority share (high 0.5, medium 0.3, low 0.2) of the remaining quota of the most restrictive scope, adjusted by the dynamic, burst and emergency strategies; counts one request';

CREATE FUNCTION check_rate_limit(
  user_id      text,
  api_endpoint text DEFAULT NULL,
  session_id   text DEFAULT NULL,
  OUT allowed     boolean,
  OUT "limit"     bigint,
  OUT remaining   bigint,
  OUT reset_at    timestamptz,
  OUT retry_after interval,
  OUT limit_kind  text,
  OUT scope       text,
  OUT reason      text,
  OUT limit_owner text)
RETURNS record
AS 'MODULE_PATHNAME', 'check_rate_limit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION check_rate_limit(text, text, text) IS
  'Checks every applicable request limit and token quota; counts the request when allowed';

CREATE FUNCTION enforce_rate_limit(
  user_id      text,
  api_endpoint text DEFAULT NULL,
  session_id   text DEFAULT NULL,
  OUT allowed     boolean,
  OUT "limit"     bigint,
  OUT remaining   bigint,
  OUT reset_at    timestamptz,
  OUT retry_after interval,
  OUT limit_kind  text,
  OUT scope       text,
  OUT reason      text,
  OUT limit_owner text)
RETURNS record
AS 'MODULE_PATHNAME', 'enforce_rate_limit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION enforce_rate_limit(text, text, text) IS
  'Like check_rate_limit, but raises SQLSTATE RL429 when the request is denied';

-- The privilege to use {"emergency_override": true}: EXECUTE on this
-- function.  GRANT EXECUTE ON FUNCTION rate_limiter_emergency_access() TO oncall;
CREATE FUNCTION rate_limiter_emergency_access() RETURNS boolean
AS 'MODULE_PATHNAME', 'rate_limiter_emergency_access' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION rate_limiter_emergency_access() FROM PUBLIC;
COMMENT ON FUNCTION rate_limiter_emergency_access() IS
  'Roles with EXECUTE on this function may use {"emergency_override": true}; returns true when the current user may';

-- settle_tokens(allocation_id, tokens_used): the actual usage of a grant.
-- Each grant keeps who made it and what it charged (token_usage.granted_to
-- and charges), so that settle_tokens gives back exactly what the grant
-- took from each quota (README, "Reserve, then settle").  In C: it must
-- know the calling role (a SECURITY DEFINER function does not); it runs as
-- the caller and reads token_usage as the extension owner internally.
CREATE FUNCTION settle_tokens(allocation_id bigint, tokens_used bigint,
                                         OUT tokens_granted bigint, OUT tokens_refunded bigint)
RETURNS record AS 'MODULE_PATHNAME', 'settle_tokens' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION settle_tokens(bigint, bigint) IS
  'Settles a grant with the tokens actually used: at commit each token quota the grant charged gets back the unused part, at most what it was charged (never the emergency allowance or burst budget); only the allocating role, its members and administrators may settle';
