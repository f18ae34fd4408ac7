//! `webauth serve --demo` answers on 127.0.0.1 and the login works through it.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends one HTTP/1.0 request and returns (status, headers, body).
fn http(addr: &str, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the demo");
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}

#[test]
fn demo_serves_the_login_flow_on_loopback() {
    let mut child = Command::new(support::bin("webauth"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .env_remove("WEBAUTH_USERS")
        .env_remove("WEBAUTH_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _demo = Demo(child);
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).expect("the demo prints its URL");
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (status, _, page) = http(&addr, &format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n"));
    assert_eq!(status, 200);
    assert!(page.contains("name=\"password\""));

    let body = r#"{"username":"john","password":"johnpass"}"#;
    let login = format!(
        "POST /login HTTP/1.0\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, head, body) = http(&addr, &login);
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["success"], true);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();

    let (_, _, page) = http(&addr, &format!("GET / HTTP/1.0\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n"));
    assert!(page.contains("John Smith"), "{page}");

    let wrong = r#"{"username":"jane","password":"nope"}"#;
    let (status, _, _) = http(
        &addr,
        &format!(
            "POST /login HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{wrong}",
            wrong.len()
        ),
    );
    assert_eq!(status, 401);
}
