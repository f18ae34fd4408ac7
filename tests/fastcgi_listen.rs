//! The FastCGI front end started with `--listen ADDR --workers N`: the
//! program binds the socket (TCP or unix), starts N copies of itself with
//! the socket as their fd 0 and supervises them; SIGTERM stops them
//! gracefully. A test client plays the web server (nginx's `fastcgi_pass`); the
//! record-layer cases, the same for every front end, are in fastcgi_fd0.rs.

mod support;

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::fcgi_client::{
    assert_login_form, check_keep_conn, finish_held_request, hold_request, nginx_params, request_once, Address, Conn,
    Reply, RESPONDER,
};
use support::totp::enable;
use support::{parse_response, signal, wait_until, ResponseExt, Server, TestSite, STARTUP};

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    Unix,
}

/// `program` with the site's settings, stdout discarded.
fn command(site: &TestSite, program: &str) -> Command {
    let mut command = Command::new(support::bin(program));
    command.env_clear().envs(site.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).stdout(Stdio::null());
    command
}

/// `program --listen ADDR --workers N` on the site's files, once it accepts
/// connections; its stderr in `PROGRAM.err` in the site's directory.
fn listen(site: &TestSite, program: &str, transport: Transport, workers: &str) -> (Server, Address) {
    // A port picked free can be taken before the program binds it: retry.
    // A unix socket path has no such race, so a failure there is final.
    let attempts = match transport {
        Transport::Tcp => 5,
        Transport::Unix => 1,
    };
    for _ in 0..attempts {
        let (addr, arg) = match transport {
            Transport::Tcp => {
                let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("local addr").port();
                (Address::Tcp(([127, 0, 0, 1], port).into()), format!("127.0.0.1:{port}"))
            }
            Transport::Unix => {
                let path = site.dir.path().join(format!("{program}.sock"));
                (Address::Unix(path.clone()), path.display().to_string())
            }
        };
        let mut cmd = command(site, program);
        cmd.args(["--listen", &arg, "--workers", workers]);
        let mut server = Server::spawn(program, cmd, &site.dir.path().join(format!("{program}.err")));
        let listening = wait_until(&format!("{program} accepts on {arg}"), STARTUP, || match server.exited() {
            Some(_) => Some(false),
            None => addr.connect().ok().map(|_| true),
        });
        if listening {
            return (server, addr);
        }
    }
    panic!("{program} --listen over {transport:?} did not start");
}

/// One program with two workers on a site of its own.
struct Listening {
    server: Server,
    addr: Address,
    transport: Transport,
    /// Its files, removed after it stops.
    _site: TestSite,
}

fn start(transport: Transport) -> Listening {
    let site = TestSite::new();
    let (server, addr) = listen(&site, "index", transport, "2");
    Listening { server, addr, transport, _site: site }
}

impl Listening {
    fn get(&self, uri: &str) -> Reply {
        request_once(&self.addr, &nginx_params("GET", uri), b"")
            .unwrap_or_else(|e| panic!("{:?}: GET {uri}: {e}\n{}", self.transport, self.server.stderr()))
    }
}

/// The live processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let entries = std::fs::read_dir("/proc").expect("/proc");
    let pids = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    pids.filter(|&pid| proc_state(pid).is_some_and(|(state, ppid)| ppid == parent && state != "Z")).collect()
}

/// Whether `pid` is a live (not zombie) process.
fn is_running(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state != "Z")
}

/// A process's state letter and parent, from /proc/PID/stat.
fn proc_state(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.parse().ok()?))
}

fn wait_for_workers(parent: u32, count: usize) -> Vec<u32> {
    wait_until(&format!("{parent} has {count} workers"), STARTUP, || {
        let children = children_of(parent);
        (children.len() == count).then_some(children)
    })
}

#[test]
fn get_root_answers_the_login_form_over_tcp_and_unix() {
    for transport in [Transport::Tcp, Transport::Unix] {
        let program = start(transport);
        assert_login_form(&program.get("/"), &format!("{transport:?}"));
    }
}

#[test]
fn two_hundred_requests_in_a_row_each_on_a_new_connection_all_get_200() {
    let program = start(Transport::Unix);
    for i in 0..200 {
        let reply = program.get("/");
        assert_eq!(reply.status(), Some(200), "request {i}\n{}", program.server.stderr());
    }
}

#[test]
fn keep_conn_serves_twenty_requests_on_one_connection() {
    let program = start(Transport::Tcp);
    check_keep_conn(&program.addr);
}

#[test]
fn sigterm_stops_the_listen_parent_and_its_workers() {
    for transport in [Transport::Tcp, Transport::Unix] {
        let mut program = start(transport);
        assert_eq!(program.get("/").status(), Some(200));
        let workers = wait_for_workers(program.server.pid(), 2);
        signal(program.server.pid(), libc::SIGTERM);
        let status = program.server.wait_exit(STARTUP);
        assert_eq!(status.code(), Some(0), "{transport:?}: {status}\n{}", program.server.stderr());
        for pid in workers {
            assert!(!is_running(pid), "{transport:?}: worker {pid} outlived its parent");
        }
        assert!(program.addr.connect().is_err(), "{transport:?}: still accepting after SIGTERM");
        if let Address::Unix(path) = &program.addr {
            assert!(!path.exists(), "the socket file is removed");
        }
    }
}

#[test]
fn a_killed_worker_is_replaced() {
    let program = start(Transport::Tcp);
    let before = wait_for_workers(program.server.pid(), 2);
    signal(before[0], libc::SIGKILL);
    let after = wait_until("the killed worker is replaced", STARTUP, || {
        let now = children_of(program.server.pid());
        (now.len() == 2 && !now.contains(&before[0])).then_some(now)
    });
    assert!(after.contains(&before[1]), "the other worker was left alone");
    for _ in 0..10 {
        assert_eq!(program.get("/").status(), Some(200));
    }
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let site = TestSite::new();
    let path = site.dir.path().join("index.sock");
    // Stale: bound, then the listener is gone.
    drop(UnixListener::bind(&path).expect("bind"));
    let (mut first, _) = listen(&site, "index", Transport::Unix, "1");
    // Live: a second program must not steal it.
    let output = command(&site, "index").arg("--listen").arg(&path).output().expect("run");
    assert!(!output.status.success(), "a second program took over a live socket");
    assert!(String::from_utf8_lossy(&output.stderr).contains("another process"));
    signal(first.pid(), libc::SIGTERM);
    first.wait_exit(STARTUP);
    assert!(!path.exists());
}

#[test]
fn an_invalid_configuration_exits_78() {
    let site = TestSite::with_env(&[("WEBAUTH_COOKIE_SECURE", "sometimes")]);
    let mut cmd = command(&site, "index");
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut program = Server::spawn("index", cmd, &site.dir.path().join("index.err"));
    assert_eq!(program.wait_exit(STARTUP).code(), Some(78));
    let log = program.stderr();
    assert!(log.contains("WEBAUTH_COOKIE_SECURE"), "{log}");
}

#[test]
fn listening_beyond_loopback_needs_fcgi_web_server_addrs_however_the_address_is_written() {
    // The address checked is the one really bound: `0:PORT` binds 0.0.0.0.
    for addr in ["0.0.0.0:0", "0:0", "[::]:0"] {
        let site = TestSite::new();
        let mut cmd = command(&site, "index");
        cmd.args(["--listen", addr, "--workers", "1"]);
        let mut program = Server::spawn("index", cmd, &site.dir.path().join("index.err"));
        assert_eq!(program.wait_exit(STARTUP).code(), Some(78), "{addr}: {}", program.stderr());
        let log = program.stderr();
        assert!(log.contains("FCGI_WEB_SERVER_ADDRS"), "{addr}: {log}");
    }
    // A name that resolves to loopback is fine.
    let site = TestSite::new();
    let mut cmd = command(&site, "index");
    cmd.args(["--listen", "localhost:0", "--workers", "1"]);
    let program = Server::spawn("index", cmd, &site.dir.path().join("index.err"));
    wait_for_workers(program.pid(), 1);
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_the_parent_exits_0_leaving_no_worker() {
    let site = TestSite::with_env(&[("WEBAUTH_STOP_TIMEOUT", "8s")]);
    let (mut server, addr) = listen(&site, "index", Transport::Unix, "2");
    let workers = wait_for_workers(server.pid(), 2);
    let held = hold_request(&addr);
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    signal(server.pid(), libc::SIGTERM);
    // The idle worker goes at once; the busy one and the parent wait for the request.
    wait_until("the idle worker stops", STARTUP, || {
        (workers.iter().filter(|&&w| is_running(w)).count() == 1).then_some(())
    });
    assert!(server.exited().is_none(), "the parent left a request in hand");
    let Address::Unix(path) = &addr else { unreachable!("a unix socket") };
    assert!(!path.exists(), "the socket file goes first, so new connections fail fast");
    assert_eq!(finish_held_request(held), Some(200), "{}", server.stderr());
    assert_eq!(server.wait_exit(Duration::from_secs(8)).code(), Some(0), "{}", server.stderr());
    assert!(asked.elapsed() < Duration::from_secs(8), "exited within the grace period");
    for worker in workers {
        assert!(!is_running(worker), "worker {worker} outlived the stop");
    }
}

#[test]
fn a_worker_still_busy_after_the_grace_period_is_killed() {
    let site = TestSite::with_env(&[("WEBAUTH_STOP_TIMEOUT", "1s")]);
    let (mut server, addr) = listen(&site, "index", Transport::Unix, "1");
    let workers = wait_for_workers(server.pid(), 1);
    let _held = hold_request(&addr);
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    signal(server.pid(), libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(6)).code(), Some(0));
    assert!(asked.elapsed() >= Duration::from_millis(900), "the busy worker had its grace period");
    assert!(!is_running(workers[0]), "the busy worker was killed");
    assert!(server.stderr().contains("still busy after 1 s; killing it"), "{}", server.stderr());
}

/// index, login and logout, each `--listen` on a unix socket, sharing one
/// users file and one store, as behind nginx's `fastcgi_pass`.
struct Programs {
    servers: Vec<(Server, Address)>,
    /// Their files (removed after they stop), for the admin command.
    site: TestSite,
}

impl Programs {
    fn start(workers: &str, env: &[(&str, &str)]) -> Programs {
        let site = TestSite::with_env(env);
        let servers = ["index", "login", "logout"].iter().map(|p| listen(&site, p, Transport::Unix, workers)).collect();
        Programs { servers, site }
    }

    fn addr(&self, program: &str) -> &Address {
        let at = ["index", "login", "logout"].iter().position(|p| *p == program).expect("a route program");
        &self.servers[at].1
    }

    fn stderr(&self) -> String {
        self.servers.iter().map(|(s, _)| s.stderr()).collect()
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

fn json_login(programs: &Programs, username: &str, password: &str) -> Reply {
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let p = params("POST", "/login", None, "application/json", body.as_bytes());
    request_once(programs.addr("login"), &p, body.as_bytes()).expect("login request")
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
    let site = Programs::start("2", &[]);
    let anonymous = get_index(site.addr("index"), None);
    assert_eq!(anonymous.status(), Some(200));
    assert!(anonymous.body_text().contains("name=\"password\""));

    assert_eq!(json_login(&site, "john", "nope").status(), Some(401));
    let ok = json_login(&site, "john", "johnpass");
    assert_eq!(ok.status(), Some(200), "{}", ok.body_text());
    let cookie = cookie_of(&ok);
    let page = get_index(site.addr("index"), Some(&cookie));
    assert!(page.body_text().contains("John Smith"), "{}", page.body_text());

    let form = b"".as_slice();
    let out = request_once(
        site.addr("logout"),
        &params("POST", "/logout", Some(&cookie), "application/x-www-form-urlencoded", form),
        form,
    )
    .unwrap();
    assert_eq!(out.status(), Some(303));
    let after = get_index(site.addr("index"), Some(&cookie));
    assert!(!after.body_text().contains("John Smith"), "the saved cookie no longer works");
    assert!(!site.stderr().contains("database is locked"), "{}", site.stderr());
}

/// A JSON POST to `login` with a cookie: the answer as a [`webauth::Response`].
fn post_login(programs: &Programs, cookie: Option<&str>, body: serde_json::Value) -> webauth::Response {
    let body = body.to_string();
    let p = params("POST", "/login", cookie, "application/json", body.as_bytes());
    let reply = request_once(programs.addr("login"), &p, body.as_bytes()).expect("login request");
    parse_response(&reply.stdout).unwrap_or_else(|| panic!("no answer: {}", programs.stderr()))
}

/// The password step: the `webauth-pending=...` cookie it sets.
fn password_step(programs: &Programs) -> String {
    let reply = post_login(programs, None, serde_json::json!({"username": "john", "password": "johnpass"}));
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.json()["second_factor"], "totp");
    let pending = reply.cookie().expect("a pending cookie");
    assert!(pending.starts_with("webauth-pending="), "{pending}");
    pending
}

fn code(programs: &Programs, pending: &str, code: &str) -> webauth::Response {
    post_login(programs, Some(pending), serde_json::json!({"code": code}))
}

#[test]
fn the_two_step_login_over_fastcgi() {
    // Each password step counts until its code succeeds: room for the replays.
    let programs = Programs::start("2", &[("WEBAUTH_MAX_FAILURES", "20")]);
    let john = enable(&programs.site, "john");
    let pending = password_step(&programs);
    // The pending token is no session, under either cookie name.
    let token = pending.split_once('=').unwrap().1;
    for cookie in [pending.clone(), format!("webauth={token}")] {
        let page = get_index(programs.addr("index"), Some(&cookie));
        assert!(page.body_text().contains("name=\"password\""), "{}", page.body_text());
    }
    let wrong = code(&programs, &pending, &john.wrong_code());
    assert_eq!((wrong.status, wrong.json()["message"].as_str()), (401, Some("Invalid code.")));
    assert!(programs.stderr().contains("login code-failure user=\"john\""), "counted: {}", programs.stderr());

    let right = john.code();
    let ok = code(&programs, &pending, &right);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let session = ok.cookie().expect("a session cookie");
    assert!(session.starts_with("webauth="), "{session}");
    assert!(get_index(programs.addr("index"), Some(&session)).body_text().contains("John Smith"));

    // Two workers: the replay may land on the other one; the store decides.
    for _ in 0..2 {
        let replay = code(&programs, &password_step(&programs), &right);
        assert_eq!(replay.status, 401, "{}", replay.text());
    }
    let recovery = &john.recovery[0];
    assert_eq!(code(&programs, &password_step(&programs), recovery).status, 200);
    assert_eq!(code(&programs, &password_step(&programs), recovery).status, 401, "a recovery code works once");

    let jane = post_login(&programs, None, serde_json::json!({"username": "jane", "password": "janepass"}));
    assert_eq!(jane.status, 200, "a user without TOTP logs in as before: {}", jane.text());
}

#[test]
fn the_pending_step_expires_and_bans_apply_to_codes_over_fastcgi() {
    let programs = Programs::start("1", &[("WEBAUTH_TOTP_PENDING", "1"), ("WEBAUTH_MAX_FAILURES", "3")]);
    let john = enable(&programs.site, "john");
    let pending = password_step(&programs); // attempt 1
    std::thread::sleep(Duration::from_millis(2100));
    let late = code(&programs, &pending, &john.code());
    assert_eq!(late.status, 401, "{}", late.text());
    assert!(late.json().get("second_factor").is_none(), "sign in again: {}", late.text());

    let pending = password_step(&programs); // 2
    assert_eq!(code(&programs, &pending, &john.wrong_code()).status, 401); // 3: banned from now
    let banned = code(&programs, &pending, &john.code());
    assert_eq!(banned.status, 429, "{}", banned.text());
    assert!(banned.cookie().is_none());
}

#[test]
fn two_thousand_requests_over_32_connections() {
    // An idle timeout of 5 s makes every page view write `last seen` (a tenth
    // of it is under a second), so the store takes concurrent writes too.
    let site = Programs::start("4", &[("WEBAUTH_IDLE_TIMEOUT", "5")]);
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
                        site.addr("logout"),
                        &params("POST", "/logout", Some(&cookie), "application/json", b"{}"),
                        b"{}",
                    )
                    .expect("logout");
                    seen.push(out.status().unwrap_or(0));
                    let after = get_index(site.addr("index"), Some(&cookie));
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
fn after_sigterm_new_tcp_connections_are_refused_at_once_while_a_request_finishes() {
    let site = TestSite::with_env(&[("WEBAUTH_STOP_TIMEOUT", "8s")]);
    let (mut server, addr) = listen(&site, "index", Transport::Tcp, "1");
    wait_for_workers(server.pid(), 1);
    let held = hold_request(&addr);
    std::thread::sleep(Duration::from_millis(300));
    signal(server.pid(), libc::SIGTERM);
    // The supervisor shuts the socket down: a connection is refused, not
    // queued behind the busy worker until the grace period ends.
    wait_until("new connections refused", STARTUP, || addr.connect().is_err().then_some(()));
    assert_eq!(finish_held_request(held), Some(200), "{}", server.stderr());
    assert_eq!(server.wait_exit(Duration::from_secs(8)).code(), Some(0), "{}", server.stderr());
    assert!(!server.stderr().contains("cannot accept"), "{}", server.stderr());
}
