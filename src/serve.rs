//! `webauth serve --demo`: the three routes on a small HTTP server, for trying
//! webauth without a web server. It hands requests to the same handlers as
//! CGI and FastCGI, through the same `Request` and `Response`.
//!
//! For development and the README's first command only: single-threaded, no
//! TLS, no limits on connections. Production runs behind nginx or Apache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, Handler};
use crate::config;
use crate::http::{BodyPlan, Request, MAX_BODY};
use crate::routes;
use crate::users::{hash_password, UsersFile};

/// The tutorial's users, for the demo only.
pub const DEMO_USERS: [(&str, &str, &str, &str); 2] =
    [("john", "John", "Smith", "johnpass"), ("jane", "Jane", "Doe", "janepass")];

/// Writes a users file with the demo users (passwords hashed like any other).
pub fn write_demo_users(path: &Path) -> Result<(), String> {
    let mut file = UsersFile::open(path).map_err(|e| e.to_string())?;
    for (name, first, last, password) in DEMO_USERS {
        let hash = hash_password(password)?;
        file.entries.insert(name.to_string(), serde_json::json!({"first": first, "last": last, "password": hash}));
    }
    file.save().map_err(|e| format!("{}: {e}", path.display()))
}

/// Serves `/`, `/login` and `/logout` on `addr` until SIGINT or SIGTERM.
/// `vars` configure the handlers as the environment would.
pub fn serve(addr: &str, vars: Vec<(String, String)>) -> Result<(), String> {
    let mut app = App::new(vars).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let server = tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = server.server_addr().to_ip().map(|a| a.to_string()).unwrap_or_else(|| addr.to_string());
    println!("webauth demo on http://{local}/ (users john/johnpass and jane/janepass); Ctrl-C stops it");
    let port = local.rsplit(':').next().unwrap_or("80").to_string();
    while !stop.load(Ordering::Relaxed) {
        // A short wait, so that a signal ends the loop and the caller cleans up.
        let Ok(Some(mut request)) = server.recv_timeout(Duration::from_millis(200)) else { continue };
        let response = answer(&mut app, &mut request, &port);
        let _ = request.respond(response);
    }
    Ok(())
}

fn route(path: &str) -> Option<Handler> {
    match path {
        "/" | "/index" => Some(routes::index),
        "/login" => Some(routes::login),
        "/logout" => Some(routes::logout),
        _ => None,
    }
}

fn answer(
    app: &mut App,
    request: &mut tiny_http::Request,
    port: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().as_str().to_ascii_uppercase();
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("GATEWAY_INTERFACE".into(), "CGI/1.1".into());
    vars.insert("REQUEST_METHOD".into(), method.clone());
    vars.insert("SCRIPT_NAME".into(), path.to_string());
    vars.insert("QUERY_STRING".into(), query.to_string());
    vars.insert("SERVER_PORT".into(), port.to_string());
    vars.insert("REMOTE_ADDR".into(), request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default());
    for h in request.headers() {
        let name = h.field.as_str().as_str().to_ascii_uppercase().replace('-', "_");
        let value = h.value.as_str().to_string();
        match name.as_str() {
            "CONTENT_TYPE" | "CONTENT_LENGTH" => vars.insert(name, value),
            _ => vars.insert(format!("HTTP_{name}"), value),
        };
    }
    // tiny_http discards what is left of a body itself.
    let body = BodyPlan::for_request(&vars).read(request.as_reader(), MAX_BODY as u64);
    let response = match route(path) {
        Some(handler) => app.handle(handler, &Request::from_cgi_vars(&vars, body)),
        None => crate::http::Response::text(404, "Not found."),
    };
    let mut r = tiny_http::Response::from_data(if method == "HEAD" { Vec::new() } else { response.body })
        .with_status_code(response.status);
    for (name, value) in &response.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            r.add_header(h);
        }
    }
    r
}

/// `webauth serve --demo [--listen ADDR]`: demo users in a fresh temporary
/// directory (removed when the demo stops), the store beside them, everything
/// else from the environment.
pub fn demo(listen: &str) -> Result<(), String> {
    let loopback = listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
    if !loopback {
        return Err(format!("the demo serves loopback only (127.0.0.1:PORT or [::1]:PORT), not {listen}"));
    }
    // A fresh directory of our own (random name, mode 0700): a predictable one
    // in /tmp could be planted by another user with their own users file.
    let dir = tempfile::Builder::new().prefix("webauth-demo-").tempdir().map_err(|e| e.to_string())?;
    let users = dir.path().join("users.json");
    write_demo_users(&users)?;
    let mut vars = vec![
        ("WEBAUTH_USERS".to_string(), users.display().to_string()),
        ("WEBAUTH_STORE".to_string(), format!("sqlite:{}", dir.path().join("sessions.db").display())),
        ("WEBAUTH_MOUNT".to_string(), "/".to_string()),
    ];
    vars.extend(config::env_vars());
    eprintln!("webauth: demo files in {}", dir.path().display());
    let served = serve(listen, vars);
    drop(dir);
    served
}
