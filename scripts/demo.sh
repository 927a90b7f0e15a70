#!/usr/bin/env bash
# Quick start: builds and installs rate_limiter, starts a throwaway local
# PostgreSQL with the library preloaded, runs a short demo, and removes the
# server again.  Run as root on Debian 12:  bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

rl_require_root
rl_install_packages
rl_build_and_install

dir=$(mktemp -d /tmp/rate_limiter_demo.XXXXXX)
port=$(rl_free_port 54330)
trap 'rl_stop_server "$dir"; rm -rf "$dir"' EXIT
rl_log "starting a throwaway server on 127.0.0.1:$port"
rl_start_server "$dir" "$port"

rl_log "demo"
psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
\pset footer off
CREATE EXTENSION rate_limiter;

\echo '-- user123 gets 1000 tokens per day, and at most 5 requests per hour on chat/completions'
SELECT set_rate_limit('user123', 1000, '1 day');
SELECT set_user_rate_limit('user123', 5, '1 hour', 'chat/completions');

\echo '-- each request may take at most its priority share of what remains: high 50%, medium 30%, low 20%'
SELECT 'high' AS priority, success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('user123', 800, 'high', 'chat/completions', 'session_abc');
SELECT 'medium' AS priority, success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('user123', 800, 'medium', 'chat/completions', 'session_abc');
SELECT 'low' AS priority, success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('user123', 800, 'low', 'chat/completions', 'session_abc');
SELECT 'low, small' AS priority, success, tokens_allocated, tokens_remaining, reason
  FROM allocate_tokens('user123', 10, 'low', 'chat/completions', 'session_abc');

\echo '-- the 5th request of the hour is the last one; the 6th is denied'
SELECT success, tokens_allocated, requests_remaining, reason
  FROM allocate_tokens('user123', 10, 'high', 'chat/completions');
SELECT success, tokens_allocated, requests_remaining, reason, retry_after IS NOT NULL AS has_retry_after
  FROM allocate_tokens('user123', 10, 'high', 'chat/completions');

\echo '-- enforce_rate_limit raises SQLSTATE RL429 instead'
\set ON_ERROR_STOP off
SELECT * FROM enforce_rate_limit('user123', 'chat/completions');
\set ON_ERROR_STOP on

\echo '-- live status, read from the counters in shared memory'
SELECT scope, api_endpoint, limit_kind, "limit", used, remaining, reset_at
  FROM get_rate_limit_status('user123') ORDER BY scope, limit_kind;

\echo '-- usage history, read from token_usage: a background worker writes each call''s row'
\echo '-- shortly after the call, so first wait until the rows of the calls above are written'
SELECT rate_limiter_flush_usage() \gset
SELECT jsonb_pretty(get_rate_limit_history('user123') - 'since') AS history;
SELECT jsonb_pretty(get_performance_metrics()) AS metrics;
SQL
rl_log "demo finished; the throwaway server is being removed"
