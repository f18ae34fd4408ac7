//! The second step of a login for a user with TOTP: the pending step that a
//! right password starts, the code page, and checking a code.
//!
//! A right password gives a pending step, not a session: a random token of
//! its own in a cookie of its own (`<cookie name>-pending`), kept in the
//! store by its hash with the username, the "remember me" choice, `next` and
//! an expiry (`WEBAUTH_TOTP_PENDING`, 5 minutes). The code then comes with
//! that cookie; it is counted like a password attempt before it is checked,
//! and a code or recovery code is used up in the store, atomically, so it
//! works once across processes and hosts. Only then is there a session.
//!
//! Nothing here runs before the password is right: a wrong password for a
//! user with TOTP is the same answer as any wrong password.

use tera::Context;

use super::login::{login_page, start_session, Grant, LoginForm};
use super::safe_next;
use crate::app::{App, Error};
use crate::audit::{self, Event};
use crate::http::{Request, Response};
use crate::session::{self, expire_pending_cookie, pending_cookie, pending_cookie_name, CookieState, Token};
use crate::store::PendingRecord;
use crate::totp::{self, Code};
use crate::users::UserTotp;
use crate::{regulate, users};

pub const NEED_CODE: &str = "Enter the 6-digit code from your authenticator app.";
pub const INVALID_CODE: &str = "Invalid code.";
pub const USED_CODE: &str = "That code was used already. Wait for the next one.";
pub const EXPIRED: &str = "Your sign-in took too long. Please sign in again.";
const NO_CODE: &str = "Must provide the code.";
const TOO_LONG: &str = "Code too long.";

/// Which field the code page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Totp,
    Recovery,
}

impl Mode {
    /// `login?step=code` or `login?step=recovery`: the code page.
    pub fn from_query(req: &Request) -> Option<Mode> {
        match req.query_param("step").as_deref() {
            Some("code") => Some(Mode::Totp),
            Some("recovery") => Some(Mode::Recovery),
            _ => None,
        }
    }

    /// The page to show again after a wrong code: the kind that was typed.
    fn of_field(field: &str) -> Mode {
        match totp::parse_code(field) {
            Some(Code::Recovery(_)) => Mode::Recovery,
            _ => Mode::Totp,
        }
    }
}

/// After a right password for a user with TOTP: the pending step, and an
/// answer that asks for the code (JSON `401` with `second_factor`, or a
/// `303` to the code page).
pub fn begin(
    app: &mut App,
    req: &Request,
    json: bool,
    username: &str,
    remember: bool,
    next: &str,
) -> Result<Response, Error> {
    let config = app.config();
    let mount = req.mount(&config);
    let now = session::now();
    let store = app.store()?;
    // A pending step the browser still holds (or was planted with) ends:
    // the new one has a new token.
    for old in session::all_tokens(&req.cookie_header, &pending_cookie_name(&config)) {
        store.take_pending(&old.id())?;
    }
    let token = Token::generate().map_err(|e| Error::Random(e.to_string()))?;
    let record = PendingRecord {
        id: token.id(),
        username: username.to_string(),
        expires_at: now + config.totp_pending,
        remember,
        next: next.to_string(),
    };
    store.insert_pending(&record, now)?;
    audit::record(config.log, Event::CodeNeeded, username, &req.remote_addr);
    let cookie = pending_cookie(&config, req, &mount, &token, config.totp_pending);
    let response = if json {
        Response::json(401, &serde_json::json!({"success": false, "second_factor": "totp", "message": NEED_CODE}))
    } else {
        Response::redirect_303(&format!("{mount}login?step=code"))
    };
    Ok(response.with_header("Set-Cookie", &cookie))
}

/// The request's pending step, if its cookie names a live one; and whether
/// a pending cookie was sent at all (to say "expired" rather than nothing).
fn current_pending(app: &mut App, req: &Request) -> Result<(Option<PendingRecord>, bool), Error> {
    let config = app.config();
    let token = match session::read_cookie(&req.cookie_header, &pending_cookie_name(&config)) {
        CookieState::Absent => return Ok((None, false)),
        CookieState::Invalid(_) => return Ok((None, true)),
        CookieState::Present(token) => token,
    };
    Ok((app.store()?.get_pending(&token.id(), session::now())?, true))
}

/// `GET login?step=code|recovery`: the code page while the pending step
/// lives; else the login page (saying why, if the step ran out).
pub fn code_page_get(app: &mut App, req: &Request, mode: Mode) -> Result<Response, Error> {
    match current_pending(app, req)? {
        (Some(_), _) => code_page(app, req, 200, mode, ""),
        (None, true) => expired(app, req, false, 200),
        (None, false) => login_page(app, req, 200, &LoginForm::default()),
    }
}

/// The code page: the 6-digit code, or a recovery code.
fn code_page(app: &mut App, req: &Request, status: u16, mode: Mode, message: &str) -> Result<Response, Error> {
    let config = app.config();
    let mount = req.mount(&config);
    let mut context = Context::new();
    context.insert("title", "Two-step sign-in");
    context.insert("action", &format!("{mount}login"));
    context.insert("recovery", &(mode == Mode::Recovery));
    context.insert("message", message);
    context.insert("code_url", &format!("{mount}login?step=code"));
    context.insert("recovery_url", &format!("{mount}login?step=recovery"));
    context.insert("restart_url", &format!("{mount}login"));
    Ok(app.render.page(&config, req, status, "code.html", context)?)
}

/// The pending step is gone (expired, used, or never was): sign in again.
fn expired(app: &mut App, req: &Request, json: bool, status: u16) -> Result<Response, Error> {
    let config = app.config();
    let gone = expire_pending_cookie(&config, req, &req.mount(&config));
    let response = if json {
        Response::json_error(status, EXPIRED)
    } else {
        login_page(app, req, status, &LoginForm { message: EXPIRED, ..LoginForm::default() })?
    };
    Ok(response.with_header("Set-Cookie", &gone))
}

/// `POST login` with a code and the pending cookie: a session, or a refusal.
pub fn code_step(app: &mut App, req: &Request, json: bool, code: &str) -> Result<Response, Error> {
    let config = app.config();
    if code.trim().is_empty() {
        return refuse(app, req, json, 400, NO_CODE, Mode::Totp);
    }
    if code.len() > totp::MAX_CODE_FIELD {
        return refuse(app, req, json, 400, TOO_LONG, Mode::Totp);
    }
    let (Some(pending), _) = current_pending(app, req)? else {
        return expired(app, req, json, 401);
    };
    let users = app.users()?;
    // The user may have lost TOTP (or been removed) since the password step.
    let Some((user, totp)) = users.get(&pending.username).and_then(|u| u.totp.as_ref().map(|t| (u, t))) else {
        app.store()?.take_pending(&pending.id)?;
        return expired(app, req, json, 401);
    };
    let keys = regulate::keys(&config, &user.username, &req.remote_addr);
    let now = session::now();
    let attempt = regulate::attempt(app.store()?, &keys, now)?;
    if let Some(wait) = regulate::retry_after(&attempt, now) {
        audit::record(config.log, Event::Banned, &user.username, &req.remote_addr);
        return Err(Error::Banned { retry_after: wait });
    }
    if let Err(why) = check_code(app, &user.username, totp, code, now)? {
        audit::record(config.log, Event::CodeFailure, &user.username, &req.remote_addr);
        if attempt.started_ban {
            audit::record(config.log, Event::Ban, &user.username, &req.remote_addr);
        }
        return refuse_code(app, req, json, why, code);
    }
    // The step that removes the pending record finishes the login; another
    // request that got here with the same cookie at the same time does not.
    if !app.store()?.take_pending(&pending.id)? {
        return expired(app, req, json, 401);
    }
    let mount = req.mount(&config);
    let next = safe_next(Some(&pending.next), &mount);
    let grant = Grant { username: &user.username, keys: &keys, remember: pending.remember, next: &next };
    let gone = expire_pending_cookie(&config, req, &mount);
    start_session(app, req, json, &grant, Some(gone))
}

/// Checks a code of `username` at `now` and uses it up: `Ok(Err(message))`
/// for a wrong, reused or malformed one; `Err` for a fault.
pub fn check_code(
    app: &mut App,
    username: &str,
    totp: &UserTotp,
    field: &str,
    now: i64,
) -> Result<Result<(), &'static str>, Error> {
    // Codes have a counter of their own, kept by user from any address.
    let config = app.config();
    let code_key = [regulate::code_key(&config, username)];
    let attempt = regulate::attempt(app.store()?, &code_key, now)?;
    if let Some(wait) = regulate::retry_after(&attempt, now) {
        return Err(Error::Banned { retry_after: wait });
    }
    let checked = check_code_only(app, username, totp, field, now)?;
    if checked.is_ok() {
        app.store()?.succeeded(&[code_key[0].0.clone()], &[])?;
    }
    Ok(checked)
}

fn check_code_only(
    app: &mut App,
    username: &str,
    totp: &UserTotp,
    field: &str,
    now: i64,
) -> Result<Result<(), &'static str>, Error> {
    match totp::parse_code(field) {
        Some(Code::Totp(code)) => {
            let Some(step) = totp.secret.matching_step(&code, now) else { return Ok(Err(INVALID_CODE)) };
            if step > totp.enrolled_step && app.store()?.use_totp_step(username, step)? {
                Ok(Ok(()))
            } else {
                Ok(Err(USED_CODE))
            }
        }
        Some(Code::Recovery(code)) => {
            let hash = totp::recovery_hash(&code);
            if !totp.has_recovery(&hash) || !app.store()?.use_recovery_code(username, &hash, now)? {
                return Ok(Err(INVALID_CODE));
            }
            users::forget_recovery_code(&app.config().users, username, &hash);
            Ok(Ok(()))
        }
        None => Ok(Err(INVALID_CODE)),
    }
}

/// A wrong code: `401`, JSON that still asks for the code, or the code page
/// again with the message.
pub fn refuse_code(app: &mut App, req: &Request, json: bool, why: &str, field: &str) -> Result<Response, Error> {
    refuse(app, req, json, 401, why, Mode::of_field(field))
}

fn refuse(app: &mut App, req: &Request, json: bool, status: u16, why: &str, mode: Mode) -> Result<Response, Error> {
    if json {
        Ok(Response::json(status, &serde_json::json!({"success": false, "second_factor": "totp", "message": why})))
    } else {
        code_page(app, req, status, mode, why)
    }
}
