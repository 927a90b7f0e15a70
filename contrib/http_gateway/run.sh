#!/usr/bin/env bash
# Starts the HTTP gateway example in the foreground:
#
#   bash contrib/http_gateway/run.sh --port 8000 --dsn 'host=127.0.0.1 port=5432 dbname=app user=app'
#
# Other options: --host ADDR (default 127.0.0.1), --pool-size N (default 8),
# --no-limiter (no limiter call at all: the benchmark's baseline).
# The database needs the extension (CREATE EXTENSION rate_limiter) and the
# role in the DSN needs EXECUTE on its functions (the default).  Run as
# root once to install the Debian packages it uses (python3-fastapi,
# python3-uvicorn, python3-psycopg, python3-psycopg-pool).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${RL_PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import fastapi, uvicorn, psycopg, psycopg_pool' 2>/dev/null; then
  [ "$(id -u)" -eq 0 ] || { echo "error: install python3-fastapi python3-uvicorn python3-psycopg python3-psycopg-pool (as root)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends python3-fastapi python3-uvicorn python3-psycopg \
    python3-psycopg-pool >/dev/null
fi
exec "$PY" "$here/app.py" "$@"
