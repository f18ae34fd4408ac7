//! The FastCGI front end of the real programs, started both ways a web server
//! or process manager starts them: `--listen ADDR --workers 2` (we bind, fork
//! and supervise), and a listening socket on fd 0 (as spawn-fcgi, mod_fcgid
//! and systemd pass it). A test client plays the web server.

#[path = "support/fcgi_client.rs"]
mod fcgi_client;
mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fcgi_client::*;
use support::TempDir;

const INDEX: &str = env!("CARGO_BIN_EXE_index");
const LOGIN: &str = env!("CARGO_BIN_EXE_login");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `--listen 127.0.0.1:PORT --workers 2`
    ListenTcp,
    /// `--listen DIR/fcgi.sock --workers 2`
    ListenUnix,
    /// A TCP listener on fd 0.
    Fd0Tcp,
    /// A unix socket listener on fd 0.
    Fd0Unix,
}

const ALL_MODES: [Mode; 4] = [Mode::ListenTcp, Mode::ListenUnix, Mode::Fd0Tcp, Mode::Fd0Unix];

/// A running program and where it listens; stopped (by PID, workers too)
/// when dropped.
struct Server {
    child: Child,
    addr: Address,
    mode: Mode,
    dir: TempDir,
}

impl Server {
    fn start(program: &str, mode: Mode) -> Server {
        Server::start_with(program, mode, &[])
    }

    fn start_with(program: &str, mode: Mode, env: &[(&str, &str)]) -> Server {
        // A port picked free can be taken before the program binds it: retry.
        for _ in 0..5 {
            if let Some(server) = Server::try_start(program, mode, env) {
                return server;
            }
        }
        panic!("{program} in {mode:?} mode did not start");
    }

    fn command(program: &str, dir: &Path, env: &[(&str, &str)]) -> Command {
        let users = dir.join("users.json");
        std::fs::write(&users, "{}").expect("write users file");
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("WEBAUTH_STORE", format!("sqlite:{}", dir.join("s.db").display()))
            .env("WEBAUTH_USERS", &users)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("create stderr log"));
        command
    }

    fn try_start(program: &str, mode: Mode, env: &[(&str, &str)]) -> Option<Server> {
        let dir = TempDir::new("fcgi");
        let mut command = Server::command(program, dir.path(), env);
        let addr = match mode {
            Mode::ListenTcp => {
                let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
                command.args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "2"]);
                Address::Tcp(([127, 0, 0, 1], port).into())
            }
            Mode::ListenUnix => {
                let path = dir.path().join("fcgi.sock");
                command.arg("--listen").arg(&path).args(["--workers", "2"]);
                Address::Unix(path)
            }
            Mode::Fd0Tcp => {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                let addr = Address::Tcp(listener.local_addr().expect("local addr"));
                command.stdin(Stdio::from(OwnedFd::from(listener)));
                addr
            }
            Mode::Fd0Unix => {
                let path = dir.path().join("fcgi.sock");
                let listener = UnixListener::bind(&path).expect("bind");
                command.stdin(Stdio::from(OwnedFd::from(listener)));
                Address::Unix(path)
            }
        };
        let child = command.spawn().expect("spawn the program");
        let mut server = Server { child, addr, mode, dir };
        // Our listener is ready at once; a --listen one once the program bound it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.child.try_wait().expect("try_wait").is_some() {
                return None;
            }
            if server.addr.connect().is_ok() {
                return Some(server);
            }
            assert!(Instant::now() < deadline, "{mode:?}: never accepted a connection\n{}", server.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn get(&self, uri: &str) -> Reply {
        request_once(&self.addr, &nginx_params("GET", uri), b"")
            .unwrap_or_else(|e| panic!("{:?}: GET {uri}: {e}\n{}", self.mode, self.stderr()))
    }

    /// Waits for the program to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{:?}: still running after {within:?}", self.mode);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let workers = children_of(self.pid());
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
        for pid in workers.into_iter().chain(children_of(self.pid())) {
            signal(pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a PID this test started (or one of its children).
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The live processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return children };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            children.push(pid);
        }
    }
    children
}

fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rfind(')').is_some_and(|i| !stat[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Waits until `parent` has `count` children and returns them.
fn wait_for_children(parent: u32, count: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = children_of(parent);
        if children.len() == count {
            return children;
        }
        assert!(Instant::now() < deadline, "{parent} has children {children:?}, expected {count}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_login_form(reply: &Reply, context: &str) {
    assert_eq!(reply.protocol_status, REQUEST_COMPLETE, "{context}");
    assert_eq!(reply.status(), Some(200), "{context}: {}", String::from_utf8_lossy(&reply.stdout));
    assert!(reply.body_text().contains("<form"), "{context}: {}", reply.body_text());
}

#[test]
fn get_root_answers_the_login_form_in_every_mode() {
    for mode in ALL_MODES {
        let server = Server::start(INDEX, mode);
        assert_login_form(&server.get("/"), &format!("{mode:?}"));
    }
}

#[test]
fn two_hundred_requests_in_a_row_each_on_a_new_connection_all_get_200() {
    for mode in [Mode::Fd0Tcp, Mode::ListenUnix] {
        let server = Server::start(INDEX, mode);
        for i in 0..200 {
            let reply = server.get("/");
            assert_eq!(reply.status(), Some(200), "{mode:?}: request {i}\n{}", server.stderr());
        }
    }
}

#[test]
fn keep_conn_serves_twenty_requests_on_one_connection() {
    for mode in [Mode::Fd0Unix, Mode::ListenTcp] {
        let server = Server::start(INDEX, mode);
        let mut conn = server.addr.connect().expect("connect");
        for id in 1..=20u16 {
            let reply = conn.request(id, RESPONDER, true, &nginx_params("GET", "/"), b"").expect("reply");
            assert_login_form(&reply, &format!("{mode:?}: request {id} on the kept connection"));
        }
        // Without FCGI_KEEP_CONN the last one closes it.
        let reply = conn.request(21, RESPONDER, false, &nginx_params("GET", "/"), b"").expect("reply");
        assert_eq!(reply.status(), Some(200));
        assert!(conn.is_closed().expect("read"), "{mode:?}: closed after a request without keep-conn");
    }
}

#[test]
fn an_unknown_role_gets_fcgi_unknown_role_and_no_response() {
    for mode in [Mode::Fd0Tcp, Mode::ListenTcp] {
        let server = Server::start(INDEX, mode);
        // Filter is no role of ours; index serves no Authorizer role either.
        for role in [FILTER, AUTHORIZER] {
            let mut conn = server.addr.connect().expect("connect");
            let reply = conn.request(1, role, false, &nginx_params("GET", "/"), b"").expect("reply");
            assert_eq!(reply.protocol_status, UNKNOWN_ROLE, "{mode:?}: role {role}");
            assert!(reply.stdout.is_empty(), "{mode:?}: role {role} got a response");
            assert!(conn.is_closed().expect("read"));
        }
        assert_eq!(server.get("/").status(), Some(200));
    }
}

#[test]
fn an_unknown_record_type_gets_fcgi_unknown_type() {
    for mode in [Mode::Fd0Unix, Mode::ListenTcp] {
        let server = Server::start(INDEX, mode);
        let mut conn = server.addr.connect().expect("connect");
        conn.send(&encode_record(99, 0, b"?")).expect("send");
        let record = conn.read_record().expect("read").expect("a record");
        assert_eq!((record.kind, record.request_id), (UNKNOWN_TYPE, 0), "{mode:?}");
        assert_eq!(record.content, [99, 0, 0, 0, 0, 0, 0, 0]);
        // The connection goes on.
        let reply = conn.request(1, RESPONDER, false, &nginx_params("GET", "/"), b"").expect("reply");
        assert_eq!(reply.status(), Some(200));
    }
}

#[test]
fn get_values_says_one_connection_one_request_no_multiplexing() {
    let server = Server::start(INDEX, Mode::Fd0Tcp);
    let mut conn = server.addr.connect().expect("connect");
    let asked = encode_pairs(&[("FCGI_MAX_CONNS", ""), ("FCGI_MAX_REQS", ""), ("FCGI_MPXS_CONNS", "")]);
    conn.send(&encode_record(GET_VALUES, 0, &asked)).expect("send");
    let record = conn.read_record().expect("read").expect("a record");
    assert_eq!(record.kind, GET_VALUES_RESULT);
    let values = decode_pairs(&record.content);
    let expected: Vec<(Vec<u8>, Vec<u8>)> = [("FCGI_MAX_CONNS", "1"), ("FCGI_MAX_REQS", "1"), ("FCGI_MPXS_CONNS", "0")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(values, expected);
}

#[test]
fn a_second_begin_request_on_a_busy_connection_gets_cant_mpx_conn() {
    for mode in [Mode::Fd0Tcp, Mode::ListenUnix] {
        let server = Server::start(INDEX, mode);
        let mut conn = server.addr.connect().expect("connect");
        conn.send(&begin_request(1, RESPONDER, false)).expect("send");
        conn.send(&encode_stream(PARAMS, 1, &encode_pairs(&nginx_params("GET", "/")))).expect("send");
        conn.send(&begin_request(2, RESPONDER, false)).expect("send");
        let refused = conn.read_reply(2).expect("END_REQUEST for request 2");
        assert_eq!(refused.protocol_status, CANT_MPX_CONN, "{mode:?}");
        assert!(refused.stdout.is_empty());
        // Request 1 is still served.
        conn.send(&encode_stream(STDIN, 1, b"")).expect("send");
        assert_login_form(&conn.read_reply(1).expect("reply to request 1"), &format!("{mode:?}"));
    }
}

#[test]
fn an_oversized_post_gets_413_and_the_process_keeps_serving() {
    // login, because it reads bodies; index answers any POST with 405.
    for mode in [Mode::Fd0Tcp, Mode::ListenTcp] {
        let server = Server::start(LOGIN, mode);
        let body = vec![b'a'; 200_000];
        let mut params = nginx_params("POST", "/login");
        for (name, value) in params.iter_mut() {
            match name.as_str() {
                "CONTENT_LENGTH" => *value = body.len().to_string(),
                "CONTENT_TYPE" => *value = "application/x-www-form-urlencoded".into(),
                _ => {}
            }
        }
        let reply = request_once(&server.addr, &params, &body).expect("reply");
        assert_eq!(reply.status(), Some(413), "{mode:?}: {}", String::from_utf8_lossy(&reply.stdout));
        // A length that claims far more than is sent is refused the same way.
        for (name, value) in params.iter_mut() {
            if name == "CONTENT_LENGTH" {
                *value = "99999999999".into();
            }
        }
        let reply = request_once(&server.addr, &params, b"short").expect("reply");
        assert_eq!(reply.status(), Some(413), "{mode:?}");
        assert_login_form(&server.get("/login"), &format!("{mode:?} after the 413s"));
    }
}

#[test]
fn garbage_closes_the_connection_and_the_next_one_is_served() {
    for mode in [Mode::Fd0Tcp, Mode::ListenTcp] {
        let server = Server::start(INDEX, mode);
        let mut conn = server.addr.connect().expect("connect");
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
        assert!(conn.is_closed().expect("read"), "{mode:?}: garbage got an answer");
        let reply = server.get("/");
        assert_eq!(reply.status(), Some(200), "{mode:?}");
        assert!(server.stderr().contains("fastcgi"), "{mode:?}: the protocol error is logged");
    }
}

#[test]
fn a_peer_that_closes_mid_request_does_not_stop_the_server() {
    let server = Server::start(INDEX, Mode::Fd0Tcp);
    for cut in [3, 8, 30] {
        let mut conn = server.addr.connect().expect("connect");
        let request = encode_request(1, RESPONDER, false, &nginx_params("GET", "/"), b"");
        conn.send(&request[..cut]).expect("send");
        drop(conn);
    }
    assert_eq!(server.get("/").status(), Some(200));
}

#[test]
fn fcgi_web_server_addrs_turns_other_peers_away() {
    let refusing = Server::start_with(INDEX, Mode::Fd0Tcp, &[("FCGI_WEB_SERVER_ADDRS", "192.0.2.7")]);
    let mut conn = refusing.addr.connect().expect("connect");
    let _ = conn.send(&encode_request(1, RESPONDER, false, &nginx_params("GET", "/"), b""));
    assert!(conn.is_closed().unwrap_or(true), "a peer not in the list got an answer");

    let serving = Server::start_with(INDEX, Mode::Fd0Tcp, &[("FCGI_WEB_SERVER_ADDRS", "192.0.2.7,127.0.0.1")]);
    assert_eq!(serving.get("/").status(), Some(200));
    // Unix sockets are not filtered: the file's permissions are their access control.
    let unix = Server::start_with(INDEX, Mode::Fd0Unix, &[("FCGI_WEB_SERVER_ADDRS", "192.0.2.7")]);
    assert_eq!(unix.get("/").status(), Some(200));
}

#[test]
fn sigterm_stops_the_listen_parent_and_its_workers() {
    for mode in [Mode::ListenTcp, Mode::ListenUnix] {
        let mut server = Server::start(INDEX, mode);
        assert_eq!(server.get("/").status(), Some(200));
        let workers = wait_for_children(server.pid(), 2);
        signal(server.pid(), libc::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{mode:?}: {status}\n{}", server.stderr());
        for pid in workers {
            assert!(!is_running(pid), "{mode:?}: worker {pid} outlived its parent");
        }
        assert!(server.addr.connect().is_err(), "{mode:?}: still accepting after SIGTERM");
        if let Address::Unix(path) = &server.addr {
            assert!(!path.exists(), "the socket file is removed");
        }
    }
}

#[test]
fn a_killed_worker_is_replaced() {
    let server = Server::start(INDEX, Mode::ListenTcp);
    let before = wait_for_children(server.pid(), 2);
    signal(before[0], libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = children_of(server.pid());
        if now.len() == 2 && !now.contains(&before[0]) {
            break now;
        }
        assert!(Instant::now() < deadline, "worker not replaced: {now:?}\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(after.contains(&before[1]), "the other worker was left alone");
    for _ in 0..10 {
        assert_eq!(server.get("/").status(), Some(200));
    }
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let dir = TempDir::new("fcgi");
    let path = dir.path().join("fcgi.sock");
    // Stale: bound, then the listener is gone.
    drop(UnixListener::bind(&path).expect("bind"));
    let mut first = Server::command(INDEX, dir.path(), &[]);
    first.arg("--listen").arg(&path).args(["--workers", "1"]);
    let mut first = first.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fcgi_client::Address::Unix(path.clone()).connect().is_err() {
        assert!(Instant::now() < deadline, "never listened over the stale socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Live: a second program must not steal it.
    let mut second = Server::command(INDEX, dir.path(), &[]);
    second.arg("--listen").arg(&path);
    second.stderr(Stdio::piped());
    let output = second.output().expect("run");
    assert!(!output.status.success(), "a second program took over a live socket");
    assert!(String::from_utf8_lossy(&output.stderr).contains("another process"));
    signal(first.id(), libc::SIGTERM);
    let _ = first.wait();
    assert!(!path.exists());
}

#[test]
fn an_invalid_configuration_exits_78() {
    for mode in [Mode::ListenTcp, Mode::Fd0Tcp] {
        let dir = TempDir::new("fcgi");
        let mut command = Server::command(INDEX, dir.path(), &[("WEBAUTH_COOKIE_SECURE", "sometimes")]);
        let _listener = match mode {
            Mode::ListenTcp => {
                command.args(["--listen", "127.0.0.1:0"]);
                None
            }
            _ => {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                command.stdin(Stdio::from(OwnedFd::from(listener.try_clone().expect("clone"))));
                Some(listener)
            }
        };
        let mut child = command.spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{mode:?}: did not exit on a bad configuration");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(78), "{mode:?}");
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        assert!(log.contains("WEBAUTH_COOKIE_SECURE"), "{mode:?}: {log}");
    }
}

#[test]
fn a_request_split_across_many_small_writes_is_served() {
    let server = Server::start(INDEX, Mode::Fd0Tcp);
    let Address::Tcp(addr) = &server.addr else { unreachable!("a TCP mode") };
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let request = encode_request(1, RESPONDER, false, &nginx_params("GET", "/"), b"");
    for piece in request.chunks(7) {
        stream.write_all(piece).expect("send");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut conn = Conn::Tcp(stream);
    assert_login_form(&conn.read_reply(1).expect("reply"), "split request");
}

#[test]
fn listening_beyond_loopback_needs_fcgi_web_server_addrs() {
    let dir = TempDir::new("fcgi");
    let out = Server::command(INDEX, dir.path(), &[]).args(["--listen", "0.0.0.0:0"]).output().expect("run");
    assert_eq!(out.status.code(), Some(78));
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(log.contains("FCGI_WEB_SERVER_ADDRS"), "{log}");
}
