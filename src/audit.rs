//! Lines on stderr, which the web server puts in its error log: one per
//! login success, failure, ban and logout (the audit trail), and one per
//! fault. Never a password or a token.

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
}

impl Event {
    fn name(self) -> (&'static str, &'static str) {
        match self {
            Event::LoginSuccess => ("login", "success"),
            Event::LoginFailure => ("login", "failure"),
            Event::Ban => ("login", "ban"),
            Event::Banned => ("login", "banned"),
            Event::Logout => ("logout", "success"),
        }
    }
}

/// The audit line for an event, in the configured format.
pub fn line(format: LogFormat, event: Event, username: &str, addr: &str) -> String {
    let (what, outcome) = event.name();
    match format {
        LogFormat::Json => serde_json::json!({
            "program": "webauth", "event": what, "outcome": outcome, "user": username, "addr": addr,
        })
        .to_string(),
        // Debug-quoting keeps a hostile username from forging log lines.
        LogFormat::Text => format!("webauth: {what} {outcome} user={username:?} addr={addr:?}"),
    }
}

pub fn record(format: LogFormat, event: Event, username: &str, addr: &str) {
    emit(&line(format, event, username, addr));
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
    fn json_lines_parse() {
        let l = line(LogFormat::Json, Event::Ban, "john", "::1");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["outcome"], "ban");
        assert_eq!(v["user"], "john");
    }
}
