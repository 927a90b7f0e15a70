#!/usr/bin/env bash
# Instructions per statement execution, as a client sees a call: valgrind's
# callgrind on a single-user backend running EXECUTE of a prepared
# statement again and again (each EXECUTE starts the executor afresh, as
# every pgbench -M prepared transaction does; bench/callgrind.sh profiles a
# loop inside one statement instead).  Run as root:
#
#   bash bench/callgrind_execute.sh [executions] [usage_log]   (default 3000, off)
#
# Each statement runs twice, 100 and 100 + N times; the difference over N
# is the cost of one EXECUTE without the backend's startup.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
N=${1:-3000}
MODE=${2:-off}
rl_require_root
rl_install_packages
command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
rl_build_and_install
dir=$(mktemp -d /tmp/rate_limiter_callgrind.XXXXXX)
chown "$RL_TEST_USER" "$dir"
trap 'rm -rf "$dir"' EXIT
as_user() { runuser -u "$RL_TEST_USER" -- "$@"; }
as_user "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
printf "shared_preload_libraries = 'rate_limiter'\nrate_limiter.usage_log = '%s'\n" "$MODE" >>"$dir/data/postgresql.conf"
single() { as_user "$PG_BIN/postgres" --single -D "$dir/data" postgres; }
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
  b=$(total "$name" "$stmt" $((N + 100)))
  per=$(((b - a) / N))
  [ "$base" -eq 0 ] && base=$per
  awk -v n="$name" -v p="$per" -v b="$base" 'BEGIN { printf "%-28s %12d %8.2f\n", n, p, p / b }'
done <<'LIST'
SELECT 1|SELECT 1
function in FROM|SELECT * FROM pg_catalog.pg_backend_pid()
allocate_tokens, hot key|SELECT tokens_allocated FROM allocate_tokens('bench_hot', 1, 'high')
check_rate_limit, hot key|SELECT allowed FROM check_rate_limit('bench_hot')
LIST
