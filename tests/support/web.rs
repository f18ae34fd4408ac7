//! Real web servers from Debian's packages (Apache, nginx, fcgiwrap) started
//! on 127.0.0.1 with a free port and a temporary directory from the very
//! recipes in deploy/, and the login flow every recipe must serve.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use webauth::Response;

use super::{http, wait_until, ResponseExt, Server, STARTUP};

pub const APACHE: &str = "/usr/sbin/apache2";
pub const NGINX: &str = "/usr/sbin/nginx";
pub const FCGIWRAP: &str = "/usr/sbin/fcgiwrap";
pub const MODULES: &str = "/usr/lib/apache2/modules";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(what: &str, port: u16) {
    wait_until(what, STARTUP, || TcpStream::connect(("127.0.0.1", port)).ok());
}

/// The servers and programs of one test, stopped by PID when dropped.
pub type Processes = Vec<Server>;

/// Whether the tests run as root: then the web servers run their workers as
/// www-data, which must be able to read (and where the programs write, own)
/// the test's files, as the web server's user would on a real host.
pub fn as_root() -> bool {
    super::running_as_root()
}

/// Opens `dir` and its parents up to the temp dir for reading by others
/// (tempfile makes directories 0700).
pub fn open_to_web_server(dir: &Path) {
    let tmp = std::env::temp_dir();
    let mut d = Some(dir);
    while let Some(p) = d {
        if !p.starts_with(&tmp) || p == tmp {
            break;
        }
        let mode = std::fs::metadata(p).expect("stat").permissions().mode();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o755)).expect("chmod");
        d = p.parent();
    }
}

/// `chown -R www-data:www-data path` when running as root.
pub fn give_to_web_server(path: &Path) {
    if as_root() {
        let status = Command::new("chown").arg("-R").arg("www-data:www-data").arg(path).status().expect("chown");
        assert!(status.success(), "chown www-data {}", path.display());
    }
}

/// An Apache main configuration that keeps everything in `dir`: prefork,
/// the given extra modules, and `body` (vhost-level directives).
pub fn apache_conf(dir: &Path, port: u16, modules: &[&str], body: &str) -> String {
    let d = dir.display();
    let mut conf = format!(
        "ServerRoot {d}\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\nLogLevel warn\n\
         ServerName localhost\nTypesConfig /etc/mime.types\nDefaultRuntimeDir {d}\nMutex file:{d}\n"
    );
    if as_root() {
        conf.push_str("User www-data\nGroup www-data\n");
    }
    for module in ["mpm_prefork", "authz_core", "authz_host", "mime", "dir", "env", "alias"].iter().chain(modules) {
        conf.push_str(&format!("LoadModule {module}_module {MODULES}/mod_{module}.so\n"));
    }
    conf.push_str("<Directory />\n  AllowOverride None\n  Require all denied\n</Directory>\n");
    conf.push_str(body);
    conf
}

/// Starts Apache in the foreground on `conf`, waits for its port.
pub fn start_apache(procs: &mut Processes, dir: &Path, port: u16, conf: &str) {
    assert!(Path::new(APACHE).exists(), "Apache is needed: scripts/test installs Debian's apache2");
    let path = dir.join("httpd.conf");
    std::fs::write(&path, conf).expect("write httpd.conf");
    let check = Command::new(APACHE).arg("-t").arg("-f").arg(&path).output().expect("apache2 -t");
    assert!(check.status.success(), "apache2 -t: {}", String::from_utf8_lossy(&check.stderr));
    let mut command = Command::new(APACHE);
    // Its own process group: prefork's stop sends SIGTERM to its whole group.
    command.process_group(0).arg("-DFOREGROUND").arg("-f").arg(&path).stdout(Stdio::null());
    procs.push(Server::spawn("apache2", command, &dir.join("apache.stderr")));
    wait_for_port("apache2", port);
}

/// An nginx main configuration that keeps everything in `dir` around `server`.
pub fn nginx_conf(dir: &Path, server: &str) -> String {
    let d = dir.display();
    let user = if as_root() { "user root root;" } else { "" };
    format!(
        "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n fastcgi_temp_path {d}/fastcgi;\n\
         proxy_temp_path {d}/proxy;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    )
}

/// Starts nginx on `conf`, waits for its port. Debian's `fastcgi_params` is
/// copied beside it, so that the recipes' `include fastcgi_params` works.
pub fn start_nginx(procs: &mut Processes, dir: &Path, port: u16, conf: &str) {
    assert!(Path::new(NGINX).exists(), "nginx is needed: scripts/test installs Debian's nginx-light");
    std::fs::copy("/etc/nginx/fastcgi_params", dir.join("fastcgi_params")).expect("Debian's fastcgi_params");
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let mut command = Command::new(NGINX);
    command.arg("-p").arg(dir).arg("-c").arg(dir.join("nginx.conf")).stdout(Stdio::null());
    procs.push(Server::spawn("nginx", command, &dir.join("nginx.stderr")));
    wait_for_port("nginx", port);
}

/// A deploy/ recipe's text.
pub fn recipe(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path))
        .unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// Replaces `from` with `to` in a recipe, checking that `from` was there, so
/// that a changed recipe fails the test rather than going untested.
pub fn fill(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the recipe no longer contains {from:?}: update the test");
    text.replace(from, to)
}

/// The demo users' file in `dir` (argon2id hashes of johnpass and janepass).
pub fn users_file(dir: &Path) -> PathBuf {
    let path = dir.join("users.json");
    std::fs::write(&path, super::demo_users_json()).expect("users file");
    path
}

/// Runs the admin command with `stdin`, asserting it succeeds; its stdout.
pub fn admin(args: &[&str], env: &[(&str, &Path)], stdin: &str) -> String {
    let mut child = Command::new(super::bin("webauth"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("webauth");
    let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("webauth");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "webauth {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// A shared-host folder at `mount` inside `www`, as its user would make it:
/// the bundle command with john as the first user, then jane added.
pub fn shared_host_bundle(www: &Path, mount: &str) -> PathBuf {
    shared_host_bundle_at(&www.join(mount.trim_matches('/')), mount)
}

/// The same, in `folder`, to be served at `mount` (through an Alias).
pub fn shared_host_bundle_at(folder: &Path, mount: &str) -> PathBuf {
    let folder = folder.to_path_buf();
    let programs = Path::new(super::bin("index")).parent().expect("the programs' folder").to_path_buf();
    let args = [
        "bundle",
        "shared-host",
        folder.to_str().expect("UTF-8 path"),
        "--mount",
        mount,
        "--user",
        "john",
        "--first",
        "John",
        "--last",
        "Smith",
        "--programs",
        programs.to_str().expect("UTF-8 path"),
    ];
    let report = admin(&args, &[], "johnpass\n");
    assert!(report.contains("ok    users file") && !report.contains("FAIL"), "{report}");
    let users = folder.join("data/users.json");
    admin(&["user", "add", "jane", "--first", "Jane", "--last", "Doe"], &[("WEBAUTH_USERS", &users)], "janepass\n");
    folder
}

/// index, login, logout and auth, each `--listen` on `SOCKETS/NAME.sock` with one
/// worker, sharing `users` and a store in `dir`; returns once they listen.
pub fn listen_programs(procs: &mut Processes, dir: &Path, sockets: &Path, users: &Path) {
    for program in ["index", "login", "logout", "auth"] {
        let socket = sockets.join(format!("{program}.sock"));
        listen_program(procs, program, &socket.display().to_string(), dir, users);
        wait_until(program, STARTUP, || socket.exists().then_some(()));
    }
}

/// `program --listen ADDR --workers 1` on `users` and a store in `dir`.
pub fn listen_program(procs: &mut Processes, program: &str, addr: &str, dir: &Path, users: &Path) {
    {
        let mut command = Command::new(super::bin(program));
        command
            .arg("--listen")
            .arg(addr)
            .args(["--workers", "1"])
            .env_clear()
            .env("WEBAUTH_USERS", users)
            .env("WEBAUTH_STORE", format!("sqlite:{}", dir.join("sessions.db").display()))
            .stdout(Stdio::null());
        procs.push(Server::spawn(program, command, &dir.join(format!("{program}.err"))));
    }
}

/// One request to 127.0.0.1:`port` with the `Host` a browser sends.
pub fn get_or_post(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let host = format!("127.0.0.1:{port}");
    let mut all = vec![("Host", host.as_str())];
    all.extend_from_slice(headers);
    http(&host, method, path, &all, body)
}

/// The login flow through a real server at `mount` on `port`: the anonymous
/// page, JSON and form logins, the user's page, logout, the old cookie
/// refused, a cross-origin login refused (the real server's Host and port
/// handling decides same-origin), and a 70 KB body refused. `log` gives the
/// server's logs for a failure message.
pub fn login_flow(port: u16, mount: &str, log: &dyn Fn() -> String) {
    let http = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        get_or_post(port, method, path, headers, body)
    };
    let origin = format!("http://127.0.0.1:{port}");
    let page = http("GET", mount, &[], b"");
    assert_eq!(page.status, 200, "GET {mount}: {:?}\n{}\n{}", page.headers, page.text(), log());
    assert!(page.text().contains("name=\"password\""), "{}", page.text());
    assert!(page.text().replace("&#x2F;", "/").contains(&format!("action=\"{mount}login\"")), "{}", page.text());

    let json = [("Content-Type", "application/json"), ("Origin", origin.as_str()), ("Accept", "application/json")];
    let login = format!("{mount}login");
    let wrong = http("POST", &login, &json, br#"{"username":"john","password":"nope"}"#);
    assert_eq!(wrong.status, 401, "{}\n{}", wrong.text(), log());
    assert!(wrong.text().contains("Invalid username or password."), "{}", wrong.text());
    let ok = http("POST", &login, &json, br#"{"username":"john","password":"johnpass"}"#);
    assert_eq!(ok.status, 200, "{}\n{}", ok.text(), log());
    assert!(ok.header("Set-Cookie").is_some_and(|c| c.contains(&format!("Path={mount}"))), "{:?}", ok.headers);
    let john = ok.cookie().expect("a session cookie");

    let form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let jane = http("POST", &login, &form, b"username=jane&password=janepass");
    assert_eq!(jane.status, 303, "{:?}\n{}", jane.headers, log());
    assert_eq!(jane.header("Location"), Some(mount));
    let jane_cookie = jane.cookie().expect("jane's cookie");
    assert!(http("GET", mount, &[("Cookie", &jane_cookie)], b"").text().contains("Jane Doe"));

    let mine = http("GET", mount, &[("Cookie", &john)], b"");
    assert!(mine.text().contains("John Smith"), "{}\n{}", mine.text(), log());

    let mut logout = form.to_vec();
    logout.push(("Cookie", &john));
    let out = http("POST", &format!("{mount}logout"), &logout, b"");
    assert_eq!(out.status, 303, "{:?}\n{}", out.headers, log());
    let after = http("GET", mount, &[("Cookie", &john)], b"");
    assert_eq!(after.status, 200);
    assert!(!after.text().contains("John Smith"), "the logged-out cookie still works");
    assert!(after.text().contains("name=\"password\""));

    let cross = [("Content-Type", "application/json"), ("Origin", "http://evil.test")];
    let refused = http("POST", &login, &cross, br#"{"username":"john","password":"johnpass"}"#);
    assert_eq!(refused.status, 403, "{}\n{}", refused.text(), log());
    assert!(refused.cookie().is_none());
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    let cross_port = [("Content-Type", "application/json"), ("Origin", other_port.as_str())];
    let refused = http("POST", &login, &cross_port, br#"{"username":"john","password":"johnpass"}"#);
    assert_eq!(refused.status, 403, "another port is another origin: {}", refused.text());

    let huge = vec![b'x'; 70 * 1024];
    let big = http("POST", &login, &json, &huge);
    assert_eq!(big.status, 413, "{:?}\n{}", big.headers, log());
}
