//! The CGI front end end to end: the real `index`, `login` and `logout`
//! binaries run as CGI scripts (environment and stdin in, `Status:` and
//! headers out), for what only a process shows: HEAD through the writer,
//! the body drain before a 413, the lines on stderr, the usage message.
//! The routes' behaviour itself is tested in process (routes.rs and others).

mod support;

use support::{Req, ResponseExt, TestSite};

fn index_with(site: &TestSite, cookie: &str) -> support::CgiReply {
    site.cgi("index", &Req::get().cookie(cookie))
}

#[test]
fn head_on_index_has_headers_and_no_body() {
    let site = TestSite::new();
    let reply = site.cgi("index", &Req::new("HEAD"));
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert!(reply.header("Content-Length").unwrap().parse::<usize>().unwrap() > 100);
}

#[test]
fn json_login_sets_a_session_cookie_with_its_attributes() {
    let site = TestSite::new();
    let reply = site.cgi("login", &Req::login("john", "johnpass"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"success": true, "redirect": "/"}));
    let set = reply.headers_named("Set-Cookie");
    assert_eq!(set.len(), 1);
    let cookie = set[0];
    assert!(cookie.starts_with("webauth="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP gets no Secure flag: {cookie}");
    let token = cookie.split(';').next().unwrap().trim_start_matches("webauth=");
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "base64url: {token}");
    assert!(reply.stderr.contains("login success"), "audit line: {}", reply.stderr);
}

#[test]
fn logout_ends_the_session_for_a_saved_copy_of_the_cookie() {
    let site = TestSite::new();
    let login = site.cgi("login", &Req::login("jane", "janepass"));
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login.cookie().expect("a session cookie");
    assert!(index_with(&site, &cookie).text().contains("Jane Doe"));
    let out = site.cgi("logout", &Req::form("").cookie(&cookie));
    assert_eq!(out.status, 303);
    assert_eq!(out.header("Location"), Some("/"));
    assert!(out.expires_cookie());
    assert!(out.stderr.contains("logout success"), "{}", out.stderr);
    let after = index_with(&site, &cookie);
    assert_eq!(after.status, 200);
    assert!(after.text().contains("name=\"password\""), "login page again");
    assert!(!after.text().contains("Jane Doe"));
    assert!(after.expires_cookie(), "a cookie naming no session is expired");
}

#[test]
fn plaintext_password_in_the_users_file_logs_nobody_in() {
    let site = TestSite::new();
    std::fs::write(&site.users, r#"{"john": {"first": "John", "last": "Smith", "password": "johnpass"}}"#).unwrap();
    let reply = site.cgi("login", &Req::login("john", "johnpass"));
    assert_eq!(reply.status, 500);
    assert!(reply.cookie().is_none());
    assert!(reply.stderr.contains("\"john\"") && reply.stderr.contains("plaintext"), "{}", reply.stderr);
    assert!(!reply.text().contains("plaintext"), "the cause goes to stderr only");
}

#[test]
fn a_missing_users_file_logs_nobody_in() {
    let site = TestSite::new();
    std::fs::remove_file(&site.users).unwrap();
    let reply = site.cgi("login", &Req::login("john", "johnpass"));
    assert_eq!(reply.status, 500);
    assert!(reply.stderr.contains("not found"), "{}", reply.stderr);
}

/// A JSON login body of exactly `len` bytes.
fn json_of_length(len: usize) -> Vec<u8> {
    let head = "{\"username\":\"<script>alert(1)<\\/script>\",\"password\":\"";
    let tail = "\"}";
    let mut body = head.as_bytes().to_vec();
    body.resize(len - tail.len(), b'a');
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), len);
    body
}

#[test]
fn an_over_large_body_is_drained_before_the_413() {
    // fcgiwrap writes the whole body before it reads the answer: a program
    // that answers without draining it gives a 502. Both sizes are more than
    // a pipe holds, so an unread body fails the write.
    let site = TestSite::new();
    for size in [70_000usize, 1_000_000] {
        let reply = site.cgi("login", &Req::new("POST").body("application/json", &json_of_length(size)));
        assert_eq!(reply.status, 413, "{size} bytes");
        assert!(reply.read_all_stdin, "{size} bytes: the program answered without reading the body");
    }
}

#[test]
fn no_cgi_environment_prints_usage() {
    let out = std::process::Command::new(support::bin("index")).env_clear().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

#[test]
fn a_query_string_that_becomes_arguments_is_ignored() {
    // Apache's mod_cgi hands a query string without `=` to the program as its
    // arguments (RFC 3875, 4.4): `?--listen+127.0.0.1:PORT` must not start a server.
    let site = TestSite::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let listen = format!("127.0.0.1:{port}");
    for args in [vec!["--listen", listen.as_str(), "--workers", "1"], vec!["x"]] {
        let req = Req::get().with_query(&args.join("+"));
        let mut cmd = site.cgi_command("login", &req);
        cmd.args(&args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        // A program that took the arguments would serve until killed.
        let exited = support::wait_until("the CGI program to exit", support::STARTUP, || {
            child.try_wait().expect("try_wait").map(Some)
        });
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut child.stdout.take().expect("stdout"), &mut out).expect("read");
        assert!(exited.is_some_and(|s| s.success()), "{args:?}");
        let reply = support::parse_response(&out).expect("a CGI answer");
        assert_eq!(reply.status, 200, "{args:?}");
        assert!(reply.text().contains("name=\"password\""), "{args:?}: the login page");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "{args:?}: something listens on {port}");
    }
}
