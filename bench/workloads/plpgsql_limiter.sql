-- The table-based limiter teams write by hand: one row per user, an
-- UPDATE ... RETURNING that charges only while quota remains, and a usage
-- row, in one PL/pgSQL function.  Logged and UNLOGGED variants.
CREATE TABLE plpgsql_quota (user_id text PRIMARY KEY, used bigint NOT NULL, quota bigint NOT NULL);
CREATE TABLE plpgsql_usage (id bigserial PRIMARY KEY, user_id text, tokens bigint, at timestamptz DEFAULT now());
CREATE UNLOGGED TABLE plpgsql_quota_u (user_id text PRIMARY KEY, used bigint NOT NULL, quota bigint NOT NULL);
CREATE UNLOGGED TABLE plpgsql_usage_u (id bigserial PRIMARY KEY, user_id text, tokens bigint, at timestamptz DEFAULT now());
INSERT INTO plpgsql_quota VALUES ('bench_hot', 0, 1000000000000);
INSERT INTO plpgsql_quota_u VALUES ('bench_hot', 0, 1000000000000);

CREATE FUNCTION plpgsql_allocate(p_user text, p_tokens bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  ok boolean;
BEGIN
  UPDATE plpgsql_quota SET used = used + p_tokens
   WHERE user_id = p_user AND used + p_tokens <= quota
  RETURNING true INTO ok;
  IF ok THEN
    INSERT INTO plpgsql_usage (user_id, tokens) VALUES (p_user, p_tokens);
  END IF;
  RETURN coalesce(ok, false);
END $$;

CREATE FUNCTION plpgsql_allocate_unlogged(p_user text, p_tokens bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  ok boolean;
BEGIN
  UPDATE plpgsql_quota_u SET used = used + p_tokens
   WHERE user_id = p_user AND used + p_tokens <= quota
  RETURNING true INTO ok;
  IF ok THEN
    INSERT INTO plpgsql_usage_u (user_id, tokens) VALUES (p_user, p_tokens);
  END IF;
  RETURN coalesce(ok, false);
END $$;
