//! The nginx recipe in deploy/nginx/webauth.conf, run by a real nginx (from
//! Debian; scripts/test installs it) on 127.0.0.1 in front of the three
//! programs started with `--listen` on unix sockets; a browser's requests
//! over plain HTTP.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::TempDir;

const NGINX: &str = "/usr/sbin/nginx";

struct Stack {
    dir: TempDir,
    port: u16,
    children: Vec<Child>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        support::stop(&mut self.children);
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// deploy/nginx/webauth.conf with its port, socket paths and server name
/// filled in, inside a main configuration that keeps nginx in `dir`.
fn nginx_conf(dir: &Path, port: u16) -> String {
    let recipe = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/webauth.conf"))
        .expect("the nginx recipe");
    let server = recipe
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("unix:/run/webauth/", &format!("unix:{}/", dir.display()))
        .replace("server_name example.org;", "server_name localhost;");
    assert!(server.contains(&format!("127.0.0.1:{port}")), "the recipe's listen line changed: update this test");
    let d = dir.display();
    let user = if support::running_as_root() { "user root root;" } else { "" };
    format!(
        "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n fastcgi_temp_path {d}/fastcgi;\n\
         proxy_temp_path {d}/proxy;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    )
}

fn start() -> Stack {
    assert!(Path::new(NGINX).exists(), "nginx is needed: scripts/test installs Debian's nginx-light");
    let dir = TempDir::new("nginx");
    let d = dir.path();
    std::fs::write(d.join("users.json"), support::demo_users_json()).unwrap();
    std::fs::copy("/etc/nginx/fastcgi_params", d.join("fastcgi_params")).expect("Debian's fastcgi_params");
    let mut children = Vec::new();
    for program in ["index", "login", "logout"] {
        let socket = d.join(format!("{program}.sock"));
        children.push(
            Command::new(support::bin(program))
                .arg("--listen")
                .arg(&socket)
                .args(["--workers", "1"])
                .env_clear()
                .env("WEBAUTH_USERS", d.join("users.json"))
                .env("WEBAUTH_STORE", format!("sqlite:{}", d.join("sessions.db").display()))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join(format!("{program}.err"))).unwrap())
                .spawn()
                .expect("start a program"),
        );
        wait_until(program, || std::os::unix::net::UnixStream::connect(&socket).is_ok());
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(d.join("nginx.conf"), nginx_conf(d, port)).unwrap();
    children.push(
        Command::new(NGINX)
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("nginx.stderr")).unwrap())
            .spawn()
            .expect("start nginx"),
    );
    wait_until("nginx", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    Stack { dir, port, children }
}

struct Http {
    status: u16,
    head: String,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.0 request as a same-origin browser on this port sends it.
fn http(stack: &Stack, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Http {
    let mut s = TcpStream::connect(("127.0.0.1", stack.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost:{}\r\n", stack.port);
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    Http { status: head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0), head: head.into(), body: body.into() }
}

#[test]
fn the_nginx_recipe_serves_the_login_flow() {
    let stack = start();
    let origin = format!("http://localhost:{}", stack.port);
    let browser = [("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")];

    let page = http(&stack, "GET", "/", &[], "");
    assert_eq!(
        page.status,
        200,
        "{}\n{}",
        page.head,
        std::fs::read_to_string(stack.dir.path().join("error.log")).unwrap_or_default()
    );
    assert!(page.body.contains("name=\"password\""));

    // nginx's fastcgi_params sends HTTP_HOST without the port: the Origin
    // (with port 8080-style) must still count as same-origin.
    let json = [("Content-Type", "application/json"), ("Origin", origin.as_str())];
    let wrong = http(&stack, "POST", "/login", &json, r#"{"username":"john","password":"nope"}"#);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let ok = http(&stack, "POST", "/login", &json, r#"{"username":"john","password":"johnpass"}"#);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = ok.header("Set-Cookie").unwrap().split(';').next().unwrap().to_string();

    let mut form = browser.to_vec();
    form.push(("Content-Type", "application/x-www-form-urlencoded"));
    let jane = http(&stack, "POST", "/login", &form, "username=jane&password=janepass");
    assert_eq!(jane.status, 303);
    assert_eq!(jane.header("Location"), Some("/"));

    let mine = http(&stack, "GET", "/", &[("Cookie", &cookie)], "");
    assert!(mine.body.contains("John Smith"), "{}", mine.body);

    let mut logout = form.clone();
    logout.push(("Cookie", &cookie));
    let out = http(&stack, "POST", "/logout", &logout, "");
    assert_eq!(out.status, 303);
    let after = http(&stack, "GET", "/", &[("Cookie", &cookie)], "");
    assert!(!after.body.contains("John Smith"), "the old cookie is refused");

    let cross = http(
        &stack,
        "POST",
        "/login",
        &[("Content-Type", "application/json"), ("Origin", "http://evil.test")],
        r#"{"username":"john","password":"johnpass"}"#,
    );
    assert_eq!(cross.status, 403);

    let huge = "x".repeat(100 * 1024);
    let big = http(&stack, "POST", "/login", &form, &huge);
    assert_eq!(big.status, 413, "nginx refuses it first (client_max_body_size)");
}
