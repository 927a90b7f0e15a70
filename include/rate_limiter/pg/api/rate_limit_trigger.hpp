// rate_limit_trigger(): rate limits inserts into (and updates of) an
// application table.
//
//   CREATE TRIGGER comments_rate_limit BEFORE INSERT ON comments
//     FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'comments');
//
// Arguments (TG_ARGV):
//   [0] user column (required): the column holding the user id; its value,
//       converted to text, is the user_id.  A NULL value is an error (22004).
//   [1] endpoint (required): an api_endpoint literal; '' means none.
//   [2] cost (optional): an integer literal (a constant cost) or the name of
//       a smallint/integer/bigint column holding the cost (1 to 10^15).
//   [3] priority (optional, with a cost): 'high' (default), 'medium', 'low'.
// Column names are matched exactly as stored (lower case unless created
// quoted); an argument that parses as an integer is a constant cost.
//
// Without a cost each row counts one request, as enforce_rate_limit(user,
// endpoint) does (which raises RL429 itself).  With a cost each row
// allocates exactly that many tokens, all or nothing, as allocate_tokens(
// user, cost, priority, endpoint, NULL, '{"all_or_nothing": true}'), and a
// refusal raises RL429.  Allowed rows are returned unchanged.  Only BEFORE
// INSERT or UPDATE ... FOR EACH ROW is accepted (39P01 otherwise).
//
// The trigger calls the extension's SQL functions through fmgr, looked up by
// signature in the extension's schema (the OIDs are cached per backend and
// forgotten when either function's catalog row changes), and reads their
// result record by column name, so columns added later do not matter.
//
// Privileges: fmgr calls skip the EXECUTE check of the inserting role.
// Instead the trigger requires that the owner of the table (who attached
// the trigger) may execute the function it calls: whoever may rate-limit a
// table could call that function directly anyway, and revoking EXECUTE on
// allocate_tokens/enforce_rate_limit from a role also stops it from
// spending quota through triggers on its own tables.  Inserting roles need
// no privilege on the extension.
#pragma once

namespace rate_limiter::pg {

void register_rate_limit_trigger_invalidation();  // once, from _PG_init

}  // namespace rate_limiter::pg
