//! Refusals that are security events reach the audit log (text and JSON,
//! never a token or a password), a planted second cookie cannot keep a
//! session alive through logout or login, HSTS over HTTPS, and a mount with
//! dot segments is not taken. Through the real CGI programs, whose stderr
//! is the web server's error log.

mod support;

use support::{Req, ResponseExt, Server, TestSite, STARTUP};

fn token_of(cookie: &str) -> &str {
    cookie.split_once('=').map_or("", |(_, v)| v)
}

#[test]
fn logout_ends_the_real_session_beside_a_planted_cookie() {
    let site = TestSite::new();
    let planted_live = site.session_for("jane", "janepass");
    for planted in ["webauth=x".to_string(), planted_live] {
        let cookie = site.session_for("john", "johnpass");
        let header = format!("{planted}; {cookie}");
        let reply = site.cgi("logout", &Req::json(&serde_json::json!({})).cookie(&header));
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.expires_cookie());
        assert!(!site.index_with(&cookie).text().contains("John Smith"), "{header}: the session outlived logout");
    }
}

#[test]
fn logout_ends_the_real_session_behind_many_planted_cookies() {
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    // Well-formed tokens that name no session, as an attacker would plant.
    let planted: Vec<String> =
        (0..40).map(|_| format!("webauth={}", webauth::session::Token::generate().unwrap().as_str())).collect();
    let header = format!("{}; {cookie}", planted.join("; "));
    let reply = site.cgi("logout", &Req::json(&serde_json::json!({})).cookie(&header));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!site.index_with(&cookie).text().contains("John Smith"), "the session outlived logout");
}

#[test]
fn login_ends_every_session_whose_cookie_it_was_sent() {
    let site = TestSite::new();
    let old = site.session_for("john", "johnpass");
    let header = format!("webauth=junk; {old}");
    let reply =
        site.cgi("login", &Req::json(&serde_json::json!({"username": "jane", "password": "janepass"})).cookie(&header));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!site.index_with(&old).text().contains("John Smith"), "the old session outlived a new login");
    let new = reply.cookie().expect("a new session");
    assert!(site.index_with(&new).text().contains("Jane Doe"));
}

#[test]
fn two_session_cookies_still_show_no_user_page() {
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    let reply = site.index_with(&format!("webauth=x; {cookie}"));
    assert!(
        reply.text().contains("action=\"/login\"") || reply.html().contains("action=\"/login\""),
        "{}",
        reply.text()
    );
    assert!(!reply.text().contains("John Smith"));
}

/// The refusals of one site: a forged cookie, a well-formed unknown one, a
/// duplicated one, and a cross-origin login, with their stderr lines.
fn refusal_story(site: &TestSite) -> Vec<String> {
    let known = site.session_for("john", "johnpass");
    let mut lines = Vec::new();
    let unknown = format!("webauth={}", "A".repeat(43));
    for cookie in ["webauth=Session::john".to_string(), unknown, format!("{known}; {known}")] {
        let reply = site.cgi("index", &Req::get().cookie(&cookie));
        assert_eq!(reply.status, 200);
        lines.extend(reply.stderr.lines().map(str::to_string));
    }
    let cross = Req::json(&serde_json::json!({"username": "john", "password": "johnpass"}))
        .var("HTTP_SEC_FETCH_SITE", "cross-site")
        .var("HTTP_ORIGIN", "http://evil.test");
    let reply = site.cgi("login", &cross);
    assert_eq!(reply.status, 403);
    lines.extend(reply.stderr.lines().map(str::to_string));
    let secrets = [token_of(&known).to_string(), "johnpass".to_string()];
    for line in &lines {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "a secret in the log: {line}");
        }
    }
    lines
}

#[test]
fn refusals_are_audited_once_each_with_their_reason() {
    let site = TestSite::new();
    let lines = refusal_story(&site);
    let refused: Vec<&String> = lines.iter().filter(|l| l.starts_with("webauth: refused ")).collect();
    assert_eq!(refused.len(), 4, "{lines:#?}");
    assert!(refused[0].contains("unknown-session reason=\"malformed session cookie\""), "{}", refused[0]);
    assert!(refused[1].contains("unknown-session reason=\"no live session\""), "{}", refused[1]);
    assert!(refused[2].contains("unknown-session reason=\"two session cookies\""), "{}", refused[2]);
    assert!(refused[3].contains("cross-origin reason=\"Sec-Fetch-Site is not same-origin\""), "{}", refused[3]);
    assert!(refused.iter().all(|l| l.contains("addr=\"192.0.2.10\"")), "{refused:#?}");
}

#[test]
fn json_refusal_lines_carry_a_utc_timestamp() {
    let site = TestSite::with_env(&[("WEBAUTH_LOG", "json")]);
    let lines = refusal_story(&site);
    let mut outcomes = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let ts = v["ts"].as_str().unwrap_or_else(|| panic!("no ts: {line}"));
        assert!(ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        if v["event"] == "refused" {
            assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
            outcomes.push(v["outcome"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(outcomes, ["unknown-session", "unknown-session", "unknown-session", "cross-origin"], "{lines:#?}");
}

#[test]
fn answers_over_https_carry_hsts_and_it_can_be_set_or_turned_off() {
    let https = |site: &TestSite| site.cgi("index", &Req::get().var("HTTPS", "on"));
    let site = TestSite::new();
    assert_eq!(https(&site).header("Strict-Transport-Security"), Some("max-age=31536000"));
    assert_eq!(site.cgi("index", &Req::get()).header("Strict-Transport-Security"), None, "never over plain HTTP");
    let sub = TestSite::with_env(&[("WEBAUTH_HSTS", "max-age=31536000; includeSubDomains")]);
    assert_eq!(https(&sub).header("Strict-Transport-Security"), Some("max-age=31536000; includeSubDomains"));
    let off = TestSite::with_env(&[("WEBAUTH_HSTS", "off")]);
    assert_eq!(https(&off).header("Strict-Transport-Security"), None);
}

#[test]
fn a_script_name_with_dot_segments_is_no_mount() {
    let site = TestSite::new();
    for script in ["/a/../login", "/a/./login"] {
        let req = Req::json(&serde_json::json!({"username": "john", "password": "johnpass"})).script(script);
        let reply = site.cgi("login", &req);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let set = reply.headers_named("Set-Cookie").join(" | ");
        assert!(set.contains("Path=/;") || set.ends_with("Path=/"), "{script}: {set}");
        assert!(!set.contains("/."), "{script}: {set}");
    }
}

/// Starts `index --listen 127.0.0.1:PORT` with FCGI_WEB_SERVER_ADDRS naming
/// another host, connects once, and returns the program's stderr.
fn refused_peer_log(log: &str) -> String {
    use std::io::{Read, Write};
    let dir = support::temp_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    std::fs::write(dir.path().join("users.json"), "{}").expect("users");
    let mut command = std::process::Command::new(support::bin("index"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .env_clear()
        .env("WEBAUTH_USERS", dir.path().join("users.json"))
        .env("WEBAUTH_STORE", format!("sqlite:{}", dir.path().join("s.db").display()))
        .env("WEBAUTH_LOG", log)
        .env("FCGI_WEB_SERVER_ADDRS", "192.0.2.7");
    let server = Server::spawn("index", command, &dir.path().join("stderr"));
    let mut stream =
        support::wait_until("index --listen", STARTUP, || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    let _ = stream.write_all(b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(answer.is_empty(), "a peer outside FCGI_WEB_SERVER_ADDRS got an answer");
    // The line is written before the connection is closed.
    server.stderr()
}

#[test]
fn a_fastcgi_peer_outside_fcgi_web_server_addrs_is_audited() {
    let text = refused_peer_log("text");
    let line =
        text.lines().find(|l| l.starts_with("webauth: refused fastcgi-peer")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("not in FCGI_WEB_SERVER_ADDRS") && line.contains("addr=\"127.0.0.1\""), "{line}");
    let json = refused_peer_log("json");
    let line = json.lines().find(|l| l.contains("fastcgi-peer")).unwrap_or_else(|| panic!("{json}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!((v["event"].as_str(), v["addr"].as_str()), (Some("refused"), Some("127.0.0.1")), "{line}");
    assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
}
