//! webauth: classic web login for plain hosting.
//!
//! Three small programs, `index`, `login` and `logout`, each hand one route
//! handler to [`run`]. `run` decides how the program was started (a FastCGI
//! listening socket on fd 0, `--listen ADDR`, whose supervisor starts fd-0
//! workers, or a CGI environment) and from then on the flow is the same for
//! every front end:
//! `front end -> http::Request -> routes::* (config, users, session, render)
//! -> http::Response -> front end`. The handlers never know which front end
//! called them; [`app::App`] holds what a process keeps between requests.

pub mod admin;
pub mod app;
pub mod audit;
pub mod bundle;
pub mod cgi;
pub mod check;
pub mod config;
pub mod fcgi;
pub mod files;
pub mod http;
pub mod origin;
pub mod policy;
pub mod regulate;
pub mod render;
pub mod routes;
pub mod serve;
pub mod session;
pub mod slots;
pub mod store;
pub mod supervise;
pub mod totp;
pub mod users;

pub use app::{App, Handler};
pub use http::{Request, Response, Role};

use std::process::ExitCode;

/// The most worker processes `--listen` starts: each is a whole process.
pub const MAX_WORKERS: usize = 256;

/// How a program was started (SPEC.md, "Front ends").
#[derive(Debug, PartialEq, Eq)]
pub enum FrontEnd {
    /// `--listen ADDR [--workers N]`: FastCGI on a socket of our own.
    Listen {
        addr: String,
        workers: Option<usize>,
    },
    /// A listening socket on fd 0 (spawn-fcgi, mod_fcgid, systemd sockets).
    Fd0,
    /// CGI variables in the environment: one request, then exit.
    Cgi,
    Usage(String),
}

impl FrontEnd {
    /// Decides from the arguments, fd 0 and the environment.
    pub fn detect(args: &[String], fd0_listening: bool, cgi_env: bool) -> FrontEnd {
        // A process manager's socket, then a CGI request, decide before the
        // arguments: a web server makes a query string without `=` into a
        // CGI program's arguments (RFC 3875, 4.4), and a visitor must not
        // start a server with `?--listen+...`.
        if fd0_listening {
            return FrontEnd::Fd0;
        }
        if cgi_env {
            return FrontEnd::Cgi;
        }
        let mut addr = None;
        let mut workers = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--listen" => match it.next() {
                    Some(a) => addr = Some(a.clone()),
                    None => return FrontEnd::Usage("--listen needs an address".into()),
                },
                "--workers" => {
                    match it.next().and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=MAX_WORKERS).contains(n)) {
                        Some(n) => workers = Some(n),
                        None => return FrontEnd::Usage(format!("--workers needs a number from 1 to {MAX_WORKERS}")),
                    }
                }
                "-h" | "--help" => return FrontEnd::Usage(String::new()),
                other => return FrontEnd::Usage(format!("unknown argument {other:?}")),
            }
        }
        match addr {
            Some(addr) => FrontEnd::Listen { addr, workers },
            None if workers.is_some() => FrontEnd::Usage("--workers goes with --listen".into()),
            None => FrontEnd::Usage(String::new()),
        }
    }
}

/// The whole of a route program's `main`: serves `handler` in the Responder role.
pub fn run(handler: Handler) -> ExitCode {
    run_roles(handler, &[Role::Responder])
}

/// Like [`run`], for a program that also answers other FastCGI roles.
pub fn run_roles(handler: Handler, roles: &[Role]) -> ExitCode {
    audit::install_panic_hook();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cgi_env = std::env::var_os("GATEWAY_INTERFACE").is_some() || std::env::var_os("REQUEST_METHOD").is_some();
    match FrontEnd::detect(&args, fcgi::fd0_is_listening_socket(), cgi_env) {
        FrontEnd::Cgi => cgi::run(handler),
        FrontEnd::Fd0 => fcgi::serve_fd0(handler, roles),
        FrontEnd::Listen { addr, workers } => supervise::serve_listen(&addr, workers),
        FrontEnd::Usage(problem) => {
            let program = std::env::args().next().unwrap_or_else(|| "webauth-route".into());
            if !problem.is_empty() {
                eprintln!("{program}: {problem}");
            }
            eprintln!(
                "usage: {program} [--listen ADDR [--workers N]]\n\
                 Runs as CGI when the environment has CGI variables, as FastCGI when fd 0 is a\n\
                 listening socket (spawn-fcgi, mod_fcgid, systemd), or as FastCGI on ADDR\n\
                 (host:port or a unix socket path) with N worker processes (default: one per core)."
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn front_end_detection() {
        assert_eq!(FrontEnd::detect(&args(&[]), true, true), FrontEnd::Fd0);
        // A query string without `=` becomes a CGI program's arguments: ignored.
        assert_eq!(FrontEnd::detect(&args(&["--listen", "127.0.0.1:9"]), false, true), FrontEnd::Cgi);
        assert_eq!(FrontEnd::detect(&args(&["x"]), false, true), FrontEnd::Cgi);
        assert!(matches!(
            FrontEnd::detect(&args(&["--listen", "x", "--workers", "100000"]), false, false),
            FrontEnd::Usage(_)
        ));
        assert_eq!(FrontEnd::detect(&args(&[]), false, true), FrontEnd::Cgi);
        assert!(matches!(FrontEnd::detect(&args(&[]), false, false), FrontEnd::Usage(_)));
        assert_eq!(
            FrontEnd::detect(&args(&["--listen", "/run/w.sock", "--workers", "3"]), false, false),
            FrontEnd::Listen { addr: "/run/w.sock".into(), workers: Some(3) }
        );
        assert!(matches!(FrontEnd::detect(&args(&["--listen"]), false, false), FrontEnd::Usage(_)));
        assert!(matches!(
            FrontEnd::detect(&args(&["--workers", "0", "--listen", "x"]), false, false),
            FrontEnd::Usage(_)
        ));
        assert!(matches!(FrontEnd::detect(&args(&["--bogus"]), false, false), FrontEnd::Usage(_)));
    }
}
