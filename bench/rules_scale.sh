#!/usr/bin/env bash
# Rules at scale: what 10, 100,000 and 1,000,000 per-user rules cost, all in
# one run on one throwaway server.  Run as root:
#
#   bash bench/rules_scale.sh                  full run: 10, 100k and 1M rules
#   BENCH_QUICK=1 bash bench/rules_scale.sh    10 and 100k only (a few minutes)
#   RL_PG_BIN=/tmp/pgp_bench/lib/postgresql/15/bin bash bench/rules_scale.sh
#                                              a private copy of the server tree
#
# Other knobs: BENCH_SAMPLES (samples per median, default 9), BENCH_RESTARTS
# (restarts per point for the load cost, default 3), BENCH_USAGE_ROWS (usage
# rows for the second crash rebuild, default 1M, quick 100k),
# BENCH_UPKEEP_CAP (seconds allowed to one counter snapshot, default 60),
# BENCH_DB (the database of the rules, default bench; BENCH_DB=postgres puts
# them where the flusher works, see below), BENCH_STOP_TIMEOUT (seconds a
# fast shutdown may take before -m immediate, default 60).
#
# The server has rate_limiter.max_rules = 2500000, max_keys = 3000000 and
# role_key_share = 1.  The rules live in database "bench", which is not
# rate_limiter.database, so the flusher leaves them alone: its counter
# snapshot is timed separately (with a cap), because at large rule counts a
# background snapshot would take one of the two cores for minutes and keep
# a fast shutdown waiting.  Calls there write their usage rows
# synchronously; that costs the same at every rule count.
#
# N rules are N/2 users with a token quota (1M tokens a day) and a request
# limit (1e9 a day) each; every tenth user (g % 10 = 5) has them on one
# endpoint instead.  Calls go to users with user-wide rules, with an
# endpoint argument, so every scope is looked up.  Per point it prints:
#  - a new backend: wall time of `psql -c 'SELECT 1'` and of `psql -c
#    'SELECT * FROM allocate_tokens(...)'` (connection included) and their
#    difference, and the statement times (\timing) of both first statements;
#  - an open session after another session's set_rate_limit: the warm call
#    before the change and the first call after it (\timing), and whether
#    the call saw the new limit;
#  - the load after a clean restart: the first call of the first connection
#    (\timing), the loader's own DEBUG1 figure, and how long the fast
#    shutdown took;
#  - shared memory per rule, and backend memory after a first call;
#  - the counter rebuild after a crash (kill -9 of a backend): with an empty
#    token_usage and with BENCH_USAGE_ROWS rows;
#  - one counter snapshot (the flusher's upkeep every 10 s), capped.
# Then the set_rate_limit throughput (one statement) and INSERT ... SELECT
# into token_limits (against the same INSERT into a plain copy of the table)
# for 100k and 1M rules, and a summary table.  Medians everywhere: the
# machine is small and shared.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

if [ -n "${BENCH_QUICK:-}" ]; then
  POINTS=(10 100000)
  THROUGHPUT=(100000)
  USAGE_ROWS=${BENCH_USAGE_ROWS:-100000}
  UPKEEP_CAP=${BENCH_UPKEEP_CAP:-20}
  SAMPLES=${BENCH_SAMPLES:-5}
  RESTARTS=${BENCH_RESTARTS:-2}
else
  POINTS=(10 100000 1000000)
  THROUGHPUT=(100000 1000000)
  USAGE_ROWS=${BENCH_USAGE_ROWS:-1000000}
  UPKEEP_CAP=${BENCH_UPKEEP_CAP:-60}
  SAMPLES=${BENCH_SAMPLES:-9}
  RESTARTS=${BENCH_RESTARTS:-3}
fi
MAX_RULES=2500000
MAX_KEYS=3000000
DB=${BENCH_DB:-bench}

rl_require_root
rl_install_packages
rl_build_and_install

dir=$(mktemp -d /tmp/rate_limiter_rules_bench.XXXXXX)
port=$(rl_free_port 54380)
victim=""
# Fast shutdown, else (it did not finish in STOP_TIMEOUT seconds) immediate.
STOP_TIMEOUT=${BENCH_STOP_TIMEOUT:-60}
pgctl() { runuser -u "$RL_TEST_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" "$@"; }
stop_server() {
  [ -f "$dir/data/postmaster.pid" ] || return 0
  pgctl -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 && return 0
  echo "  !! fast shutdown did not finish within ${STOP_TIMEOUT}s: stopping with -m immediate" >&2
  pgctl -m immediate -w stop >/dev/null 2>&1 || true
  return 1
}
cleanup() {
  [ -n "$victim" ] && kill "$victim" 2>/dev/null || true
  stop_server || true
  rm -rf "$dir"
}
trap cleanup EXIT
rl_start_server "$dir" "$port" "rate_limiter.max_rules = $MAX_RULES" "rate_limiter.max_keys = $MAX_KEYS" \
  "rate_limiter.role_key_share = 1" "shared_buffers = 256MB" "max_wal_size = 4GB" "checkpoint_timeout = 30min"
start_server() { pgctl -l "$dir/server.log" -w -t 300 start >/dev/null || { tail -20 "$dir/server.log"; rl_die "the server did not start"; }; }

psql_db() { local db=$1; shift; psql -X -q -t -A -h "$dir" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }
q() { psql_db "$DB" "$@"; }
qp() { psql_db postgres "$@"; }
metric() { q -c "SELECT get_performance_metrics()->>'$1'"; }
# The number in a \timing line, in ms.
timing_ms() { sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }
elapsed_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) * 1000 }'; }
fmt() { awk -v x="$1" -v d="${2:-3}" 'BEGIN { if (x == "" || x == "nan") print "n/a"; else printf "%.*f\n", d, x }'; }
wait_ready() {
  for _ in $(seq 600); do
    qp -c "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  rl_die "the server did not come back"
}
log_mark() { wc -l <"$dir/server.log"; }
log_since() { tail -n +"$(($1 + 1))" "$dir/server.log"; }

# A user with user-wide rules (not one of the g % 10 = 5 endpoint users)
# among the first $1 / 2, different for each sample number $2.
pick_user() {
  local users=$(($1 / 2)) k
  k=$((1 + ($2 * 104729 + 17) % users))
  [ $((k % 10)) -eq 5 ] && k=$((k > 1 ? k - 1 : k + 1))
  echo "u$k"
}
call_sql() { echo "SELECT * FROM allocate_tokens('$1', 1, 'low', 'e0')"; }

declare -A R   # results: R[metric,point]

###############################################################################
rl_log "set_rate_limit throughput (database tp)"
qp -c "CREATE DATABASE tp" >/dev/null
tp() { psql_db tp "$@"; }
tp -c "CREATE EXTENSION rate_limiter" \
   -c "CREATE TABLE plain_limits (LIKE token_limits INCLUDING DEFAULTS)" >/dev/null
# A call loads the installation's rules, so that the commits below write
# through to the shared table (after a TRUNCATE they are read by the next
# load instead).
tp_load() { tp -c "SELECT * FROM allocate_tokens('warm', 1, 'low')" >/dev/null; }
tp_rules() { tp -c "SELECT get_performance_metrics()->>'rules_in_use'"; }
for n in "${THROUGHPUT[@]}"; do
  tp_load
  t0=$EPOCHREALTIME
  tp -c "SELECT count(set_rate_limit('u' || g, 1000, '1 day')) FROM generate_series(1, $n) g" >/dev/null
  t1=$EPOCHREALTIME
  R[tp_set,$n]=$(elapsed_ms "$t0" "$t1")
  R[tp_set_rules,$n]=$(tp_rules)
  t0=$EPOCHREALTIME; tp -c "TRUNCATE token_limits" >/dev/null; t1=$EPOCHREALTIME
  R[tp_truncate,$n]=$(elapsed_ms "$t0" "$t1")
  R[tp_truncate_rules,$n]=$(tp_rules)
  tp_load
  ins="SELECT 'u' || g, 1000, interval '1 day' FROM generate_series(1, $n) g"
  t0=$EPOCHREALTIME
  tp -c "INSERT INTO token_limits (user_id, max_tokens_per_period, period_interval) $ins" >/dev/null
  t1=$EPOCHREALTIME
  R[tp_insert,$n]=$(elapsed_ms "$t0" "$t1")
  R[tp_insert_rules,$n]=$(tp_rules)
  t0=$EPOCHREALTIME
  tp -c "INSERT INTO plain_limits (user_id, max_tokens_per_period, period_interval) $ins" >/dev/null
  t1=$EPOCHREALTIME
  R[tp_plain,$n]=$(elapsed_ms "$t0" "$t1")
  tp -c "TRUNCATE plain_limits" >/dev/null
  awk -v n="$n" -v s="${R[tp_set,$n]}" -v i="${R[tp_insert,$n]}" -v p="${R[tp_plain,$n]}" \
      -v sr="${R[tp_set_rules,$n]}" -v ir="${R[tp_insert_rules,$n]}" -v t="${R[tp_truncate,$n]}" \
      -v tr="${R[tp_truncate_rules,$n]}" 'BEGIN {
    printf "  %8d rules: set_rate_limit %8.2f s (%7.0f rows/s, %d rules in shared memory after commit)\n", n, s / 1000, n * 1000 / s, sr
    printf "  %8d rules: TRUNCATE token_limits %.3f s (%d rules left in shared memory)\n", n, t / 1000, tr
    printf "  %8d rules: INSERT ... SELECT %6.2f s (%7.0f rows/s, %d in shared memory); plain table %.2f s (%.0f rows/s): x%.1f\n", n, i / 1000, n * 1000 / i, ir, p / 1000, n * 1000 / p, i / p }'
  # The last INSERT stays for the DROP DATABASE below.
  [ "$n" = "${THROUGHPUT[-1]}" ] || tp -c "TRUNCATE token_limits" >/dev/null
done
R[tp_before_drop,all]=$(tp_rules)
t0=$EPOCHREALTIME; qp -c "DROP DATABASE tp" >/dev/null; t1=$EPOCHREALTIME
R[tp_drop,all]=$(elapsed_ms "$t0" "$t1")

###############################################################################
[ "$DB" = postgres ] || qp -c "CREATE DATABASE $DB" >/dev/null
q -c "CREATE EXTENSION rate_limiter" >/dev/null
R[tp_after_drop,all]=$(q -c "SELECT get_performance_metrics()->>'rules_in_use'")
echo "  DROP DATABASE tp with ${R[tp_before_drop,all]} rules in shared memory: $(fmt "${R[tp_drop,all]}" 0) ms;" \
     "rules_in_use afterwards (seen from a new installation): ${R[tp_after_drop,all]}"

rules_now=0
# Grows the rule tables of $DB to $1 rules (half tokens, half requests).
grow_rules() {
  local from=$((rules_now / 2 + 1)) to=$(($1 / 2)) t0 t1
  local ep="CASE WHEN g % 10 = 5 THEN 'e' || (g % 7) END"
  t0=$EPOCHREALTIME
  q -c "INSERT INTO token_limits (user_id, api_endpoint, max_tokens_per_period, period_interval)
          SELECT 'u' || g, $ep, 1000000, '1 day' FROM generate_series($from, $to) g" \
    -c "INSERT INTO request_limits (user_id, api_endpoint, max_requests_per_window, window_duration)
          SELECT 'u' || g, $ep, 1000000000, '1 day' FROM generate_series($from, $to) g" >/dev/null
  t1=$EPOCHREALTIME
  rules_now=$1
  echo "  rule tables grown to $1 rules in $(fmt "$(elapsed_ms "$t0" "$t1")" 0) ms (direct INSERT ... SELECT)"
}

# Starts a backend that sleeps, kills it with SIGKILL: the postmaster resets
# shared memory (a crash restart).
crash_server() {
  psql -X -q -h "$dir" -p "$port" -U postgres -d "$DB" -c "SET application_name = 'rl_bench_victim'" \
    -c "SELECT pg_sleep(3600)" >/dev/null 2>&1 &
  victim=$!
  local pid=""
  for _ in $(seq 100); do
    pid=$(qp -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'rl_bench_victim'")
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || rl_die "the victim backend did not show up"
  pgctl kill KILL "$pid"
  wait "$victim" 2>/dev/null || true
  victim=""
  sleep 0.5
  wait_ready
}

# After a crash or restart: the first call of the first connection, with
# the loader's DEBUG1 line.  Prints "<statement ms> <load s or n/a>".
first_call_after() {
  local out err ms load
  err=$(mktemp)
  out=$(q -c "SET client_min_messages = debug1" -c '\timing on' -c "$(call_sql "$(pick_user "$1" 999)")" 2>"$err")
  ms=$(timing_ms <<<"$out" | tail -1)
  load=$(sed -n 's/.*rate_limiter: loaded [0-9]* rules of database "[^"]*" in \([0-9.]*\) s.*/\1/p' "$err" | tail -1)
  rm -f "$err"
  echo "$ms ${load:-n/a}"
}

run_point() {
  local n=$1 s u out a b
  rl_log "$n rules"
  grow_rules "$n"
  q -c "SELECT count(*) FROM allocate_tokens('$(pick_user "$n" 0)', 1, 'low', 'e0')" >/dev/null
  R[rules_in_use,$n]=$(metric rules_in_use)
  local sql0
  sql0=$(metric rule_sql_lookups)

  # Load after a clean restart, and the fast shutdown time.
  local loads=() loaders=() stops=()
  for s in $(seq "$RESTARTS"); do
    a=$EPOCHREALTIME
    stop_server || R[stop_failed,$n]=yes
    b=$EPOCHREALTIME
    stops+=("$(elapsed_ms "$a" "$b")")
    start_server
    read -r ms load <<<"$(first_call_after "$n")"
    loads+=("$ms"); loaders+=("$load")
  done
  R[restart_first,$n]=$(median "${loads[@]}")
  R[restart_loader,$n]=$(median "${loaders[@]}")
  R[stop_fast,$n]=$(median "${stops[@]}")
  echo "  clean restart: first call $(fmt "${R[restart_first,$n]}") ms (samples: ${loads[*]}), loader says ${loaders[*]} s; fast shutdown ${stops[*]} ms"

  # A new backend: whole connections, then statement times.
  local w1=() wa=() s1=() sa=() mem=()
  for s in $(seq "$SAMPLES"); do
    u=$(pick_user "$n" "$s")
    a=$EPOCHREALTIME; q -c "SELECT 1" >/dev/null; b=$EPOCHREALTIME
    w1+=("$(elapsed_ms "$a" "$b")")
    a=$EPOCHREALTIME; q -c "$(call_sql "$u")" >/dev/null; b=$EPOCHREALTIME
    wa+=("$(elapsed_ms "$a" "$b")")
    s1+=("$(q -c '\timing on' -c "SELECT 1" | timing_ms | tail -1)")
    out=$(q -c '\timing on' -c "$(call_sql "$(pick_user "$n" $((s + 100)))")" \
            -c '\timing off' -c "SELECT sum(total_bytes) FROM pg_backend_memory_contexts")
    sa+=("$(timing_ms <<<"$out" | head -1)")
    mem+=("$(tail -1 <<<"$out")")
  done
  R[wall_select1,$n]=$(median "${w1[@]}")
  R[wall_alloc,$n]=$(median "${wa[@]}")
  R[stmt_select1,$n]=$(median "${s1[@]}")
  R[stmt_alloc,$n]=$(median "${sa[@]}")
  R[backend_mem,$n]=$(median "${mem[@]}")
  echo "  new backend: psql -c 'SELECT 1' $(fmt "${R[wall_select1,$n]}") ms, psql -c allocate_tokens $(fmt "${R[wall_alloc,$n]}") ms;" \
       "first statement: SELECT 1 $(fmt "${R[stmt_select1,$n]}") ms, allocate_tokens $(fmt "${R[stmt_alloc,$n]}") ms (samples: ${sa[*]})"

  # An open session A; session B changes one user's rule between A's calls.
  local script="" ok=0
  script+='\timing on'$'\n'
  script+="$(call_sql "$(pick_user "$n" 500)");"$'\n'
  for s in $(seq "$SAMPLES"); do
    u=$(pick_user "$n" $((s + 200)))
    script+="SELECT 'warm', \"limit\" FROM allocate_tokens('$u', 1, 'low', 'e0');"$'\n'
    script+="\\! psql -X -q -h '$dir' -p $port -U postgres -d $DB -c \"SELECT set_rate_limit('$u', $((2000000 + s)), '1 day')\" >/dev/null"$'\n'
    script+="SELECT 'after', \"limit\", $((2000000 + s)) FROM allocate_tokens('$u', 1, 'low', 'e0');"$'\n'
  done
  script+='\timing off'$'\n'"SELECT 'mem', sum(total_bytes) FROM pg_backend_memory_contexts;"$'\n'
  out=$(q <<<"$script")
  local warm=() after=()
  mapfile -t warm < <(awk '/^warm\|/ {getline; sub(/^Time: /, ""); print $1}' <<<"$out")
  mapfile -t after < <(awk '/^after\|/ {getline; sub(/^Time: /, ""); print $1}' <<<"$out")
  ok=$(awk -F'|' '/^after\|/ && $2 == $3 {n++} END {print n + 0}' <<<"$out")
  R[open_warm,$n]=$(median "${warm[@]}")
  R[open_after,$n]=$(median "${after[@]}")
  R[open_seen,$n]="$ok/$SAMPLES"
  R[open_mem,$n]=$(awk -F'|' '/^mem\|/ {print $2}' <<<"$out")
  echo "  open session: warm call $(fmt "${R[open_warm,$n]}") ms, first call after another session's set_rate_limit" \
       "$(fmt "${R[open_after,$n]}") ms (samples: ${after[*]}); new limit seen ${R[open_seen,$n]}"

  # Memory.
  R[shm_rules,$n]=$(q -c "SELECT size FROM pg_shmem_allocations WHERE name = 'rate_limiter rules'")
  R[rules_capacity,$n]=$(metric rules_capacity)
  R[rules_in_use,$n]=$(metric rules_in_use)
  R[overflowed,$n]=$(metric rules_overflowed_databases)
  R[sql_lookups,$n]=$(($(metric rule_sql_lookups) - sql0))
  echo "  shared memory: 'rate_limiter rules' ${R[shm_rules,$n]} bytes, $(fmt "$(awk -v a="${R[shm_rules,$n]}" -v b="$MAX_RULES" 'BEGIN {print a / b}')" 1) per max_rules," \
       "$(fmt "$(awk -v a="${R[shm_rules,$n]}" -v b="${R[rules_in_use,$n]}" 'BEGIN {print a / b}')" 1) per rule in use (${R[rules_in_use,$n]} in use)"
  echo "  backend memory after a first call ${R[backend_mem,$n]} bytes; open session after $SAMPLES rule changes ${R[open_mem,$n]} bytes"
  echo "  rule_sql_lookups during the point: ${R[sql_lookups,$n]}; overflowed databases: ${R[overflowed,$n]}"

  # Crash rebuild: empty token_usage, then USAGE_ROWS rows.
  local m
  for variant in empty rows; do
    q -c "TRUNCATE token_usage" >/dev/null
    if [ "$variant" = rows ]; then
      q -c "INSERT INTO token_usage (user_id, tokens_used, priority_level, \"timestamp\")
              SELECT 'u' || (1 + g % ($n / 2)), 1, 'low', now() - make_interval(secs => g % 3600)
              FROM generate_series(1, $USAGE_ROWS) g" >/dev/null
    fi
    m=$(log_mark)
    crash_server
    read -r ms load <<<"$(first_call_after "$n")"
    R[crash_first_$variant,$n]=$ms
    R[crash_load_$variant,$n]=$load
    R[crash_rebuild_$variant,$n]=$(log_since "$m" | sed -n 's/.*rate_limiter: rebuilt [0-9]* counters of database "'"$DB"'" from [0-9]* token_usage rows in \([0-9.]*\) s.*/\1/p' | tail -1)
    R[crash_line_$variant,$n]=$(log_since "$m" | grep -o 'rebuilt [0-9]* counters of database "'"$DB"'" from [0-9]* token_usage rows' | tail -1)
    echo "  crash ($([ "$variant" = rows ] && echo "$USAGE_ROWS usage rows" || echo "empty token_usage")): first call $(fmt "$ms") ms; rules loaded in ${load} s; ${R[crash_line_$variant,$n]:-no rebuild line} in ${R[crash_rebuild_$variant,$n]:-?} s"
  done
  q -c "TRUNCATE token_usage" >/dev/null

  # The flusher's upkeep: one counter snapshot, capped.
  a=$EPOCHREALTIME
  if q -c "SET statement_timeout = '${UPKEEP_CAP}s'" -c "SELECT rate_limiter_snapshot_counters(true)" >/dev/null 2>&1; then
    b=$EPOCHREALTIME
    R[upkeep,$n]=$(elapsed_ms "$a" "$b")
    echo "  counter snapshot (flusher upkeep, every 10 s): $(fmt "$(awk -v x="${R[upkeep,$n]}" 'BEGIN {print x / 1000}')") s"
  else
    R[upkeep,$n]=">${UPKEEP_CAP}000"
    echo "  counter snapshot (flusher upkeep, every 10 s): did not finish within ${UPKEEP_CAP} s (cancelled)"
  fi
}

for n in "${POINTS[@]}"; do run_point "$n"; done

###############################################################################
echo
echo "rate_limiter rules at scale: $(nproc) cores, max_rules = $MAX_RULES, max_keys = $MAX_KEYS," \
     "medians of $SAMPLES samples ($RESTARTS restarts), database \"$DB\"" \
     "$([ "$DB" = "$(qp -c 'SHOW rate_limiter.database')" ] && echo "(the flusher's)" || echo "(usage rows written synchronously)")"
row() {
  local label=$1 key=$2 digits=${3:-3} n v
  printf '%-62s' "$label"
  for n in "${POINTS[@]}"; do
    v=${R[$key,$n]:-}
    if [[ "$v" =~ ^[0-9.eE+-]+$ ]]; then printf ' %13s' "$(fmt "$v" "$digits")"; else printf ' %13s' "${v:-n/a}"; fi
  done
  echo
}
for n in "${POINTS[@]}"; do
  R[wall_diff,$n]=$(awk -v a="${R[wall_alloc,$n]}" -v b="${R[wall_select1,$n]}" 'BEGIN {print a - b}')
  R[stmt_vs10,$n]=$(awk -v a="${R[stmt_alloc,$n]}" -v b="${R[stmt_alloc,${POINTS[0]}]}" 'BEGIN {print a - b}')
  R[open_vs10,$n]=$(awk -v a="${R[open_after,$n]}" -v b="${R[open_after,${POINTS[0]}]}" 'BEGIN {print a - b}')
  R[open_diff,$n]=$(awk -v a="${R[open_after,$n]}" -v b="${R[open_warm,$n]}" 'BEGIN {print a - b}')
  R[load_cost,$n]=$(awk -v a="${R[restart_first,$n]}" -v b="${R[stmt_alloc,$n]}" 'BEGIN {print a - b}')
  R[shm_per_max,$n]=$(awk -v a="${R[shm_rules,$n]}" -v b="$MAX_RULES" 'BEGIN {print a / b}')
  R[shm_per_use,$n]=$(awk -v a="${R[shm_rules,$n]}" -v b="${R[rules_in_use,$n]}" 'BEGIN {print a / b}')
  R[mem_per_rule,$n]=$(awk -v a="${R[backend_mem,$n]}" -v b="${R[backend_mem,${POINTS[0]}]}" -v n="$n" -v n0="${POINTS[0]}" \
    'BEGIN { if (n == n0) print 0; else print (a - b) / (n - n0) }')
  R[open_mem_per_rule,$n]=$(awk -v a="${R[open_mem,$n]}" -v b="${R[open_mem,${POINTS[0]}]}" -v n="$n" -v n0="${POINTS[0]}" \
    'BEGIN { if (n == n0) print 0; else print (a - b) / (n - n0) }')
  R[upkeep_s,$n]=$(awk -v x="${R[upkeep,$n]}" 'BEGIN { if (x ~ /^>/) { sub(/^>/, "", x); printf ">%d", x / 1000 } else print x / 1000 }')
done
printf '%-62s' "rules (token_limits + request_limits rows)"; for n in "${POINTS[@]}"; do printf ' %13s' "$n"; done; echo
row "rules_in_use (shared table, every installation)" rules_in_use 0
row "new backend: psql -c 'SELECT 1', ms (wall)" wall_select1
row "new backend: psql -c allocate_tokens, ms (wall)" wall_alloc
row "  difference, ms" wall_diff
row "new backend: first SELECT 1, ms (\\timing)" stmt_select1
row "new backend: first allocate_tokens, ms (\\timing)" stmt_alloc
row "  against 10 rules, ms" stmt_vs10
row "open session: warm allocate_tokens, ms" open_warm
row "open session: first call after another's set_rate_limit, ms" open_after
row "  against the warm call, ms" open_diff
row "  against 10 rules, ms" open_vs10
row "open session: calls that saw the new limit" open_seen
row "clean restart: first call (loads the rules), ms" restart_first
row "  minus a new backend's first call: load cost, ms" load_cost
row "  the loader's own figure (DEBUG1), s" restart_loader
row "fast shutdown, ms" stop_fast 0
row "shared memory 'rate_limiter rules', bytes" shm_rules 0
row "  per max_rules, bytes" shm_per_max 1
row "  per rule in use, bytes" shm_per_use 1
row "backend memory after its first call, bytes" backend_mem 0
row "  growth per rule against 10 rules, bytes" mem_per_rule 4
row "open session after the rule changes, bytes" open_mem 0
row "  growth per rule against 10 rules, bytes" open_mem_per_rule 4
row "rule lookups that ran SQL (rule_sql_lookups)" sql_lookups 0
row "crash, empty token_usage: first call, ms" crash_first_empty
row "  rules loaded in, s" crash_load_empty
row "  counters rebuilt in, s" crash_rebuild_empty
row "crash, $USAGE_ROWS usage rows: first call, ms" crash_first_rows
row "  rules loaded in, s" crash_load_rows
row "  counters rebuilt in, s" crash_rebuild_rows
row "counter snapshot (flusher upkeep every 10 s), s" upkeep_s
echo
printf '%-40s %12s %12s %14s %12s\n' "set_rate_limit throughput" rules seconds rows/s "in shm"
for n in "${THROUGHPUT[@]}"; do
  awk -v n="$n" -v s="${R[tp_set,$n]}" -v i="${R[tp_insert,$n]}" -v p="${R[tp_plain,$n]}" \
      -v sr="${R[tp_set_rules,$n]}" -v ir="${R[tp_insert_rules,$n]}" 'BEGIN {
    printf "%-40s %12d %12.2f %14.0f %12d\n", "SELECT set_rate_limit(...) FROM gs", n, s / 1000, n * 1000 / s, sr
    printf "%-40s %12d %12.2f %14.0f %12d\n", "INSERT INTO token_limits SELECT", n, i / 1000, n * 1000 / i, ir
    printf "%-40s %12d %12.2f %14.0f %12s\n", "INSERT INTO a plain copy (no triggers)", n, p / 1000, n * 1000 / p, "-"
    printf "%-40s %12s %12.2f\n", "  token_limits / plain copy", "", i / p }'
done
echo "DROP DATABASE tp: rules_in_use ${R[tp_before_drop,all]} before, ${R[tp_after_drop,all]} after ($(fmt "${R[tp_drop,all]}" 0) ms)"
