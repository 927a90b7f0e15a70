#!/usr/bin/env bash
# Runs every test suite of rate_limiter and ends with "N passed, N failed".
# Run as root on Debian 12:  bash scripts/test.sh
#
#   unit        GoogleTest suite of the pure C++ core (no server)
#   regress     pg_regress: sql/*.sql against expected/*.out
#   isolation   isolation tester: test/specs/*.spec
#   tap         PostgreSQL::Test::Cluster: test/t/*.pl (preload, lock timeout, pg_dump)
#   pgtap       pg_prove: test/pgtap/*.sql (exact allocation numbers)
#   stress      32 pgbench sessions on one key, exact invariants afterwards
#   fuzz        libFuzzer targets test/fuzz/*, 60 s in all, -seed=1 (one test per target)
#   lint        clang-tidy and cppcheck over src/ and include/, the PGXN
#               packaging (META.json against the control file, the make dist
#               archive), and the include layers of src/pg
#               (scripts/check_layers.py), the per-limit option list
#               (scripts/check_options.py), clang-format; one test per tool
#   sqlfuzz     test/fuzz/sql_fuzz.py: 10,000 seeded random calls of every SQL
#               function; no XX error, no server restart
#   asan        regress and isolation again with an ASan+UBSan build, installed
#               into a private copy of the PostgreSQL tree; every sanitizer
#               report counts as a failure
#   model       test/model/accounting_model.py: model-based randomized test of
#               the accounting (8 sessions, admin changes, restarts, kill -9),
#               fixed seed, about 2-3 minutes; one test per invariant checked
#   http        test/http/gateway_test.py: the HTTP gateway example
#               (contrib/http_gateway) on its own cluster, real requests:
#               200/429 sequences, headers, settle after a stream, 503
#
# Each suite counts its test cases; a suite that cannot run counts as one
# failure.  RL_SUITES="unit regress" runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

rl_require_root
rl_install_packages
rl_build_and_install

SUITES=${RL_SUITES:-"unit regress isolation tap pgtap stress sqlfuzz model http fuzz lint asan"}
stage=$(rl_stage_tree)
server_dir=$(mktemp -d /tmp/rate_limiter_test.XXXXXX)
logs=$(mktemp -d /tmp/rate_limiter_logs.XXXXXX)
cleanup() { rl_stop_server "$server_dir"; rm -rf "$server_dir" "$stage"; }
trap cleanup EXIT

total_pass=0
total_fail=0
summary=()
record() {  # record <suite> <passed> <failed>
  total_pass=$((total_pass + $2))
  total_fail=$((total_fail + $3))
  summary+=("$(printf '%-10s %5d passed, %d failed' "$1" "$2" "$3")")
}
count() { grep -cE "$1" "$2" 2>/dev/null || true; }
as_test_user() { runuser -u "$RL_TEST_USER" -- "$@"; }

run_unit() {
  rl_log "unit: GoogleTest"
  make -s test/unit/run_unit_tests >"$logs/unit.log" 2>&1
  ./test/unit/run_unit_tests >>"$logs/unit.log" 2>&1
  local rc=$? pass fail
  pass=$(count '^\[       OK \]' "$logs/unit.log")
  fail=$(count '^\[  FAILED  \] [A-Za-z]' "$logs/unit.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  tail -3 "$logs/unit.log"
  record unit "$pass" "$fail"
}

# make installcheck in the staged tree, restricted to one kind of suite.
installcheck() {  # installcheck <log> <make variables...>
  local log=$1
  shift
  (cd "$stage" && as_test_user make installcheck PG_CONFIG="$PG_BIN/pg_config" "$@") >"$log" 2>&1
}

# pg_regress and the isolation tester report "... ok" / "... FAILED" per test.
run_regress_style() {  # run_regress_style <suite> <diffs file> <make variables...>
  local suite=$1 diffs=$2
  shift 2
  installcheck "$logs/$suite.log" "$@"
  local rc=$? pass fail
  pass=$(count '\.\.\. ok' "$logs/$suite.log")
  fail=$(count 'FAILED' "$logs/$suite.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  grep -E 'tests|FAILED' "$logs/$suite.log" | tail -3
  [ "$fail" -gt 0 ] && [ -f "$stage/$diffs" ] && head -80 "$stage/$diffs"
  record "$suite" "$pass" "$fail"
}

run_regress() {
  rl_log "regress: pg_regress"
  run_regress_style regress regression.diffs ISOLATION= TAP_TESTS=
}

run_isolation() {
  rl_log "isolation: isolation tester"
  run_regress_style isolation output_iso/regression.diffs REGRESS= TAP_TESTS=
}

# TAP producers (prove -v, pg_prove -v) print "ok N" / "not ok N" per test.
record_tap_log() {  # record_tap_log <suite> <log> <exit code>
  local pass fail
  pass=$(count '^ok [0-9]' "$2")
  fail=$(count '^not ok [0-9]' "$2")
  [ "$3" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  grep -E '^(Files=|Result:)' "$2"
  [ "$fail" -gt 0 ] && grep -B2 -A8 '^not ok' "$2" | head -60
  record "$1" "$pass" "$fail"
}

run_tap() {
  rl_log "tap: PostgreSQL::Test::Cluster"
  installcheck "$logs/tap.log" REGRESS= ISOLATION= PROVE_FLAGS=-v
  local rc=$? t
  # A test that dies (a safe_psql error) says why only in its own log,
  # which goes with the staged tree: keep the logs and show the end of
  # each failed test's.
  if [ "$rc" -ne 0 ]; then
    cp -r "$stage/tmp_check/log" "$logs/tap_logs" 2>/dev/null
    for t in $(grep -oE '^test/t/[0-9a-z_]+\.pl +\(Wstat' "$logs/tap.log" | sed -E 's|test/t/([0-9a-z_]+)\.pl.*|\1|'); do
      echo "--- end of regress_log_$t:"
      tail -25 "$stage/tmp_check/log/regress_log_$t" 2>/dev/null
    done
  fi
  record_tap_log tap "$logs/tap.log" "$rc"
}

server_port=""
ensure_server() {
  [ -n "$server_port" ] && return 0
  server_port=$(rl_free_port 54340)
  rl_start_server "$server_dir" "$server_port" "rate_limiter.max_keys = 10000" "max_connections = 60"
  psql_server -q -c 'CREATE EXTENSION rate_limiter' -c 'CREATE EXTENSION pgtap'
}
psql_server() { as_test_user psql -X -h "$server_dir" -p "$server_port" -U postgres -d postgres "$@"; }

run_pgtap() {
  rl_log "pgtap: pg_prove"
  ensure_server || { record pgtap 0 1; return; }
  (cd "$stage" && as_test_user pg_prove -v -h "$server_dir" -p "$server_port" -U postgres -d postgres test/pgtap/*.sql) \
    >"$logs/pgtap.log" 2>&1
  record_tap_log pgtap "$logs/pgtap.log" $?
}

run_stress() {
  rl_log "stress: 32 pgbench sessions on one key"
  ensure_server || { record stress 0 1; return; }
  (cd "$stage" && as_test_user bash test/stress/run_stress.sh -h "$server_dir" -p "$server_port" -U postgres postgres) \
    >"$logs/stress.log" 2>&1
  local rc=$? pass fail
  cat "$logs/stress.log"
  pass=$(count '^PASS:' "$logs/stress.log")
  fail=$(count '^FAIL:' "$logs/stress.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  record stress "$pass" "$fail"
}

FUZZ_SECONDS=60
FUZZ_SEED=1
run_fuzz() {
  rl_log "fuzz: libFuzzer, $FUZZ_SECONDS s over all targets, -seed=$FUZZ_SEED"
  make -s fuzz >"$logs/fuzz.log" 2>&1 || { tail -20 "$logs/fuzz.log"; record fuzz 0 1; return; }
  make -s fuzz-run FUZZ_SECONDS="$FUZZ_SECONDS" FUZZ_SEED="$FUZZ_SEED" >>"$logs/fuzz.log" 2>&1
  local rc=$? pass fail
  pass=$(count '^FUZZ PASS:' "$logs/fuzz.log")
  fail=$(count '^FUZZ FAIL:' "$logs/fuzz.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  grep -E '^(FUZZ |fuzz: )|invariant failed|runtime error|ERROR: (libFuzzer|AddressSanitizer)' "$logs/fuzz.log"
  # Each crash leaves its input; replay with ./test/fuzz/out/<target> <file>.
  grep -oE 'Test unit written to .*' "$logs/fuzz.log" | sed 's/^/crashing input: /'
  record fuzz "$pass" "$fail"
}

run_lint() {
  rl_log "lint: clang-tidy, cppcheck, PGXN packaging, include layers, options, format"
  local pass=0 fail=0 tool
  for tool in tidy cppcheck meta layers options format; do
    if make -s lint-$tool PG_CONFIG="$PG_BIN/pg_config" >"$logs/lint-$tool.log" 2>&1; then
      pass=$((pass + 1))
    else
      fail=$((fail + 1))
    fi
    grep -E 'warning:|error:|clean|META.json' "$logs/lint-$tool.log" | head -40
  done
  record lint "$pass" "$fail"
}

# A fixed seed: a failure reproduces with the same command.  Its own
# database, so the fuzzed limits and revocations do not touch the others.
run_sqlfuzz() {
  rl_log "sqlfuzz: 10,000 random calls of every SQL function"
  ensure_server || { record sqlfuzz 0 1; return; }
  psql_server -q -c 'DROP DATABASE IF EXISTS rl_sqlfuzz' -c 'CREATE DATABASE rl_sqlfuzz' &&
    as_test_user psql -X -q -h "$server_dir" -p "$server_port" -U postgres -d rl_sqlfuzz \
      -c 'CREATE EXTENSION rate_limiter' || { record sqlfuzz 0 1; return; }
  (cd "$stage" && as_test_user python3 test/fuzz/sql_fuzz.py --seed 20261127 --calls 10000 --jobs 2 \
    -h "$server_dir" -p "$server_port" -U postgres -d rl_sqlfuzz) >"$logs/sqlfuzz.log" 2>&1
  local rc=$? pass fail
  grep -E '^(seed|PASS|FAIL)' "$logs/sqlfuzz.log"
  sed -n '/^SQLSTATE histogram/,/^top-level/p' "$logs/sqlfuzz.log"
  pass=$(count '^PASS:' "$logs/sqlfuzz.log")
  fail=$(count '^FAIL' "$logs/sqlfuzz.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  record sqlfuzz "$pass" "$fail"
}

# Model-based randomized test with its own throwaway server (initdb as the
# test user).  A fixed seed and bounded time in CI; RL_MODEL_SEED,
# RL_MODEL_DURATION and RL_MODEL_ENABLE (issue 13 operations whose fixes
# have landed) change them.  RL_MODEL_XFAIL names product bugs the test
# found that are not fixed yet: each prints an XFAIL line every run; drop it
# from the default here when the fix lands so that CI guards the fix.
MODEL_SEED=${RL_MODEL_SEED:-20261202}
MODEL_DURATION=${RL_MODEL_DURATION:-100}
MODEL_XFAIL=${RL_MODEL_XFAIL-}
run_model() {
  rl_log "model: accounting model, seed $MODEL_SEED, $MODEL_DURATION s of phases"
  local port
  port=$(rl_free_port 55480)
  (cd "$stage" && as_test_user env RL_MODEL_ENABLE="${RL_MODEL_ENABLE:-}" RL_MODEL_XFAIL="$MODEL_XFAIL" \
    python3 test/model/accounting_model.py --pg-bin "$PG_BIN" --seed "$MODEL_SEED" \
    --duration "$MODEL_DURATION" --port "$port") >"$logs/model.log" 2>&1
  local rc=$? pass fail
  grep -E '^(seed|FAIL|XFAIL|known failures|[0-9]+ passed)' "$logs/model.log"
  grep -A14 '^FAIL' "$logs/model.log" | head -80
  pass=$(count '^PASS:' "$logs/model.log")
  fail=$(count '^FAIL:' "$logs/model.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  record model "$pass" "$fail"
}

# The HTTP gateway example on its own throwaway cluster (the test stops and
# starts it), with real requests: test/http/gateway_test.py.
run_http() {
  rl_log "http: the gateway example, real requests"
  local pg_port http_port
  pg_port=$(rl_free_port 55495)
  http_port=$(rl_free_port 58095)
  (cd "$stage" && as_test_user /usr/bin/python3 test/http/gateway_test.py --pg-bin "$PG_BIN" \
    --pg-port "$pg_port" --http-port "$http_port" --log-dir "$logs") >"$logs/http.log" 2>&1
  local rc=$? pass fail
  grep -E '^(PASS|FAIL)' "$logs/http.log"
  grep -A30 '^gateway output' "$logs/http.log" | head -40
  pass=$(count '^PASS:' "$logs/http.log")
  fail=$(count '^FAIL:' "$logs/http.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  record http "$pass" "$fail"
}

# Sanitizer build.  The server is not instrumented; our library links the
# ASan and UBSan runtimes, which load with it (verify_asan_link_order=0).
# Preloading libasan.so into the server is what ASan wants, but on Debian 12
# every PostgreSQL binary then hangs at start (bindtextdomain deadlocks on
# glibc's _nl_state_lock once libgnutls is loaded), so the runtime is not
# first: its malloc and longjmp interceptors are off.  Hence the Makefile's
# ASAN=1 drops stack instrumentation (a longjmp out of ereport would leave
# stale stack poison: false reports); what remains checked is globals, shared
# memory bounds we compute, and all of UBSan.
run_asan() {
  rl_log "asan: regress and isolation with AddressSanitizer + UBSan"
  local prefix src reports pass fail rc
  prefix=$(mktemp -d /tmp/rate_limiter_asan_pg.XXXXXX)
  src=$(mktemp -d /tmp/rate_limiter_asan_src.XXXXXX)
  chmod 755 "$prefix"
  reports="$prefix/reports"
  mkdir -p "$prefix/lib/postgresql" "$prefix/share/postgresql" "$prefix/include/postgresql/$PG_MAJOR" "$reports"
  cp -a "/usr/lib/postgresql/$PG_MAJOR" "$prefix/lib/postgresql/"
  cp -a "/usr/share/postgresql/$PG_MAJOR" "$prefix/share/postgresql/"
  ln -s "/usr/include/postgresql/$PG_MAJOR/server" "$prefix/include/postgresql/$PG_MAJOR/server"
  local pgc="$prefix/lib/postgresql/$PG_MAJOR/bin/pg_config"
  (cd "$stage" && tar --exclude=tmp_check --exclude=tmp_check_iso --exclude=results --exclude=output_iso --exclude=./log -cf - .) | tar -xf - -C "$src"
  { make -C "$src" -s clean PG_CONFIG="$pgc" &&
    make -C "$src" -s -j"$(nproc)" ASAN=1 PG_CONFIG="$pgc" &&
    make -C "$src" -s install ASAN=1 PG_CONFIG="$pgc"; } >"$logs/asan.log" 2>&1
  rc=$?
  chown -R "$RL_TEST_USER" "$src" "$reports"
  if [ "$rc" -eq 0 ]; then
    (cd "$src" && as_test_user env \
      ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0:abort_on_error=1:log_path=$reports/asan" \
      UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan" \
      make installcheck PG_CONFIG="$pgc" TAP_TESTS=) >>"$logs/asan.log" 2>&1
    rc=$?
  fi
  pass=$(count '\.\.\. ok' "$logs/asan.log")
  fail=$(count 'FAILED' "$logs/asan.log")
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1
  grep -E 'tests|FAILED' "$logs/asan.log" | tail -3
  # Reports: one failure per file, and per sanitizer message in a server log
  # (UBSan prints there when the ASan runtime owns log_path).
  local f n
  for f in "$reports"/*; do
    [ -f "$f" ] || continue
    echo "sanitizer report $f:"; head -40 "$f"; fail=$((fail + 1))
  done
  for f in "$src/log/postmaster.log" "$src/output_iso/log/postmaster.log"; do
    n=$(count 'runtime error:|ERROR: AddressSanitizer|AddressSanitizer: CHECK' "$f")
    if [ "${n:-0}" -gt 0 ]; then
      echo "$n sanitizer messages in $f:"; grep -E -A12 'runtime error:|AddressSanitizer' "$f" | head -60
      fail=$((fail + n))
    fi
  done
  cp "$src"/log/postmaster.log "$logs/asan_regress_server.log" 2>/dev/null
  cp "$src"/output_iso/log/postmaster.log "$logs/asan_isolation_server.log" 2>/dev/null
  rm -rf "$prefix" "$src"
  record asan "$pass" "$fail"
}

chown -R "$RL_TEST_USER" "$logs"
for suite in $SUITES; do
  case "$suite" in
    unit) run_unit ;;
    regress) run_regress ;;
    isolation) run_isolation ;;
    tap) run_tap ;;
    pgtap) run_pgtap ;;
    stress) run_stress ;;
    fuzz) run_fuzz ;;
    lint) run_lint ;;
    sqlfuzz) run_sqlfuzz ;;
    asan) run_asan ;;
    model) run_model ;;
    http) run_http ;;
    *) rl_die "unknown suite $suite" ;;
  esac
done

rl_log "summary (logs in $logs)"
printf '%s\n' "${summary[@]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
