-- rate_limit_trigger(): rate limits inserts into (and updates of) an
-- application table.  The README's example allows 3 comments per minute;
-- here windows are 3650 days long instead, so that no window boundary falls
-- inside the test.
\i test/sql_helpers/fresh_start.sql
CREATE TABLE comments (id serial, author text, body text);
CREATE TRIGGER comments_rate_limit BEFORE INSERT ON comments
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'comments');
SELECT set_user_rate_limit('alice', 3, '3650 days', 'comments');

-- Three comments pass; the fourth raises RL429 and is not stored.
INSERT INTO comments (author, body) VALUES ('alice', 'first');
INSERT INTO comments (author, body) VALUES ('alice', 'second');
INSERT INTO comments (author, body) VALUES ('alice', 'third') RETURNING id, author, body;
-- The error (pg_temp.error_of) with its SQLSTATE, DETAIL and HINT; the
-- retry delay is masked.
\x on
SELECT code, message, detail, regexp_replace(hint, '[0-9]+\.[0-9]{3}', 'N.NNN') AS hint
  FROM pg_temp.error_of($$INSERT INTO comments (author, body) VALUES ('alice', 'fourth')$$);
\x off
SELECT author, body FROM comments ORDER BY id;
-- Each stored comment counted one request and wrote one usage row.
SELECT count(*) AS usage_rows FROM token_usage WHERE user_id = 'alice' AND api_endpoint = 'comments';

-- Another user is not affected.
INSERT INTO comments (author, body) VALUES ('bob', 'hello');
SELECT author, count(*) FROM comments GROUP BY author ORDER BY author;

\set VERBOSITY terse
-- A multi-row INSERT that crosses the limit fails as a whole.  The rows
-- before the failing one were counted; here (sync mode) their usage rows
-- roll back with the statement, and their charges with them.  (In async
-- mode rows and charges would both stay.)
SELECT set_user_rate_limit('carol', 5, '3650 days', 'comments');
INSERT INTO comments (author, body) SELECT 'carol', 'bulk ' || g FROM generate_series(1, 7) g;
SELECT count(*) AS carol_rows FROM comments WHERE author = 'carol';
SELECT used FROM get_rate_limit_status('carol') WHERE scope = 'user_endpoint';
INSERT INTO comments (author, body) VALUES ('carol', 'one more');

-- COPY goes through the trigger too.
SELECT set_user_rate_limit('dave', 2, '3650 days', 'comments');
COPY comments (author, body) FROM stdin;
dave	copied 1
dave	copied 2
dave	copied 3
\.
SELECT count(*) AS dave_rows FROM comments WHERE author = 'dave';

-- BEFORE UPDATE: the new row's user is charged.
CREATE TRIGGER comments_edit_limit BEFORE UPDATE ON comments
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'edits');
SELECT set_user_rate_limit('alice', 1, '3650 days', 'edits');
UPDATE comments SET body = 'first, edited' WHERE body = 'first';
UPDATE comments SET body = 'second, edited' WHERE body = 'second';
UPDATE comments SET author = 'erin', body = 'third, now by erin' WHERE body = 'third';
SELECT author, body FROM comments WHERE author IN ('alice', 'erin') ORDER BY id;
SELECT user_id, count(*) FROM token_usage WHERE api_endpoint = 'edits' GROUP BY 1 ORDER BY 1;
DROP TRIGGER comments_edit_limit ON comments;

-- A token cost from a column: each row allocates exactly that many tokens,
-- all or nothing, at priority high (at most half of what remains).
CREATE TABLE llm_calls (id serial, author text, prompt text, cost integer);
CREATE TRIGGER llm_calls_quota BEFORE INSERT ON llm_calls
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'llm', 'cost');
SELECT set_rate_limit('carol', 100, '3650 days', 'llm');
INSERT INTO llm_calls (author, prompt, cost) VALUES ('carol', 'a', 40);   -- 40 of 100
\x on
SELECT code, message, detail, regexp_replace(hint, '[0-9]+\.[0-9]{3}', 'N.NNN') AS hint
  FROM pg_temp.error_of($$INSERT INTO llm_calls (author, prompt, cost) VALUES ('carol', 'b', 40)$$);
\x off
INSERT INTO llm_calls (author, prompt, cost) VALUES ('carol', 'c', 30);   -- 30 of 60
SELECT author, prompt, cost FROM llm_calls ORDER BY id;
SELECT "limit", used, remaining FROM get_rate_limit_status('carol') WHERE api_endpoint = 'llm';
SELECT tokens_used, priority_level FROM token_usage WHERE user_id = 'carol' AND api_endpoint = 'llm' ORDER BY id;

-- A constant cost, no endpoint, and a priority.
CREATE TABLE reports (id serial, owner_id integer, title text);
CREATE TRIGGER reports_quota BEFORE INSERT ON reports
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('owner_id', '', '10', 'low');
SELECT set_rate_limit('42', 250, '3650 days');                    -- owner_id 42, as text
INSERT INTO reports (owner_id, title) VALUES (42, 'weekly');      -- low: up to 20% of 250
SELECT tokens_used, api_endpoint, priority_level FROM token_usage WHERE user_id = '42';
SET rate_limiter.priority_share_low = 0.01;                       -- 1% of 240 < 10
INSERT INTO reports (owner_id, title) VALUES (42, 'monthly');
RESET rate_limiter.priority_share_low;
SELECT owner_id, title FROM reports ORDER BY id;

-- Bad trigger arguments and bad row values: clear errors, by SQLSTATE.
CREATE TABLE t_args (id serial, author text, cost integer, label text, big bigint);
CREATE FUNCTION pg_temp.try_trigger(args text, row_values text) RETURNS text
LANGUAGE sql AS $$
  SELECT error FROM pg_temp.error_of(
    format('DROP TRIGGER IF EXISTS t_args_limit ON t_args; '
           'CREATE TRIGGER t_args_limit BEFORE INSERT ON t_args FOR EACH ROW '
           'EXECUTE FUNCTION rate_limit_trigger(%s); '
           'INSERT INTO t_args (author, cost, label, big) VALUES (%s)', args, row_values))
$$;
SET client_min_messages = warning;   -- quiet DROP TRIGGER IF EXISTS
SELECT args, row_values, pg_temp.try_trigger(args, row_values) AS result
  FROM (VALUES
    ($$$$, $$'u1', 1, 'x', 1$$),
    ($$'author'$$, $$'u1', 1, 'x', 1$$),
    ($$'', 'e'$$, $$'u1', 1, 'x', 1$$),
    ($$'writer', 'e'$$, $$'u1', 1, 'x', 1$$),
    ($$'ctid', 'e'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e'$$, $$NULL, 1, 'x', 1$$),
    ($$'author', 'e'$$, $$'', 1, 'x', 1$$),
    ($$'author', 'e', '2.5'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', '0'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', '1000000000000001'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', ''$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', 'price'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', 'label'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', 'cost'$$, $$'u1', NULL, 'x', 1$$),
    ($$'author', 'e', 'cost'$$, $$'u1', -3, 'x', 1$$),
    ($$'author', 'e', 'cost', 'urgent'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', 'cost', 'high', 'extra'$$, $$'u1', 1, 'x', 1$$),
    ($$'author', 'e', 'big'$$, $$'u1', 1, 'x', 5$$),
    ($$'label', 'e', 'cost', 'medium'$$, $$'u1', 1, 'x', 1$$)
  ) AS probes(args, row_values);
RESET client_min_messages;
SELECT author, cost, label, big FROM t_args ORDER BY id;
DROP TRIGGER t_args_limit ON t_args;

-- Only BEFORE INSERT or UPDATE ... FOR EACH ROW (39P01 otherwise).
CREATE TRIGGER t_args_after AFTER INSERT ON t_args
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'e');
SELECT code, message FROM pg_temp.error_of($$INSERT INTO t_args (author) VALUES ('u2')$$);
DROP TRIGGER t_args_after ON t_args;
CREATE TRIGGER t_args_statement BEFORE INSERT ON t_args
  FOR EACH STATEMENT EXECUTE FUNCTION rate_limit_trigger('author', 'e');
SELECT code, message FROM pg_temp.error_of($$INSERT INTO t_args (author) VALUES ('u2')$$);
DROP TRIGGER t_args_statement ON t_args;
CREATE TRIGGER t_args_delete BEFORE DELETE ON t_args
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'e');
SELECT code, message FROM pg_temp.error_of($$DELETE FROM t_args$$);
DROP TRIGGER t_args_delete ON t_args;
SELECT rate_limit_trigger();

-- Privileges: the trigger calls enforce_rate_limit/allocate_tokens with the
-- privileges of the table's owner, not of the inserting role.
CREATE ROLE rlt_owner;
CREATE ROLE rlt_writer;
GRANT CREATE ON SCHEMA public TO rlt_owner;
SET ROLE rlt_owner;
CREATE TABLE owned_posts (id serial, author text);
CREATE TRIGGER owned_posts_limit BEFORE INSERT ON owned_posts
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'posts');
GRANT INSERT ON owned_posts TO rlt_writer;
GRANT USAGE ON SEQUENCE owned_posts_id_seq TO rlt_writer;
RESET ROLE;
SET ROLE rlt_writer;
INSERT INTO owned_posts (author) VALUES ('gina');                 -- PUBLIC may execute: fine
RESET ROLE;
REVOKE EXECUTE ON FUNCTION enforce_rate_limit(text, text, text) FROM PUBLIC;
SET ROLE rlt_writer;
INSERT INTO owned_posts (author) VALUES ('gina');                 -- the owner may not
RESET ROLE;
GRANT EXECUTE ON FUNCTION enforce_rate_limit(text, text, text) TO rlt_owner;
SET ROLE rlt_writer;
INSERT INTO owned_posts (author) VALUES ('gina');                 -- the owner may
SELECT * FROM enforce_rate_limit('gina', 'posts');                -- the writer itself may not
RESET ROLE;
SELECT count(*) AS posts FROM owned_posts;
GRANT EXECUTE ON FUNCTION enforce_rate_limit(text, text, text) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION enforce_rate_limit(text, text, text) FROM rlt_owner;
DROP TABLE owned_posts;
REVOKE CREATE ON SCHEMA public FROM rlt_owner;
DROP ROLE rlt_writer;
DROP ROLE rlt_owner;

DROP TABLE comments, llm_calls, reports, t_args;
