//! The whole login flow over FastCGI: the three programs each on a unix
//! socket with `--listen`, sharing one users file and one store, as behind
//! nginx's `fastcgi_pass`; a test client plays nginx.

#[path = "support/fcgi_client.rs"]
mod fcgi_client;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fcgi_client::{nginx_params, request_once, Address, Conn, Reply, RESPONDER};
use support::TempDir;

/// index, login and logout as FastCGI servers on unix sockets in one dir.
struct Site {
    dir: TempDir,
    children: Vec<Child>,
}

impl Site {
    fn start(workers: &str, env: &[(&str, &str)]) -> Site {
        let dir = TempDir::new("fcgi-site");
        std::fs::write(dir.path().join("users.json"), support::demo_users_json()).unwrap();
        let mut children = Vec::new();
        for program in ["index", "login", "logout"] {
            let socket = dir.path().join(format!("{program}.sock"));
            let child = Command::new(support::bin(program))
                .arg("--listen")
                .arg(&socket)
                .args(["--workers", workers])
                .env_clear()
                .env("WEBAUTH_USERS", dir.path().join("users.json"))
                .env("WEBAUTH_STORE", format!("sqlite:{}", dir.path().join("sessions.db").display()))
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(format!("{program}.err"))).unwrap())
                .spawn()
                .expect("start a FastCGI program");
            children.push(child);
            wait_for(&socket);
        }
        Site { dir, children }
    }

    fn addr(&self, program: &str) -> Address {
        Address::Unix(self.dir.path().join(format!("{program}.sock")))
    }

    fn stderr(&self) -> String {
        ["index", "login", "logout"]
            .iter()
            .map(|p| std::fs::read_to_string(self.dir.path().join(format!("{p}.err"))).unwrap_or_default())
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        support::stop(&mut self.children);
    }
}

fn wait_for(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "{} never accepted", socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn params(method: &str, uri: &str, cookie: Option<&str>, content_type: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut p = nginx_params(method, uri);
    for (k, v) in p.iter_mut() {
        match k.as_str() {
            "CONTENT_TYPE" => *v = content_type.to_string(),
            "CONTENT_LENGTH" if method == "POST" => *v = body.len().to_string(),
            _ => {}
        }
    }
    if let Some(c) = cookie {
        p.push(("HTTP_COOKIE".into(), c.to_string()));
    }
    p
}

fn json_login(site: &Site, username: &str, password: &str) -> Reply {
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let p = params("POST", "/login", None, "application/json", body.as_bytes());
    request_once(&site.addr("login"), &p, body.as_bytes()).expect("login request")
}

fn cookie_of(reply: &Reply) -> String {
    let set = reply.header("Set-Cookie").expect("a Set-Cookie");
    set.split(';').next().unwrap().to_string()
}

fn get_index(addr: &Address, cookie: Option<&str>) -> Reply {
    request_once(addr, &params("GET", "/", cookie, "", b""), b"").expect("GET /")
}

#[test]
fn the_login_flow_over_fastcgi() {
    let site = Site::start("2", &[]);
    let anonymous = get_index(&site.addr("index"), None);
    assert_eq!(anonymous.status(), Some(200));
    assert!(anonymous.body_text().contains("name=\"password\""));

    assert_eq!(json_login(&site, "john", "nope").status(), Some(401));
    let ok = json_login(&site, "john", "johnpass");
    assert_eq!(ok.status(), Some(200), "{}", ok.body_text());
    let cookie = cookie_of(&ok);
    let page = get_index(&site.addr("index"), Some(&cookie));
    assert!(page.body_text().contains("John Smith"), "{}", page.body_text());

    let form = b"".as_slice();
    let out = request_once(
        &site.addr("logout"),
        &params("POST", "/logout", Some(&cookie), "application/x-www-form-urlencoded", form),
        form,
    )
    .unwrap();
    assert_eq!(out.status(), Some(303));
    let after = get_index(&site.addr("index"), Some(&cookie));
    assert!(!after.body_text().contains("John Smith"), "the saved cookie no longer works");
    assert!(!site.stderr().contains("database is locked"), "{}", site.stderr());
}

#[test]
fn two_thousand_requests_over_32_connections() {
    // An idle timeout of 5 s makes every page view write `last seen` (a tenth
    // of it is under a second), so the store takes concurrent writes too.
    let site = Site::start("4", &[("WEBAUTH_IDLE_TIMEOUT", "5")]);
    let users = [("john", "johnpass", "John Smith"), ("jane", "janepass", "Jane Doe")];
    let statuses: Vec<Vec<u16>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let site = &site;
                let (user, password, name) = users[i % 2];
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    let login = json_login(site, user, password);
                    seen.push(login.status().unwrap_or(0));
                    let cookie = cookie_of(&login);
                    // 60 page views on one kept connection, as with fastcgi_keep_conn.
                    let mut conn: Conn = site.addr("index").connect().expect("connect");
                    conn.set_timeout(Duration::from_secs(60)).unwrap();
                    for n in 0..60 {
                        let keep = n < 59;
                        let reply = conn
                            .request(1, RESPONDER, keep, &params("GET", "/", Some(&cookie), "", b""), b"")
                            .expect("kept-alive GET");
                        assert!(reply.body_text().contains(name), "request {n} of {user}: {}", reply.body_text());
                        seen.push(reply.status().unwrap_or(0));
                    }
                    let out = request_once(
                        &site.addr("logout"),
                        &params("POST", "/logout", Some(&cookie), "application/json", b"{}"),
                        b"{}",
                    )
                    .expect("logout");
                    seen.push(out.status().unwrap_or(0));
                    let after = get_index(&site.addr("index"), Some(&cookie));
                    assert!(!after.body_text().contains(name));
                    seen.push(after.status().unwrap_or(0));
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let all: Vec<u16> = statuses.into_iter().flatten().collect();
    assert_eq!(all.len(), 32 * 63);
    assert!(
        all.iter().all(|&s| s == 200),
        "non-200 statuses: {:?}",
        all.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
    let stderr = site.stderr();
    assert!(!stderr.contains("database is locked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn a_handler_panic_is_a_500_and_the_process_keeps_serving() {
    // One process on fd 0 (as spawn-fcgi starts it), so the request after the
    // panic is served by the very process that panicked.
    let dir = TempDir::new("fcgi-panic");
    std::fs::write(dir.path().join("users.json"), support::demo_users_json()).unwrap();
    let socket = dir.path().join("index.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = dir.path().join("err.log");
    let mut child = Command::new(support::bin("index"))
        .env_clear()
        .env("WEBAUTH_USERS", dir.path().join("users.json"))
        .env("WEBAUTH_STORE", format!("sqlite:{}", dir.path().join("s.db").display()))
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let addr = Address::Unix(socket);
    let mut conn = addr.connect().unwrap();
    let mut panicking = nginx_params("GET", "/");
    panicking.push(("HTTP_X_WEBAUTH_FAULT".into(), "panic".into()));
    let reply = conn.request(1, RESPONDER, true, &panicking, b"").unwrap();
    assert_eq!(reply.status(), Some(500));
    assert!(!reply.body_text().contains("panicked") && !reply.body_text().contains(".rs"));
    // The same connection, the same process, goes on.
    let next = conn.request(1, RESPONDER, false, &nginx_params("GET", "/"), b"").unwrap();
    assert_eq!(next.status(), Some(200));
    assert!(next.body_text().contains("name=\"password\""));
    for _ in 0..3 {
        assert_eq!(get_index(&addr, None).status(), Some(200));
    }
    assert!(child.try_wait().unwrap().is_none(), "the process is still running");
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&err).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("panic")).count(), 1, "{log}");
}
