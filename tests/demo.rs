//! `webauth serve --demo` answers on 127.0.0.1 and the login works through it.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{http, ResponseExt, Server};

#[test]
fn demo_serves_the_login_flow_on_loopback() {
    let logs = support::temp_dir();
    let mut cmd = Command::new(support::bin("webauth"));
    cmd.args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .env_remove("WEBAUTH_USERS")
        .env_remove("WEBAUTH_STORE")
        .stdout(Stdio::piped());
    let mut demo = Server::spawn("the demo", cmd, &logs.path().join("demo.err"));
    let mut first = String::new();
    BufReader::new(demo.child.stdout.take().expect("stdout")).read_line(&mut first).unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).expect("the demo prints its URL");
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let host = [("Host", addr.as_str())];

    let page = http(&addr, "GET", "/", &host, "");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("name=\"password\""));

    let origin = format!("http://{addr}");
    let json = [
        ("Host", addr.as_str()),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Content-Type", "application/json"),
    ];
    let login = http(&addr, "POST", "/login", &json, r#"{"username":"john","password":"johnpass"}"#);
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&login.body).unwrap()["success"], true);
    let cookie = login.header("Set-Cookie").and_then(|c| c.split(';').next()).expect("a session cookie").to_string();

    let page = http(&addr, "GET", "/", &[("Host", addr.as_str()), ("Cookie", cookie.as_str())], "");
    assert!(page.text().contains("John Smith"), "{}", page.text());

    let plain_json = [("Host", addr.as_str()), ("Content-Type", "application/json")];
    let wrong = http(&addr, "POST", "/login", &plain_json, r#"{"username":"jane","password":"nope"}"#);
    assert_eq!(wrong.status, 401);

    // The demo keeps its users and store in a directory of its own, and
    // removes it when it stops (SIGTERM here, Ctrl-C at a terminal).
    drop(demo);
    let log = std::fs::read_to_string(logs.path().join("demo.err")).unwrap_or_default();
    let dir = log.lines().find_map(|l| l.strip_prefix("webauth: demo files in ")).expect("the demo names its files");
    assert!(dir.contains("webauth-demo-"), "{dir}");
    assert!(!std::path::Path::new(dir).exists(), "the demo left {dir} behind");
}
