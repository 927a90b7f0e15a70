#!/usr/bin/env bash
# The benchmark: rate_limiter against SELECT 1, Redis + a Lua GCRA script and
# a PL/pgSQL table limiter, every workload in the same run.  Run as root:
#
#   bash bench/run.sh                 full run: 10 s per point, clients 1 8 32
#   BENCH_SECONDS=2 BENCH_CLIENTS="8" BENCH_SUSTAIN_SECONDS=5 BENCH_COPY_ROWS=100000 \
#     bash bench/run.sh                                       a quick look (about 3 minutes)
#
# It starts its own throwaway PostgreSQL (library preloaded, max_keys large
# enough for 1M keys, role_key_share = 1 so that one role may warm them all,
# default settings otherwise: usage_log = async) and a
# throwaway redis-server (loopback only, no persistence), runs pgbench
# (-M prepared, -j 2, a 5% sample of latencies) and redis-benchmark
# (EVALSHA), and prints TPS, mean and p99 latency and the ratios to SELECT 1
# at the same client count.  The _nolog workloads run with
# rate_limiter.usage_log = off.  SELECT 1 runs first and again last, to show
# drift on a noisy machine.  Also printed: ratios to Redis, shared memory
# bytes per key at 1M keys, a sustained run at the largest client count
# (BENCH_SUSTAIN_SECONDS, 60) with the flusher's largest lag and the
# synchronous fallbacks, rate_limit_trigger on a COPY of BENCH_COPY_ROWS
# (1M) rows against the plain COPY, and the single-backend per-call cost
# against a trivial SQL function.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
SECONDS_PER_POINT=${BENCH_SECONDS:-10}
CLIENTS=(${BENCH_CLIENTS:-1 8 32})
LOOP_CALLS=${BENCH_LOOP_CALLS:-300000}
SUSTAIN_SECONDS=${BENCH_SUSTAIN_SECONDS:-60}
COPY_ROWS=${BENCH_COPY_ROWS:-1000000}
work=bench/workloads

rl_require_root
rl_install_packages
command -v redis-server >/dev/null || { apt-get install -y -q redis-server >/dev/null || rl_die "redis-server could not be installed"; }
rl_build_and_install

dir=$(mktemp -d /tmp/rate_limiter_bench.XXXXXX)
port=$(rl_free_port 54370)
redis_port=$(rl_free_port 56379)
redis_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rl_stop_server "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
rl_start_server "$dir" "$port" "rate_limiter.max_keys = 1100000" "rate_limiter.role_key_share = 1" "max_connections = 100" \
  "shared_buffers = 256MB"
q() { psql -X -q -t -A -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
runuser -u "$RL_TEST_USER" -- redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
  --appendonly no --daemonize no --logfile "$dir/redis.log" &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

rl_log "setting up: limits, 1M default-limited users, the PL/pgSQL limiter, the Lua script"
q -c "CREATE EXTENSION rate_limiter" \
  -c "SELECT set_rate_limit('bench_hot', 1000000000000000, '3650 days')" \
  -c "SELECT set_user_rate_limit('bench_check', 1000000000000000, '3650 days')" \
  -c "SELECT set_default_rate_limit(1000000000000000, '3650 days')" >/dev/null
q -f "$work/plpgsql_limiter.sql" >/dev/null
sha=$(redis-cli -p "$redis_port" SCRIPT LOAD "$(cat $work/gcra.lua)")

declare -A tps lat p99
latdir="$dir/latency"
mkdir -p "$latdir"
root=$PWD
# The 99th percentile in ms of pgbench's per-transaction log files (a 5%
# sample: --sampling-rate keeps the log small at 100k TPS).
p99_of() {
  cat "$@" | awk '{ print $3 }' | sort -n |
    awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", a[i] / 1000 }'
}
# pgbench <name> <script> <clients> [PGOPTIONS]
run_pgbench() {
  local out prefix="$latdir/$1_$3"
  out=$(cd "$latdir" && PGOPTIONS="${4:-}" pgbench -n -M prepared -j 2 -c "$3" -T "$SECONDS_PER_POINT" -l --sampling-rate=0.05 \
        --log-prefix="$prefix" -f "$root/$2" -h "$dir" -p "$port" -U postgres postgres 2>&1) ||
    { echo "$out"; rl_die "pgbench $1 failed"; }
  tps[$1,$3]=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  lat[$1,$3]=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out" | head -1)
  p99[$1,$3]=$(p99_of "$prefix".*)
  rm -f "$prefix".*
  printf '  %-26s %3s clients %12.0f tps %8.3f ms mean %8.3f ms p99\n' "$1" "$3" "${tps[$1,$3]}" "${lat[$1,$3]}" "${p99[$1,$3]}"
}
# redis <name> <clients> <key expression>: about SECONDS_PER_POINT seconds
run_redis() {
  local n out
  n=$((SECONDS_PER_POINT * 60000))
  out=$(redis-benchmark -p "$redis_port" -c "$2" -n "$n" -r 1000000 --csv \
        EVALSHA "$sha" 1 "$3" 1000000000 1000000000 1 1 2>&1 | tail -1)
  # "rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  tps[$1,$2]=$(awk -F'","' '{gsub(/"/, "", $2); print $2}' <<<"$out")
  lat[$1,$2]=$(awk -F'","' '{gsub(/"/, "", $3); print $3}' <<<"$out")
  p99[$1,$2]=$(awk -F'","' '{gsub(/"/, "", $7); print $7}' <<<"$out")
  printf '  %-26s %3s clients %12.0f tps %8.3f ms mean %8.3f ms p99\n' "$1" "$2" "${tps[$1,$2]}" "${lat[$1,$2]}" "${p99[$1,$2]}"
}

# Warm the 1M keys once so that the 1M-key points measure a full table.
rl_log "warming 1M keys"
q -c "SELECT count(*) FROM generate_series(1, 1000000) g, LATERAL allocate_tokens('k' || g, 1, 'high') a" >/dev/null
q -c "SELECT rate_limiter_flush()" >/dev/null

nolog='-c rate_limiter.usage_log=off'
workloads=(select1 alloc_hot alloc_hot_nolog alloc_10k alloc_1m alloc_1m_nolog check_hot check_hot_nolog enforce_hot
           plpgsql plpgsql_unlogged redis_gcra_hot redis_gcra_random select1_again)
rl_log "running ${#workloads[@]} workloads x ${#CLIENTS[@]} client counts x ${SECONDS_PER_POINT}s"
for c in "${CLIENTS[@]}"; do
  run_pgbench select1 "$work/select1.sql" "$c"
  run_pgbench alloc_hot "$work/alloc_hot.sql" "$c"
  run_pgbench alloc_hot_nolog "$work/alloc_hot.sql" "$c" "$nolog"
  run_pgbench alloc_10k "$work/alloc_10k.sql" "$c"
  run_pgbench alloc_1m "$work/alloc_1m.sql" "$c"
  run_pgbench alloc_1m_nolog "$work/alloc_1m.sql" "$c" "$nolog"
  run_pgbench check_hot "$work/check_hot.sql" "$c"
  run_pgbench check_hot_nolog "$work/check_hot.sql" "$c" "$nolog"
  run_pgbench enforce_hot "$work/enforce_hot.sql" "$c"
  run_pgbench plpgsql "$work/plpgsql_hot.sql" "$c"
  run_pgbench plpgsql_unlogged "$work/plpgsql_unlogged_hot.sql" "$c"
  run_redis redis_gcra_hot "$c" "gcra:hot"
  run_redis redis_gcra_random "$c" "gcra:__rand_int__"
  run_pgbench select1_again "$work/select1.sql" "$c"
done
q -c "SELECT rate_limiter_flush()" >/dev/null

# Does the async log keep up at peak?  SUSTAIN_SECONDS of allocate_tokens on
# the hot key at the largest client count, the flusher's lag sampled every
# second (its maximum is printed) and the synchronous fallbacks counted.
sustain_clients=${CLIENTS[-1]}
rl_log "sustained: alloc_hot, $sustain_clients clients, ${SUSTAIN_SECONDS}s"
fallbacks0=$(q -c "SELECT get_performance_metrics()->>'usage_sync_fallbacks'")
(pgbench -n -M prepared -j 2 -c "$sustain_clients" -T "$SUSTAIN_SECONDS" \
  -f "$root/$work/alloc_hot.sql" -h "$dir" -p "$port" -U postgres postgres >"$dir/sustain.out" 2>&1) &
sustain_pid=$!
max_lag=0
while kill -0 "$sustain_pid" 2>/dev/null; do
  l=$(q -c "SELECT get_performance_metrics()->>'usage_flush_lag_ms'" 2>/dev/null || echo 0)
  [ -n "$l" ] && awk -v a="$l" -v b="$max_lag" 'BEGIN { exit !(a > b) }' && max_lag=$l
  sleep 1
done
wait "$sustain_pid" || { cat "$dir/sustain.out"; rl_die "the sustained pgbench failed"; }
sustain_tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$dir/sustain.out" | head -1)
fallbacks=$(( $(q -c "SELECT get_performance_metrics()->>'usage_sync_fallbacks'") - fallbacks0 ))
q -c "SELECT rate_limiter_flush()" >/dev/null

# rate_limit_trigger on a COPY of COPY_ROWS rows (1000 users, one request
# each, default async log) against the same COPY into a table without the
# trigger; median of 3 rounds, each followed by a flush of the usage log
# (not timed: the COPY returns when its rows are queued).
rl_log "COPY of $COPY_ROWS rows with and without rate_limit_trigger"
q -c "SELECT set_default_user_rate_limit(1000000000000000, '3650 days')" >/dev/null
q <<SQL >/dev/null
CREATE TABLE bench_copy_plain (author text NOT NULL, body text);
CREATE TABLE bench_copy_limited (author text NOT NULL, body text);
CREATE TRIGGER bench_copy_limit BEFORE INSERT ON bench_copy_limited
  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'bench_copy');
COPY (SELECT 'k' || (g % 1000 + 1), 'row ' || g FROM generate_series(1, $COPY_ROWS) g) TO '$dir/copy.tsv';
SQL
copy_seconds() {
  q <<SQL | tail -1
TRUNCATE $1;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
COPY $1 FROM '$dir/copy.tsv';
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
SQL
  q -c "SELECT rate_limiter_flush()" >/dev/null
}
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
copy_plain=$(median3 "$(copy_seconds bench_copy_plain)" "$(copy_seconds bench_copy_plain)" "$(copy_seconds bench_copy_plain)")
copy_trigger=$(median3 "$(copy_seconds bench_copy_limited)" "$(copy_seconds bench_copy_limited)" "$(copy_seconds bench_copy_limited)")
for t in bench_copy_plain bench_copy_limited; do
  [ "$(q -c "SELECT count(*) FROM $t")" = "$COPY_ROWS" ] || rl_die "$t does not hold the $COPY_ROWS rows copied"
done

# Shared memory per key: the segment's actual size over max_keys.
seg=$(q -c "SELECT size FROM pg_shmem_allocations WHERE name = 'rate_limiter'")
max_keys=$(q -c "SHOW rate_limiter.max_keys")
keys=$(q -c "SELECT get_performance_metrics()->>'keys_in_use'")

# Single backend: per-call cost against a trivial SQL function.
q -c "CREATE FUNCTION trivial(text, bigint, text) RETURNS TABLE (ok boolean) LANGUAGE sql VOLATILE AS 'SELECT \$2 > 0'"
loop() {
  q <<SQL | tail -1
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT count(*) FROM generate_series(1, $LOOP_CALLS) g, LATERAL $1 x;
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
SQL
}
t_trivial=$(loop "trivial('k' || (g % 1000), 1, 'high')")
t_alloc=$(loop "allocate_tokens('k' || (g % 1000), 1, 'high')")
q -c "SELECT rate_limiter_flush()" >/dev/null

echo
echo "rate_limiter benchmark: $(nproc) cores, ${SECONDS_PER_POINT}s per point, pgbench -M prepared -j 2, redis-benchmark EVALSHA"
printf '%-26s %8s %12s %10s %10s %12s %12s\n' workload clients tps "mean ms" "p99 ms" "vs SELECT 1" "p99 ratio"
for w in "${workloads[@]}"; do
  for c in "${CLIENTS[@]}"; do
    awk -v w="$w" -v c="$c" -v t="${tps[$w,$c]}" -v l="${lat[$w,$c]}" -v p="${p99[$w,$c]}" \
        -v b="${tps[select1,$c]}" -v bp="${p99[select1,$c]}" \
      'BEGIN { printf "%-26s %8d %12.0f %10.3f %10.3f %12.2f %12.2f\n", w, c, t, l, p, t / b, (bp > 0 ? p / bp : 0) }'
  done
done
echo
for c in "${CLIENTS[@]}"; do
  awk -v c="$c" -v a="${tps[alloc_hot,$c]}" -v m="${tps[alloc_1m,$c]}" -v k="${tps[alloc_10k,$c]}" \
      -v r="${tps[redis_gcra_hot,$c]}" -v rr="${tps[redis_gcra_random,$c]}" -v p="${tps[plpgsql,$c]}" \
      -v ch="${tps[check_hot,$c]}" -v en="${tps[enforce_hot,$c]}" \
    'BEGIN { printf "clients %2d: vs Redis: alloc_hot %.2f, alloc_1m / random keys %.2f, check_hot %.2f, enforce_hot %.2f; alloc_hot / plpgsql %.1f; alloc_1m / alloc_10k %.2f\n", c, a / r, m / rr, ch / r, en / r, a / p, m / k }'
done
awk -v s="$seg" -v m="$max_keys" -v k="$keys" \
  'BEGIN { printf "shared memory: %d bytes for max_keys = %d: %.1f bytes per key (%d keys in use)\n", s, m, s / m, k }'
echo "usage log, alloc_hot at $sustain_clients clients for ${SUSTAIN_SECONDS}s: ${sustain_tps} tps, flush lag at most ${max_lag} ms (sampled each second), ${fallbacks} synchronous fallbacks"
awk -v n="$COPY_ROWS" -v a="$copy_plain" -v b="$copy_trigger" \
  'BEGIN { printf "COPY of %d rows (median of 3): %.3f s without a trigger, %.3f s with rate_limit_trigger, ratio %.2f\n", n, a, b, b / a }'
awk -v n="$LOOP_CALLS" -v t="$t_trivial" -v a="$t_alloc" \
  'BEGIN { printf "single backend, %d calls: trivial SQL function %.2f us/call, allocate_tokens (granted, async) %.2f us/call, ratio %.2f\n", n, t * 1e6 / n, a * 1e6 / n, a / t }'
