#!/usr/bin/env python3
"""Real HTTP requests against contrib/http_gateway on a throwaway cluster.

Run as the PostgreSQL test user (initdb refuses root), with the extension
installed and the gateway's Python packages present (scripts/test.sh, suite
"http", does both):

    python3 test/http/gateway_test.py --pg-bin /usr/lib/postgresql/15/bin --pg-port 55490 --http-port 58090

One PASS:/FAIL: line per check:
  * exact 200/429 sequences under a request limit, with Retry-After;
  * the rate limit headers of a success and of a denial (values from the
    limits in force: limit, remaining);
  * a token quota: the reservation is all or nothing, and settling with the
    tokens produced gives the rest back (the next headers show it);
  * a streamed completion settles with the tokens streamed (token_usage
    row and counter);
  * 401 without a key, 422 for a body that is not a JSON object, 400 for a
    bad max_tokens;
  * the dashboard in headless Chromium: the numbers rendered in the DOM
    are the database's (totals, top users against their limits, alerts,
    tokens in the history chart); a screenshot goes to --log-dir;
  * 503 with Retry-After while the database is stopped (counted in
    /v1/health), and 200 again once it is back.
"""
import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

results = {"pass": 0, "fail": 0}


def check(name, ok, detail=""):
    if ok:
        results["pass"] += 1
        print("PASS: %s" % name)
    else:
        results["fail"] += 1
        print("FAIL: %s%s" % (name, (" -- " + detail) if detail else ""))
    sys.stdout.flush()


class Cluster:
    def __init__(self, pg_bin, port):
        self.pg_bin, self.port = pg_bin, port
        self.dir = tempfile.mkdtemp(prefix="rl_http_")
        self.data = os.path.join(self.dir, "data")

    def run(self, *args):
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self):
        self.run(os.path.join(self.pg_bin, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("shared_preload_libraries = 'rate_limiter'\nlisten_addresses = '127.0.0.1'\n"
                    "port = %d\nunix_socket_directories = '%s'\nfsync = off\n" % (self.port, self.dir))
        self.start()

    def start(self):
        self.run(os.path.join(self.pg_bin, "pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                 "-w", "start")

    def stop(self):
        self.run(os.path.join(self.pg_bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")

    def psql(self, sql):
        out = subprocess.run([os.path.join(self.pg_bin, "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                              "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                              "-c", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def dsn(self):
        return "host=127.0.0.1 port=%d dbname=postgres user=postgres" % self.port

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())


def request(port, method, path, body=None, key=None, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", "Bearer " + key)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Response(r.status, r.getheaders(), r.read().decode())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers.items(), e.read().decode())


def completion(port, key, max_tokens, fake_tokens, stream=False):
    return request(port, "POST", "/v1/chat/completions", key=key,
                   body={"model": "fake", "max_tokens": max_tokens, "fake_tokens": fake_tokens, "stream": stream,
                         "messages": [{"role": "user", "content": "hello"}]})


def wait_http(port, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if request(port, "GET", "/v1/health").status == 200:
                return True
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    return False


def chromium(*args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return None
    # A profile of its own: the test user's home may not be writable.
    profile = tempfile.mkdtemp(prefix="rl_chromium_")
    try:
        out = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + profile,
                              "--window-size=1280,1000", "--virtual-time-budget=8000"] + list(args),
                             capture_output=True, text=True, timeout=120)
        return out.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def element_text(dom, element_id):
    m = re.search(r'id="%s"[^>]*>([^<]*)<' % re.escape(element_id), dom)
    return html.unescape(m.group(1)).strip() if m else None


def dashboard_checks(cluster, port, log_dir):
    """Loads /dashboard in headless Chromium after the traffic above and
    compares what it rendered with the database."""
    cluster.psql("SELECT rate_limiter_flush()")
    allowed = cluster.psql("SELECT get_performance_metrics()->>'allowed_requests'")
    url = "http://127.0.0.1:%d/dashboard?interval=500" % port
    dom = chromium("--dump-dom", url)
    check("Chromium renders the dashboard", dom is not None and 'id="allowed-total"' in dom,
          "chromium missing" if dom is None else dom[:300])
    if not dom:
        return
    shot = os.path.join(log_dir, "dashboard.png")
    chromium("--screenshot=" + shot, url)
    check("a screenshot is saved (%s)" % shot, os.path.exists(shot) and os.path.getsize(shot) > 10000)
    polls = re.search(r'id="updated" data-polls="(\d+)"', dom)
    check("the page polled its data more than once", polls is not None and int(polls.group(1)) >= 2,
          element_text(dom, "updated") or "")
    check("allowed (total) is the database's allowed_requests",
          element_text(dom, "allowed-total") == "{:,}".format(int(allowed)),
          "%s vs %s" % (element_text(dom, "allowed-total"), allowed))
    row = re.search(r'<tr data-user="carol" data-endpoint="chat/completions" data-kind="tokens">(.*?)</tr>', dom)
    cells = dict(re.findall(r'<td class="num (used|limit|remaining)">([^<]*)</td>', row.group(1))) if row else {}
    check("top users: carol's token quota shows 50 used of 100, 50 remaining",
          cells == {"used": "50", "limit": "100", "remaining": "50"}, str(cells))
    first_user = re.search(r'<tbody><tr data-user="([^"]*)"', dom)
    top = cluster.psql("SELECT user_id FROM rate_limiter_counters WHERE user_id IS NOT NULL AND \"limit\" > 0 "
                       "ORDER BY used::float8 / \"limit\" DESC, used DESC, user_id LIMIT 1")
    check("the first row is the counter closest to its limit", first_user is not None and first_user.group(1) == top,
          "%s vs %s" % (first_user.group(1) if first_user else None, top))
    alerts_dom = re.findall(r'<tr data-kind="([^"]+)">', dom)
    alerts_db = cluster.psql("SELECT string_agg(kind, ' ' ORDER BY id DESC) FROM "
                             "(SELECT id, kind FROM rate_limit_alerts ORDER BY id DESC LIMIT 10) a")
    check("recent alerts are the table's, newest first", " ".join(alerts_dom) == alerts_db and alerts_db != "",
          "%s vs %s" % (alerts_dom, alerts_db))
    canvas = re.search(r'<canvas[^>]*id="history-chart"[^>]*>', dom)
    series = re.search(r'data-series="(\d+)"', canvas.group(0)) if canvas else None
    total = re.search(r'data-tokens="(\d+)"', canvas.group(0)) if canvas else None
    tokens = (series.group(1), total.group(1)) if series and total else None
    tokens_db = cluster.psql("SELECT sum(tokens_used) FROM token_usage WHERE \"timestamp\" > now() - interval '1 hour'")
    series_db = cluster.psql("SELECT count(DISTINCT (user_id, api_endpoint)) FROM token_usage "
                             "WHERE \"timestamp\" > now() - interval '1 hour'")
    check("the history chart holds every token of the last hour, one series per user and endpoint",
          tokens is not None and tokens == (series_db, tokens_db), "%s vs %s" % (tokens, (series_db, tokens_db)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-bin", required=True)
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--log-dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    port = args.http_port

    cluster = Cluster(args.pg_bin, args.pg_port)
    gateway = None
    try:
        cluster.init()
        cluster.psql("CREATE EXTENSION rate_limiter")
        # bob: 3 requests a minute; carol: 100 tokens an hour; dave: 1000
        # tokens for the stream.  All on the gateway's endpoint.
        cluster.psql("SELECT set_user_rate_limit('bob', 3, '1 minute', 'chat/completions');"
                     "SELECT set_rate_limit('carol', 100, '1 hour', 'chat/completions');"
                     "SELECT set_rate_limit('dave', 1000, '1 hour', 'chat/completions')")
        gateway = subprocess.Popen([args.python, os.path.join(ROOT, "contrib/http_gateway/app.py"),
                                    "--port", str(port), "--dsn", cluster.dsn()],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        check("the gateway starts", wait_http(port, gateway))

        # Request limit: exactly three 200s, then 429 with Retry-After.
        seq = [completion(port, "bob", 10, 2) for _ in range(4)]
        check("3 requests a minute: 200 200 200 429", [r.status for r in seq] == [200, 200, 200, 429],
              str([r.status for r in seq]))
        ra = seq[3].header("Retry-After")
        check("the 429 carries Retry-After in whole seconds within the minute",
              ra is not None and ra.isdigit() and 1 <= int(ra) <= 60, str(ra))
        check("the 429 names the reason", seq[3].status == 429 and
              seq[3].json().get("error", {}).get("reason") == "request_limit_exceeded", seq[3].body)
        check("x-ratelimit-limit-requests on every success is the limit",
              [r.header("x-ratelimit-limit-requests") for r in seq[:3]] == ["3", "3", "3"],
              str([r.header("x-ratelimit-limit-requests") for r in seq[:3]]))
        check("x-ratelimit-remaining-requests counts down 2 1 0",
              [r.header("x-ratelimit-remaining-requests") for r in seq[:3]] == ["2", "1", "0"],
              str([r.header("x-ratelimit-remaining-requests") for r in seq[:3]]))
        check("the 429 shows 0 requests remaining", seq[3].header("x-ratelimit-remaining-requests") == "0",
              str(seq[3].headers))
        check("RateLimit-Policy and RateLimit are set on a success",
              seq[0].header("RateLimit-Policy") is not None and seq[0].header("RateLimit") is not None,
              str(seq[0].headers))
        check("x-ratelimit-reset-requests is set", seq[0].header("x-ratelimit-reset-requests") not in (None, ""),
              str(seq[0].headers))

        # Token quota of 100: a high-priority call may take half of what
        # remains.  Reserve 40, produce 10: 90 remain.  Then 60 > 45: the
        # whole reservation or nothing, so 429; 40 fits again.
        r1 = completion(port, "carol", 40, 10)
        check("a reservation of 40 of 100 is granted", r1.status == 200, r1.body)
        check("the answer reports 10 tokens used of 40 reserved",
              r1.status == 200 and r1.json()["usage"] == {"completion_tokens": 10, "reserved_tokens": 40}, r1.body)
        check("after the settle the headers show 90 tokens remaining",
              r1.header("x-ratelimit-remaining-tokens") == "90" and r1.header("x-ratelimit-limit-tokens") == "100",
              str(r1.headers))
        r2 = completion(port, "carol", 60, 10)
        check("60 when a high share is 45: 429, nothing reserved", r2.status == 429, r2.body)
        r3 = completion(port, "carol", 40, 40)
        check("40 again: granted", r3.status == 200, r3.body)
        check("and 50 remain", r3.header("x-ratelimit-remaining-tokens") == "50", str(r3.headers))
        used = cluster.psql("SELECT rate_limiter_flush() >= 0;"
                            "SELECT string_agg(tokens_used || '/' || tokens_granted, ' ' ORDER BY id) "
                            "FROM token_usage WHERE user_id = 'carol'").splitlines()[-1]
        check("token_usage holds what was used of what was granted", used == "10/40 40/40", used)

        # A stream settles with what it streamed.
        rs = completion(port, "dave", 50, 7, stream=True)
        chunks = [line[6:] for line in rs.body.splitlines() if line.startswith("data: ")]
        check("the stream ends with [DONE] after 7 tokens",
              rs.status == 200 and chunks[-1] == "[DONE]" and
              json.loads(chunks[-2]).get("usage", {}).get("completion_tokens") == 7, rs.body[-300:])
        row = cluster.psql("SELECT rate_limiter_flush() >= 0;"
                           "SELECT tokens_used || '/' || tokens_granted || '/' || (settled_at IS NOT NULL) "
                           "FROM token_usage WHERE user_id = 'dave'").splitlines()[-1]
        check("the streamed grant is settled at 7 of 50", row == "7/50/true", row)
        counter = cluster.psql("SELECT used FROM get_rate_limit_status('dave') WHERE limit_kind = 'tokens'")
        check("and its counter holds 7", counter == "7", counter)
        lim = request(port, "GET", "/v1/limits", key="dave")
        check("GET /v1/limits shows the caller's token limit",
              lim.status == 200 and any(l["limit_kind"] == "tokens" and l["used"] == 7 and l["limit"] == 1000
                                        for l in lim.json()["limits"]), lim.body)

        # Bad requests.
        check("401 without a key", completion(port, None, 5, 1).status == 401)
        bad = request(port, "POST", "/v1/chat/completions", key="bob", raw=b"[1, 2]")
        check("422 for a body that is not a JSON object", bad.status == 422, str(bad.status))
        check("400 for max_tokens 0", completion(port, "dave", 0, 1).status == 400)

        dashboard_checks(cluster, port, args.log_dir)

        # The database goes away: 503, counted; it comes back: 200.
        before = request(port, "GET", "/v1/health").json()["db_unavailable"]
        cluster.stop()
        down = completion(port, "dave", 5, 1)
        check("503 while the database is stopped", down.status == 503, "%s %s" % (down.status, down.body))
        check("with Retry-After", down.header("Retry-After") == "1", str(down.headers))
        after = request(port, "GET", "/v1/health").json()["db_unavailable"]
        check("counted in /v1/health", after == before + 1, "%s -> %s" % (before, after))
        cluster.start()
        back = None
        for _ in range(50):
            back = completion(port, "dave", 5, 1)
            if back.status == 200:
                break
            time.sleep(0.2)
        check("200 again once the database is back", back is not None and back.status == 200,
              back.body if back else "")
    finally:
        if gateway is not None:
            gateway.terminate()
            try:
                out, _ = gateway.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                gateway.kill()
                out, _ = gateway.communicate()
            if results["fail"]:
                print("gateway output:\n" + (out or "")[-3000:])
        cluster.remove()
    print("%d passed, %d failed" % (results["pass"], results["fail"]))
    return 0 if results["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
