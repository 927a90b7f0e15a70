#!/usr/bin/env bash
# Per-call cost of allocate_tokens in a single backend, against a trivial SQL
# function in the same run.  Starts its own throwaway server; run as root:
#
#   bash bench/per_call.sh [calls]        (default 1000000 calls, 3 rounds)
#
# Prints the median wall time of each loop over the rounds, the cost per
# call, and the ratio to the trivial function.  Granted calls are timed with
# the usage log in async mode (the default: the row is queued for the
# flusher worker) and in sync mode (an INSERT in the caller's transaction).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
CALLS=${1:-1000000}
ROUNDS=${ROUNDS:-3}

rl_require_root
rl_install_packages
rl_build_and_install
dir=$(mktemp -d /tmp/rate_limiter_bench.XXXXXX)
port=$(rl_free_port 54350)
trap 'rl_stop_server "$dir"; rm -rf "$dir"' EXIT
# Every granted call of the in-flight loop holds its lease until the loop's
# session ends: room for all of them.
rl_start_server "$dir" "$port" "rate_limiter.max_keys = 100000" "rate_limiter.max_leases = $((CALLS + 1000))"
q() { psql -X -q -t -A -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

q -c "CREATE EXTENSION rate_limiter" \
  -c "CREATE FUNCTION trivial(text, bigint, text) RETURNS TABLE (ok boolean)
        LANGUAGE sql VOLATILE AS 'SELECT \$2 > 0'" \
  -c "CREATE FUNCTION denied_user(g bigint) RETURNS text LANGUAGE sql IMMUTABLE AS \$\$SELECT 'd' || (g % 1000)\$\$"

# Seconds for one loop of CALLS calls of the given LATERAL expression.
time_loop() {
  q <<SQL | tail -1
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT count(*) FROM generate_series(1, $CALLS) g, LATERAL $1 x;
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
SQL
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A label=(
  [trivial]="trivial SQL function (baseline)"
  [grant]="allocate_tokens, granted, usage_log = async"
  [grant_sync]="allocate_tokens, granted, usage_log = sync"
  [own]="allocate_tokens, granted, the user's own quota"
  [cal]="  ... a calendar month in Europe/Berlin"
  [tree]="allocate_tokens, granted, quotas of user, team, tenant"
  [tree_cc]="  ... and the user's in-flight limit (takes a lease)"
  [denied]="allocate_tokens, denied (no row written)"
  [check]="check_rate_limit, denied (no row written)")
declare -A expr=(
  [trivial]="trivial('u' || (g % 1000), 1, 'low')"
  [grant]="allocate_tokens('u' || (g % 1000), 1, 'low')"
  [grant_sync]="allocate_tokens('u' || (g % 1000), 1, 'low')"
  [own]="allocate_tokens('o' || (g % 1000), 1, 'low')"
  [cal]="allocate_tokens('k' || (g % 1000), 1, 'low')"
  [tree]="allocate_tokens('h' || (g % 1000), 1, 'low')"
  [tree_cc]="allocate_tokens('c' || (g % 1000), 1, 'low')"
  [denied]="allocate_tokens(denied_user(g), 1, 'low')"
  [check]="check_rate_limit(denied_user(g))")
order=(trivial grant grant_sync own cal tree tree_cc denied check)
declare -A options=([grant_sync]="-c rate_limiter.usage_log=sync")

# o0..o999 have a token quota each; h0..h999 too, and are members of two
# teams under one tenant, each with a token quota: a call checks and
# charges three levels (hierarchies: set_parent).  c0..c999 are the same
# as h0..h999 and have an in-flight limit each (never reached): a call
# also takes a lease.  k0..k999 have a monthly quota in Europe/Berlin
# (a calendar period).
q -c "SELECT set_rate_limit(p || g, 1000000000000, '3650 days')
        FROM unnest(ARRAY['o', 'h', 'c']) p, generate_series(0, 999) g" \
  -c "SELECT set_rate_limit(t, 1000000000000, '3650 days') FROM unnest(ARRAY['team0', 'team1', 'tenant']) t" \
  -c "SELECT set_parent('team' || t, 'tenant') FROM generate_series(0, 1) t" \
  -c "SELECT set_parent(p || g, 'team' || (g % 2)) FROM unnest(ARRAY['h', 'c']) p, generate_series(0, 999) g" \
  -c "SELECT set_concurrency_limit('c' || g, 1000000) FROM generate_series(0, 999) g" \
  -c "SELECT set_rate_limit('k' || g, 1000000000000, '1 month', period_timezone => 'Europe/Berlin')
        FROM generate_series(0, 999) g" >/dev/null

# Users d0..d999 have used up a one-request limit, so their calls are denied
# after the locked decision and write nothing.
q -c "SELECT set_user_rate_limit('d' || g, 1, '3650 days') FROM generate_series(0, 999) g" >/dev/null
q -c "SELECT count(*) FROM generate_series(0, 999) g, LATERAL check_rate_limit('d' || g) x" >/dev/null

declare -A times
for round in $(seq "$ROUNDS"); do
  for k in "${order[@]}"; do
    times[$k]="${times[$k]:-} $(PGOPTIONS="${options[$k]:-}" time_loop "${expr[$k]}")"
    # Let the flusher write the queued rows before the next loop is timed.
    q -c "SELECT rate_limiter_flush()" >/dev/null
  done
  q -c "TRUNCATE token_usage" >/dev/null
done

base=$(median ${times[trivial]})
printf '\n%s calls per loop, median of %s rounds, one backend\n' "$CALLS" "$ROUNDS"
printf '%-55s %10s %12s %8s\n' "loop" "seconds" "us/call" "ratio"
for k in "${order[@]}"; do
  m=$(median ${times[$k]})
  awk -v l="${label[$k]}" -v m="$m" -v n="$CALLS" -v b="$base" \
    'BEGIN { printf "%-55s %10.3f %12.2f %8.2f\n", l, m, m * 1e6 / n, m / b }'
done
awk -v t="$(median ${times[tree]})" -v o="$(median ${times[own]})" \
  'BEGIN { printf "three-level hierarchy / own quota only: %.2f\n", t / o }'
awk -v t="$(median ${times[cal]})" -v o="$(median ${times[own]})" \
  'BEGIN { printf "calendar month in a time zone / own quota only: %.2f\n", t / o }'
awk -v t="$(median ${times[tree_cc]})" -v o="$(median ${times[own]})" \
  'BEGIN { printf "three-level hierarchy and an in-flight limit / own quota only: %.2f\n", t / o }'
