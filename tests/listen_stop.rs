//! How FastCGI workers stop: SIGTERM lets the request in hand finish, a
//! `--listen` supervisor waits for its workers up to its grace period and
//! then kills what is left, and `--listen` refuses an address that really
//! binds beyond loopback.

#[path = "support/fcgi_client.rs"]
mod fcgi_client;
mod support;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fcgi_client::{begin_request, encode_pairs, encode_record, encode_stream, nginx_params, Conn, PARAMS, STDIN};
use support::TempDir;

const INDEX: &str = env!("CARGO_BIN_EXE_index");

fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    std::fs::write(dir.join("users.json"), "{}").expect("users file");
    let mut command = Command::new(INDEX);
    command
        .env_clear()
        .env("WEBAUTH_USERS", dir.join("users.json"))
        .env("WEBAUTH_STORE", format!("sqlite:{}", dir.join("s.db").display()))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("stderr log"));
    command
}

fn stderr(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = after.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next().and_then(|p| p.parse::<u32>().ok()));
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

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a GET whose last record (the empty STDIN that completes it) is held
/// back: the worker that took the connection holds a request in hand.
fn start_slow_request(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut first = begin_request(1, fcgi_client::RESPONDER, false);
    first.extend(encode_stream(PARAMS, 1, &encode_pairs(&nginx_params("GET", "/"))));
    stream.write_all(&first).expect("send");
    stream
}

fn finish_slow_request(mut stream: UnixStream) -> Option<u16> {
    stream.write_all(&encode_record(STDIN, 1, b"")).expect("send the end of the request");
    let mut conn = Conn::Unix(stream);
    conn.read_reply(1).ok().and_then(|r| r.status())
}

/// Kills the process and its children if a test left them running.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in children_of(self.0.id()) {
            signal(pid, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_the_listen_parent_exits_0_leaving_no_worker() {
    let dir = TempDir::new("stop");
    let socket = dir.path().join("fcgi.sock");
    let child = command(dir.path(), &[("WEBAUTH_STOP_TIMEOUT", "8s")])
        .arg("--listen")
        .arg(&socket)
        .args(["--workers", "2"])
        .spawn()
        .expect("spawn");
    let mut parent = Reaper(child);
    let pid = parent.0.id();
    wait_until("two workers", Duration::from_secs(10), || children_of(pid).len() == 2 && socket.exists());
    let workers = children_of(pid);
    let slow = start_slow_request(&socket);
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    signal(pid, libc::SIGTERM);
    // The idle worker goes at once; the busy one and the parent wait for the request.
    wait_until("the idle worker to stop", Duration::from_secs(5), || {
        workers.iter().filter(|&&w| is_running(w)).count() == 1
    });
    assert!(parent.0.try_wait().expect("try_wait").is_none(), "the parent left a request in hand");
    assert!(!socket.exists(), "the socket file goes first, so new connections fail fast");
    assert_eq!(finish_slow_request(slow), Some(200), "{}", stderr(dir.path()));
    wait_until("the parent to exit", Duration::from_secs(8), || parent.0.try_wait().expect("try_wait").is_some());
    let status = parent.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", stderr(dir.path()));
    assert!(asked.elapsed() < Duration::from_secs(8), "exited within the grace period");
    for worker in workers {
        assert!(!is_running(worker), "worker {worker} outlived the stop");
    }
}

#[test]
fn a_worker_still_busy_after_the_grace_period_is_killed() {
    let dir = TempDir::new("stop");
    let socket = dir.path().join("fcgi.sock");
    let child = command(dir.path(), &[("WEBAUTH_STOP_TIMEOUT", "1s")])
        .arg("--listen")
        .arg(&socket)
        .args(["--workers", "1"])
        .spawn()
        .expect("spawn");
    let mut parent = Reaper(child);
    let pid = parent.0.id();
    wait_until("a worker", Duration::from_secs(10), || children_of(pid).len() == 1 && socket.exists());
    let workers = children_of(pid);
    let _slow = start_slow_request(&socket);
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    signal(pid, libc::SIGTERM);
    wait_until("the parent to exit", Duration::from_secs(6), || parent.0.try_wait().expect("try_wait").is_some());
    assert!(asked.elapsed() >= Duration::from_millis(900), "the busy worker had its grace period");
    assert_eq!(parent.0.wait().expect("wait").code(), Some(0));
    assert!(!is_running(workers[0]), "the busy worker was killed");
    assert!(stderr(dir.path()).contains("still busy after 1 s; killing it"), "{}", stderr(dir.path()));
}

#[test]
fn an_fd0_worker_finishes_the_request_in_hand_on_sigterm() {
    let dir = TempDir::new("stop");
    let socket = dir.path().join("fcgi.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let child = command(dir.path(), &[]).stdin(Stdio::from(OwnedFd::from(listener))).spawn().expect("spawn");
    let mut worker = Reaper(child);
    let slow = start_slow_request(&socket);
    std::thread::sleep(Duration::from_millis(300));
    signal(worker.0.id(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(worker.0.try_wait().expect("try_wait").is_none(), "the worker left a request in hand");
    assert_eq!(finish_slow_request(slow), Some(200), "{}", stderr(dir.path()));
    wait_until("the worker to exit", Duration::from_secs(5), || worker.0.try_wait().expect("try_wait").is_some());
    assert_eq!(worker.0.wait().expect("wait").code(), Some(0));
}

#[test]
fn an_idle_fd0_worker_stops_at_once_on_sigterm() {
    let dir = TempDir::new("stop");
    let listener = UnixListener::bind(dir.path().join("fcgi.sock")).expect("bind");
    let child = command(dir.path(), &[]).stdin(Stdio::from(OwnedFd::from(listener))).spawn().expect("spawn");
    let mut worker = Reaper(child);
    std::thread::sleep(Duration::from_millis(300));
    signal(worker.0.id(), libc::SIGTERM);
    wait_until("the worker to exit", Duration::from_secs(2), || worker.0.try_wait().expect("try_wait").is_some());
    assert_eq!(worker.0.wait().expect("wait").code(), Some(0));
}

#[test]
fn listen_refuses_an_address_that_binds_beyond_loopback_however_it_is_written() {
    for addr in ["0:0", "0.0.0.0:0", "[::]:0"] {
        let dir = TempDir::new("stop");
        let child = command(dir.path(), &[]).args(["--listen", addr, "--workers", "1"]).spawn().expect("spawn");
        let mut program = Reaper(child);
        // A program that took the address would serve until killed.
        wait_until(addr, Duration::from_secs(10), || program.0.try_wait().expect("try_wait").is_some());
        let status = program.0.wait().expect("wait");
        assert_eq!(status.code(), Some(78), "{addr}: {}", stderr(dir.path()));
        assert!(stderr(dir.path()).contains("FCGI_WEB_SERVER_ADDRS"), "{addr}: {}", stderr(dir.path()));
    }
    // A name that resolves to loopback is fine.
    let dir = TempDir::new("stop");
    let child = command(dir.path(), &[]).args(["--listen", "localhost:0", "--workers", "1"]).spawn().expect("spawn");
    let mut parent = Reaper(child);
    let pid = parent.0.id();
    wait_until("a worker", Duration::from_secs(10), || children_of(pid).len() == 1);
    signal(pid, libc::SIGTERM);
    wait_until("the parent to exit", Duration::from_secs(5), || parent.0.try_wait().expect("try_wait").is_some());
}
