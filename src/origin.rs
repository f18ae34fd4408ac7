//! Cross-origin protection for unsafe requests, without tokens.
//!
//! Modelled on Go 1.25's `net/http.CrossOriginProtection`: GET, HEAD and
//! OPTIONS pass. `Sec-Fetch-Site: same-origin` or `none` passes and any other
//! value is refused. Without that header, a request with no `Origin` passes
//! (it is not from a browser, or from one that sends neither on same-origin
//! requests), and otherwise `Origin` must name the request's own host. Origins
//! listed in `WEBAUTH_TRUSTED_ORIGINS` always pass.
//!
//! The trade-off, as in Go: the `Origin` fallback compares hosts, not schemes,
//! so an old browser's http->https request on the same host passes. Every
//! browser since 2023 sends `Sec-Fetch-Site`, which decides first.
//!
//! Where we differ from Go: Debian's nginx passes `HTTP_HOST` without the port
//! (`$host`), while a browser on port 8080 sends `Origin: http://host:8080`.
//! When `HTTP_HOST` has no port we compare the `Origin` port with
//! `SERVER_PORT` (or the scheme's default), rather than refuse every login.

use crate::config::Config;
use crate::http::Request;

/// Why a request was refused (for the log; the client gets a plain 403).
pub type Refusal = &'static str;

pub fn check(config: &Config, req: &Request) -> Result<(), Refusal> {
    if matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        return Ok(());
    }
    let trusted = || req.origin.as_deref().is_some_and(|o| is_trusted(config, o));
    match req.sec_fetch_site.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("same-origin") | Some("none") => return Ok(()),
        Some(_) if trusted() => return Ok(()),
        Some(_) => return Err("Sec-Fetch-Site is not same-origin"),
        None => {}
    }
    let Some(origin) = req.origin.as_deref() else { return Ok(()) };
    if same_host(origin, req) || trusted() {
        Ok(())
    } else {
        Err("Origin names another host")
    }
}

fn is_trusted(config: &Config, origin: &str) -> bool {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    config.trusted_origins.contains(&origin)
}

/// `scheme://host[:port]` -> (host, port), with the scheme's default port.
fn split_origin(origin: &str) -> Option<(String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = split_host(rest)?;
    Some((host, port.unwrap_or(default)))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` -> (lower-cased host, port).
fn split_host(text: &str) -> Option<(String, Option<u16>)> {
    if text.is_empty() || text.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (text.to_ascii_lowercase(), None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

fn same_host(origin: &str, req: &Request) -> bool {
    let Some((origin_host, origin_port)) = split_origin(origin) else { return false };
    let Some((host, port)) = split_host(&req.host) else { return false };
    let port = port.or_else(|| req.server_port.parse().ok()).unwrap_or(if req.https { 443 } else { 80 });
    origin_host == host && origin_port == port
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        name: &'static str,
        method: &'static str,
        host: &'static str,
        port: &'static str,
        sec_fetch_site: Option<&'static str>,
        origin: Option<&'static str>,
        allowed: bool,
    }

    const fn case(
        name: &'static str,
        sec_fetch_site: Option<&'static str>,
        origin: Option<&'static str>,
        allowed: bool,
    ) -> Case {
        Case { name, method: "POST", host: "example.org", port: "80", sec_fetch_site, origin, allowed }
    }

    #[test]
    fn table() {
        let cases = [
            case("same-origin fetch", Some("same-origin"), Some("http://example.org"), true),
            case("user typed the URL (none)", Some("none"), None, true),
            case("same-site is refused", Some("same-site"), Some("http://a.example.org"), false),
            case("cross-site is refused", Some("cross-site"), Some("http://evil.test"), false),
            case("unknown Sec-Fetch-Site is refused", Some("bogus"), None, false),
            case("no headers at all (not a browser)", None, None, true),
            case("old browser, same host", None, Some("http://example.org"), true),
            case("old browser, other host", None, Some("http://evil.test"), false),
            case("old browser, same host other port", None, Some("http://example.org:8081"), false),
            case("null origin is refused", None, Some("null"), false),
            case("garbage origin is refused", None, Some("example.org"), false),
            Case { name: "GET always passes", method: "GET", ..case("", Some("cross-site"), None, true) },
            Case { name: "OPTIONS passes", method: "OPTIONS", ..case("", Some("cross-site"), None, true) },
            Case {
                name: "Host without port uses SERVER_PORT (Debian nginx $host)",
                port: "8080",
                ..case("", None, Some("http://example.org:8080"), true)
            },
            Case {
                name: "Host without port, Origin on another port",
                port: "8080",
                ..case("", None, Some("http://example.org:9090"), false)
            },
            Case {
                name: "Host with port must match exactly",
                host: "example.org:8080",
                ..case("", None, Some("http://example.org:8080"), true)
            },
            Case { name: "IPv6 host", host: "[::1]:8080", ..case("", None, Some("http://[::1]:8080"), true) },
        ];
        for c in cases {
            let mut req = Request::fake(c.method, "/login", "");
            req.host = c.host.into();
            req.server_port = c.port.into();
            req.sec_fetch_site = c.sec_fetch_site.map(Into::into);
            req.origin = c.origin.map(Into::into);
            assert_eq!(check(&Config::default(), &req).is_ok(), c.allowed, "{}", c.name);
        }
    }

    #[test]
    fn trusted_origins_pass() {
        let config = Config { trusted_origins: vec!["https://app.example.net".into()], ..Config::default() };
        let mut req = Request::fake("POST", "/login", "");
        req.sec_fetch_site = Some("cross-site".into());
        req.origin = Some("https://app.example.net".into());
        assert!(check(&config, &req).is_ok());
        req.origin = Some("https://other.example.net".into());
        assert!(check(&config, &req).is_err());
    }
}
