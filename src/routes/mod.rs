//! The route handlers, one per program, and what they share: reading a login
//! or logout body strictly, the safe `next` target, the session lookup.

pub mod auth;
pub mod index;
pub mod login;
pub mod logout;
pub mod second_factor;

pub use auth::auth;
pub use index::index;
pub use login::login;
pub use logout::logout;

use serde_json::Value;

use crate::app::{App, Error};
use crate::audit::{self, Refusal};
use crate::http::{Request, RequestError};
use crate::session::{self, CookieState, Live};

/// The fields of a login or logout body, from JSON or a form.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub username: Option<String>,
    pub password: Option<String>,
    pub next: Option<String>,
    /// "Remember me": a JSON `true`, or a checked form box (`remember=on`).
    pub remember: bool,
    /// The second factor: a TOTP code or a recovery code.
    pub code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    /// No body and no content type (a bare `fetch(..., {method: "POST"})`).
    Empty,
}

/// Reads an unsafe request's body: JSON or form, strictly; anything else is a
/// clear 4xx. Credentials come only from here, never from the query string.
pub fn read_fields(req: &Request) -> Result<(BodyKind, Fields), RequestError> {
    let body = req.body.as_ref().map_err(Clone::clone)?;
    match req.media_type().as_str() {
        "application/json" => Ok((BodyKind::Json, parse_json(body)?)),
        "application/x-www-form-urlencoded" => Ok((BodyKind::Form, parse_form(body)?)),
        "" if body.is_empty() => Ok((BodyKind::Empty, Fields::default())),
        other => Err(RequestError::UnsupportedType(other.to_string())),
    }
}

/// `{"username": "...", "password": "...", "next": "...", "remember": true,
/// "code": "..."}`; other keys ignored.
pub fn parse_json(body: &[u8]) -> Result<Fields, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::Malformed(match e.classify() {
            serde_json::error::Category::Eof => "the JSON body is incomplete".to_string(),
            _ if std::str::from_utf8(body).is_err() => "the body is not valid UTF-8".to_string(),
            _ => format!("invalid JSON at line {} column {}", e.line(), e.column()),
        })
    })?;
    let Value::Object(map) = value else {
        return Err(RequestError::Malformed("expected a JSON object".into()));
    };
    let field = |name: &str| match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RequestError::Malformed(format!("\"{name}\" must be a string"))),
    };
    let remember = match map.get("remember") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(RequestError::Malformed("\"remember\" must be true or false".into())),
    };
    Ok(Fields {
        username: field("username")?,
        password: field("password")?,
        next: field("next")?,
        remember,
        code: field("code")?,
    })
}

/// `username=...&password=...&next=...`, with strict percent-decoding: a `%`
/// not followed by two hex digits, or bytes that are not UTF-8, are errors
/// rather than silently replaced.
pub fn parse_form(body: &[u8]) -> Result<Fields, RequestError> {
    let text = std::str::from_utf8(body).map_err(|_| RequestError::Malformed("the body is not valid UTF-8".into()))?;
    let mut fields = Fields::default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        let slot = match key.as_str() {
            "username" => &mut fields.username,
            "password" => &mut fields.password,
            "next" => &mut fields.next,
            "code" => &mut fields.code,
            // A checkbox is sent only when checked, whatever its value.
            "remember" => {
                fields.remember = true;
                continue;
            }
            _ => continue,
        };
        if slot.is_some() {
            return Err(RequestError::Malformed(format!("the field \"{key}\" is given twice")));
        }
        *slot = Some(percent_decode(value)?);
    }
    Ok(fields)
}

fn percent_decode(text: &str) -> Result<String, RequestError> {
    let bad = || RequestError::Malformed("bad percent-encoding in the form body".into());
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                // from_str_radix alone would take "+1".
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(bad());
                }
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| RequestError::Malformed("the form body is not valid UTF-8 once decoded".into()))
}

/// `next` if it is a path on this site, else the mount point.
///
/// Only an absolute path passes: not `//host` or `/\host` (browsers read both
/// as another host), not a scheme (`http:`, `javascript:`), and only the
/// characters a URL may carry (RFC 3986), `%` followed by two hex digits, so
/// what goes back in `Location` or the JSON `redirect` echoes no markup.
pub fn safe_next(next: Option<&str>, mount: &str) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_string(),
        _ => mount.to_string(),
    }
}

pub fn is_local_path(n: &str) -> bool {
    let b = n.as_bytes();
    let url_byte = |c: u8| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?#".contains(&c);
    let escapes_ok = b
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    n.len() <= 2048
        && n.starts_with('/')
        && !n.starts_with("//")
        && escapes_ok
        && b.iter().all(|&c| url_byte(c) || c == b'%')
}

/// The live session of a request, if any, and whether the reply must expire
/// a cookie that names none (a refusal the audit log records, once).
pub fn current_session(app: &mut App, req: &Request) -> Result<(Option<Live>, bool), Error> {
    let config = app.config();
    let token = match session::read_cookie(&req.cookie_header, &config.cookie_name) {
        CookieState::Absent => return Ok((None, false)),
        CookieState::Invalid(reason) => {
            audit::refusal(config.log, Refusal::UnknownSession, reason, &req.remote_addr);
            return Ok((None, true));
        }
        CookieState::Present(token) => token,
    };
    let live = session::current(&config, app.store()?, &token, session::now())?;
    if live.is_none() {
        audit::refusal(config.log, Refusal::UnknownSession, "no live session", &req.remote_addr);
    }
    let stale = live.is_none();
    Ok((live, stale))
}

/// The live session of a request for the gate: no audit line (a protected
/// page's every image would write one), no session ended, no cookie.
pub fn current_session_quietly(app: &mut App, req: &Request) -> Result<Option<Live>, Error> {
    let config = app.config();
    let CookieState::Present(token) = session::read_cookie(&req.cookie_header, &config.cookie_name) else {
        return Ok(None);
    };
    Ok(session::current_without_cleanup(&config, app.store()?, &token, session::now())?)
}

/// Ends every session whose token the request carries (see
/// [`session::all_tokens`]); returns the users whose sessions ended.
pub fn end_sent_sessions(app: &mut App, req: &Request) -> Result<Vec<String>, Error> {
    let config = app.config();
    let store = app.store()?;
    let mut ended = Vec::new();
    let ids: Vec<_> = session::all_tokens(&req.cookie_header, &config.cookie_name).iter().map(|t| t.id()).collect();
    for (id, record) in ids.iter().zip(store.get_many(&ids)?) {
        // Deleted whether or not it is still live: a copied cookie stops now.
        if let Some(record) = record {
            store.delete(id)?;
            ended.push(record.username);
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields() {
        let f = parse_json(br#"{"username": "john", "password": "p", "extra": 1}"#).unwrap();
        assert_eq!(f.username.as_deref(), Some("john"));
        assert_eq!(f.password.as_deref(), Some("p"));
        assert!(parse_json(br#"{"username": 5}"#).is_err());
        assert!(parse_json(b"[]").is_err());
        assert!(parse_json(b"{").is_err());
        assert!(parse_json(b"").is_err());
        assert!(parse_json(b"{\"username\": \"\xff\"}").is_err());
        assert_eq!(parse_json(b"{}").unwrap(), Fields::default());
        assert!(parse_json(br#"{"remember": true}"#).unwrap().remember);
        assert!(!parse_json(br#"{"remember": false}"#).unwrap().remember);
        assert!(parse_json(br#"{"remember": "yes"}"#).is_err());
        assert!(parse_form(b"username=a&remember=on").unwrap().remember);
        assert_eq!(parse_json(br#"{"code": "123456"}"#).unwrap().code.as_deref(), Some("123456"));
        assert!(parse_json(br#"{"code": 123456}"#).is_err(), "a code is a string: leading zeros matter");
        assert_eq!(parse_form(b"code=123+456").unwrap().code.as_deref(), Some("123 456"));
        assert!(parse_form(b"code=1&code=2").is_err());
    }

    #[test]
    fn form_fields_decode_strictly() {
        let f = parse_form(b"username=j%C3%B6hn+s&password=a%26b&next=%2Fx").unwrap();
        assert_eq!(f.username.as_deref(), Some("jöhn s"));
        assert_eq!(f.password.as_deref(), Some("a&b"));
        assert_eq!(f.next.as_deref(), Some("/x"));
        for bad in
            [&b"username=%zz"[..], b"username=%4", b"username=%", b"username=%ff", b"a=\xff", b"username=a&username=b"]
        {
            assert!(parse_form(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_form(b"").unwrap(), Fields::default());
        assert_eq!(parse_form(b"other=1&&").unwrap(), Fields::default());
    }

    #[test]
    fn percent_sign_then_non_hex_is_refused() {
        assert!(percent_decode("%+1").is_err());
        assert!(percent_decode("%-1").is_err());
    }

    #[test]
    fn next_targets() {
        let table = [
            ("/private/file.html?x=1#y", true),
            ("/", true),
            ("//evil.test/", false),
            ("/\\evil.test", false),
            ("http://evil.test/", false),
            ("javascript:alert(1)", false),
            ("/a\nb", false),
            ("/a b", false),
            ("/\t/evil.test", false),
            ("", false),
            ("relative", false),
            ("/<script>alert(1)</script>", false),
            ("/a\"b", false),
            ("/%zz", false),
            ("/%2F%2Fok", true),
            ("/path?next=%2Fx&y=1", true),
        ];
        for (next, ok) in table {
            assert_eq!(is_local_path(next), ok, "{next:?}");
            assert_eq!(safe_next(Some(next), "/m/") == next, ok, "{next:?}");
        }
        assert_eq!(safe_next(None, "/m/"), "/m/");
    }
}
