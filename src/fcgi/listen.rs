//! Listening sockets and the accept loop of one worker process: the socket a
//! process manager left on fd 0 (spawn-fcgi, mod_fcgid, systemd, or our own
//! `--listen` supervisor), and the sockets `--listen` binds.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use socket2::{Domain, SockRef};

use super::conn::{Ending, Stop, Worker};
use super::record::MAX_RECORD;
use crate::app::{App, Handler};
use crate::audit::{self, Refusal};
use crate::config::{self, Config, LogFormat};
use crate::http::Role;

/// How long one read or write may block: a stalled peer or an idle kept-alive
/// connection must not pin a single-threaded worker.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// sysexits.h's EX_CONFIG: the configuration is wrong, restarting won't help.
pub const EXIT_CONFIG: u8 = 78;

pub(crate) fn log(message: &str) {
    audit::fault(&format!("fastcgi[{}]: {message}", std::process::id()));
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    fn prepare(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                // Each response is one write: Nagle could only hold its tail back.
                s.set_nodelay(true)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))
            }
        }
    }

    /// Closes our side and drops what the peer still sends, for a moment, so
    /// that the close is a FIN after our last records rather than a reset.
    fn linger(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => {
                s.shutdown(Shutdown::Write).and_then(|_| s.set_read_timeout(Some(Duration::from_secs(1))))
            }
            Stream::Unix(s) => {
                s.shutdown(Shutdown::Write).and_then(|_| s.set_read_timeout(Some(Duration::from_secs(1))))
            }
        };
        let mut scratch = [0u8; 4096];
        let mut budget = MAX_RECORD * 4;
        while budget > 0 {
            match self.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    }
}

/// Whether `fd` is a listening socket.
fn is_listening(fd: &impl AsFd) -> bool {
    SockRef::from(fd).is_listener().unwrap_or(false)
}

/// Whether fd 0 is a listening socket, i.e. a process manager started us.
pub fn fd0_is_listening_socket() -> bool {
    is_listening(&io::stdin())
}

impl Listener {
    /// The listening socket a process manager left on fd 0, as a listener of
    /// our own (a duplicate of fd 0: no unsafe adoption of a raw descriptor).
    pub fn from_fd0() -> io::Result<Listener> {
        let stdin = io::stdin();
        let socket = SockRef::from(&stdin);
        if !socket.is_listener()? {
            return Err(io::Error::other("fd 0 is not a listening socket"));
        }
        // Close-on-exec, so that nothing we might run gets it, and blocking,
        // so that `accept` waits instead of spinning on EAGAIN.
        socket.set_cloexec(true)?;
        socket.set_nonblocking(false)?;
        let domain = socket.domain()?;
        let fd: OwnedFd = stdin.as_fd().try_clone_to_owned()?;
        if domain == Domain::UNIX {
            Ok(Listener::Unix(UnixListener::from(fd)))
        } else if domain == Domain::IPV4 || domain == Domain::IPV6 {
            Ok(Listener::Tcp(TcpListener::from(fd)))
        } else {
            Err(io::Error::other(format!("fd 0 is a socket of {domain:?}; expected a unix or TCP socket")))
        }
    }

    /// Binds `addr`: a path (containing `/`, or `unix:PATH`) is a unix
    /// socket, anything else `host:port`. Returns the socket file to remove
    /// at exit.
    pub fn bind(addr: &str) -> io::Result<(Listener, Option<PathBuf>)> {
        let path = addr.strip_prefix("unix:").or_else(|| addr.contains('/').then_some(addr));
        let Some(path) = path.map(Path::new) else {
            let listener = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            return Ok((Listener::Tcp(listener), None));
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket; refusing to replace it", path.display()),
                ));
            }
            match UnixStream::connect(path) {
                // A socket nobody listens on: left over by a process that died.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process is listening on {}", path.display()),
                    ))
                }
                // Someone else's socket of another kind, or one we may not
                // use: not ours to remove.
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a socket in use or not ours ({e}); refusing to replace it", path.display()),
                    ))
                }
            }
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", path.display())))?;
        // The web server's group connects; others have no business here.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok((Listener::Unix(listener), Some(path.to_path_buf())))
    }

    /// The address a TCP listener is bound to (what `0:9000` or a host name
    /// really became); `None` for a unix socket.
    pub fn bound_ip(&self) -> io::Result<Option<IpAddr>> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| Some(a.ip())),
            Listener::Unix(_) => Ok(None),
        }
    }

    /// Stops the socket for every process that holds it: new connections are
    /// refused and queued ones reset at once, rather than waiting for the
    /// last busy worker to close its copy. The workers' `accept` then fails
    /// with EINVAL, which they take as the order to stop.
    pub fn shut_down(&self) {
        let _ = match self {
            Listener::Tcp(l) => SockRef::from(l).shutdown(std::net::Shutdown::Both),
            Listener::Unix(l) => SockRef::from(l).shutdown(std::net::Shutdown::Both),
        };
    }

    /// A descriptor of the same socket, for a worker's fd 0.
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Tcp(l) => l.try_clone().map(OwnedFd::from),
            Listener::Unix(l) => l.try_clone().map(OwnedFd::from),
        }
    }

    /// The next connection and, for TCP, the peer's address. std accepts with
    /// SOCK_CLOEXEC where the platform has it.
    fn accept(&self) -> io::Result<(Stream, Option<IpAddr>)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, peer)| (Stream::Tcp(s), Some(peer.ip()))),
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// The peers `FCGI_WEB_SERVER_ADDRS` lets in, if it is set.
pub fn allowed_peers(config: &Config) -> Option<Vec<IpAddr>> {
    let list = config.web_server_addrs.as_ref()?;
    let mut peers = Vec::new();
    for entry in list {
        match entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => peers.push(ip.to_canonical()),
            Err(_) => log(&format!("FCGI_WEB_SERVER_ADDRS: {entry:?} is not an IP address; ignored")),
        }
    }
    if peers.is_empty() {
        log("FCGI_WEB_SERVER_ADDRS names no valid address: every TCP connection will be refused");
    }
    Some(peers)
}

fn peer_allowed(allowed: &[IpAddr], peer: IpAddr) -> bool {
    allowed.contains(&peer.to_canonical())
}

enum AcceptFailure {
    /// Nothing wrong with us: try again at once.
    Retry,
    /// Out of descriptors or memory: say so, give it a moment, try again.
    Pause,
    /// The listener is not a listening socket: nothing will ever succeed.
    Fatal,
}

fn classify_accept_error(e: &io::Error) -> AcceptFailure {
    match e.raw_os_error() {
        // Linux reports the new connection's network errors from accept;
        // accept(2) says to treat them like EAGAIN.
        Some(
            libc::EINTR
            | libc::ECONNABORTED
            | libc::EAGAIN
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ECONNRESET
            | libc::ETIMEDOUT
            | libc::EPERM,
        ) => AcceptFailure::Retry,
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL) => AcceptFailure::Fatal,
        _ => AcceptFailure::Pause,
    }
}

/// Audits the peers refused by `FCGI_WEB_SERVER_ADDRS`, at most once a
/// minute: a scan of an exposed port must not flood the error log.
struct RefusalLog {
    format: LogFormat,
    last: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: IpAddr) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            let reason =
                format!("not in FCGI_WEB_SERVER_ADDRS ({} connection(s) refused since the last line)", self.since);
            audit::refusal(self.format, Refusal::Peer, &reason, &peer.to_string());
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

/// How the accept loop ended.
enum LoopEnd {
    /// SIGTERM: the request in hand (if any) was answered.
    Stopped,
    /// The listener failed for good.
    Failed(io::Error),
}

/// Accepts and serves connections until a stop is asked or the listener fails.
fn accept_loop(listener: &Listener, worker: &mut Worker<'_>, app: &mut App, stop: &Stop) -> LoopEnd {
    let config = app.config();
    let allowed = allowed_peers(&config);
    let mut refusals = RefusalLog { format: config.log, last: None, since: 0 };
    loop {
        if !stop.enter_idle() {
            return LoopEnd::Stopped;
        }
        let accepted = listener.accept();
        stop.leave_idle();
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => match classify_accept_error(&e) {
                AcceptFailure::Retry => continue,
                AcceptFailure::Pause => {
                    log(&format!("accept failed: {e}; retrying in 100 ms"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                // A listener shut down by its owner (a stopping supervisor).
                AcceptFailure::Fatal if e.raw_os_error() == Some(libc::EINVAL) => return LoopEnd::Stopped,
                AcceptFailure::Fatal => return LoopEnd::Failed(e),
            },
        };
        if let (Some(allowed), Some(peer)) = (allowed.as_deref(), peer) {
            if !peer_allowed(allowed, peer) {
                refusals.refused(peer);
                continue;
            }
        }
        if let Err(e) = stream.prepare() {
            log(&format!("cannot set up an accepted connection: {e}"));
            continue;
        }
        match worker.serve(&mut stream, app) {
            Ending::Done | Ending::PeerClosed | Ending::Stopped => {}
            Ending::Linger => stream.linger(),
            Ending::Protocol(e) => log(&format!("closing connection: {e}")),
            Ending::Deadline => log("closing connection: a request took over 120 s to arrive"),
            Ending::Io { error, busy } => {
                let quiet = matches!(
                    error.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) || (!busy && matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
                if !quiet {
                    log(&format!("closing connection: {error}"));
                }
            }
        }
    }
}

/// SIGTERM stops the worker gracefully: at once when it holds no request,
/// else after answering the one in hand (the conditional exit runs first,
/// so the order of the two registrations matters).
/// SIGINT (a terminal's Ctrl-C reaches a supervisor's workers too) the same.
fn install_stop() -> io::Result<Stop> {
    let stop = Stop::default();
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 0, stop.idle.clone())?;
        signal_hook::flag::register(signal, stop.asked.clone())?;
    }
    Ok(stop)
}

/// A worker of a `--listen` supervisor stops when the supervisor dies (SIGKILL,
/// OOM) rather than serve on, unsupervised, a socket a new one wants to bind.
fn follow_supervisor(pid: u32) -> io::Result<()> {
    use rustix::process::{getppid, set_parent_process_death_signal, Signal};
    set_parent_process_death_signal(Some(Signal::TERM))?;
    // The supervisor may have died before the line above took effect.
    let parent = getppid().map(|p| p.as_raw_pid());
    if parent.and_then(|p| u32::try_from(p).ok()) != Some(pid) {
        return Err(io::Error::other(format!("supervisor {pid} is gone")));
    }
    Ok(())
}

/// Serves FastCGI on the listening socket on fd 0, in this one process (the
/// process manager that passed it decides how many of us there are).
pub fn serve_fd0(handler: Handler, roles: &[Role]) -> ExitCode {
    let listener = match Listener::from_fd0() {
        Ok(listener) => listener,
        Err(e) => {
            log(&format!("cannot use fd 0 as a FastCGI listener: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut app = match App::new(config::env_vars()) {
        Ok(app) => app,
        Err(e) => {
            log(&format!("configuration error: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(pid) = app.config().supervisor {
        if let Err(e) = follow_supervisor(pid) {
            log(&format!("not starting: {e}"));
            return ExitCode::FAILURE;
        }
    }
    let stop = match install_stop() {
        Ok(stop) => stop,
        Err(e) => {
            log(&format!("cannot handle SIGTERM: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut worker = Worker::new(roles, handler, stop.clone());
    match accept_loop(&listener, &mut worker, &mut app, &stop) {
        LoopEnd::Stopped => ExitCode::SUCCESS,
        LoopEnd::Failed(e) => {
            log(&format!("cannot accept on the listening socket: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_in_fcgi_web_server_addrs_are_let_in() {
        let config = Config::from_vars(&[("FCGI_WEB_SERVER_ADDRS".into(), "127.0.0.1, ::1,bogus".into())]).unwrap();
        let allowed = allowed_peers(&config).unwrap();
        assert!(peer_allowed(&allowed, "127.0.0.1".parse().unwrap()));
        assert!(peer_allowed(&allowed, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(peer_allowed(&allowed, "::1".parse().unwrap()));
        assert!(!peer_allowed(&allowed, "10.0.0.1".parse().unwrap()));
        assert_eq!(allowed_peers(&Config::from_vars(&[]).unwrap()), None);
    }

    #[test]
    fn only_a_listening_socket_counts_as_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening(&listener));
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_listening(&stream));
        assert_eq!(SockRef::from(&listener).domain().unwrap(), Domain::IPV4);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_listening(&file));
    }

    #[test]
    fn a_tcp_listener_reports_the_address_it_really_bound() {
        let (listener, file) = Listener::bind("localhost:0").unwrap();
        assert!(file.is_none());
        assert!(listener.bound_ip().unwrap().is_some_and(|ip| ip.is_loopback()));
        let (any, _) = Listener::bind("0:0").unwrap();
        assert_eq!(any.bound_ip().unwrap(), Some(IpAddr::from([0, 0, 0, 0])));
    }

    #[test]
    fn only_a_dead_stream_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(Listener::bind(stale.to_str().unwrap()).is_ok(), "a dead socket is replaced");
        let datagram = dir.path().join("dgram.sock");
        let _live = std::os::unix::net::UnixDatagram::bind(&datagram).unwrap();
        let err = Listener::bind(datagram.to_str().unwrap()).err().expect("refused");
        assert!(err.to_string().contains("refusing to replace"), "{err}");
        assert!(datagram.exists(), "another kind of socket is left alone");
    }

    #[test]
    fn accept_errors_that_pass_are_not_fatal() {
        let kind = |code| classify_accept_error(&io::Error::from_raw_os_error(code));
        assert!(matches!(kind(libc::EMFILE), AcceptFailure::Pause));
        assert!(matches!(kind(libc::ENFILE), AcceptFailure::Pause));
        assert!(matches!(kind(libc::ENOBUFS), AcceptFailure::Pause));
        assert!(matches!(kind(libc::ENOMEM), AcceptFailure::Pause));
        assert!(matches!(kind(libc::EINTR), AcceptFailure::Retry));
        assert!(matches!(kind(libc::ECONNABORTED), AcceptFailure::Retry));
        assert!(matches!(kind(libc::EBADF), AcceptFailure::Fatal));
    }
}
