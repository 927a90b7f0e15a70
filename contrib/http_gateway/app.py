"""An HTTP gateway in front of an LLM-style API, limited by rate_limiter.

POST /v1/chat/completions reserves tokens with allocate_tokens(), calls the
upstream (a built-in fake model that streams tokens, so that tests need no
network), then settles the reservation with the tokens actually produced
(settle_tokens), which gives the unused part back.  A denial answers 429
with Retry-After and the rate limit headers that rate_limit_headers()
builds in the database; every success carries the same headers.  GET
/v1/limits shows the caller's limits.  When the database cannot be reached
the gateway answers 503 (and counts it in GET /v1/health) instead of
letting requests through unlimited.

The caller is identified by its bearer token (Authorization: Bearer KEY):
the key is the rate limiter's user_id.  A real deployment maps API keys to
user ids first; that lookup is one more query on the same pool.

Start it with contrib/http_gateway/run.sh --port PORT --dsn DSN.
"""
import argparse
import json
import os
import threading

import psycopg
import psycopg_pool
import uvicorn
from fastapi import Body, FastAPI, Header
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

ENDPOINT = "chat/completions"
DEFAULT_MAX_TOKENS = 256
PRIORITIES = ("high", "medium", "low")

ALLOCATE = ("SELECT success, tokens_allocated, reason, allocation_id, retry_after_seconds "
            "FROM allocate_tokens(%s, %s, %s, %s, NULL, %s::jsonb) a, "
            "LATERAL (SELECT extract(epoch FROM a.retry_after)::float8 AS retry_after_seconds) r")
SETTLE = "SELECT tokens_refunded FROM settle_tokens(%s::bigint, %s::bigint)"
HEADERS = "SELECT rate_limit_headers(%s::text, %s::text, %s::bigint)"
# The dashboard's data, in one round trip: the metrics, the counters
# closest to their limits, recent alerts, and tokens per minute over the
# last hour per user and endpoint.
DASHBOARD = """
SELECT extract(epoch FROM clock_timestamp())::float8,
       get_performance_metrics(),
       (SELECT coalesce(jsonb_agg(t), '[]') FROM (
          SELECT user_id, api_endpoint, limit_kind, used, "limit", remaining, reset_at
            FROM rate_limiter_counters
           WHERE user_id IS NOT NULL AND "limit" > 0
           ORDER BY used::float8 / "limit" DESC, used DESC, user_id LIMIT 10) t),
       (SELECT coalesce(jsonb_agg(a), '[]') FROM (
          SELECT kind, user_id, api_endpoint, scope, created_at
            FROM rate_limit_alerts ORDER BY id DESC LIMIT 10) a),
       (SELECT coalesce(jsonb_agg(h), '[]') FROM (
          SELECT date_trunc('minute', "timestamp") AS minute, user_id, api_endpoint, sum(tokens_used) AS tokens
            FROM token_usage WHERE "timestamp" > now() - interval '1 hour'
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) h)
"""
STATUS = ("SELECT scope, api_endpoint, limit_kind, algorithm, \"limit\", used, remaining, reset_at "
          "FROM get_rate_limit_status(%s) WHERE api_endpoint IS NULL OR api_endpoint = %s")


class Counters:
    """What the gateway did, for GET /v1/health."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = {"requests": 0, "allowed": 0, "denied": 0, "db_unavailable": 0, "settled": 0}

    def add(self, name):
        with self.lock:
            self.values[name] += 1

    def snapshot(self):
        with self.lock:
            return dict(self.values)


class DatabaseUnavailable(Exception):
    pass


def fake_completion(prompt_words, max_tokens, wanted):
    """The upstream: yields `wanted` tokens (at most max_tokens), words of a
    fixed text.  Tests ask for an exact count with "fake_tokens"."""
    words = ("the quick brown fox jumps over the lazy dog " * 64).split()
    n = max(0, min(max_tokens, wanted if wanted is not None else max(1, prompt_words)))
    for i in range(n):
        yield words[i % len(words)] + " "


def create_app(dsn, limiter=True, pool_size=8, pool_timeout=2.0):
    app = FastAPI(title="rate_limiter HTTP gateway")
    counters = Counters()
    # prepare_threshold=0: every statement is prepared on first use, so a
    # pooled connection runs each of the four queries as a prepared one.
    pool = psycopg_pool.ConnectionPool(
        dsn, min_size=1, max_size=pool_size, timeout=pool_timeout, open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "connect_timeout": 2})

    @app.on_event("startup")
    def _open():
        pool.open(wait=False)

    @app.on_event("shutdown")
    def _close():
        pool.close()

    def run(sql, params):
        try:
            with pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
            raise DatabaseUnavailable(str(e)) from e

    def headers_for(user, tokens=None):
        rows = run(HEADERS, (user, ENDPOINT, tokens))
        value = rows[0][0] if rows and rows[0][0] is not None else {}
        return {str(k): str(v) for k, v in value.items()}

    def unavailable():
        counters.add("db_unavailable")
        return JSONResponse({"error": {"type": "service_unavailable",
                                       "message": "the rate limiter database is unreachable"}},
                            status_code=503, headers={"Retry-After": "1"})

    def caller(authorization):
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        key = authorization[7:].strip()
        return key or None

    static = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/dashboard")
    def dashboard():
        return FileResponse(os.path.join(static, "dashboard.html"))

    @app.get("/v1/dashboard/data")
    def dashboard_data():
        try:
            at, metrics, top, alerts, history = run(DASHBOARD, ())[0]
        except DatabaseUnavailable:
            return unavailable()
        return {"at": at, "metrics": metrics, "top_users": top, "alerts": alerts, "history": history,
                "gateway": counters.snapshot()}

    @app.get("/v1/health")
    def health():
        return counters.snapshot()

    @app.get("/v1/limits")
    def limits(authorization: str = Header(default=None)):
        user = caller(authorization)
        if user is None:
            return JSONResponse({"error": {"type": "unauthorized"}}, status_code=401)
        try:
            rows = run(STATUS, (user, ENDPOINT))
            headers = headers_for(user)
        except DatabaseUnavailable:
            return unavailable()
        out = [{"scope": r[0], "api_endpoint": r[1], "limit_kind": r[2], "algorithm": r[3],
                "limit": r[4], "used": r[5], "remaining": r[6],
                "reset_at": r[7].isoformat() if r[7] else None} for r in rows]
        return JSONResponse({"user": user, "limits": out}, headers=headers)

    # A plain def: FastAPI runs it in its thread pool, so the blocking
    # database calls never stall the event loop.  A body that is not a JSON
    # object is refused by FastAPI itself (422).
    @app.post("/v1/chat/completions")
    def completions(body: dict = Body(...), authorization: str = Header(default=None),
                    x_priority: str = Header(default="high")):
        counters.add("requests")
        user = caller(authorization)
        if user is None:
            return JSONResponse({"error": {"type": "unauthorized"}}, status_code=401)
        max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return JSONResponse({"error": {"type": "invalid_request",
                                           "message": "max_tokens must be a positive integer"}},
                                status_code=400)
        priority = x_priority if x_priority in PRIORITIES else "high"
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))
        wanted = body.get("fake_tokens")
        stream = bool(body.get("stream", False))

        if not limiter:
            text = "".join(fake_completion(len(prompt.split()), max_tokens, wanted))
            counters.add("allowed")
            return {"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": text}}]}

        try:
            # The whole reservation or nothing: a partial grant would cut
            # the completion short.
            row = run(ALLOCATE, (user, max_tokens, priority, ENDPOINT, '{"all_or_nothing": true}'))[0]
        except DatabaseUnavailable:
            return unavailable()
        success, granted, reason, allocation_id, retry_after = row
        if not success:
            counters.add("denied")
            try:
                headers = headers_for(user, max_tokens)
            except DatabaseUnavailable:
                return unavailable()
            if retry_after is not None:
                headers["Retry-After"] = str(max(1, int(-(-retry_after // 1))))
            return JSONResponse({"error": {"type": "rate_limit_exceeded", "reason": reason}},
                                status_code=429, headers=headers)
        counters.add("allowed")

        def settle(used):
            # settle_tokens needs the usage row; the limiter writes it
            # before it answers when settle asks for it.
            run(SETTLE, (allocation_id, used))
            counters.add("settled")

        if not stream:
            tokens = list(fake_completion(len(prompt.split()), granted, wanted))
            try:
                settle(len(tokens))
                headers = headers_for(user)
            except DatabaseUnavailable:
                return unavailable()
            headers["x-allocation-id"] = str(allocation_id)
            return JSONResponse({"object": "chat.completion", "id": "alloc-%d" % allocation_id,
                                 "choices": [{"index": 0, "message": {"role": "assistant",
                                                                      "content": "".join(tokens)}}],
                                 "usage": {"completion_tokens": len(tokens), "reserved_tokens": granted}},
                                headers=headers)

        try:
            headers = headers_for(user)
        except DatabaseUnavailable:
            return unavailable()
        headers["x-allocation-id"] = str(allocation_id)

        def events():
            produced = 0
            try:
                for tok in fake_completion(len(prompt.split()), granted, wanted):
                    produced += 1
                    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": tok}}]}
                    yield "data: %s\n\n" % json.dumps(chunk)
                yield "data: %s\n\n" % json.dumps({"object": "chat.completion.chunk", "choices": [],
                                                   "usage": {"completion_tokens": produced,
                                                             "reserved_tokens": granted}})
                yield "data: [DONE]\n\n"
            finally:
                # Also when the client goes away mid-stream: what was
                # produced is charged, the rest of the reservation returns.
                try:
                    settle(produced)
                except DatabaseUnavailable:
                    pass

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--dsn", default=os.environ.get("RATE_LIMITER_DSN", "dbname=postgres"))
    ap.add_argument("--no-limiter", action="store_true",
                    help="serve without any limiter call (the baseline of the benchmark)")
    ap.add_argument("--pool-size", type=int, default=8)
    args = ap.parse_args()
    app = create_app(args.dsn, limiter=not args.no_limiter, pool_size=args.pool_size)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
