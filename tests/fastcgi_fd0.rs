//! The FastCGI front end started the way spawn-fcgi, mod_fcgid and systemd
//! socket units start it: a listening socket (TCP or unix) on fd 0. A test
//! client plays the web server. The record-layer cases run here, on one
//! process; the `--listen` supervisor's workers serve connections with the
//! same code (fastcgi_listen.rs).

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::fcgi_client::*;
use support::{Server, TestSite, STARTUP};

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    Unix,
}

/// A program serving on a listener the test bound and handed it as fd 0.
struct Fd0 {
    server: Server,
    addr: Address,
    transport: Transport,
    /// Its files, removed after it stops.
    _site: TestSite,
}

fn start(program: &str, transport: Transport) -> Fd0 {
    start_with(program, transport, &[])
}

fn start_with(program: &str, transport: Transport, env: &[(&str, &str)]) -> Fd0 {
    let site = TestSite::with_env(env);
    let (addr, listener): (Address, OwnedFd) = match transport {
        Transport::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            (Address::Tcp(listener.local_addr().expect("local addr")), listener.into())
        }
        Transport::Unix => {
            let path = site.dir.path().join("fcgi.sock");
            let listener = UnixListener::bind(&path).expect("bind");
            (Address::Unix(path), listener.into())
        }
    };
    let mut command = Command::new(support::bin(program));
    command
        .env_clear()
        .envs(site.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::from(listener))
        .stdout(Stdio::null());
    let server = Server::spawn(program, command, &site.dir.path().join("stderr.log"));
    Fd0 { server, addr, transport, _site: site }
}

impl Fd0 {
    fn get(&self, uri: &str) -> Reply {
        request_once(&self.addr, &nginx_params("GET", uri), b"")
            .unwrap_or_else(|e| panic!("{:?}: GET {uri}: {e}\n{}", self.transport, self.server.stderr()))
    }
}

#[test]
fn get_root_answers_the_login_form_over_tcp_and_unix() {
    for transport in [Transport::Tcp, Transport::Unix] {
        let program = start("index", transport);
        assert_login_form(&program.get("/"), &format!("{transport:?}"));
    }
}

#[test]
fn two_hundred_requests_in_a_row_each_on_a_new_connection_all_get_200() {
    let program = start("index", Transport::Tcp);
    for i in 0..200 {
        let reply = program.get("/");
        assert_eq!(reply.status(), Some(200), "request {i}\n{}", program.server.stderr());
    }
}

#[test]
fn keep_conn_serves_twenty_requests_on_one_connection() {
    let program = start("index", Transport::Unix);
    check_keep_conn(&program.addr);
}

#[test]
fn an_unknown_role_gets_fcgi_unknown_role_and_no_response() {
    let program = start("index", Transport::Tcp);
    // Filter is no role of ours; index serves no Authorizer role either.
    for role in [FILTER, AUTHORIZER] {
        let mut conn = program.addr.connect().expect("connect");
        let reply = conn.request(1, role, false, &nginx_params("GET", "/"), b"").expect("reply");
        assert_eq!(reply.protocol_status, UNKNOWN_ROLE, "role {role}");
        assert!(reply.stdout.is_empty(), "role {role} got a response");
        assert!(conn.is_closed().expect("read"));
    }
    assert_eq!(program.get("/").status(), Some(200));
}

#[test]
fn an_unknown_record_type_gets_fcgi_unknown_type() {
    for transport in [Transport::Unix, Transport::Tcp] {
        let program = start("index", transport);
        let mut conn = program.addr.connect().expect("connect");
        conn.send(&encode_record(99, 0, b"?")).expect("send");
        let record = conn.read_record().expect("read").expect("a record");
        assert_eq!((record.kind, record.request_id), (UNKNOWN_TYPE, 0), "{transport:?}");
        assert_eq!(record.content, [99, 0, 0, 0, 0, 0, 0, 0]);
        // The connection goes on.
        let reply = conn.request(1, RESPONDER, false, &nginx_params("GET", "/"), b"").expect("reply");
        assert_eq!(reply.status(), Some(200));
    }
}

#[test]
fn get_values_says_one_connection_one_request_no_multiplexing() {
    let program = start("index", Transport::Tcp);
    let mut conn = program.addr.connect().expect("connect");
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
    for transport in [Transport::Tcp, Transport::Unix] {
        let program = start("index", transport);
        let mut conn = program.addr.connect().expect("connect");
        conn.send(&begin_request(1, RESPONDER, false)).expect("send");
        conn.send(&encode_stream(PARAMS, 1, &encode_pairs(&nginx_params("GET", "/")))).expect("send");
        conn.send(&begin_request(2, RESPONDER, false)).expect("send");
        let refused = conn.read_reply(2).expect("END_REQUEST for request 2");
        assert_eq!(refused.protocol_status, CANT_MPX_CONN, "{transport:?}");
        assert!(refused.stdout.is_empty());
        // Request 1 is still served.
        conn.send(&encode_stream(STDIN, 1, b"")).expect("send");
        assert_login_form(&conn.read_reply(1).expect("reply to request 1"), &format!("{transport:?}"));
    }
}

#[test]
fn an_oversized_post_gets_413_and_the_process_keeps_serving() {
    // login, because it reads bodies; index answers any POST with 405.
    let program = start("login", Transport::Tcp);
    let body = vec![b'a'; 200_000];
    let mut params = nginx_params("POST", "/login");
    for (name, value) in params.iter_mut() {
        match name.as_str() {
            "CONTENT_LENGTH" => *value = body.len().to_string(),
            "CONTENT_TYPE" => *value = "application/x-www-form-urlencoded".into(),
            _ => {}
        }
    }
    let reply = request_once(&program.addr, &params, &body).expect("reply");
    assert_eq!(reply.status(), Some(413), "{}", String::from_utf8_lossy(&reply.stdout));
    // A length that claims far more than is sent is refused the same way.
    for (name, value) in params.iter_mut() {
        if name == "CONTENT_LENGTH" {
            *value = "99999999999".into();
        }
    }
    let reply = request_once(&program.addr, &params, b"short").expect("reply");
    assert_eq!(reply.status(), Some(413));
    assert_login_form(&program.get("/login"), "after the 413s");
}

#[test]
fn garbage_closes_the_connection_and_the_next_one_is_served() {
    let program = start("index", Transport::Tcp);
    let mut conn = program.addr.connect().expect("connect");
    conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
    assert!(conn.is_closed().expect("read"), "garbage got an answer");
    let reply = program.get("/");
    assert_eq!(reply.status(), Some(200));
    assert!(program.server.stderr().contains("fastcgi"), "the protocol error is logged");
}

#[test]
fn a_peer_that_closes_mid_request_does_not_stop_the_server() {
    let program = start("index", Transport::Tcp);
    for cut in [3, 8, 30] {
        let mut conn = program.addr.connect().expect("connect");
        let request = encode_request(1, RESPONDER, false, &nginx_params("GET", "/"), b"");
        conn.send(&request[..cut]).expect("send");
        drop(conn);
    }
    assert_eq!(program.get("/").status(), Some(200));
}

#[test]
fn a_request_split_across_many_small_writes_is_served() {
    let program = start("index", Transport::Tcp);
    let Address::Tcp(addr) = &program.addr else { unreachable!("a TCP listener") };
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
fn fcgi_web_server_addrs_turns_other_peers_away() {
    let refusing = start_with("index", Transport::Tcp, &[("FCGI_WEB_SERVER_ADDRS", "192.0.2.7")]);
    let mut conn = refusing.addr.connect().expect("connect");
    let _ = conn.send(&encode_request(1, RESPONDER, false, &nginx_params("GET", "/"), b""));
    assert!(conn.is_closed().unwrap_or(true), "a peer not in the list got an answer");

    let serving = start_with("index", Transport::Tcp, &[("FCGI_WEB_SERVER_ADDRS", "192.0.2.7,127.0.0.1")]);
    assert_eq!(serving.get("/").status(), Some(200));
    // Unix sockets are not filtered: the file's permissions are their access control.
    let unix = start_with("index", Transport::Unix, &[("FCGI_WEB_SERVER_ADDRS", "192.0.2.7")]);
    assert_eq!(unix.get("/").status(), Some(200));
}

#[test]
fn a_handler_panic_is_a_500_and_the_process_keeps_serving() {
    // One process, so the request after the panic is served by the very
    // process that panicked.
    let mut program = start("index", Transport::Unix);
    let mut conn = program.addr.connect().unwrap();
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
        assert_eq!(program.get("/").status(), Some(200));
    }
    assert!(program.server.exited().is_none(), "the process is still running");
    let log = program.server.stderr();
    assert_eq!(log.lines().filter(|l| l.contains("panic")).count(), 1, "{log}");
}

#[test]
fn an_invalid_configuration_exits_78() {
    let mut program = start_with("index", Transport::Tcp, &[("WEBAUTH_COOKIE_SECURE", "sometimes")]);
    let status = program.server.wait_exit(STARTUP);
    assert_eq!(status.code(), Some(78));
    let log = program.server.stderr();
    assert!(log.contains("WEBAUTH_COOKIE_SECURE"), "{log}");
}

#[test]
fn sigterm_lets_the_request_in_hand_finish_then_the_program_exits_0() {
    let mut fd0 = start("index", Transport::Unix);
    let held = hold_request(&fd0.addr);
    std::thread::sleep(Duration::from_millis(300));
    support::signal(fd0.server.pid(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(fd0.server.exited().is_none(), "the program left a request in hand");
    assert_eq!(finish_held_request(held), Some(200), "{}", fd0.server.stderr());
    assert_eq!(fd0.server.wait_exit(STARTUP).code(), Some(0), "{}", fd0.server.stderr());
}

#[test]
fn an_idle_program_stops_at_once_on_sigterm_with_status_0() {
    let mut fd0 = start("index", Transport::Unix);
    assert_login_form(&fd0.get("/"), "before the stop");
    support::signal(fd0.server.pid(), libc::SIGTERM);
    assert_eq!(fd0.server.wait_exit(Duration::from_secs(2)).code(), Some(0), "{}", fd0.server.stderr());
}
