#!/usr/bin/env python3
"""The benchmark behind BENCHMARKS.md; bench/run builds what it needs and runs this.

Everything runs on 127.0.0.1 in a temporary directory: one nginx, a spawn-fcgi
pool of 4 workers per program (ours and the C floor's), wrk for the FastCGI
rows, bench/c/spawn.c for the CGI rows. Every row's answer is checked before
it is timed; the rows are interleaved over several passes and the table gives
the median and the spread (max - min over median) of the passes.

    bench.py --bin DIR --cbin DIR [--hotpath FILE] [--smoke] [--out BENCHMARKS.md]
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PASSWORD = "bench-password-1"
WORKERS = 4
PROGRAMS = ["index", "login", "logout", "auth"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fail(msg):
    log(f"bench: {msg}")
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    fail(f"{what} did not start on port {port}")


def wait_path(path, what):
    for _ in range(200):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    fail(f"{what} did not create {path}")


def http(port, method, path, headers=None, body=b""):
    """One HTTP/1.0 request; returns (status, headers dict lower-cased, body)."""
    head = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        head.append(f"{k}: {v}")
    if body:
        head.append(f"Content-Length: {len(body)}")
    req = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return status, hdrs, body


def cgi(program, env_extra, body=b""):
    """Runs a program once as CGI; returns (status, headers, body)."""
    env = dict(BASE_ENV)
    env.update({"GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
                "SERVER_NAME": "127.0.0.1", "HTTP_HOST": "127.0.0.1"})
    env.update(env_extra)
    out = subprocess.run([program], env=env, input=body, capture_output=True, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    if not _:
        head, _, body = out.partition(b"\n\n")
    status = 200
    hdrs = {}
    for line in head.decode("latin-1").splitlines():
        k, _, v = line.partition(":")
        if k.lower() == "status":
            status = int(v.split()[0])
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return status, hdrs, body


def cgi_env(method, script, cookie=None, content_type=None, body=b""):
    env = {"REQUEST_METHOD": method, "SCRIPT_NAME": script, "REQUEST_URI": script, "QUERY_STRING": ""}
    if cookie:
        env["HTTP_COOKIE"] = cookie
    if content_type:
        env["CONTENT_TYPE"] = content_type
    if method == "POST":
        env["CONTENT_LENGTH"] = str(len(body))
    return env


def expect(cond, what):
    if not cond:
        fail(f"wrong answer: {what}")


def spread(values):
    m = statistics.median(values)
    return (max(values) - min(values)) / m * 100 if m and len(values) > 1 else 0.0


# ---------------------------------------------------------------- servers


class Servers:
    def __init__(self, tmp, bin_dir, cbin):
        self.tmp = tmp
        self.pids = []  # every process we started, stopped by PID
        self.pools = {}  # name -> worker PIDs
        self.port = free_port()
        self.bin_dir = bin_dir
        self.cbin = cbin

    def pool(self, name, argv, env):
        sock = os.path.join(self.tmp, f"{name}.sock")
        pidfile = os.path.join(self.tmp, f"{name}.pids")
        err = open(os.path.join(self.tmp, f"{name}.stderr"), "ab")
        subprocess.run(["spawn-fcgi", "-s", sock, "-M", "0666", "-F", str(WORKERS), "-P", pidfile, "--"] + argv,
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=err)
        wait_path(pidfile, f"spawn-fcgi {name}")
        time.sleep(0.1)
        with open(pidfile) as f:
            pids = [int(p) for p in f.read().split()]
        if len(pids) != WORKERS:
            fail(f"spawn-fcgi {name}: expected {WORKERS} workers, got {pids}")
        self.pids += pids
        self.pools[name] = pids

    def start(self, env):
        t = self.tmp
        www = os.path.join(t, "www")
        for name in PROGRAMS:
            self.pool(name, [os.path.join(self.bin_dir, name)], env)
        fcgi = "include /etc/nginx/fastcgi_params;"
        gate = (f"internal; {fcgi} fastcgi_pass_request_body off; fastcgi_param CONTENT_LENGTH \"\"; "
                f"fastcgi_param CONTENT_TYPE \"\";")
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = f"""{user}
worker_processes 2;
pid {t}/nginx.pid;
error_log {t}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {t}/nginx-body; fastcgi_temp_path {t}/nginx-fastcgi; proxy_temp_path {t}/nginx-proxy;
  uwsgi_temp_path {t}/nginx-uwsgi; scgi_temp_path {t}/nginx-scgi;
  client_max_body_size 64k;
  default_type text/html;
  server {{
    listen 127.0.0.1:{self.port};
    location = /page.html {{ root {www}; }}
    location = /floor {{ {fcgi} fastcgi_pass unix:{t}/floor.sock; }}
    location = / {{ {fcgi} fastcgi_pass unix:{t}/index.sock; }}
    location = /login {{ {fcgi} fastcgi_pass unix:{t}/login.sock; }}
    location = /logout {{ {fcgi} fastcgi_pass unix:{t}/logout.sock; }}
    location = /auth {{ {fcgi} fastcgi_pass unix:{t}/auth.sock; }}
    location = /gate-ours {{ {gate} fastcgi_pass unix:{t}/auth.sock; }}
    location = /gate-c {{ {gate} fastcgi_pass unix:{t}/floor-gate.sock; }}
    location /private/ {{ auth_request /gate-ours; alias {www}/; }}
    location /private-c/ {{ auth_request /gate-c; alias {www}/; }}
  }}
}}
"""
        path = os.path.join(t, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        nginx = subprocess.Popen(["/usr/sbin/nginx", "-p", t, "-c", path, "-g", "daemon off;"],
                                 stderr=open(os.path.join(t, "nginx.stderr"), "ab"))
        self.pids.append(nginx.pid)
        self.nginx = nginx
        wait_port(self.port, "nginx")

    def start_floors(self, env):
        """The C pools, once page.html holds our page's bytes."""
        self.pool("floor", [os.path.join(self.cbin, "floor"), os.path.join(self.tmp, "www", "page.html")], env)
        self.pool("floor-gate", [os.path.join(self.cbin, "floor"), "gate"], env)

    def stop(self):
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if getattr(self, "nginx", None):
            try:
                self.nginx.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.nginx.pid, signal.SIGKILL)

    def rss(self, name):
        """(peak, current) RSS in KiB of the largest worker of a pool."""
        best = (0, 0)
        for pid in self.pools[name]:
            with open(f"/proc/{pid}/status") as f:
                s = f.read()
            hwm = int(re.search(r"VmHWM:\s+(\d+)", s).group(1))
            rss = int(re.search(r"VmRSS:\s+(\d+)", s).group(1))
            best = max(best, (hwm, rss))
        return best


# ---------------------------------------------------------------- timing


def wrk(port, path, seconds, conns, headers=None, post=None, tmp="/tmp"):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if post is not None:
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(post)}\n')
        cmd += ["-s", script]
        if conns < 2:
            cmd[1] = "-t1"
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad:
        fail(f"wrk {path}: {bad.group(1)} answers were not 2xx/3xx\n{out}")
    if errors and "timeout 0" not in errors.group(1).replace(",", ""):
        log(f"wrk {path}: {errors.group(0)}")

    def ms(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    mean = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    mean_ms = float(mean.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[mean.group(2)]
    return {"rate": rate, "total": total, "p50_ms": ms(50), "mean_ms": mean_ms}


def spawn(cbin, program, env_extra, n, body, tmp):
    stdin = os.path.join(tmp, "stdin")
    with open(stdin, "wb") as f:
        f.write(body)
    env = dict(BASE_ENV)
    env.update({"GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
                "SERVER_NAME": "127.0.0.1", "HTTP_HOST": "127.0.0.1"})
    env.update(env_extra)
    out = subprocess.run([os.path.join(cbin, "spawn"), str(n), stdin, program], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        fail(f"spawn {program}: {out.stderr}")
    data = json.loads(out.stdout)
    return {"p50_ms": statistics.median(data["wall_us"]) / 1000, "cpu_ms": statistics.mean(data["cpu_us"]) / 1000}


# ---------------------------------------------------------------- the run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="folder of the release programs")
    ap.add_argument("--cbin", required=True, help="folder of the compiled C helpers")
    ap.add_argument("--hotpath", help="the hot-path timing program (cargo bench --bench hotpath)")
    ap.add_argument("--smoke", action="store_true", help="a second per row, one pass: checks, no figures")
    ap.add_argument("--out", help="write the report here (BENCHMARKS.md)")
    ap.add_argument("--passes", type=int)
    args = ap.parse_args()
    smoke = args.smoke
    passes = args.passes or (1 if smoke else 3)
    seconds = 1 if smoke else 5
    cgi_runs = 20 if smoke else 300
    login_cgi_runs = 3 if smoke else 20
    logins_for_rss = 20 if smoke else 1000

    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="webauth-bench-")
    os.chmod(tmp, 0o755)
    os.makedirs(os.path.join(tmp, "www"))
    servers = Servers(tmp, args.bin, args.cbin)
    try:
        report = run(args, servers, tmp, smoke, passes, seconds, cgi_runs, login_cgi_runs, logins_for_rss)
    finally:
        servers.stop()
        time.sleep(0.2)
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_before"] = load_before
    report["load_after"] = os.getloadavg()
    if smoke:
        log("bench: smoke run passed: every row answered correctly")
    if args.out:
        write_report(args, report, passes, seconds, cgi_runs, login_cgi_runs, logins_for_rss)


BASE_ENV = {}


def run(args, servers, tmp, smoke, passes, seconds, cgi_runs, login_cgi_runs, logins_for_rss):
    b = args.bin
    hashed = subprocess.run([os.path.join(b, "webauth"), "hash"], input=PASSWORD + "\n", capture_output=True,
                            text=True, check=True).stdout.strip()
    users = os.path.join(tmp, "users.json")
    with open(users, "w") as f:
        json.dump({"john": {"first": "John", "last": "Smith", "password": hashed}}, f)
    BASE_ENV.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WEBAUTH_USERS": users,
                     "WEBAUTH_STORE": f"sqlite:{tmp}/sessions.db"})
    login_body = json.dumps({"username": "john", "password": PASSWORD}).encode()

    def login_cgi():
        st, h, body = cgi(os.path.join(b, "login"),
                          cgi_env("POST", "/login", content_type="application/json", body=login_body), login_body)
        expect(st == 200 and b'"success":true' in body.replace(b" ", b""), f"CGI login: {st} {body[:200]}")
        return h["set-cookie"][0].split(";")[0]

    cookie = login_cgi()
    ended = login_cgi()
    st, _, body = cgi(os.path.join(b, "logout"),
                      cgi_env("POST", "/logout", cookie=ended, content_type="application/json", body=b"{}"), b"{}")
    expect(st == 200, f"CGI logout: {st} {body[:200]}")
    st, _, page = cgi(os.path.join(b, "index"), cgi_env("GET", "/", cookie=cookie))
    expect(st == 200 and b"logout" in page and b"John" in page, f"CGI index with a session: {st}")

    # The same store in rollback-journal mode, for one comparison row (the
    # programs switch only a new store to WAL, so this one stays as it is).
    import sqlite3
    rollback = os.path.join(tmp, "rollback.db")
    src, dst = sqlite3.connect(os.path.join(tmp, "sessions.db")), sqlite3.connect(rollback)
    src.backup(dst)
    dst.execute("PRAGMA journal_mode=DELETE")
    src.close()
    dst.close()

    servers.start(dict(BASE_ENV))
    port = servers.port
    # The static file and the floor serve the bytes of our user page as nginx gets it.
    st, _, page = http(port, "GET", "/", {"Cookie": cookie})
    expect(st == 200 and b"logout" in page and b"John" in page, f"FastCGI index with a session: {st}")
    with open(os.path.join(tmp, "www", "page.html"), "wb") as f:
        f.write(page)
    servers.start_floors(dict(BASE_ENV))
    session = {"Cookie": cookie}
    json_post = {"Content-Type": "application/json"}

    def check_page(path, hdrs, status, needle):
        st, h, body = http(port, "GET", path, hdrs)
        expect(st == status and needle in body, f"GET {path}: {st} {body[:200]}")
        return h, body

    # Each FastCGI row: its check, then how it is timed.
    def check_static():
        _, body = check_page("/page.html", {}, 200, b"logout")
        expect(body == page, "the static page is our page's bytes")

    def check_floor():
        _, body = check_page("/floor", {}, 200, b"logout")
        expect(len(body) == len(page), "the floor serves a page of our page's size")

    def check_index_session():
        _, body = check_page("/", session, 200, b"logout")
        # The nonce varies; Tera escapes a `/` in it, so allow for a few.
        expect(abs(len(body) - len(page)) <= 20, f"our page is the same size: {len(body)} vs {len(page)}")

    def check_index_anon():
        check_page("/", {}, 200, b"password")

    def check_login():
        st, h, body = http(port, "POST", "/login", json_post, login_body)
        expect(st == 200 and b"success" in body and "set-cookie" in h, f"POST /login: {st} {body[:200]}")

    def check_logout():
        st, h, body = http(port, "POST", "/logout", {**json_post, "Cookie": ended}, b"{}")
        expect(st == 200 and b"true" in body, f"POST /logout: {st} {body[:200]}")

    def check_auth():
        st, h, _ = http(port, "GET", "/auth", session)
        expect(st in (200, 204) and h.get("x-webauth-user") == ["john"], f"GET /auth: {st} {h}")
        st, _, _ = http(port, "GET", "/auth", {})
        expect(st == 401, f"GET /auth without a session: {st}")

    def check_private(prefix, gated):
        _, body = check_page(f"{prefix}page.html", session, 200, b"logout")
        expect(body == page, "the gated file is the page")
        if gated:
            st, _, _ = http(port, "GET", f"{prefix}page.html", {})
            expect(st == 401, f"GET {prefix}page.html without a session: {st}")

    fcgi_rows = [
        ("static", "nginx static file, our page's bytes (ceiling)", check_static,
         lambda: wrk(port, "/page.html", seconds, 32)),
        ("floor", "C libfcgi responder, our page's bytes (floor)", check_floor,
         lambda: wrk(port, "/floor", seconds, 32)),
        ("index_session", "`index` GET / with a session", check_index_session,
         lambda: wrk(port, "/", seconds, 32, session)),
        ("index_anon", "`index` GET / anonymous (login page)", check_index_anon,
         lambda: wrk(port, "/", seconds, 32)),
        ("login", "`login` POST, valid (argon2id m=19456 t=2 p=1)", check_login,
         lambda: wrk(port, "/login", seconds, 8, json_post, login_body.decode(), tmp)),
        ("login_c1", "`login` POST, valid, one connection (latency)", check_login,
         lambda: wrk(port, "/login", seconds, 1, json_post, login_body.decode(), tmp)),
        ("logout", "`logout` POST, a session already ended", check_logout,
         lambda: wrk(port, "/logout", seconds, 32, {**json_post, "Cookie": ended}, "{}", tmp)),
        ("auth", "`auth` gate GET, valid session (204)", check_auth,
         lambda: wrk(port, "/auth", seconds, 32, session)),
        ("authreq_ours", "static file behind `auth_request` to our `auth`", lambda: check_private("/private/", True),
         lambda: wrk(port, "/private/page.html", seconds, 32, session)),
        ("authreq_c", "static file behind `auth_request` to a C gate that says yes",
         lambda: check_private("/private-c/", False), lambda: wrk(port, "/private-c/page.html", seconds, 32, session)),
    ]

    hello = os.path.join(args.cbin, "hello")
    idx = os.path.join(b, "index")
    cgi_rows = [
        ("cgi_hello", "C hello world (spawn floor)", hello, {}, b"", cgi_runs, None),
        ("cgi_index_session", "`index` GET / with a session", idx, cgi_env("GET", "/", cookie=cookie), b"", cgi_runs,
         lambda: b"logout" in cgi(idx, cgi_env("GET", "/", cookie=cookie))[2]),
        ("cgi_index_rollback", "`index` GET / with a session, store in rollback-journal mode", idx,
         {**cgi_env("GET", "/", cookie=cookie), "WEBAUTH_STORE": f"sqlite:{rollback}"}, b"", cgi_runs,
         lambda: b"logout" in cgi(idx, {**cgi_env("GET", "/", cookie=cookie), "WEBAUTH_STORE": f"sqlite:{rollback}"})[2]),
        ("cgi_index_anon", "`index` GET / anonymous", idx, cgi_env("GET", "/"), b"", cgi_runs,
         lambda: cgi(idx, cgi_env("GET", "/"))[0] == 200),
        ("cgi_auth", "`auth` gate, valid session", os.path.join(b, "auth"), cgi_env("GET", "/auth", cookie=cookie),
         b"", cgi_runs, lambda: cgi(os.path.join(b, "auth"), cgi_env("GET", "/auth", cookie=cookie))[0] in (200, 204)),
        ("cgi_login", "`login` POST, valid", os.path.join(b, "login"),
         cgi_env("POST", "/login", content_type="application/json", body=login_body), login_body, login_cgi_runs,
         lambda: login_cgi() is not None),
    ]

    results = {name: [] for name, *_ in fcgi_rows + cgi_rows}
    for _, what, check, *_ in fcgi_rows:
        check()
    for name, what, prog, env, body, n, check in cgi_rows:
        if check:
            expect(check(), what)
    log(f"bench: every row answers correctly; {passes} pass(es) of {len(fcgi_rows)} FastCGI rows "
        f"({seconds} s each) and {len(cgi_rows)} CGI rows")
    for p in range(passes):
        # A different row first in each pass, so that no row always follows the same one.
        k = p % len(fcgi_rows)
        for name, what, check, timed in fcgi_rows[k:] + fcgi_rows[:k]:
            results[name].append(timed())
            log(f"  pass {p + 1} {name}: {results[name][-1]['rate']:.0f}/s")
        for name, what, prog, env, body, n, check in cgi_rows:
            results[name].append(spawn(args.cbin, prog, env, n, body, tmp))
            log(f"  pass {p + 1} {name}: p50 {results[name][-1]['p50_ms']:.2f} ms")

    # RSS of the workers after their rows; the login pool after enough logins.
    logins = sum(r["total"] for r in results["login"] + results["login_c1"]) + 1
    while logins < logins_for_rss:
        r = wrk(port, "/login", max(1, min(30, int((logins_for_rss - logins) / max(results["login"][0]["rate"], 1)) + 1)),
                8, json_post, login_body.decode(), tmp)
        logins += r["total"]
    rss = {name: servers.rss(name) for name in PROGRAMS + ["floor"]}
    sizes = {name: os.path.getsize(os.path.join(b, name)) for name in PROGRAMS + ["webauth"]}

    hotpath = []
    if args.hotpath:
        out = subprocess.run([args.hotpath] + (["--smoke"] if smoke else []), capture_output=True, text=True,
                             env={**os.environ}, check=True).stdout
        hotpath = [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    return {"fcgi_rows": [(n, w) for n, w, *_ in fcgi_rows], "cgi_rows": [(n, w) for n, w, *_ in cgi_rows],
            "results": results, "rss": rss, "logins": logins, "sizes": sizes, "page_bytes": len(page),
            "hotpath": hotpath}


# ---------------------------------------------------------------- the report


def med(results, name, key):
    return statistics.median(r[key] for r in results[name])


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip() or \
            subprocess.run(cmd, shell=True, capture_output=True, text=True).stderr.strip()
    except OSError:
        return "?"


def write_report(args, rep, passes, seconds, cgi_runs, login_cgi_runs, logins_for_rss):
    res = rep["results"]
    floor = med(res, "floor", "rate")
    hello = med(res, "cgi_hello", "p50_ms")
    hello_cpu = med(res, "cgi_hello", "cpu_ms")
    lines = []
    lines.append("| row | median | spread | × floor |")
    lines.append("| --- | ---: | ---: | ---: |")
    ratio_of = {"authreq_ours": "authreq_c", "authreq_c": "authreq_c"}
    for name, what in rep["fcgi_rows"]:
        rate = med(res, name, "rate")
        rates = [r["rate"] for r in res[name]]
        if name.startswith("login"):
            extra = f"{rate:.1f} req/s" + (f", mean latency {med(res, name, 'mean_ms'):.1f} ms" if name == "login_c1" else "")
            ratio = ""
        else:
            extra = f"{rate / 1000:.1f} k req/s"
            base = med(res, ratio_of[name], "rate") if name in ratio_of else floor
            ratio = f"{rate / base:.2f}" + (" (C gate)" if name in ratio_of else "")
        lines.append(f"| FastCGI: {what} | {extra} | {spread(rates):.0f}% | {ratio} |")
    for name, what in rep["cgi_rows"]:
        p50 = med(res, name, "p50_ms")
        cpu = med(res, name, "cpu_ms")
        walls = [r["p50_ms"] for r in res[name]]
        lines.append(f"| CGI: {what} | p50 {p50:.2f} ms wall, {cpu:.2f} ms CPU | {spread(walls):.0f}% | "
                     f"{p50 / hello:.2f} wall, {cpu / hello_cpu:.2f} CPU |")
    table = "\n".join(lines)

    mem = ["| FastCGI worker | peak RSS (largest worker) | RSS now |", "| --- | ---: | ---: |"]
    for name, (hwm, now) in rep["rss"].items():
        label = f"`{name}`" + (f" after {rep['logins']} logins" if name == "login" else "") if name != "floor" \
            else "C libfcgi floor"
        mem.append(f"| {label} | {hwm / 1024:.1f} MiB | {now / 1024:.1f} MiB |")
    sizes = ["| binary (static, stripped) | size |", "| --- | ---: |"]
    for name, size in rep["sizes"].items():
        sizes.append(f"| `{name}` | {size / 1048576:.2f} MiB |")

    hot = ["| hot path, in process | median | spread |", "| --- | ---: | ---: |"]
    for h in rep["hotpath"]:
        hot.append(f"| {h['name']} | {h['median_us']:.1f} µs | {h['spread']:.0f}% |")

    machine = {
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "nginx": sh("/usr/sbin/nginx -v 2>&1"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "spawn-fcgi": sh("spawn-fcgi -v 2>&1 | head -1"),
        "libfcgi": sh("dpkg-query -W -f '${Version}' libfcgi-dev"),
        "rustc": sh("rustc -V"),
        "gcc": sh("gcc --version | head -1"),
    }
    summary = {
        "fcgi_index_vs_floor": med(res, "index_session", "rate") / floor,
        "authreq_vs_c": med(res, "authreq_ours", "rate") / med(res, "authreq_c", "rate"),
        "cgi_index_vs_hello": med(res, "cgi_index_session", "p50_ms") / hello,
        "cgi_index_ms": med(res, "cgi_index_session", "p50_ms"),
        "login_rss_mib": rep["rss"]["login"][0] / 1024,
    }
    verify_us = next((h["median_us"] for h in rep["hotpath"] if h["name"].startswith("argon2id verify")), None)
    rest_us = next((h["median_us"] for h in rep["hotpath"] if h["name"].startswith("`login` minus")), None)
    c1_ms = med(res, "login_c1", "mean_ms")
    sizes_mib = {n: v / 1048576 for n, v in rep["sizes"].items()}
    rss_mib = {n: v[0] / 1024 for n, v in rep["rss"].items()}

    def verdict(ok):
        return "**met**" if ok else "**not met**"

    v = ["| target | figure in this run | |", "| --- | --- | --- |"]
    r = summary["fcgi_index_vs_floor"]
    v.append(f"| FastCGI GET / with a session ≥ 0.9× the C floor at the same bytes | {r:.2f}× | {verdict(r >= 0.9)} |")
    r, ms = summary["cgi_index_vs_hello"], summary["cgi_index_ms"]
    v.append(f"| CGI GET / with a session ≤ 2× the C hello spawn | {r:.2f}× | {verdict(r <= 2)} |")
    v.append(f"| CGI GET / with a session under 1.5 ms | p50 {ms:.2f} ms | {verdict(ms < 1.5)} |")
    r = summary["authreq_vs_c"]
    v.append(f"| `auth_request` through our gate ≥ 0.9× through the C gate | {r:.2f}× | {verdict(r >= 0.9)} |")
    if verify_us is not None and rest_us is not None:
        v.append(f"| POST /login = argon2id verify + under 1 ms | in process: verify {verify_us / 1000:.1f} ms, "
                 f"the rest {rest_us / 1000:.2f} ms; through nginx, one connection: {c1_ms:.1f} ms, "
                 f"{c1_ms - verify_us / 1000:.2f} ms over the verify | {verdict(rest_us < 1000)} |")
    v.append(f"| a `login` worker under 30 MiB after {rep['logins']} logins | {rss_mib['login']:.1f} MiB peak | "
             f"{verdict(rss_mib['login'] < 30)} |")
    small = max(rss_mib[n] for n in ("index", "logout", "auth"))
    v.append(f"| `index`, `logout`, `auth` workers under 10 MiB | largest {small:.1f} MiB peak | {verdict(small < 10)} |")
    big = max(sizes_mib.values())
    v.append(f"| each binary under 5 MiB stripped | largest {big:.2f} MiB | {verdict(big < 5)} |")
    verdicts = "\n".join(v)
    chart = make_chart(rep, res, floor, hello, hello_cpu)
    with open(os.path.join(os.path.dirname(args.out) or ".", "bench", "chart.svg"), "w") as f:
        f.write(chart)
    data = {"machine": machine, "load_before": rep["load_before"], "load_after": rep["load_after"],
            "passes": passes, "seconds": seconds, "cgi_runs": cgi_runs, "table": table, "memory": "\n".join(mem),
            "sizes": "\n".join(sizes), "hotpath": "\n".join(hot), "summary": summary, "results": res,
            "page_bytes": rep["page_bytes"], "logins": rep["logins"], "login_cgi_runs": login_cgi_runs}
    with open(os.path.join(os.path.dirname(args.out) or ".", "bench", "last-run.json"), "w") as f:
        json.dump(data, f, indent=1)
    template = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "BENCHMARKS.md.in")).read()
    text = template
    for key, value in [("TABLE", table), ("VERDICTS", verdicts), ("MEMORY", "\n".join(mem)), ("SIZES", "\n".join(sizes)),
                       ("HOTPATH", "\n".join(hot)), ("PASSES", str(passes)), ("SECONDS", str(seconds)),
                       ("CGI_RUNS", str(cgi_runs)), ("LOGIN_CGI_RUNS", str(login_cgi_runs)),
                       ("PAGE_BYTES", str(rep["page_bytes"])), ("LOGINS", str(rep["logins"])),
                       ("LOAD_BEFORE", " ".join(f"{x:.2f}" for x in rep["load_before"])),
                       ("LOAD_AFTER", " ".join(f"{x:.2f}" for x in rep["load_after"])),
                       ("DATE", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
                       ("MACHINE", "\n".join(f"| {k} | {v} |" for k, v in machine.items()))]:
        text = text.replace("{{" + key + "}}", value)
    for key, value in summary.items():
        text = text.replace("{{" + key + "}}", f"{value:.2f}")
    with open(args.out, "w") as f:
        f.write(text)
    log(f"bench: wrote {args.out}")
    print(table)


def make_chart(rep, res, floor, hello, hello_cpu):
    """A horizontal bar chart, two panels: throughput over its floor (higher
    is better, target 0.9) and CGI time over the C hello spawn (lower is
    better, target 2)."""
    up = [("index, session", med(res, "index_session", "rate") / floor),
          ("index, anonymous", med(res, "index_anon", "rate") / floor),
          ("logout", med(res, "logout", "rate") / floor),
          ("auth gate (direct)", med(res, "auth", "rate") / floor),
          ("auth_request: ours / C gate", med(res, "authreq_ours", "rate") / med(res, "authreq_c", "rate")),
          ("static file (ceiling)", med(res, "static", "rate") / floor)]
    down = [("index, session (wall)", med(res, "cgi_index_session", "p50_ms") / hello),
            ("index, session (CPU)", med(res, "cgi_index_session", "cpu_ms") / hello_cpu),
            ("index, anonymous (wall)", med(res, "cgi_index_anon", "p50_ms") / hello),
            ("auth (wall)", med(res, "cgi_auth", "p50_ms") / hello)]
    width, left, bar, gap = 760, 230, 18, 8
    out = []
    y = 10

    def panel(title, rows, target, scale_max, note):
        nonlocal y
        out.append(f'<text x="10" y="{y + 14}" font-weight="bold">{title}</text>')
        y += 26
        top = y
        px = (width - left - 60) / scale_max
        for label, v in rows:
            w = max(1, min(v, scale_max) * px)
            good = (v >= target) if target < 1 else (v <= target)
            colour = "#3a7d44" if good else "#c0504d"
            out.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{label}</text>')
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}">{v:.2f}×</text>')
            y += bar + gap
        for mark, dash in [(1.0, ""), (target, ' stroke-dasharray="4 3"')]:
            x = left + mark * px
            out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y}" stroke="#333"{dash}/>')
        out.append(f'<text x="{left}" y="{y + 12}" font-size="11" fill="#555">{note}</text>')
        y += 30

    panel("FastCGI throughput ÷ the C floor in the same run (higher is better)", up, 0.9,
          max(2.0, max(v for _, v in up) * 1.05), "solid line: the floor (1×); dashed: the target (0.9×)")
    panel("CGI spawn time ÷ the C hello spawn in the same run (lower is better)", down, 2.0,
          max(3.0, max(v for _, v in down) * 1.05), "solid line: the C hello (1×); dashed: the target (2×)")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" font-family="sans-serif" '
            f'font-size="13">\n<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(out) + "\n</svg>\n")


if __name__ == "__main__":
    main()
