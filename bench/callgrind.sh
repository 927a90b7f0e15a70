#!/usr/bin/env bash
# Where a call spends its instructions: valgrind's callgrind on a
# single-user backend running a loop of allocate_tokens (instruction counts
# are repeatable on a noisy machine, unlike timings).  Run as root:
#
#   bash bench/callgrind.sh [calls] [usage_log] [users]   (default 20000, async, 1000)
#   bash bench/callgrind.sh execute [executions] [usage_log]   (default 3000, off)
#
# users = 1 profiles a hot key (the same user on every call).  The first
# form prints the inclusive instruction counts of the functions that
# matter, per call, for a granted allocation and for a trivial SQL function,
# in a loop inside one statement.  "execute" counts instructions per
# EXECUTE of a prepared statement instead, as a client sees a call: each
# EXECUTE starts the executor afresh, as every pgbench -M prepared
# transaction does.  Each statement runs 100 and 100 + N times; the
# difference over N is the cost of one EXECUTE without the backend's
# startup.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
EXECUTE=0
if [ "${1:-}" = execute ]; then
  EXECUTE=1
  shift
  CALLS=${1:-3000}
  MODE=${2:-off}
else
  CALLS=${1:-20000}
  MODE=${2:-async}
  USERS=${3:-1000}
fi
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
if [ "$EXECUTE" -eq 1 ]; then
  printf "CREATE EXTENSION rate_limiter;\nSELECT set_rate_limit('bench_hot', 1000000000000000, '3650 days');\n" |
    single >/dev/null 2>&1
  total() {  # total <name> <statement> <executions>: program total instructions
    { echo "PREPARE p AS $2;"; for _ in $(seq "$3"); do echo "EXECUTE p;"; done; } >"$dir/$1_$3.sql"
    as_user valgrind --tool=callgrind --callgrind-out-file="$dir/$1_$3.out" "$PG_BIN/postgres" --single \
      -D "$dir/data" postgres <"$dir/$1_$3.sql" >/dev/null 2>&1
    callgrind_annotate "$dir/$1_$3.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
  }
  printf '%-28s %12s %8s\n' statement instr/EXECUTE ratio
  base=0
  while IFS='|' read -r name stmt; do
    a=$(total "$name" "$stmt" 100)
    b=$(total "$name" "$stmt" $((CALLS + 100)))
    per=$(((b - a) / CALLS))
    [ "$base" -eq 0 ] && base=$per
    awk -v n="$name" -v p="$per" -v b="$base" 'BEGIN { printf "%-28s %12d %8.2f\n", n, p, p / b }'
  done <<'LIST'
SELECT 1|SELECT 1
function in FROM|SELECT * FROM pg_catalog.pg_backend_pid()
allocate_tokens, hot key|SELECT tokens_allocated FROM allocate_tokens('bench_hot', 1, 'high')
check_rate_limit, hot key|SELECT allowed FROM check_rate_limit('bench_hot')
LIST
  exit 0
fi
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
