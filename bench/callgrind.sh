#!/usr/bin/env bash
# Where a call spends its instructions: valgrind's callgrind on a
# single-user backend running a loop of allocate_tokens (instruction counts
# are repeatable on a noisy machine, unlike timings).  Run as root:
#
#   bash bench/callgrind.sh [calls] [usage_log] [users]   (default 20000, async, 1000)
#
# users = 1 profiles a hot key (the same user on every call).
#
# Prints the inclusive instruction counts of the functions that matter, per
# call, for a granted allocation and for a trivial SQL function.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
CALLS=${1:-20000}
MODE=${2:-async}
USERS=${3:-1000}
rl_require_root
rl_install_packages
command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
rl_build_and_install
dir=$(mktemp -d /tmp/rate_limiter_callgrind.XXXXXX)
chown "$RL_TEST_USER" "$dir"
trap 'rm -rf "$dir"' EXIT
as_user() { runuser -u "$RL_TEST_USER" -- "$@"; }
as_user "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'rate_limiter'
rate_limiter.usage_log = '$MODE'
CONF
single() { as_user "$@" "$PG_BIN/postgres" --single -D "$dir/data" postgres; }
single <<'SQL' >/dev/null
CREATE EXTENSION rate_limiter;
SELECT set_default_rate_limit(1000000000000000, '3650 days');
CREATE FUNCTION trivial(text, bigint, text) RETURNS TABLE (ok boolean) LANGUAGE sql VOLATILE AS 'SELECT $2 > 0';
SQL
profile() {  # profile <name> <lateral expression>
  echo "SELECT count(*) FROM generate_series(1, $CALLS) g, LATERAL $2 x;" |
    as_user valgrind --tool=callgrind --callgrind-out-file="$dir/$1.out" "$PG_BIN/postgres" --single -D "$dir/data" postgres \
    >/dev/null 2>"$dir/$1.err"
  # Program totals, then our own functions (inclusive), per call.  The
  # server binary has no symbols here, so its internals show only through
  # the totals; startup is amortised over the calls.
  callgrind_annotate --inclusive=yes --auto=no "$dir/$1.out" 2>/dev/null |
    grep -E 'PROGRAM TOTALS|(sql_api|hot_path|usage_log|usage_queue|rule_cache|arguments|decision|algorithm|counter_table|partition_locks|metrics|latency_histogram|scope_key|counter_recovery|revocation_lookup)\.cpp:' |
    grep -v '(1x)' | head -25 |
    awk -v n="$CALLS" -v name="$1" '{
      calls = $1; gsub(",", "", calls); $1 = ""; if ($2 ~ /^\(/) $2 = "";
      sub(/^ +/, ""); sub(/ \[.*\]$/, ""); sub(/^.*\//, "");
      printf "%-9s %8.0f instr/call  %s\n", name, calls / n, substr($0, 1, 100) }'
}
# A first loop warms the counters (rebuild, rule cache, key inserts).
echo "SELECT count(*) FROM generate_series(1, 1000) g, LATERAL allocate_tokens('k' || (g % 1000), 1, 'high') x;" | single >/dev/null
profile trivial "trivial('k' || (g % $USERS), 1, 'high')"
profile allocate "allocate_tokens('k' || (g % $USERS), 1, 'high')"
