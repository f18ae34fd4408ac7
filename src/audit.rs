//! Lines on stderr, which the web server puts in its error log: one per
//! login success, failure, ban and logout, one per refusal that is a security
//! event (the audit trail), and one per fault. Never a password or a token.
//!
//! Text lines carry no time: the web server's error log stamps each line.
//! JSON lines (`WEBAUTH_LOG=json`) carry a UTC `ts` in RFC 3339.

use std::io::Write;

use crate::config::LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    LoginSuccess,
    LoginFailure,
    /// A failure that started a ban.
    Ban,
    /// An attempt refused because a ban is in force.
    Banned,
    Logout,
    /// A right password for a user with a second factor: a code is asked for.
    CodeNeeded,
    /// A wrong, reused or malformed second-factor code.
    CodeFailure,
}

impl Event {
    fn name(self) -> (&'static str, &'static str) {
        match self {
            Event::LoginSuccess => ("login", "success"),
            Event::LoginFailure => ("login", "failure"),
            Event::Ban => ("login", "ban"),
            Event::Banned => ("login", "banned"),
            Event::Logout => ("logout", "success"),
            Event::CodeNeeded => ("login", "code-needed"),
            Event::CodeFailure => ("login", "code-failure"),
        }
    }
}

/// A request refused before it reached a login or logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A cross-origin unsafe request (the reason says which check failed).
    CrossOrigin,
    /// A session cookie that names no live session (forged, expired, ended).
    UnknownSession,
    /// A FastCGI peer outside `FCGI_WEB_SERVER_ADDRS`.
    Peer,
}

impl Refusal {
    fn name(self) -> &'static str {
        match self {
            Refusal::CrossOrigin => "cross-origin",
            Refusal::UnknownSession => "unknown-session",
            Refusal::Peer => "fastcgi-peer",
        }
    }
}

/// The audit line for an event, in the configured format.
pub fn line(format: LogFormat, event: Event, username: &str, addr: &str) -> String {
    let (what, outcome) = event.name();
    match format {
        LogFormat::Json => serde_json::json!({
            "ts": timestamp(), "program": "webauth", "event": what, "outcome": outcome, "user": username, "addr": addr,
        })
        .to_string(),
        // Debug-quoting keeps a hostile username from forging log lines.
        LogFormat::Text => format!("webauth: {what} {outcome} user={username:?} addr={addr:?}"),
    }
}

/// The audit line for a refusal, with the reason it was refused.
pub fn refusal_line(format: LogFormat, refusal: Refusal, reason: &str, addr: &str) -> String {
    let what = refusal.name();
    match format {
        LogFormat::Json => serde_json::json!({
            "ts": timestamp(), "program": "webauth", "event": "refused", "outcome": what, "reason": reason, "addr": addr,
        })
        .to_string(),
        LogFormat::Text => format!("webauth: refused {what} reason={reason:?} addr={addr:?}"),
    }
}

pub fn record(format: LogFormat, event: Event, username: &str, addr: &str) {
    emit(&line(format, event, username, addr));
}

pub fn refusal(format: LogFormat, refusal: Refusal, reason: &str, addr: &str) {
    emit(&refusal_line(format, refusal, reason, addr));
}

/// Now in UTC, RFC 3339 with seconds: `2026-12-02T16:05:48Z`.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    rfc3339(secs)
}

/// Seconds since the epoch as an RFC 3339 UTC time (Howard Hinnant's
/// civil-from-days, valid for any date after 1970).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A fault: the cause of a 5xx, for the operator.
pub fn fault(cause: &str) {
    emit(&format!("webauth: error: {}", cause.replace(['\n', '\r'], " ")));
}

fn emit(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Makes a panic one line on stderr (the handler's caller turns it into a 500).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        fault(&format!("panic{place}: {message}"));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_quote_the_username() {
        let l = line(LogFormat::Text, Event::LoginFailure, "evil\nwebauth: login success", "10.0.0.1");
        assert_eq!(l.lines().count(), 1);
        assert!(l.starts_with("webauth: login failure user=\"evil\\nwebauth"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_227_548), "2026-12-02T16:05:48Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn refusal_lines_carry_the_reason_in_text_and_json() {
        let l = refusal_line(LogFormat::Text, Refusal::CrossOrigin, "Origin names another host", "192.0.2.1");
        assert_eq!(l, "webauth: refused cross-origin reason=\"Origin names another host\" addr=\"192.0.2.1\"");
        let v: serde_json::Value =
            serde_json::from_str(&refusal_line(LogFormat::Json, Refusal::UnknownSession, "no live session", "::1"))
                .unwrap();
        assert_eq!((v["event"].as_str(), v["outcome"].as_str()), (Some("refused"), Some("unknown-session")));
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 20), "{v}");
    }

    #[test]
    fn json_lines_parse() {
        let l = line(LogFormat::Json, Event::Ban, "john", "::1");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["outcome"], "ban");
        assert_eq!(v["user"], "john");
    }
}
