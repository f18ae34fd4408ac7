//! The nginx recipe in deploy/nginx/webauth.conf, run by a real nginx (from
//! Debian; scripts/test installs it) on 127.0.0.1 in front of the three
//! programs started with `--listen` on unix sockets; a browser's requests
//! over plain HTTP.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{http, wait_until, ResponseExt, Server, TestSite, STARTUP};
use webauth::Response;

const NGINX: &str = "/usr/sbin/nginx";

/// The three programs and nginx in front of them, on one site; stopped when dropped.
struct Stack {
    servers: Vec<Server>,
    port: u16,
    site: TestSite,
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
    let site = TestSite::new();
    let d = site.dir.path();
    std::fs::copy("/etc/nginx/fastcgi_params", d.join("fastcgi_params")).expect("Debian's fastcgi_params");
    let mut servers = Vec::new();
    for program in ["index", "login", "logout"] {
        let socket = d.join(format!("{program}.sock"));
        let mut cmd = Command::new(support::bin(program));
        cmd.arg("--listen")
            .arg(&socket)
            .args(["--workers", "1"])
            .env_clear()
            .envs(site.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null());
        servers.push(Server::spawn(program, cmd, &d.join(format!("{program}.err"))));
        wait_until(program, STARTUP, || std::os::unix::net::UnixStream::connect(&socket).ok());
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(d.join("nginx.conf"), nginx_conf(d, port)).unwrap();
    let mut cmd = Command::new(NGINX);
    cmd.arg("-p").arg(d).arg("-c").arg(d.join("nginx.conf")).stdout(Stdio::null());
    servers.push(Server::spawn("nginx", cmd, &d.join("nginx.stderr")));
    wait_until("nginx", STARTUP, || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    Stack { servers, port, site }
}

impl Stack {
    /// What the programs and nginx wrote to stderr, and nginx's error log.
    fn logs(&self) -> String {
        let error_log = std::fs::read_to_string(self.site.dir.path().join("error.log")).unwrap_or_default();
        self.servers.iter().map(|s| format!("{}: {}\n", s.name, s.stderr())).collect::<String>() + &error_log
    }

    /// One request as a same-origin browser on this port sends it.
    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let host = format!("localhost:{}", self.port);
        let mut all = vec![("Host", host.as_str())];
        all.extend_from_slice(headers);
        http(&format!("127.0.0.1:{}", self.port), method, path, &all, body)
    }
}

#[test]
fn the_nginx_recipe_serves_the_login_flow() {
    let stack = start();
    let origin = format!("http://localhost:{}", stack.port);
    let browser = [("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")];

    let page = stack.http("GET", "/", &[], "");
    assert_eq!(page.status, 200, "{page:?}\n{}", stack.logs());
    assert!(page.text().contains("name=\"password\""));

    // nginx's fastcgi_params sends HTTP_HOST without the port: the Origin
    // (with port 8080-style) must still count as same-origin.
    let json = [("Content-Type", "application/json"), ("Origin", origin.as_str())];
    let wrong = stack.http("POST", "/login", &json, r#"{"username":"john","password":"nope"}"#);
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let ok = stack.http("POST", "/login", &json, r#"{"username":"john","password":"johnpass"}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let cookie = ok.header("Set-Cookie").unwrap().split(';').next().unwrap().to_string();

    let mut form = browser.to_vec();
    form.push(("Content-Type", "application/x-www-form-urlencoded"));
    let jane = stack.http("POST", "/login", &form, "username=jane&password=janepass");
    assert_eq!(jane.status, 303);
    assert_eq!(jane.header("Location"), Some("/"));

    let mine = stack.http("GET", "/", &[("Cookie", &cookie)], "");
    assert!(mine.text().contains("John Smith"), "{}", mine.text());

    let mut logout = form.clone();
    logout.push(("Cookie", &cookie));
    let out = stack.http("POST", "/logout", &logout, "");
    assert_eq!(out.status, 303);
    let after = stack.http("GET", "/", &[("Cookie", &cookie)], "");
    assert!(!after.text().contains("John Smith"), "the old cookie is refused");

    let cross = stack.http(
        "POST",
        "/login",
        &[("Content-Type", "application/json"), ("Origin", "http://evil.test")],
        r#"{"username":"john","password":"johnpass"}"#,
    );
    assert_eq!(cross.status, 403);

    let huge = "x".repeat(100 * 1024);
    let big = stack.http("POST", "/login", &form, &huge);
    assert_eq!(big.status, 413, "nginx refuses it first (client_max_body_size)");
}
