#!/usr/bin/env bash
# Concurrency stress test: 32 pgbench sessions hammer one key, then exact
# invariants are checked against shared memory and token_usage.
#
#   test/stress/run_stress.sh [pgbench/psql connection options...]
#
# Expects a database where the rate_limiter extension exists (and nothing
# else uses the stress_* ids).  Prints one "PASS:"/"FAIL:" line per check and
# exits non-zero when a check fails.
set -u
here=$(cd "$(dirname "$0")" && pwd)
CLIENTS=${STRESS_CLIENTS:-32}
TXNS=${STRESS_TRANSACTIONS:-1000}
conn=("$@")

psql_q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "${conn[@]}" -c "$1"; }
failures=0
check() {  # check <description> <actual> <expected>
  if [ "$2" == "$3" ]; then echo "PASS: $1 ($2)"; else echo "FAIL: $1: got '$2', expected '$3'"; failures=$((failures + 1)); fi
}
bench() {  # bench <script>
  pgbench -n -M prepared -c "$CLIENTS" -j 2 -t "$TXNS" -f "$here/$1" "${conn[@]}" >"$tmp/$1.log" 2>&1 ||
    { echo "FAIL: pgbench $1 did not complete"; cat "$tmp/$1.log"; failures=$((failures + 1)); }
  grep -E '^(tps|number of failed)' "$tmp/$1.log" | sed "s/^/  $1: /"
  # With rate_limiter.usage_log = async (the default) the usage rows reach
  # token_usage through the flusher: wait for them before counting.
  psql_q "SELECT rate_limiter_flush()" >/dev/null
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

psql_q "SELECT set_rate_limit('stress_tokens', 100000, '3650 days');
        SELECT set_user_rate_limit('stress_requests', 20000, '3650 days');
        SELECT set_api_token_limit('stress_api', 50000, '3650 days');
        SELECT set_default_rate_limit(3000, '3650 days');" >/dev/null
psql_q "SELECT reset_rate_limit('stress_tokens'); SELECT reset_rate_limit('stress_requests');
        SELECT reset_api_rate_limit('stress_api');
        SELECT reset_rate_limit('stress_multi_' || c) FROM generate_series(0, $CLIENTS - 1) c;" >/dev/null
psql_q "DELETE FROM token_usage WHERE user_id LIKE 'stress%'" >/dev/null

echo "stress: $CLIENTS clients x $TXNS transactions per script"

# 1. One hot token quota.  Each call asks for 7 tokens at high priority
# (at most half of what remains), so demand (224k) drains the quota to its
# last token: exactly 99999 of 100000 are granted, never more.
bench alloc_one_key.sql
used=$(psql_q "SELECT used FROM get_rate_limit_status('stress_tokens') WHERE scope = 'user'")
logged=$(psql_q "SELECT COALESCE(sum(tokens_used), 0) FROM token_usage WHERE user_id = 'stress_tokens'")
check "hot token quota: granted tokens in shared memory" "$used" 99999
check "hot token quota: tokens in token_usage equal the counter" "$logged" "$used"
check "hot token quota: tokens handed out never exceed the limit" "$([ "$logged" -le 100000 ] && echo yes)" yes

# 2. One hot request limit: exactly 20000 of the 32000 checks pass.
bench check_one_key.sql
used=$(psql_q "SELECT used FROM get_rate_limit_status('stress_requests') WHERE scope = 'user' AND limit_kind = 'requests'")
rows=$(psql_q "SELECT count(*) FROM token_usage WHERE user_id = 'stress_requests'")
check "hot request limit: requests counted" "$used" 20000
check "hot request limit: usage rows equal the counter" "$rows" 20000

# 3. Two scopes per call in different partitions: each client is its own
# user (default quota 3000) on one shared endpoint (quota 50000).  Locks are
# taken in partition order; the debit is all or nothing.
bench alloc_two_scopes.sql
endpoint_used=$(psql_q "SELECT used FROM get_rate_limit_status('stress_multi_1') WHERE scope = 'endpoint' AND api_endpoint = 'stress_api'")
endpoint_logged=$(psql_q "SELECT COALESCE(sum(tokens_used), 0) FROM token_usage WHERE api_endpoint = 'stress_api'")
check "shared endpoint quota: counter equals token_usage" "$endpoint_used" "$endpoint_logged"
check "shared endpoint quota: tokens handed out never exceed the limit" "$([ "$endpoint_logged" -le 50000 ] && echo yes)" yes
mismatched=$(psql_q "
  SELECT count(*)
    FROM generate_series(0, $CLIENTS - 1) c,
         LATERAL (SELECT 'stress_multi_' || c AS user_id) u,
         LATERAL (SELECT used FROM get_rate_limit_status(u.user_id)
                   WHERE scope = 'default' AND limit_kind = 'tokens') s,
         LATERAL (SELECT COALESCE(sum(tokens_used), 0) AS logged FROM token_usage t
                   WHERE t.user_id = u.user_id) l
   WHERE l.logged <> s.used OR l.logged > 3000 OR l.logged = 0")
check "per-user default quotas: each of the $CLIENTS counters equals its usage rows, within 3000" "$mismatched" 0

# 4. Revocations: readers check session ids against the shared cache while
# writers revoke, unrevoke and force reloads, all at once for a few seconds.
# Afterwards the cache agrees with token_revocations on every token.  (A
# smoke test under load; test/t/005_revocation_load_race.pl places a commit
# inside a load deterministically.)
psql_q "DELETE FROM token_revocations WHERE token LIKE 'stress_rv_%'" >/dev/null
seconds=${STRESS_SECONDS:-5}
pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$seconds" -f "$here/revocation_check.sql" "${conn[@]}" \
  >"$tmp/revocation_check.log" 2>&1 &
readers=$!
pgbench -n -c 4 -j 1 -T "$seconds" -f "$here/revocation_write.sql" "${conn[@]}" >"$tmp/revocation_write.log" 2>&1 ||
  { echo "FAIL: pgbench revocation_write.sql did not complete"; cat "$tmp/revocation_write.log"; failures=$((failures + 1)); }
wait "$readers" ||
  { echo "FAIL: pgbench revocation_check.sql did not complete"; cat "$tmp/revocation_check.log"; failures=$((failures + 1)); }
grep -E '^tps' "$tmp/revocation_check.log" | sed "s/^/  revocation_check.sql: /"
grep -E '^tps' "$tmp/revocation_write.log" | sed "s/^/  revocation_write.sql: /"
mismatched=$(psql_q "
  SELECT count(*) FROM generate_series(0, 40) g
   WHERE is_token_revoked('stress_rv_' || g)
         <> EXISTS (SELECT 1 FROM token_revocations WHERE token = 'stress_rv_' || g)")
check "revocations: the cache agrees with token_revocations on all 41 tokens" "$mismatched" 0
psql_q "DELETE FROM token_revocations WHERE token LIKE 'stress_rv_%'" >/dev/null

# 5. Strategies and algorithms on hot keys, with the limiter's clock frozen
# (rate_limiter.debug_clock, testing only) so that no refill or window
# boundary blurs the totals.  Each total is exact:
#  - emergency: every call asks 50 at low priority with emergency_override,
#    which takes all that remains of the 1000, then the allowance of
#    0.8 x 1000 beyond it: exactly 1800 granted, 800 of them emergency;
#  - burst: calls ask 5000 at low priority in burst mode (share 0.2 x 5 = 1);
#    the burst budget of 300 goes to whoever comes first, and the quota
#    drains until floor(0.2 x remaining) is 0, at 4 tokens left: exactly
#    9996 granted, 300 of them burst;
#  - gcra (max_burst 999), sliding_window (700 per hour) and token_bucket
#    (capacity 900) admit exactly their capacity.
export PGOPTIONS="${PGOPTIONS:-} -c rate_limiter.debug_clock=1800000000"
psql_q "SELECT set_rate_limit('stress_emergency', 1000, '3650 days');
        SELECT set_rate_limit('stress_burst', 10000, '3650 days', burst_multiplier => 5, max_burst_tokens => 300);
        SELECT set_user_rate_limit('stress_gcra', 30, '60 seconds', algorithm => 'gcra', burst => 999);
        SELECT set_user_rate_limit('stress_sliding', 700, '1 hour', algorithm => 'sliding_window');
        SELECT set_user_rate_limit('stress_bucket', 5000, '3650 days', algorithm => 'token_bucket', burst => 900);
        SELECT reset_rate_limit(u) FROM unnest(ARRAY['stress_emergency', 'stress_burst', 'stress_gcra',
                                                     'stress_sliding', 'stress_bucket']) u;
        SET client_min_messages = warning;
        DROP TABLE IF EXISTS stress_strategy_log;
        CREATE TABLE stress_strategy_log (kind text, granted bigint, burst bigint, emergency bigint);" >/dev/null
bench alloc_emergency.sql
bench alloc_burst.sql
bench check_algorithms.sql
check "emergency override: tokens granted" \
  "$(psql_q "SELECT sum(granted) || '/' || sum(emergency) FROM stress_strategy_log WHERE kind = 'emergency'")" 1800/800
check "burst mode: tokens granted / burst tokens" \
  "$(psql_q "SELECT sum(granted) || '/' || sum(burst) FROM stress_strategy_log WHERE kind = 'burst'")" 9996/300
for pair in stress_gcra:1000 stress_sliding:700 stress_bucket:900; do
  user=${pair%%:*}
  check "$user: requests admitted" "$(psql_q "SELECT count(*) FROM token_usage WHERE user_id = '$user'")" "${pair##*:}"
done
psql_q "DROP TABLE stress_strategy_log" >/dev/null
unset PGOPTIONS

# 6. A hierarchy: every client is its own user (default quota 3000) in one
# of two teams (25000 and 40000 tokens) of one tenant (60000, and 20000 on
# the endpoint stress_h_chat, where half of the calls go).  Every call is
# checked and charged at every level, all or nothing; afterwards each
# level's counter equals the usage rows of its descendants, within its
# limit, and the levels add up.
psql_q "SELECT set_rate_limit('stress_h_tenant', 60000, '3650 days');
        SELECT set_rate_limit('stress_h_tenant', 20000, '3650 days', 'stress_h_chat');
        SELECT set_rate_limit('stress_h_team0', 25000, '3650 days');
        SELECT set_rate_limit('stress_h_team1', 40000, '3650 days');
        SELECT set_parent('stress_h_team' || t, 'stress_h_tenant') FROM generate_series(0, 1) t;
        SELECT set_parent('stress_h_u' || c, 'stress_h_team' || (c % 2))
          FROM generate_series(0, $CLIENTS - 1) c;
        SELECT reset_rate_limit(u) FROM unnest(ARRAY['stress_h_tenant', 'stress_h_team0', 'stress_h_team1']) u;
        SELECT reset_rate_limit('stress_h_tenant', 'stress_h_chat');
        SELECT reset_rate_limit('stress_h_u' || c) FROM generate_series(0, $CLIENTS - 1) c;
        DELETE FROM token_usage WHERE user_id LIKE 'stress_h_%';" >/dev/null
bench alloc_hierarchy.sql
level() {  # level <owner> <scope>: used of the owner's tokens limit, as stress_h_u0 sees it
  psql_q "SELECT used FROM get_rate_limit_status('stress_h_u$3') WHERE limit_owner = '$1' AND scope = '$2' AND limit_kind = 'tokens'"
}
rows() {  # rows <where>: tokens in token_usage of the hierarchy's users
  psql_q "SELECT COALESCE(sum(tokens_used), 0) FROM token_usage WHERE user_id LIKE 'stress_h_u%' AND ($1)"
}
tenant=$(level stress_h_tenant user 0)
chat=$(level stress_h_tenant user_endpoint 0)
team0=$(level stress_h_team0 user 0)
team1=$(level stress_h_team1 user 1)
check "hierarchy: tenant counter equals its descendants' usage rows" "$tenant" "$(rows true)"
check "hierarchy: tenant's endpoint counter equals the rows on it" "$chat" "$(rows "api_endpoint = 'stress_h_chat'")"
check "hierarchy: team 0 counter equals its members' rows" "$team0" \
  "$(rows "substr(user_id, 11)::int % 2 = 0")"
check "hierarchy: team 1 counter equals its members' rows" "$team1" \
  "$(rows "substr(user_id, 11)::int % 2 = 1")"
check "hierarchy: the teams add up to the tenant" "$((team0 + team1))" "$tenant"
check "hierarchy: no level exceeded its limit" \
  "$([ "$tenant" -le 60000 ] && [ "$chat" -le 20000 ] && [ "$team0" -le 25000 ] && [ "$team1" -le 40000 ] && echo yes)" yes
check "hierarchy: the tenant was drained (the test bit)" "$([ "$tenant" -ge 59000 ] && echo yes)" yes
mismatched=$(psql_q "
  SELECT count(*)
    FROM generate_series(0, $CLIENTS - 1) c,
         LATERAL (SELECT used FROM get_rate_limit_status('stress_h_u' || c)
                   WHERE scope = 'default' AND limit_kind = 'tokens') s,
         LATERAL (SELECT COALESCE(sum(tokens_used), 0) AS logged FROM token_usage t
                   WHERE t.user_id = 'stress_h_u' || c) l
   WHERE l.logged <> s.used OR l.logged > 3000")
check "hierarchy: each user's own counter equals its rows, within 3000" "$mismatched" 0
psql_q "DELETE FROM rate_limit_parents WHERE child_id LIKE 'stress_h_%'" >/dev/null

# 7. An in-flight limit: every client allocates from stress_cc (at most 4
# unsettled grants at once), holds the grant a moment and settles it.
# Proved two ways: every grant saw at most 4 leases of the database held
# (stress_cc has the only concurrency limit), and the intervals the
# clients recorded while holding a grant (each inside its lease) never
# overlap more than 4 deep.  Afterwards no lease is left.
psql_q "SELECT set_concurrency_limit('stress_cc', 4);
        SELECT set_rate_limit('stress_cc', 1000000000, '3650 days');
        SELECT reset_rate_limit('stress_cc');
        DELETE FROM token_usage WHERE user_id = 'stress_cc';
        SET client_min_messages = warning;
        DROP TABLE IF EXISTS stress_cc_seen;
        CREATE TABLE stress_cc_seen (aid bigint PRIMARY KEY, held bigint, held_from timestamptz,
                                     held_to timestamptz);" >/dev/null
bench alloc_in_flight.sql
granted=$(psql_q "SELECT count(*) FROM token_usage WHERE user_id = 'stress_cc'")
seen=$(psql_q "SELECT max(held) FROM stress_cc_seen")
check "in-flight: no grant saw more than 4 leases held" "$([ "$seen" -le 4 ] && echo yes)" yes
check "in-flight: every grant recorded its interval" \
  "$(psql_q "SELECT count(*) FROM stress_cc_seen WHERE held_to IS NOT NULL")" "$granted"
check "in-flight: every grant was settled" \
  "$(psql_q "SELECT count(*) FROM token_usage WHERE user_id = 'stress_cc' AND settled_at IS NULL")" 0
deepest=$(psql_q "
  WITH ev AS (SELECT held_from AS t, 1 AS d FROM stress_cc_seen
              UNION ALL
              SELECT held_to, -1 FROM stress_cc_seen)
  SELECT max(depth) FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS depth FROM ev) x")
check "in-flight: grants outstanding at once never exceeded 4" "$([ "$deepest" -le 4 ] && echo yes)" yes
check "in-flight: the limit bit (some calls were denied, slots were reused)" \
  "$([ "$granted" -lt $((CLIENTS * TXNS)) ] && [ "$granted" -gt 4 ] && echo yes)" yes
check "in-flight: no lease is left" "$(psql_q "SELECT count(*) FROM rate_limiter_leases()")" 0
echo "  in-flight: $granted of $((CLIENTS * TXNS)) calls granted, deepest overlap $deepest"
psql_q "DROP TABLE stress_cc_seen; SELECT remove_concurrency_limit('stress_cc');" >/dev/null

psql_q "SELECT remove_default_rate_limit();" >/dev/null
echo "stress: $failures failed"
[ "$failures" -eq 0 ]
