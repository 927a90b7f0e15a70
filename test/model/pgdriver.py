"""A throwaway PostgreSQL server and psql-driven sessions, standard library only.

Used by accounting_model.py.  Every server runs as the invoking (non-root)
user, listens only on a Unix socket in its own directory, and is stopped by
pg_ctl (or, for crash tests, by SIGKILL of one backend pid, after which the
postmaster restarts itself: restart_after_crash = on).
"""
import os
import signal
import subprocess
import time

SEP = "\x1f"  # psql field separator: never part of a value we select


class SessionDead(Exception):
    pass


class Result:
    __slots__ = ("rows", "sqlstate", "message", "notices")

    def __init__(self):
        self.rows = []
        self.sqlstate = None
        self.message = None
        self.notices = []

    @property
    def ok(self):
        return self.sqlstate is None

    def __repr__(self):
        if self.ok:
            return "Result(rows=%r)" % (self.rows,)
        return "Result(error %s: %s)" % (self.sqlstate, self.message)


class Session:
    """One psql process in tuples-only, unaligned mode.  run() sends one
    statement and returns its rows (lists of strings, only lines that start
    with the marker 'R') or its error (SQLSTATE, message)."""

    def __init__(self, server, user="postgres", dbname="postgres", application_name="model"):
        env = dict(os.environ)
        env["PGAPPNAME"] = application_name
        env.pop("PGOPTIONS", None)
        self.proc = subprocess.Popen(
            [os.path.join(server.bindir, "psql"), "-X", "-q", "-A", "-t", "-F", SEP,
             "-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=verbose",
             "-h", server.sockdir, "-p", str(server.port), "-U", user, "-d", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, env=env)
        self.n = 0
        self.dead = False
        self.pid = None
        self.proc.stdin.write("\\set VERBOSITY verbose\n\\set SHOW_CONTEXT never\n")
        r = self.run("SELECT 'R', pg_backend_pid()")
        if not r.ok:
            raise SessionDead("cannot connect: %s" % r.message)
        self.pid = int(r.rows[0][1])

    def run(self, sql):
        if self.dead:
            raise SessionDead("session is dead")
        self.n += 1
        marker = "__END__%d__" % self.n
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + marker + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.dead = True
            raise SessionDead("psql is gone")
        res = Result()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.dead = True
                raise SessionDead("connection lost: %s" % (res.message or "EOF"))
            line = line.rstrip("\n")
            if line == marker:
                break
            if line.startswith("R" + SEP) or line == "R":
                res.rows.append(line.split(SEP))
            elif line.startswith(("ERROR:", "FATAL:", "PANIC:")):
                body = line.split(":", 1)[1].strip()
                code, _, msg = body.partition(":")
                if res.sqlstate is None:
                    res.sqlstate = code.strip()
                    res.message = msg.strip()
            elif line.startswith(("WARNING:", "NOTICE:", "INFO:", "LOG:")):
                res.notices.append(line)
            elif ("server closed the connection" in line or "connection to server" in line
                  or "terminating connection" in line):
                if res.sqlstate is None:
                    res.sqlstate = "08006"
                    res.message = line
            # DETAIL/HINT/LOCATION/LINE lines are ignored.
        if res.sqlstate == "08006" or (res.sqlstate or "").startswith("57P"):
            # Connection-level failure: psql may still be alive but not connected.
            self.dead = True
            self.close()
            raise SessionDead(res.message)
        return res

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.write("\\q\n")
                    self.proc.stdin.flush()
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self.dead = True


class Server:
    def __init__(self, bindir, basedir, port, conf_lines):
        self.bindir = bindir
        self.basedir = basedir
        self.datadir = os.path.join(basedir, "data")
        self.sockdir = basedir
        self.logfile = os.path.join(basedir, "server.log")
        self.port = port
        self.conf_lines = conf_lines

    def _run(self, *args, check=True, timeout=120):
        p = subprocess.run([os.path.join(self.bindir, args[0])] + list(args[1:]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(args), p.stdout[-2000:]))
        return p

    def init(self):
        self._run("initdb", "-D", self.datadir, "-A", "trust", "-U", "postgres", "--no-sync")
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# accounting model test\n")
            f.write("listen_addresses = ''\n")
            f.write("unix_socket_directories = '%s'\n" % self.sockdir)
            f.write("port = %d\n" % self.port)
            for line in self.conf_lines:
                f.write(line + "\n")

    def start(self):
        self._run("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "120", "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", "120", "stop", check=False)

    def postmaster_pid(self):
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            return int(f.readline())

    def running(self):
        return os.path.exists(os.path.join(self.datadir, "postmaster.pid"))

    def psql(self, sql, user="postgres", dbname="postgres"):
        """One-shot statement(s) through a fresh session; returns Result."""
        s = Session(self, user=user, dbname=dbname, application_name="model-oneshot")
        try:
            return s.run(sql)
        finally:
            s.close()

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            p = self._run("pg_isready", "-h", self.sockdir, "-p", str(self.port), "-t", "2", check=False)
            if p.returncode == 0:
                try:
                    r = self.psql("SELECT 'R', 1")
                    if r.ok:
                        return
                    last = r.message
                except SessionDead as e:
                    last = str(e)
            time.sleep(0.2)
        raise RuntimeError("server not ready after %d s: %s" % (timeout, last))

    def kill9(self, pid):
        os.kill(pid, signal.SIGKILL)

    def log_tail(self, nbytes=4000):
        try:
            with open(self.logfile, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - nbytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""
