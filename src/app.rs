//! What a process keeps between requests (configuration, the open store, the
//! parsed users file and templates) and the one place where a handler's
//! error becomes a status.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::audit::{self, Refusal};
use crate::config::{self, Config, ConfigError, Store};
use crate::http::{Request, RequestError, Response};
use crate::render::{RenderError, Renderer};
use crate::store::{self, SessionStore, StoreError};
use crate::users::{UserDb, UsersError};

/// A route: reads the request and the process's state, returns a response or
/// an error that [`App::handle`] turns into one.
pub type Handler = fn(&mut App, &Request) -> Result<Response, Error>;

/// Everything a handler can fail with, each mapped to a status in [`Error::parts`].
#[derive(Debug)]
pub enum Error {
    Request(RequestError),
    MethodNotAllowed(&'static str),
    /// A cross-origin unsafe request; the reason goes to the audit log.
    CrossOrigin(&'static str),
    Banned {
        retry_after: i64,
    },
    Store(StoreError),
    Users(UsersError),
    Render(RenderError),
    Config(ConfigError),
    Random(String),
    /// Too much work at once (all verification slots busy): try again soon.
    Busy(String),
}

/// What an error becomes: the status, the message for the client, the cause
/// for stderr (faults only), and headers the answer needs.
pub struct ErrorParts {
    pub status: u16,
    pub message: String,
    pub cause: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

const UNAVAILABLE: &str = "The login service is unavailable right now. Please try again shortly.";
const MISCONFIGURED: &str = "The login service is misconfigured. The administrator has been told.";

impl Error {
    /// The one place where an error becomes a status, a client message, a log
    /// cause and headers. The client message never carries the cause.
    pub fn parts(&self) -> ErrorParts {
        let (status, message, cause, headers): (u16, String, Option<String>, Vec<(&'static str, String)>) = match self {
            Error::Request(e) => (e.status(), e.message(), None, vec![]),
            Error::MethodNotAllowed(allow) => {
                (405, "Method not allowed.".into(), None, vec![("Allow", allow.to_string())])
            }
            Error::CrossOrigin(_) => (403, "Cross-origin request refused.".into(), None, vec![]),
            Error::Banned { retry_after } => {
                (429, too_many_message(*retry_after), None, vec![("Retry-After", retry_after.max(&1).to_string())])
            }
            Error::Store(e) => (503, UNAVAILABLE.into(), Some(e.to_string()), vec![("Retry-After", "5".into())]),
            Error::Busy(e) => (503, UNAVAILABLE.into(), Some(e.clone()), vec![("Retry-After", "1".into())]),
            Error::Users(e) => (500, MISCONFIGURED.into(), Some(e.to_string()), vec![]),
            Error::Config(e) => (500, MISCONFIGURED.into(), Some(e.to_string()), vec![]),
            Error::Render(e) => (500, MISCONFIGURED.into(), Some(e.to_string()), vec![]),
            Error::Random(e) => (500, MISCONFIGURED.into(), Some(format!("OS random source failed: {e}")), vec![]),
        };
        ErrorParts { status, message, cause, headers }
    }
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Error {
        Error::Request(e)
    }
}
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}
impl From<UsersError> for Error {
    fn from(e: UsersError) -> Error {
        Error::Users(e)
    }
}
impl From<RenderError> for Error {
    fn from(e: RenderError) -> Error {
        Error::Render(e)
    }
}

struct UsersCache {
    path: PathBuf,
    stamp: Option<(SystemTime, u64, u64)>,
    db: Arc<UserDb>,
}

/// The state one process keeps: one per CGI run, one per FastCGI worker.
pub struct App {
    /// The configuration from the process environment, and the variables it came from.
    base: Arc<Config>,
    base_vars: Vec<(String, String)>,
    /// The configuration for the current request (the base, or the base with
    /// the request's `WEBAUTH_*` FastCGI params over it).
    config: Arc<Config>,
    overlay: Vec<(String, String)>,
    store: Option<(Store, Box<dyn SessionStore>)>,
    users: Option<UsersCache>,
    pub render: Renderer,
}

impl App {
    /// The state for a process configured by `vars` (see [`crate::config::env_vars`]).
    pub fn new(vars: Vec<(String, String)>) -> Result<App, ConfigError> {
        let base = Arc::new(Config::from_vars(&vars)?);
        // A CGI request carries the same WEBAUTH_* variables as the process:
        // start with them as the overlay so they are not parsed twice.
        let overlay = config::request_overrides(vars.iter().map(|(k, v)| (k, v)));
        Ok(App {
            render: Renderer::new(base.templates.clone()),
            config: base.clone(),
            base,
            base_vars: vars,
            overlay,
            store: None,
            users: None,
        })
    }

    /// The configuration for the request in hand (cheap to clone and keep).
    pub fn config(&self) -> Arc<Config> {
        self.config.clone()
    }

    /// The store the configuration names, opened once per process.
    pub fn store(&mut self) -> Result<&mut dyn SessionStore, StoreError> {
        let spec = &self.config.store;
        if self.store.as_ref().is_none_or(|(s, _)| s != spec) {
            self.store = None;
            self.store = Some((spec.clone(), store::open(spec)?));
        }
        Ok(self.store.as_mut().map(|(_, s)| s.as_mut()).expect("opened above"))
    }

    /// The users file, parsed once and again only when it changes on disk.
    pub fn users(&mut self) -> Result<Arc<UserDb>, UsersError> {
        let path = &self.config.users;
        let stamp = file_stamp(path);
        if let Some(cache) = &self.users {
            if &cache.path == path && cache.stamp.is_some() && cache.stamp == stamp {
                return Ok(cache.db.clone());
            }
        }
        self.users = None;
        let db = Arc::new(UserDb::load(path)?);
        self.users = Some(UsersCache { path: path.clone(), stamp, db: db.clone() });
        Ok(db)
    }

    /// Runs a handler and returns what to send: its response, or the response
    /// for its error or panic. Never panics itself.
    pub fn handle(&mut self, handler: Handler, req: &Request) -> Response {
        if let Err(e) = self.apply_overlay(&req.config_vars) {
            let response = self.error_response(req, Error::Config(e));
            return self.finish(req, response);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            fault_trigger(req);
            handler(self, req)
        }));
        let response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => self.error_response(req, error),
            Err(_) => {
                // The panic hook has written the cause; a half-done store
                // transaction or cache must not serve the next request.
                self.store = None;
                self.users = None;
                self.render = Renderer::new(self.config.templates.clone());
                self.plain_error(req, 500, "Something went wrong on our side. Please try again.")
            }
        };
        self.finish(req, response)
    }

    fn apply_overlay(&mut self, vars: &[(String, String)]) -> Result<(), ConfigError> {
        if vars == self.overlay.as_slice() {
            return Ok(());
        }
        let config = if vars.is_empty() {
            self.base.clone()
        } else {
            let layered: Vec<(String, String)> = vars.iter().chain(&self.base_vars).cloned().collect();
            Arc::new(Config::from_vars(&layered)?)
        };
        if config.templates != self.config.templates {
            self.render = Renderer::new(config.templates.clone());
        }
        self.config = config;
        self.overlay = vars.to_vec();
        Ok(())
    }

    /// The answer for a handler's error: its status and headers from
    /// [`Error::parts`], the cause on stderr, a page or JSON for the client.
    pub fn error_response(&mut self, req: &Request, error: Error) -> Response {
        let parts = error.parts();
        if let Some(cause) = &parts.cause {
            audit::fault(cause);
        }
        if let Error::CrossOrigin(reason) = error {
            audit::refusal(self.config.log, Refusal::CrossOrigin, reason, &req.remote_addr);
        }
        let response = if matches!(error, Error::Render(_)) {
            // The templates are what failed: no page from them.
            self.plain_error(req, parts.status, &parts.message)
        } else if req.wants_json() {
            Response::json_error(parts.status, &parts.message)
        } else {
            let config = self.config.clone();
            match self.render.error_page(&config, req, parts.status, &parts.message) {
                Ok(page) => page,
                Err(e) => {
                    audit::fault(&e.to_string());
                    self.plain_error(req, parts.status, &parts.message)
                }
            }
        };
        parts.headers.iter().fold(response, |r, (name, value)| r.with_header(name, value))
    }

    /// A page that needs no template: for when templates are what failed.
    fn plain_error(&self, req: &Request, status: u16, message: &str) -> Response {
        if req.wants_json() {
            Response::json_error(status, message)
        } else {
            Response::html(status, crate::render::fallback_page(status, message))
        }
    }

    /// Headers every response carries.
    fn finish(&self, req: &Request, response: Response) -> Response {
        let mut r = response;
        if let (true, Some(hsts)) = (req.https, &self.config.hsts) {
            r = r.with_default_header("Strict-Transport-Security", hsts);
        }
        r = r
            .with_default_header("Cache-Control", "no-store")
            .with_default_header("X-Content-Type-Options", "nosniff")
            .with_default_header("Referrer-Policy", "same-origin")
            .with_default_header("X-Frame-Options", "DENY")
            .with_default_header(
                "Content-Security-Policy",
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            );
        if !matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
            r = r.with_default_header("Vary", "Sec-Fetch-Site, Origin");
        }
        r
    }
}

/// Test-only: a request header that makes the handler panic, to show that a
/// panic becomes a 500 and the FastCGI process goes on serving.
#[cfg(feature = "fault-injection")]
fn fault_trigger(req: &Request) {
    if req.fault.as_deref() == Some("panic") {
        panic!("fault injected by X-Webauth-Fault");
    }
}

fn too_many_message(retry_after: i64) -> String {
    let minutes = (retry_after + 59) / 60;
    if minutes <= 1 {
        "Too many failed logins. Please try again in a minute.".into()
    } else {
        format!("Too many failed logins. Please try again in {minutes} minutes.")
    }
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}
