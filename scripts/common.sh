# Shared helpers for scripts/demo.sh and scripts/test.sh.  Sourced, not run.
#
# Both scripts run as root on Debian 12: they install what is missing with
# apt-get, build and install the extension as root, and run every server
# (initdb, pg_ctl, pg_regress, PostgreSQL::Test) as the unprivileged
# "postgres" user, which PostgreSQL requires.

PG_MAJOR=${PG_MAJOR:-15}
# RL_PG_BIN points at another copy of the server's bin directory (a private
# copy of /usr/lib/postgresql/15 and /usr/share/postgresql/15, as the asan
# suite makes), so that two trees can build, install and test at once.
PG_BIN=${RL_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
RL_TEST_USER=${RL_TEST_USER:-postgres}

rl_log() { printf '\n==> %s\n' "$*"; }
rl_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

rl_require_root() {
  [ "$(id -u)" -eq 0 ] || rl_die "run this as root (it installs packages and the extension)"
}

# Installs the Debian packages we need, once.  clang (14 on Debian 12) and
# libclang-rt-14-dev (libclang_rt.fuzzer, ASan, UBSan) build the fuzz
# targets; clang-tidy, clang-format and cppcheck run the lint suite; the Python packages
# run the HTTP gateway example and Chromium its dashboard test
# (contrib/http_gateway, suite http).
rl_install_packages() {
  local pkgs=(build-essential g++ make postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR
              postgresql-contrib libboost-dev libgtest-dev libipc-run-perl
              postgresql-$PG_MAJOR-pgtap libtap-parser-sourcehandler-pgtap-perl
              prometheus-postgres-exporter pgbouncer
              clang libclang-rt-14-dev clang-tidy clang-format cppcheck python3
              python3-fastapi python3-uvicorn python3-psycopg python3-psycopg-pool chromium)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    rl_log "installing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || rl_die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || rl_die "apt-get install failed"
  fi
  id "$RL_TEST_USER" >/dev/null 2>&1 || rl_die "user $RL_TEST_USER does not exist (it comes with the postgresql package)"
}

rl_build_and_install() {
  rl_log "building and installing rate_limiter"
  make -s -j"$(nproc)" PG_CONFIG="$PG_BIN/pg_config" >/dev/null || rl_die "build failed"
  make -s install PG_CONFIG="$PG_BIN/pg_config" >/dev/null || rl_die "make install failed"
}

# Copies the source tree to a fresh folder the test user owns (a CI clone
# may sit where that user cannot write) and prints its path.
rl_stage_tree() {
  local dest
  dest=$(mktemp -d /tmp/rate_limiter_stage.XXXXXX)
  tar --exclude=.git --exclude='*.o' --exclude='*.so' -cf - . | tar -xf - -C "$dest"
  chown -R "$RL_TEST_USER" "$dest"
  echo "$dest"
}

# A port nothing listens on, from 54320 up.
rl_free_port() {
  local port=${1:-54320}
  while (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

# rl_start_server DIR PORT [extra postgresql.conf lines...]
# Creates and starts a throwaway cluster in DIR (owned by the test user),
# listening on 127.0.0.1:PORT and a socket in DIR.
rl_start_server() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  chown "$RL_TEST_USER" "$dir"
  runuser -u "$RL_TEST_USER" -- "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log"; rl_die "initdb failed"; }
  {
    echo "shared_preload_libraries = 'rate_limiter'"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "max_connections = 100"
    echo "fsync = off"
    for line in "$@"; do echo "$line"; done
  } >>"$dir/data/postgresql.conf"
  runuser -u "$RL_TEST_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null ||
    { cat "$dir/server.log"; rl_die "the server did not start"; }
}

rl_stop_server() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] &&
    runuser -u "$RL_TEST_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
  return 0
}
