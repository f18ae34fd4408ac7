//! A small WebDriver client (W3C JSON over HTTP) for Debian's chromium and
//! chromium-driver. A crate such as fantoccini or thirtyfour would bring an
//! async runtime and an HTTP stack into the tests for a dozen calls; these
//! are plain blocking requests through the tests' one HTTP client.

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{json, Value};

use super::{http, wait_until, ResponseExt, Server, STARTUP};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session, ended (and the driver stopped) when dropped.
pub struct Browser {
    addr: String,
    session: String,
    _driver: Server,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium with a new
    /// profile; `javascript: false` turns scripts off for every page.
    pub fn start(javascript: bool) -> Browser {
        assert!(Path::new(CHROMEDRIVER).exists(), "chromedriver is needed: scripts/test installs chromium-driver");
        let profile = super::temp_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let mut command = Command::new(CHROMEDRIVER);
        command.arg(format!("--port={port}")).stdout(Stdio::null());
        let driver = Server::spawn("chromedriver", command, &profile.path().join("chromedriver.log"));
        let addr = format!("127.0.0.1:{port}");
        wait_until("chromedriver", STARTUP, || std::net::TcpStream::connect(&addr).ok());
        let mut prefs = json!({});
        if !javascript {
            prefs["profile.managed_default_content_settings.javascript"] = json!(2);
        }
        // The flags that keep Chromium off the network and quiet in a container.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1000,800",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().join("chromium").display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args, "prefs": prefs},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = call(&addr, "POST", "/session", Some(&capabilities));
        let session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_string();
        Browser { addr, session, _driver: driver, _profile: profile }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        call(&self.addr, method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap_or("").to_string()
    }

    /// The page's HTML as the browser now has it.
    pub fn source(&self) -> String {
        self.call("GET", "/source", None).as_str().unwrap_or("").to_string()
    }

    /// The element a CSS selector finds (fails the test if none).
    pub fn find(&self, css: &str) -> String {
        let found = self.call("POST", "/element", Some(&json!({"using": "css selector", "value": css})));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_string()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/clear"), Some(&json!({})));
        self.call("POST", &format!("/element/{element}/value"), Some(&json!({"text": text})));
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/click"), Some(&json!({})));
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/text"), None).as_str().unwrap_or("").to_string()
    }

    /// Waits until the page's source satisfies `done`; returns it.
    pub fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        wait_until(what, STARTUP, || {
            let source = self.source();
            done(&source).then_some(source)
        })
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&self, path: &Path) {
        let data = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap_or("")).expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("screenshot folder");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The console messages at SEVERE level since the last call: script
    /// errors, failed loads, and Content-Security-Policy refusals.
    pub fn console_errors(&self) -> Vec<String> {
        let log = self.call("POST", "/se/log", Some(&json!({"type": "browser"})));
        log.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| {
            let _ = http(&self.addr, "DELETE", &path, &[("Host", self.addr.as_str())], b"");
        });
    }
}

/// One WebDriver command; its `value`, or the test fails with the driver's error.
fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let text = body.map(Value::to_string).unwrap_or_default();
    let headers = [("Host", addr), ("Content-Type", "application/json")];
    let response = http(addr, method, path, &headers, text.as_bytes());
    let value: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", response.text()));
    assert_eq!(response.status, 200, "{method} {path}: {value}");
    value["value"].clone()
}

/// Where a test's screenshots go: target/screenshots/NAME.png.
pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots").join(format!("{name}.png"))
}
