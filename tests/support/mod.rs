//! Shared helpers for the integration tests, so each test reads as the
//! scenario it checks:
//!
//! - [`TestSite`]: john and jane in a users file and an SQLite store, in a
//!   temporary directory. [`TestSite::call`] runs a route handler in this
//!   process; [`TestSite::cgi`] runs the real program as a CGI script, and
//!   [`TestSite::admin`] the `webauth` command, on the same files.
//! - [`Req`]: a request as CGI variables and a body, for either of them.
//! - [`Server`]: a process a test started, stopped by PID when dropped.
//! - [`wait_until`], the one polling loop; [`http`], a raw HTTP/1.1 client
//!   (nginx, the demo); [`fcgi_client`], a FastCGI client (a web server's part).
#![allow(dead_code)]

pub mod fcgi_client;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod totp;
pub mod web;
pub mod webdriver;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use webauth::http::{BodyPlan, RequestError};
use webauth::{App, Request, Response};

/// A fresh directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("webauth-test-").tempdir().expect("create a temporary directory")
}

/// john/johnpass (John Smith) and jane/janepass (Jane Doe) as a users file,
/// hashed once per test binary.
fn demo_users_json() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        let hash = |password| webauth::users::hash_password(password).expect("hash");
        let john = serde_json::json!({"first": "John", "last": "Smith", "password": hash("johnpass")});
        let jane = serde_json::json!({"first": "Jane", "last": "Doe", "password": hash("janepass")});
        serde_json::json!({"john": john, "jane": jane}).to_string()
    })
}

/// A deployment in a temporary directory: users file, store, settings.
pub struct TestSite {
    pub dir: tempfile::TempDir,
    pub users: PathBuf,
    pub store: PathBuf,
    /// The `WEBAUTH_*` settings, as the programs' environment holds them.
    pub env: Vec<(String, String)>,
}

impl TestSite {
    pub fn new() -> TestSite {
        TestSite::with_env(&[])
    }

    /// A site whose programs also get these `WEBAUTH_*` variables.
    pub fn with_env(env: &[(&str, &str)]) -> TestSite {
        let dir = temp_dir();
        let users = dir.path().join("users.json");
        std::fs::write(&users, demo_users_json()).expect("write users");
        let store = dir.path().join("sessions.db");
        let mut vars = vec![
            ("WEBAUTH_USERS".to_string(), users.display().to_string()),
            ("WEBAUTH_STORE".to_string(), format!("sqlite:{}", store.display())),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TestSite { dir, users, store, env: vars }
    }

    /// A site whose store is the Redis at `url`, with a secret key file of
    /// its own (the state directory, for the verification slots, is the
    /// site's directory).
    pub fn with_redis(url: &str, env: &[(&str, &str)]) -> TestSite {
        let mut site = TestSite::with_env(env);
        let dir = site.dir.path().to_path_buf();
        let key = dir.join("secret.key");
        let random: Vec<u8> = (0..2).flat_map(|_| webauth::session::Token::generate().unwrap().id().0).collect();
        std::fs::write(&key, random).expect("write the secret key");
        site.set("WEBAUTH_STORE", url);
        site.set("WEBAUTH_STATE_DIR", &dir.display().to_string());
        site.set("WEBAUTH_SECRET_KEY", &key.display().to_string());
        site
    }

    /// The value of one of the site's settings.
    pub fn setting(&self, name: &str) -> &str {
        self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{name} is not set"))
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Runs `route`'s handler (index, login, logout) in this process.
    ///
    /// Each call builds its `App` from the site's settings, as each CGI run
    /// does: a changed users file or setting counts at once, and the site
    /// can be shared between threads.
    pub fn call(&self, route: &str, req: &Req) -> Response {
        let handler: webauth::Handler = match route {
            "index" => webauth::routes::index,
            "login" => webauth::routes::login,
            "logout" => webauth::routes::logout,
            "auth" => webauth::routes::auth,
            other => panic!("no route {other}"),
        };
        let vars = req.cgi_vars(route, &self.env);
        let request = Request::from_cgi_vars(&vars, body_as_read(&vars, &req.body));
        let mut app = App::new(self.env.clone()).expect("the site's settings are valid");
        app.handle(handler, &request)
    }

    pub fn get(&self, route: &str) -> Response {
        self.call(route, &Req::get())
    }

    pub fn post_json(&self, route: &str, value: serde_json::Value) -> Response {
        self.call(route, &Req::json(&value))
    }

    pub fn post_form(&self, route: &str, body: &str) -> Response {
        self.call(route, &Req::form(body))
    }

    /// A JSON login, in process.
    pub fn login_json(&self, username: &str, password: &str) -> Response {
        self.call("login", &Req::login(username, password))
    }

    /// Logs in as the user (in process) and returns the `name=value` cookie pair.
    pub fn session_for(&self, username: &str, password: &str) -> String {
        let reply = self.login_json(username, password);
        assert_eq!(reply.status, 200, "login as {username} failed: {}", reply.text());
        reply.cookie().expect("a session cookie")
    }

    /// GET / with a cookie, in process.
    pub fn index_with(&self, cookie: &str) -> Response {
        self.call("index", &Req::get().cookie(cookie))
    }

    /// Runs `program` (index, login, logout) as a CGI script for `req`.
    pub fn cgi(&self, program: &str, req: &Req) -> CgiReply {
        run_cgi(self.cgi_command(program, req), &req.body)
    }

    /// The `Command` that [`TestSite::cgi`] runs, not yet started: for tests
    /// that change the user or kill the process mid-request.
    pub fn cgi_command(&self, program: &str, req: &Req) -> Command {
        let mut cmd = Command::new(bin(program));
        cmd.env_clear().env("PATH", "/usr/bin:/bin").envs(req.cgi_vars(program, &self.env));
        cmd
    }

    /// The admin command with this site's settings and `stdin`.
    pub fn admin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin("webauth"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn webauth");
        // The command may refuse before it reads stdin: a broken pipe is fine.
        let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
        child.wait_with_output().expect("wait webauth")
    }
}

/// The body a front end hands to `Request::from_cgi_vars`: none on GET and
/// HEAD, else what `CONTENT_LENGTH` admits. The one place the tests decide it.
fn body_as_read(vars: &HashMap<String, String>, body: &[u8]) -> Result<Vec<u8>, RequestError> {
    BodyPlan::for_request(vars).check(body.to_vec())
}

pub fn bin(program: &str) -> &'static str {
    match program {
        "index" => env!("CARGO_BIN_EXE_index"),
        "login" => env!("CARGO_BIN_EXE_login"),
        "logout" => env!("CARGO_BIN_EXE_logout"),
        "auth" => env!("CARGO_BIN_EXE_auth"),
        "webauth" => env!("CARGO_BIN_EXE_webauth"),
        other => panic!("no program {other}"),
    }
}

/// A request: a method, a body and CGI variables over the defaults (see
/// [`Req::cgi_vars`]), built up as `Req::form("...").cookie(c).var(...)`.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub body: Vec<u8>,
    vars: Vec<(String, String)>,
    unset: Vec<String>,
}

impl Req {
    pub fn new(method: &str) -> Req {
        Req { method: method.to_string(), body: Vec::new(), vars: Vec::new(), unset: Vec::new() }
    }

    pub fn get() -> Req {
        Req::new("GET")
    }

    pub fn json(value: &serde_json::Value) -> Req {
        Req::new("POST").body("application/json", value.to_string().as_bytes())
    }

    /// A JSON login: `{"username": ..., "password": ...}`.
    pub fn login(username: &str, password: &str) -> Req {
        Req::json(&serde_json::json!({"username": username, "password": password}))
    }

    pub fn form(body: &str) -> Req {
        Req::new("POST").body("application/x-www-form-urlencoded", body.as_bytes())
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Req {
        self.body = body.to_vec();
        self.var("CONTENT_TYPE", content_type)
    }

    /// Sets a CGI variable (over the defaults and the site's settings).
    pub fn var(mut self, name: &str, value: &str) -> Req {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// Leaves a CGI variable out (e.g. `CONTENT_LENGTH`, set on every POST).
    pub fn without(mut self, name: &str) -> Req {
        self.unset.push(name.to_string());
        self
    }

    pub fn cookie(self, cookie: &str) -> Req {
        self.var("HTTP_COOKIE", cookie)
    }

    pub fn remote(self, addr: &str) -> Req {
        self.var("REMOTE_ADDR", addr)
    }

    /// The query string, as sent (not encoded here).
    pub fn with_query(self, query: &str) -> Req {
        self.var("QUERY_STRING", query)
    }

    pub fn script(self, script_name: &str) -> Req {
        self.var("SCRIPT_NAME", script_name)
    }

    /// Overrides `CONTENT_LENGTH` (the body sent stays as it is).
    pub fn declared_length(self, length: &str) -> Req {
        self.var("CONTENT_LENGTH", length)
    }

    /// The value of a variable this request sets itself.
    pub fn get_var(&self, name: &str) -> Option<&str> {
        self.vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn is_json(&self) -> bool {
        self.get_var("CONTENT_TYPE").is_some_and(|t| t.starts_with("application/json"))
    }

    /// The CGI variables for `program`: what a web server sends for a client
    /// at 192.0.2.10 on http://localhost/, the site's settings as the
    /// environment holds them, `CONTENT_LENGTH` on a POST, then this request's own.
    pub fn cgi_vars(&self, program: &str, settings: &[(String, String)]) -> HashMap<String, String> {
        let script = if program == "index" { "/".to_string() } else { format!("/{program}") };
        let mut vars: HashMap<String, String> = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_METHOD", &self.method),
            ("SCRIPT_NAME", &script),
            ("QUERY_STRING", ""),
            ("REMOTE_ADDR", "192.0.2.10"),
            ("HTTP_HOST", "localhost"),
            ("SERVER_PORT", "80"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(settings.iter().cloned())
        .collect();
        if !self.body.is_empty() || self.method == "POST" {
            vars.insert("CONTENT_LENGTH".into(), self.body.len().to_string());
        }
        vars.extend(self.vars.iter().cloned());
        for name in &self.unset {
            vars.remove(name);
        }
        vars
    }
}

/// Reading a [`Response`] the way the tests check it.
pub trait ResponseExt {
    fn headers_named(&self, name: &str) -> Vec<&str>;
    fn text(&self) -> String;
    /// The body with Tera's escaped slashes (`&#x2F;`) read back as `/`, for
    /// checking URLs in attributes.
    fn html(&self) -> String;
    fn json(&self) -> serde_json::Value;
    /// The `name=value` of a session cookie this reply sets (not one it expires).
    fn cookie(&self) -> Option<String>;
    /// Whether the reply expires the session cookie.
    fn expires_cookie(&self) -> bool;
}

impl ResponseExt for Response {
    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn html(&self) -> String {
        self.text().replace("&#x2F;", "/")
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("Content-Type"), Some("application/json"), "not JSON: {self:?}");
        serde_json::from_slice(&self.body).expect("valid JSON body")
    }

    fn cookie(&self) -> Option<String> {
        self.headers_named("Set-Cookie")
            .into_iter()
            .find(|c| !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap_or("").to_string())
    }

    fn expires_cookie(&self) -> bool {
        self.headers_named("Set-Cookie").iter().any(|c| c.contains("Max-Age=0"))
    }
}

/// What a CGI program printed, parsed, and what else the test saw of it.
#[derive(Debug)]
pub struct CgiReply {
    pub response: Response,
    pub stderr: String,
    /// Whether the program read all of stdin before it exited (fcgiwrap
    /// writes the whole body before it reads the answer).
    pub read_all_stdin: bool,
}

impl Deref for CgiReply {
    type Target = Response;
    fn deref(&self) -> &Response {
        &self.response
    }
}

/// Runs a CGI program with `stdin` and parses its `Status:`, headers and body.
pub fn run_cgi(mut cmd: Command, stdin: &[u8]) -> CgiReply {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn CGI program");
    let mut input = child.stdin.take().expect("stdin");
    let body = stdin.to_vec();
    // A program may answer without reading all of stdin: write from a thread.
    let writer = std::thread::spawn(move || input.write_all(&body).is_ok());
    let out = child.wait_with_output().expect("wait for CGI program");
    let read_all_stdin = writer.join().expect("stdin writer");
    let response = parse_response(&out.stdout).expect("a CGI response on stdout");
    CgiReply { response, stderr: String::from_utf8_lossy(&out.stderr).into_owned(), read_all_stdin }
}

/// What a reply must never show a client: a stack trace or the server's source
/// paths. Returns the first such marker found in the body or a header value.
pub fn leaked_internals(reply: &Response) -> Option<&'static str> {
    const MARKERS: [&str; 5] = ["panicked", "RUST_BACKTRACE", "src/", ".rs:", "stack backtrace"];
    let text = reply.text();
    MARKERS.iter().copied().find(|m| text.contains(m) || reply.headers.iter().any(|(_, v)| v.contains(m)))
}

/// Whether the tests run as root (where file modes do not stop writes).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).expect("/proc/self")
}

/// Polls `check` every 20 ms until it gives a value; fails the test naming
/// `what` if none comes within `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a test waits for a server to come up, or to stop.
pub const STARTUP: Duration = Duration::from_secs(10);

/// A process a test started (a FastCGI program, a `--listen` supervisor,
/// nginx, the demo) with its stderr in a file. Dropping it stops it by PID:
/// SIGTERM, then SIGKILL if it is still there after [`STARTUP`].
pub struct Server {
    pub name: String,
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Server {
    /// Starts `command` (stdout as the command says) with stderr to `stderr_path`.
    pub fn spawn(name: &str, mut command: Command, stderr_path: &Path) -> Server {
        let log = std::fs::File::create(stderr_path).expect("create a stderr log");
        let child = command.stderr(log).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Server { name: name.to_string(), child, stderr_path: stderr_path.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let name = format!("{} exits", self.name);
        wait_until(&name, within, || self.exited())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // No panics here: a test may be unwinding already.
        let pid = self.child.id();
        let mut running = || matches!(self.child.try_wait(), Ok(None));
        if running() {
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + STARTUP;
            while running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SIGKILL (workers of a --listen parent get SIGTERM when it dies).
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a PID this test started (or one of its children).
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`),
/// with `Content-Length` added; the answer read to the end, a chunked body
/// joined. A server may answer (413) and close before it has read a large
/// body: a failed write is not an error, the answer is what counts.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Response {
    let body = body.as_ref();
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let _ = s.write_all(&bytes);
    let raw = read_answer(&mut s);
    let response =
        parse_response(&raw).unwrap_or_else(|| panic!("not an HTTP answer: {}", String::from_utf8_lossy(&raw)));
    if response.header("Transfer-Encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let joined = dechunk(&response.body);
        return response.with_body(joined);
    }
    response
}

/// Reads an answer: up to the end of its `Content-Length` body when it has
/// one (some servers keep the connection open despite `Connection: close`),
/// else to the end of the connection.
fn read_answer(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
            if length.is_some_and(|n| raw.len() >= end + 4 + n) {
                return raw;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let rest = &body[end + 2..];
        match size {
            Some(n) if n > 0 && rest.len() >= n => {
                out.extend_from_slice(&rest[..n]);
                body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
            }
            _ => break,
        }
    }
    out
}

/// Status, headers and body as a CGI program or FastCGI responder prints
/// them (a `Status:` header) or an HTTP server sends them (a status line);
/// `None` without a blank line after the headers, or without a status.
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut response = Response::new(0).with_body(raw[split + 4..].to_vec());
    for line in std::str::from_utf8(&raw[..split]).ok()?.split("\r\n") {
        // A status line (`HTTP/1.1 200 OK`), or a header: `Name: value`, the
        // space optional (chromedriver sends none).
        let (name, value) = match line.strip_prefix("HTTP/") {
            Some(rest) => ("HTTP/", rest.split_once(' ')?.1),
            None => line.split_once(':').map(|(n, v)| (n, v.trim()))?,
        };
        if name == "Status" || name == "HTTP/" {
            response.status = value.get(..3)?.parse().ok()?;
        } else {
            response = response.with_header(name, value);
        }
    }
    (response.status != 0).then_some(response)
}
