//! `login`: checks a username and password and starts a session, or, for a
//! user with a second factor, the pending step that asks for the code (see
//! [`super::second_factor`]).

use tera::Context;

use super::{end_sent_sessions, read_fields, safe_next, second_factor, BodyKind};
use crate::app::{App, Error};
use crate::audit::{self, Event};
use crate::config::Config;
use crate::http::{Request, Response};
use crate::session::{self, session_cookie, Token};
use crate::store::{Limit, SessionRecord};
use crate::users::{self, normalize_username, MAX_PASSWORD, MAX_USERNAME};
use crate::{origin, regulate, slots};

pub const INVALID: &str = "Invalid username or password.";
pub const MUST_PROVIDE: &str = "Must provide username and password.";
const TOO_LONG: &str = "Username or password too long.";

/// What the login page shows besides the form.
#[derive(Debug, Default)]
pub struct LoginForm<'a> {
    pub username: &'a str,
    pub message: &'a str,
    pub next: &'a str,
}

/// The login page, posting to `<mount>login` (with `next` kept when it is safe).
pub fn login_page(app: &mut App, req: &Request, status: u16, form: &LoginForm) -> Result<Response, Error> {
    let config = app.config();
    let mount = req.mount(&config);
    let mut context = Context::new();
    context.insert("title", "Sign in");
    context.insert("action", &format!("{mount}login"));
    context.insert("username", form.username);
    context.insert("message", form.message);
    context.insert("next", if super::is_local_path(form.next) && form.next != mount { form.next } else { "" });
    context.insert("remember", &(config.remember > 0));
    Ok(app.render.page(&config, req, status, "login.html", context)?)
}

pub fn login(app: &mut App, req: &Request) -> Result<Response, Error> {
    let config = app.config();
    let mount = req.mount(&config);
    match req.method.as_str() {
        "GET" | "HEAD" => {
            if let Some(elsewhere) = sent_here_from(req, &mount) {
                // The gate's error page: send the browser to the login page,
                // keeping where it wanted to go.
                let next: String = url::form_urlencoded::byte_serialize(elsewhere.as_bytes()).collect();
                return Ok(Response::redirect_303(&format!("{mount}login?next={next}")));
            }
            if let Some(mode) = second_factor::Mode::from_query(req) {
                return second_factor::code_page_get(app, req, mode);
            }
            let next = safe_next(req.query_param("next").as_deref(), &mount);
            return login_page(app, req, 200, &LoginForm { next: &next, ..LoginForm::default() });
        }
        "POST" => {}
        _ => return Err(Error::MethodNotAllowed("GET, HEAD, POST")),
    }
    origin::check(&config, req).map_err(Error::CrossOrigin)?;
    let (kind, fields) = read_fields(req)?;
    let json = kind == BodyKind::Json || req.wants_json();
    let next = safe_next(fields.next.as_deref().or(req.query_param("next").as_deref()), &mount);
    if let (None, None, Some(code)) = (&fields.username, &fields.password, &fields.code) {
        // The second step of a login: the code, with the pending cookie.
        return second_factor::code_step(app, req, json, code);
    }
    let (username, password) = match (fields.username, fields.password) {
        (Some(u), Some(p)) if !u.trim().is_empty() && !p.is_empty() => (u, p),
        (u, _) => {
            let form = LoginForm { username: u.as_deref().unwrap_or(""), message: MUST_PROVIDE, next: &next };
            return refuse(app, req, json, 400, &form);
        }
    };
    if username.len() > MAX_USERNAME || password.len() > MAX_PASSWORD {
        return refuse(app, req, json, 400, &LoginForm { message: TOO_LONG, next: &next, ..LoginForm::default() });
    }
    let typed = username.trim();
    let username = normalize_username(typed);
    let users = app.users()?;
    let keys = regulate::keys(&config, &username, &req.remote_addr);
    // The store first: a store fault is told as one, not as busy slots.
    app.store()?;
    let _slot = verification_slot(&config)?;
    let now = session::now();
    let attempt = regulate::attempt(app.store()?, &keys, now)?;
    if let Some(wait) = regulate::retry_after(&attempt, now) {
        audit::record(config.log, Event::Banned, &username, &req.remote_addr);
        return Err(Error::Banned { retry_after: wait });
    }
    let Some(user) = users.verify(&username, &password) else {
        audit::record(config.log, Event::LoginFailure, &username, &req.remote_addr);
        if attempt.started_ban {
            audit::record(config.log, Event::Ban, &username, &req.remote_addr);
        }
        let form = LoginForm { username: typed, message: INVALID, next: &next };
        return refuse(app, req, json, 401, &form);
    };
    if let Some(totp) = &user.totp {
        // The password alone never gives a session. The counts are not
        // cleared either: else each right password would buy new guesses
        // at the code.
        let Some(code) = fields.code.as_deref().filter(|c| !c.trim().is_empty()) else {
            return second_factor::begin(app, req, json, &user.username, fields.remember, &next);
        };
        // Username, password and code in one request (scripts): this
        // attempt was counted above, before the password was verified.
        if let Err(why) = second_factor::check_code(app, &user.username, totp, code, now)? {
            audit::record(config.log, Event::CodeFailure, &user.username, &req.remote_addr);
            if attempt.started_ban {
                audit::record(config.log, Event::Ban, &user.username, &req.remote_addr);
            }
            return second_factor::refuse_code(app, req, json, why, code);
        }
    }
    // bcrypt counted only 72 bytes of the password: now all of it counts.
    // Only here, with every factor passed: before the code, someone who knew
    // the first 72 bytes could replace a TOTP user's password. (A two-step
    // login does not keep the password for its code step: that user's hash
    // moves at a one-request login, or with `webauth user passwd`.)
    users::upgrade_after_login(&config.users, config.rehash, user, &password);
    let grant = Grant { username: &user.username, keys: &keys, remember: fields.remember, next: &next };
    start_session(app, req, json, &grant, None)
}

/// A login that has passed every factor.
pub(super) struct Grant<'a> {
    pub username: &'a str,
    /// Its regulation keys, cleared now.
    pub keys: &'a [(String, Limit)],
    pub remember: bool,
    /// Where to go: a safe local path.
    pub next: &'a str,
}

/// Ends the login: a new session, the counts cleared, and the answer that
/// takes the browser on. `also` is one more `Set-Cookie` (the pending
/// step's, expired).
pub(super) fn start_session(
    app: &mut App,
    req: &Request,
    json: bool,
    grant: &Grant,
    also: Option<String>,
) -> Result<Response, Error> {
    let Grant { username, keys, remember, next } = *grant;
    let config = app.config();
    let mount = req.mount(&config);
    let now = session::now();
    // Every cookie sent along is replaced, and its session ended: no fixation.
    end_sent_sessions(app, req)?;
    let store = app.store()?;
    regulate::succeeded(store, keys)?;
    store.purge(now, config.idle_timeout, config.failure_window)?;
    let token = Token::generate().map_err(|e| Error::Random(e.to_string()))?;
    // "Remember me": still a server-side session, revocable, with its own
    // lifetime and idle timeout, and a cookie that outlives the browser.
    let remembered = remember && config.remember > 0;
    let (lifetime, idle_timeout) =
        if remembered { (config.remember, config.remember_idle_timeout) } else { (config.absolute_timeout, 0) };
    let record = SessionRecord {
        id: token.id(),
        username: username.to_string(),
        created: now,
        last_seen: now,
        expires_at: now + lifetime,
        idle_timeout,
    };
    store.insert(&record, record.idle(config.idle_timeout))?;
    audit::record(config.log, Event::LoginSuccess, username, &req.remote_addr);
    let cookie = session_cookie(&config, req, &mount, &token, remembered.then_some(lifetime));
    let response = if json {
        Response::json(200, &serde_json::json!({"success": true, "redirect": next}))
    } else {
        Response::redirect_303(next)
    };
    let response = response.with_header("Set-Cookie", &cookie);
    Ok(match also {
        Some(other) => response.with_header("Set-Cookie", &other),
        None => response,
    })
}

/// The page a browser asked for when the web server showed it the login
/// program instead (nginx `error_page 401 = @login`, Apache `ErrorDocument
/// 401`): `REQUEST_URI` is then neither the login's URL nor this program's.
/// Only a safe local path counts.
fn sent_here_from(req: &Request, mount: &str) -> Option<String> {
    let path = req.request_uri.split('?').next().unwrap_or("");
    let ours = path.is_empty() || path == format!("{mount}login") || path == req.script_name;
    (!ours && req.query_param("next").is_none() && super::is_local_path(&req.request_uri))
        .then(|| req.request_uri.clone())
}

/// One of the host's verification slots (see [`crate::slots`]), in the
/// state directory, which the web server's user can write.
fn verification_slot(config: &Config) -> Result<slots::Slot, Error> {
    let dir = &config.state_dir;
    let count = config.verification_slots();
    match slots::acquire(dir, count) {
        Ok(Some(slot)) => Ok(slot),
        Ok(None) => Err(Error::Busy(format!(
            "all {count} password verification slots busy for 2 s (WEBAUTH_MAX_VERIFICATIONS)"
        ))),
        Err(e) => Err(Error::Busy(format!("verification slots in {}: {e}", dir.display()))),
    }
}

/// A failed login: JSON for the page's script, the login page for a form.
fn refuse(app: &mut App, req: &Request, json: bool, status: u16, form: &LoginForm) -> Result<Response, Error> {
    if json {
        Ok(Response::json_error(status, form.message))
    } else {
        login_page(app, req, status, form)
    }
}
