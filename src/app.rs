//! What a process keeps between requests (configuration, the open store, the
//! parsed users file and templates) and the one place where a handler's
//! error becomes a status.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::audit;
use crate::config::{Config, ConfigError};
use crate::http::{Request, RequestError, Response};
use crate::render::{RenderError, Renderer};
use crate::store::{self, SessionStore, StoreError};
use crate::users::{UserDb, UsersError};

/// A route: reads the request and the process's state, returns a response or
/// an error that [`App::handle`] turns into one.
pub type Handler = fn(&mut App, &Request) -> Result<Response, Error>;

/// Everything a handler can fail with, each mapped to a status in [`App::error_response`].
#[derive(Debug)]
pub enum Error {
    Request(RequestError),
    MethodNotAllowed(&'static str),
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
    store: Option<(String, Box<dyn SessionStore>)>,
    users: Option<UsersCache>,
    pub render: Renderer,
}

impl App {
    /// The state for a process configured by `vars` (see [`crate::config::env_vars`]).
    pub fn new(vars: Vec<(String, String)>) -> Result<App, ConfigError> {
        let base = Arc::new(Config::from_vars(&vars)?);
        // A CGI request carries the same WEBAUTH_* variables as the process:
        // start with them as the overlay so they are not parsed twice.
        let mut overlay: Vec<(String, String)> =
            vars.iter().filter(|(k, _)| k.starts_with("WEBAUTH_")).cloned().collect();
        overlay.sort();
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

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store the configuration names, opened once per process.
    pub fn store(&mut self) -> Result<&mut dyn SessionStore, StoreError> {
        let spec = &self.config.store;
        if self.store.as_ref().is_none_or(|(s, _)| s != spec) {
            self.store = None;
            self.store = Some((spec.clone(), store::open(&self.config)?));
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
            crate::routes::fault_trigger(req);
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

    /// The single place where an error becomes a status, a message for the
    /// client and a line on stderr.
    pub fn error_response(&mut self, req: &Request, error: Error) -> Response {
        let (status, message) = match &error {
            Error::Request(e) => (e.status(), e.message()),
            Error::MethodNotAllowed(_) => (405, "Method not allowed.".to_string()),
            Error::CrossOrigin(_) => (403, "Cross-origin request refused.".to_string()),
            Error::Banned { retry_after } => (429, too_many_message(*retry_after)),
            Error::Store(_) | Error::Busy(_) => {
                (503, "The login service is unavailable right now. Please try again shortly.".into())
            }
            Error::Users(_) | Error::Config(_) | Error::Render(_) | Error::Random(_) => {
                (500, "The login service is misconfigured. The administrator has been told.".into())
            }
        };
        match &error {
            Error::Store(e) => audit::fault(&e.to_string()),
            Error::Users(e) => audit::fault(&e.to_string()),
            Error::Config(e) => audit::fault(&e.to_string()),
            Error::Render(e) => audit::fault(&e.to_string()),
            Error::Random(e) => audit::fault(&format!("OS random source failed: {e}")),
            Error::Busy(e) => audit::fault(e),
            _ => {}
        }
        let response = if matches!(error, Error::Render(_)) {
            // The templates are what failed: no page from them.
            self.plain_error(req, status, &message)
        } else if req.wants_json() {
            Response::json_error(status, &message)
        } else {
            match self.render.error_page(&self.config, req, status, &message) {
                Ok(page) => page,
                Err(e) => {
                    audit::fault(&e.to_string());
                    self.plain_error(req, status, &message)
                }
            }
        };
        match error {
            Error::MethodNotAllowed(allow) => response.with_header("Allow", allow),
            Error::Banned { retry_after } => response.with_header("Retry-After", &retry_after.max(1).to_string()),
            Error::Store(_) => response.with_header("Retry-After", "5"),
            Error::Busy(_) => response.with_header("Retry-After", "1"),
            _ => response,
        }
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
        let mut r = response
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
