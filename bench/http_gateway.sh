#!/usr/bin/env bash
# The HTTP gateway example (contrib/http_gateway) under wrk: requests/s and
# latency percentiles through the gateway with the limiter calls (reserve,
# settle, headers: three round trips to PostgreSQL per request) and without
# any (--no-limiter), and the overhead ratio.  Run as root:
#
#   bash bench/http_gateway.sh            10 s per point, 16 connections
#   BENCH_SECONDS=3 bash bench/http_gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
SECONDS_PER_POINT=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
rl_require_root
rl_install_packages
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || rl_die "wrk could not be installed"
rl_build_and_install
dir=$(mktemp -d /tmp/rate_limiter_http_bench.XXXXXX)
port=$(rl_free_port 54390)
http_port=$(rl_free_port 58390)
gw_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null || true
  rl_stop_server "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
rl_start_server "$dir" "$port"
psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -c "CREATE EXTENSION rate_limiter" \
  -c "SELECT set_rate_limit('bench_user', 1000000000000000, '3650 days', 'chat/completions')" >/dev/null
cat >"$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model": "fake", "max_tokens": 64, "fake_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench_user"
LUA
declare -A rps p50 p99
point() {  # point <name> [gateway options]
  local name=$1 out
  shift
  runuser -u "$RL_TEST_USER" -- bash contrib/http_gateway/run.sh --port "$http_port" \
    --dsn "host=127.0.0.1 port=$port dbname=postgres user=postgres" "$@" >"$dir/gateway_$name.log" 2>&1 &
  gw_pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$http_port/v1/health" && break; sleep 0.1; done
  wrk -t 2 -c "$CONNECTIONS" -d 2s -s "$dir/post.lua" "http://127.0.0.1:$http_port/v1/chat/completions" >/dev/null
  out=$(wrk -t 2 -c "$CONNECTIONS" -d "${SECONDS_PER_POINT}s" --latency -s "$dir/post.lua" \
        "http://127.0.0.1:$http_port/v1/chat/completions")
  grep -qE 'Non-2xx' <<<"$out" && { echo "$out"; rl_die "$name: some requests failed"; }
  rps[$name]=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p50[$name]=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99[$name]=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=""
}
rl_log "wrk, $CONNECTIONS connections, ${SECONDS_PER_POINT}s per point"
point without --no-limiter
point with
printf '\n%-34s %12s %10s %10s\n' "gateway" "requests/s" p50 p99
printf '%-34s %12s %10s %10s\n' "without limiter calls" "${rps[without]}" "${p50[without]}" "${p99[without]}"
printf '%-34s %12s %10s %10s\n' "with allocate + settle + headers" "${rps[with]}" "${p50[with]}" "${p99[with]}"
awk -v a="${rps[without]}" -v b="${rps[with]}" 'BEGIN { printf "throughput with the limiter: %.2f of without (overhead %.0f%%)\n", b / a, (1 - b / a) * 100 }'
