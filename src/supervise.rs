//! `--listen ADDR [--workers N]`: binds the socket, then starts N copies of
//! this program with the socket as their fd 0, so that every worker is a plain
//! fd-0 worker (there is one worker path, [`crate::fcgi::serve_fd0`]), and
//! keeps them running: a worker that dies is restarted with backoff, and its
//! exit is reported.
//!
//! SIGTERM or SIGINT stops gracefully: the socket file goes and the socket
//! is shut down (new connections fail fast), every worker gets SIGTERM and
//! finishes the request in hand, and those still busy after `WEBAUTH_STOP_TIMEOUT` (default 10 s)
//! are killed. Then the supervisor exits 0.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

use crate::config::{self, Config};
use crate::fcgi::listen::{log, Listener, EXIT_CONFIG};

/// Serves FastCGI on `addr` (`host:port`, or a unix socket path) with
/// `workers` processes (default: one per core), even for one worker, so that
/// a crashed worker is always replaced and SIGTERM always behaves the same.
pub fn serve_listen(addr: &str, workers: Option<usize>) -> ExitCode {
    // Workers read the configuration again; a mistake in it is caught here,
    // once, rather than by a loop of workers that exit.
    let config = match Config::from_vars(&config::env_vars()) {
        Ok(config) => config,
        Err(e) => {
            log(&format!("configuration error: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (listener, socket_file) = match Listener::bind(addr) {
        Ok(bound) => bound,
        Err(e) => {
            log(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    if let Err(refusal) = check_exposure(addr, &listener, &config) {
        log(&refusal);
        return ExitCode::from(EXIT_CONFIG);
    }
    let count = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let code = match Supervisor::new(listener, socket_file.clone(), count, config.stop_timeout) {
        Ok(mut supervisor) => supervisor.run(),
        Err(e) => {
            log(&format!("cannot handle signals: {e}"));
            ExitCode::FAILURE
        }
    };
    if let Some(path) = socket_file {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// Whoever reaches the socket speaks with the web server's authority
/// (REMOTE_ADDR, HTTPS, WEBAUTH_* params): beyond loopback, only with
/// FCGI_WEB_SERVER_ADDRS naming the web servers. The address checked is the
/// one really bound, whatever `addr` looked like (`0:9000`, a host name).
fn check_exposure(addr: &str, listener: &Listener, config: &Config) -> Result<(), String> {
    let bound = listener.bound_ip().map_err(|e| format!("cannot tell what {addr} bound: {e}"))?;
    match bound {
        Some(ip) if !ip.to_canonical().is_loopback() && config.web_server_addrs.is_none() => Err(format!(
            "refusing to listen on {addr} ({ip}): a FastCGI socket beyond loopback needs FCGI_WEB_SERVER_ADDRS \
             naming the web servers (or use a unix socket)"
        )),
        _ => Ok(()),
    }
}

/// SIGTERM, SIGINT and SIGCHLD wake the supervisor through a socket pair
/// that signal-hook writes to; the stop flag says which kind it was.
struct Signals {
    wake: UnixStream,
    stop: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> io::Result<Signals> {
        let (wake, notify) = UnixStream::pair()?;
        let stop = Arc::new(AtomicBool::new(false));
        // The flag first, then the wake-up, so the flag is set when we wake.
        for signal in [SIGTERM, SIGINT] {
            signal_hook::flag::register(signal, stop.clone())?;
        }
        // Our own SIGCHLD handler also undoes an inherited SIG_IGN, under
        // which children would reap themselves and never be seen to die.
        for signal in [SIGTERM, SIGINT, SIGCHLD] {
            signal_hook::low_level::pipe::register(signal, notify.try_clone()?)?;
        }
        Ok(Signals { wake, stop })
    }

    /// Waits up to `timeout` (forever if `None`) for a signal.
    fn wait(&mut self, timeout: Option<Duration>) {
        let _ = self.wake.set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))));
        let mut drained = [0u8; 64];
        let _ = self.wake.read(&mut drained);
    }

    fn stop_asked(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

struct Slot {
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

struct Supervisor {
    listener: Listener,
    socket_file: Option<PathBuf>,
    slots: Vec<Slot>,
    grace: Duration,
    signals: Signals,
}

impl Supervisor {
    fn new(listener: Listener, socket_file: Option<PathBuf>, count: usize, grace: Duration) -> io::Result<Supervisor> {
        let now = Instant::now();
        let slots = (0..count)
            .map(|_| Slot { child: None, started: now, backoff: Duration::ZERO, restart_at: Some(now) })
            .collect();
        Ok(Supervisor { listener, socket_file, slots, grace, signals: Signals::install()? })
    }

    /// Keeps the workers running until SIGTERM or SIGINT.
    fn run(&mut self) -> ExitCode {
        loop {
            self.start_due();
            let wake = self.slots.iter().filter_map(|s| s.restart_at).min();
            self.signals.wait(wake.map(|t| t.saturating_duration_since(Instant::now())));
            if self.signals.stop_asked() {
                self.stop();
                return ExitCode::SUCCESS;
            }
            if self.reap() {
                log("a worker found the configuration invalid; stopping");
                self.stop();
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }

    fn start_due(&mut self) {
        let now = Instant::now();
        for slot in self.slots.iter_mut().filter(|s| s.child.is_none() && s.restart_at.is_some_and(|t| t <= now)) {
            match spawn_worker(&self.listener) {
                Ok(child) => {
                    slot.child = Some(child);
                    slot.started = now;
                    slot.restart_at = None;
                }
                Err(e) => {
                    log(&format!("cannot start a worker: {e}"));
                    slot.backoff = next_backoff(slot.backoff);
                    slot.restart_at = Some(now + slot.backoff);
                }
            }
        }
    }

    /// Notes the workers that ended and schedules their restart; true if one
    /// ended because the configuration is invalid.
    fn reap(&mut self) -> bool {
        let mut config_error = false;
        for slot in &mut self.slots {
            let Some(child) = &mut slot.child else { continue };
            let Ok(Some(status)) = child.try_wait() else { continue };
            let pid = child.id();
            slot.child = None;
            if status.code() == Some(i32::from(EXIT_CONFIG)) {
                config_error = true;
                continue;
            }
            // A worker that dies as soon as it starts would otherwise be
            // restarted in a tight loop.
            slot.backoff = if slot.started.elapsed() < Duration::from_secs(1) {
                next_backoff(slot.backoff)
            } else {
                Duration::ZERO
            };
            log(&format!("worker {pid} {}; restarting it in {} ms", describe(status), slot.backoff.as_millis()));
            slot.restart_at = Some(Instant::now() + slot.backoff);
        }
        config_error
    }

    /// SIGTERM to every worker; those still running after the grace period
    /// are killed. Every one is reaped.
    fn stop(&mut self) {
        if let Some(path) = self.socket_file.take() {
            let _ = std::fs::remove_file(path);
        }
        for child in self.slots.iter().filter_map(|s| s.child.as_ref()) {
            let _ = kill_process(Pid::from_child(child), Signal::TERM);
        }
        // New connections fail fast from now on, over TCP too.
        self.listener.shut_down();
        let deadline = Instant::now() + self.grace;
        loop {
            for slot in &mut self.slots {
                if slot.child.as_mut().is_some_and(|c| !matches!(c.try_wait(), Ok(None))) {
                    slot.child = None;
                }
            }
            let now = Instant::now();
            if self.slots.iter().all(|s| s.child.is_none()) || now >= deadline {
                break;
            }
            self.signals.wait(Some((deadline - now).min(Duration::from_millis(100))));
        }
        for mut child in self.slots.iter_mut().filter_map(|s| s.child.take()) {
            log(&format!("worker {} still busy after {} s; killing it", child.id(), self.grace.as_secs()));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// This program again, with the listening socket as its fd 0: a plain fd-0
/// worker, told its supervisor's pid so that it stops when the supervisor dies.
fn spawn_worker(listener: &Listener) -> io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    if let Some(name) = std::env::args_os().next() {
        command.arg0(name);
    }
    command.stdin(Stdio::from(listener.duplicate()?)).env("WEBAUTH_SUPERVISOR", std::process::id().to_string()).spawn()
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_up_to_10_s() {
        assert_eq!(next_backoff(Duration::ZERO), Duration::from_millis(100));
        assert_eq!(next_backoff(Duration::from_millis(100)), Duration::from_millis(200));
        assert_eq!(next_backoff(Duration::from_secs(8)), Duration::from_secs(10));
    }

    #[test]
    fn a_socket_beyond_loopback_needs_fcgi_web_server_addrs() {
        let (mapped, _) = Listener::bind("[::ffff:127.0.0.1]:0").unwrap();
        assert!(check_exposure("[::ffff:127.0.0.1]:0", &mapped, &Config::default()).is_ok(), "loopback, IPv4-mapped");
        let open = Config::default();
        let (any, _) = Listener::bind("0:0").unwrap();
        assert!(check_exposure("0:0", &any, &open).unwrap_err().contains("FCGI_WEB_SERVER_ADDRS"));
        let listed = Config::from_vars(&[("FCGI_WEB_SERVER_ADDRS".into(), "192.0.2.1".into())]).unwrap();
        assert!(check_exposure("0:0", &any, &listed).is_ok());
        let (local, _) = Listener::bind("localhost:0").unwrap();
        assert!(check_exposure("localhost:0", &local, &open).is_ok());
    }
}
