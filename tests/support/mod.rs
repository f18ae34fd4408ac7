//! Shared helpers for the integration tests: a site in a temporary directory
//! (users file with john and jane, a store), and the route programs run as
//! CGI scripts, their output parsed.
#![allow(dead_code)]

pub mod web;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("webauth-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo users' hashes, computed once per test binary.
fn hashes() -> &'static (String, String) {
    static HASHES: OnceLock<(String, String)> = OnceLock::new();
    HASHES.get_or_init(|| {
        (
            webauth::users::hash_password("johnpass").expect("hash"),
            webauth::users::hash_password("janepass").expect("hash"),
        )
    })
}

/// The tutorial's users file, with argon2id hashes.
pub fn demo_users_json() -> String {
    let (john, jane) = hashes();
    serde_json::json!({
        "john": {"first": "John", "last": "Smith", "password": john},
        "jane": {"first": "Jane", "last": "Doe", "password": jane},
    })
    .to_string()
}

/// A deployment in a temp dir: users file, store, and extra configuration.
pub struct Site {
    pub dir: TempDir,
    pub users: PathBuf,
    pub store: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Site {
    pub fn new() -> Site {
        Site::with_env(&[])
    }

    /// A site whose programs also get these `WEBAUTH_*` variables.
    pub fn with_env(env: &[(&str, &str)]) -> Site {
        let dir = TempDir::new("site");
        let users = dir.path().join("users.json");
        std::fs::write(&users, demo_users_json()).expect("write users");
        let store = dir.path().join("sessions.db");
        let mut vars = vec![
            ("WEBAUTH_USERS".to_string(), users.display().to_string()),
            ("WEBAUTH_STORE".to_string(), format!("sqlite:{}", store.display())),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Site { dir, users, store, env: vars }
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Runs `program` (index, login, logout) as a CGI script for `req`.
    pub fn cgi(&self, program: &str, req: &Req) -> Reply {
        run_cgi(self.cgi_command(program, req), &req.body)
    }

    /// JSON login; the reply.
    pub fn login_json(&self, username: &str, password: &str) -> Reply {
        self.cgi("login", &Req::json(&serde_json::json!({"username": username, "password": password})))
    }

    /// Logs in as the user and returns the `name=value` cookie pair.
    pub fn session_for(&self, username: &str, password: &str) -> String {
        let reply = self.login_json(username, password);
        assert_eq!(reply.status, 200, "login as {username} failed: {}", reply.text());
        reply.cookie().expect("a session cookie")
    }

    /// GET / with a cookie.
    pub fn index_with(&self, cookie: &str) -> Reply {
        self.cgi("index", &Req::get().cookie(cookie))
    }

    /// The admin command with this site's configuration and `stdin`.
    pub fn admin(&self, args: &[&str], stdin: &str) -> std::process::Output {
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

fn default_script(program: &str) -> String {
    match program {
        "index" => "/".to_string(),
        p => format!("/{p}"),
    }
}

pub fn bin(program: &str) -> &'static str {
    match program {
        "index" => env!("CARGO_BIN_EXE_index"),
        "login" => env!("CARGO_BIN_EXE_login"),
        "logout" => env!("CARGO_BIN_EXE_logout"),
        "webauth" => env!("CARGO_BIN_EXE_webauth"),
        other => panic!("no program {other}"),
    }
}

/// A CGI request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// Overrides the real body length in `CONTENT_LENGTH`.
    pub content_length: Option<String>,
    pub cookie: Option<String>,
    pub query: String,
    pub script_name: Option<String>,
    pub remote_addr: String,
    pub env: Vec<(String, String)>,
}

impl Req {
    pub fn new(method: &str) -> Req {
        Req {
            method: method.to_string(),
            body: Vec::new(),
            content_type: None,
            content_length: None,
            cookie: None,
            query: String::new(),
            script_name: None,
            remote_addr: "192.0.2.10".to_string(),
            env: Vec::new(),
        }
    }

    pub fn get() -> Req {
        Req::new("GET")
    }

    pub fn json(value: &serde_json::Value) -> Req {
        Req::new("POST").body("application/json", value.to_string().as_bytes())
    }

    pub fn form(body: &str) -> Req {
        Req::new("POST").body("application/x-www-form-urlencoded", body.as_bytes())
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Req {
        self.content_type = Some(content_type.to_string());
        self.body = body.to_vec();
        self
    }

    pub fn cookie(mut self, cookie: &str) -> Req {
        self.cookie = Some(cookie.to_string());
        self
    }

    pub fn var(mut self, name: &str, value: &str) -> Req {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn remote(mut self, addr: &str) -> Req {
        self.remote_addr = addr.to_string();
        self
    }
}

/// A CGI program's answer, parsed.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: String,
    pub exit_ok: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body with Tera's escaped slashes (`&#x2F;`) read back as `/`, for
    /// checking URLs in attributes.
    pub fn html(&self) -> String {
        self.text().replace("&#x2F;", "/")
    }

    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("Content-Type"), Some("application/json"), "not JSON: {self:?}");
        serde_json::from_slice(&self.body).expect("valid JSON body")
    }

    /// The `name=value` of a session cookie this reply sets (not one it expires).
    pub fn cookie(&self) -> Option<String> {
        self.headers_named("Set-Cookie")
            .into_iter()
            .find(|c| !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap_or("").to_string())
    }

    /// Whether the reply expires the session cookie.
    pub fn expires_cookie(&self) -> bool {
        self.headers_named("Set-Cookie").iter().any(|c| c.contains("Max-Age=0"))
    }
}

/// Parses `Status:`, headers and body as a CGI program prints them.
pub fn parse_cgi(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("CGI output has a header block");
    let head = std::str::from_utf8(&raw[..split]).expect("headers are UTF-8");
    let body = raw[split + 4..].to_vec();
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.split("\r\n") {
        let (name, value) = line.split_once(": ").expect("header line");
        if name == "Status" {
            status = value[..3].parse().expect("status code");
        } else {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    (status, headers, body)
}

pub fn run_cgi(mut cmd: Command, stdin: &[u8]) -> Reply {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn CGI program");
    let mut input = child.stdin.take().expect("stdin");
    let body = stdin.to_vec();
    // A program may answer without reading all of stdin: write from a thread.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&body);
    });
    let out = child.wait_with_output().expect("wait for CGI program");
    let _ = writer.join();
    let (status, headers, body) = parse_cgi(&out.stdout);
    Reply {
        status,
        headers,
        body,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_ok: out.status.success(),
    }
}

/// Stops servers a test started: SIGTERM (a `--listen` supervisor then stops
/// its workers and removes its socket), SIGKILL after 10 s, and reaps them.
pub fn stop(children: &mut [std::process::Child]) {
    for child in children.iter_mut() {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for child in children.iter_mut() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Reads a small map of env-style pairs (for tests that build CGI vars).
pub fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ---- Hardening helpers (bad_input, cross_origin, regulation, concurrency, faults) ----

impl Site {
    /// The `Command` that [`Site::cgi`] would run for `req`, not yet started
    /// (no stdio set): for tests that remove a variable, change the user, or
    /// kill the process mid-request.
    pub fn cgi_command(&self, program: &str, req: &Req) -> Command {
        let mut cmd = Command::new(bin(program));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REQUEST_METHOD", &req.method)
            .env("SCRIPT_NAME", req.script_name.clone().unwrap_or_else(|| default_script(program)))
            .env("QUERY_STRING", &req.query)
            .env("REMOTE_ADDR", &req.remote_addr)
            .env("HTTP_HOST", "localhost")
            .env("SERVER_PORT", "80")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if !req.body.is_empty() || req.method == "POST" {
            cmd.env("CONTENT_LENGTH", req.content_length.clone().unwrap_or_else(|| req.body.len().to_string()));
        }
        if let Some(t) = &req.content_type {
            cmd.env("CONTENT_TYPE", t);
        }
        if let Some(c) = &req.cookie {
            cmd.env("HTTP_COOKIE", c);
        }
        for (k, v) in &req.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Like [`Site::cgi`], with these variables removed from the environment
    /// (e.g. `CONTENT_LENGTH`, which `cgi` always sets on POST).
    pub fn cgi_unset(&self, program: &str, req: &Req, unset: &[&str]) -> Reply {
        let mut cmd = self.cgi_command(program, req);
        for name in unset {
            cmd.env_remove(name);
        }
        run_cgi(cmd, &req.body)
    }

    /// Adds a user (argon2id hash of `password`) to the users file.
    pub fn add_user(&self, username: &str, password: &str, first: &str, last: &str) {
        let text = std::fs::read_to_string(&self.users).expect("read users");
        let mut users: serde_json::Value = serde_json::from_str(&text).expect("users JSON");
        let hash = webauth::users::hash_password(password).expect("hash");
        users[username] = serde_json::json!({"first": first, "last": last, "password": hash});
        std::fs::write(&self.users, users.to_string()).expect("write users");
    }
}

impl Req {
    /// Sets the query string (as sent: not encoded here).
    pub fn with_query(mut self, query: &str) -> Req {
        self.query = query.to_string();
        self
    }

    /// Overrides `CONTENT_LENGTH` (the body sent stays as it is).
    pub fn declared_length(mut self, length: &str) -> Req {
        self.content_length = Some(length.to_string());
        self
    }
}

/// What a reply must never show a client: a stack trace or the server's source
/// paths. Returns the first such marker found in the body or a header value.
pub fn leaked_internals(reply: &Reply) -> Option<&'static str> {
    const MARKERS: [&str; 5] = ["panicked", "RUST_BACKTRACE", "src/", ".rs:", "stack backtrace"];
    let text = reply.text();
    MARKERS.iter().copied().find(|m| text.contains(m) || reply.headers.iter().any(|(_, v)| v.contains(m)))
}

/// Whether the tests run as root (where file modes do not stop writes).
pub fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}
