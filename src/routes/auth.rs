//! `auth`: the gate in front of other content. It only checks the session
//! cookie: never a page, never a cookie, no write but the throttled
//! last-seen touch of the sliding idle timeout.
//!
//! It answers both ways a web server asks:
//! - as a Responder (nginx `auth_request`, any method): a live session is
//!   `204` with `X-Webauth-User` (and `X-Webauth-First`, `X-Webauth-Last`),
//!   anything else `401`;
//! - in the FastCGI Authorizer role (Apache `mod_authnz_fcgi`): `200` with
//!   `Variable-REMOTE_USER` (and `Variable-WEBAUTH_USER`, `..._FIRST`,
//!   `..._LAST`), which Apache puts in the protected request's environment;
//!   else `401`. To a web server an authorizer's `200` means "let in", so
//!   every other outcome, a fault included, is a refusal.

use super::current_session_quietly;
use crate::app::{App, Error};
use crate::audit;
use crate::http::{Request, Response, Role};

pub fn auth(app: &mut App, req: &Request) -> Result<Response, Error> {
    let user = match current_session_quietly(app, req) {
        Ok(Some(live)) => match app.users() {
            Ok(users) => users.get(&live.username).cloned(),
            Err(e) => return Ok(fault(&e.to_string())),
        },
        Ok(None) => None,
        Err(e) => return Ok(fault(&e.parts().cause.unwrap_or_default())),
    };
    let Some(user) = user else { return Ok(Response::new(401)) };
    let names = [("USER", user.username.as_str()), ("FIRST", user.field("first")), ("LAST", user.field("last"))];
    Ok(match req.role {
        Role::Responder => names.iter().fold(Response::new(204), |r, (name, value)| {
            r.with_header(&format!("X-Webauth-{}", title(name)), &header_value(value))
        }),
        Role::Authorizer => names
            .iter()
            .fold(Response::new(200).with_header("Variable-REMOTE_USER", &user.username), |r, (name, value)| {
                r.with_header(&format!("Variable-WEBAUTH_{name}"), &header_value(value))
            }),
    })
}

/// A fault (store unreachable, users file broken): refused, with the cause on
/// stderr; the web server shows its own error page.
fn fault(cause: &str) -> Response {
    audit::fault(cause);
    Response::new(503).with_header("Retry-After", "5")
}

fn title(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let mut chars = lower.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// A header value of printable ASCII: other bytes (a name in another script)
/// percent-encoded as UTF-8, so nothing can split or smuggle a header.
pub fn header_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_printable_ascii() {
        assert_eq!(header_value("John"), "John");
        assert_eq!(header_value("Jürgen"), "J%C3%BCrgen");
        assert_eq!(header_value("a\r\nX-Evil: 1"), "a%0D%0AX-Evil: 1");
        assert_eq!(header_value("100%"), "100%25");
        assert_eq!(title("FIRST"), "First");
    }
}
