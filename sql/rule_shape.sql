-- A counter is keyed with its limit's shape (algorithm and window): a
-- window change made in a transaction that rolls back leaves the committed
-- counter untouched, and a committed change carries on with what the
-- changing transaction charged.
\i test/sql_helpers/fresh_start.sql
SELECT set_user_rate_limit('shape_user', 1000, '3650 days');
SELECT count(*) FILTER (WHERE allowed) AS allowed
  FROM generate_series(1, 900) g, LATERAL check_rate_limit('shape_user' || left(g::text, 0));
SELECT used FROM get_rate_limit_status('shape_user') WHERE limit_kind = 'requests' AND scope = 'user';

-- Rolled back: the committed counter still holds 900.
BEGIN;
SELECT set_user_rate_limit('shape_user', 1000, '1 day');
SELECT allowed, "limit", remaining FROM check_rate_limit('shape_user');
ROLLBACK;
SELECT used FROM get_rate_limit_status('shape_user') WHERE limit_kind = 'requests' AND scope = 'user';
SELECT count(*) FILTER (WHERE allowed) AS allowed_after_rollback
  FROM generate_series(1, 200) g, LATERAL check_rate_limit('shape_user' || left(g::text, 0));

-- Committed: the new shape's counter starts with the calls the changing
-- transaction made under it.
BEGIN;
SELECT set_user_rate_limit('shape_user', 10, '1 day', algorithm => 'sliding_window');
SELECT count(*) FILTER (WHERE allowed) AS allowed_in_transaction
  FROM generate_series(1, 4) g, LATERAL check_rate_limit('shape_user' || left(g::text, 0));
COMMIT;
SELECT used FROM get_rate_limit_status('shape_user') WHERE limit_kind = 'requests' AND scope = 'user';

-- An algorithm change is a shape change too; a limit change is not (the
-- counter keeps its usage).
SELECT set_user_rate_limit('shape_user', 20, '1 day', algorithm => 'sliding_window');
SELECT used FROM get_rate_limit_status('shape_user') WHERE limit_kind = 'requests' AND scope = 'user';
SELECT remove_rate_limit('shape_user');

-- The session's own uncommitted rules through savepoints: after ROLLBACK
-- TO SAVEPOINT it sees the version from before the savepoint again.
BEGIN;
SELECT set_rate_limit('sp_user', 100, '3650 days');
SELECT "limit" FROM allocate_tokens('sp_user', 1, 'high');
SAVEPOINT a;
SELECT set_rate_limit('sp_user', 200, '3650 days');
SELECT "limit" FROM allocate_tokens('sp_user', 1, 'high');
ROLLBACK TO SAVEPOINT a;
SELECT "limit" FROM allocate_tokens('sp_user', 1, 'high');
SAVEPOINT b;
SELECT remove_rate_limit('sp_user');
SELECT reason FROM allocate_tokens('sp_user', 1, 'high');
ROLLBACK TO SAVEPOINT b;
SELECT "limit" FROM allocate_tokens('sp_user', 1, 'high');
ROLLBACK;
SELECT reason FROM allocate_tokens('sp_user', 1, 'high');
