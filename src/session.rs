//! Session tokens, the session cookie, and the idle and absolute rules.
//!
//! A token is 256 bits from the OS random source, sent base64url in the cookie;
//! the store keys sessions by the token's SHA-256, so a leaked store holds no
//! live cookies. The store itself sits behind [`crate::store::SessionStore`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use sha2::{Digest, Sha256};

use crate::config::{Config, CookieSecure};
use crate::http::Request;
use crate::store::{SessionId, SessionRecord, SessionStore, StoreError};

const TOKEN_BYTES: usize = 32;
/// base64url length of a token without padding.
pub const TOKEN_LEN: usize = 43;
/// A `Cookie` header longer than this is not read at all. Sites carry large
/// analytics cookies, and a web server set up for large headers passes them:
/// the limit is the body's.
pub const MAX_COOKIE_HEADER: usize = 64 * 1024;

/// A session token as the client holds it. Never logged, never stored.
pub struct Token(String);

impl Token {
    /// A fresh token from the OS random source.
    pub fn generate() -> Result<Token, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token read from a cookie, if it has the shape of one of ours.
    pub fn parse(text: &str) -> Option<Token> {
        let ok = text.len() == TOKEN_LEN && URL_SAFE_NO_PAD.decode(text).is_ok_and(|b| b.len() == TOKEN_BYTES);
        ok.then(|| Token(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps instead of the token.
    pub fn id(&self) -> SessionId {
        SessionId(Sha256::digest(self.0.as_bytes()).into())
    }
}

/// What the cookie header says about our session cookie.
#[derive(Debug)]
pub enum CookieState {
    /// No cookie of our name.
    Absent,
    /// Our cookie is there but cannot name a session (malformed, duplicated,
    /// over-long): treated as no session, and expired in the reply. The
    /// reason is for the audit log.
    Invalid(&'static str),
    Present(Token),
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Finds the session cookie in a `Cookie` header (split and parsed by the
/// `cookie` crate; pieces it cannot parse are someone else's and skipped).
pub fn read_cookie(header: &str, name: &str) -> CookieState {
    if header.len() > MAX_COOKIE_HEADER {
        return if header.contains(name) {
            CookieState::Invalid("Cookie header too long")
        } else {
            CookieState::Absent
        };
    }
    let mut found: Option<CookieState> = None;
    for cookie in Cookie::split_parse(header).flatten() {
        if cookie.name() != name {
            continue;
        }
        if found.is_some() {
            // Two cookies of our name (e.g. one per path): we cannot tell which
            // the browser meant, so neither counts.
            return CookieState::Invalid("two session cookies");
        }
        found = Some(match Token::parse(cookie.value_trimmed()) {
            Some(token) => CookieState::Present(token),
            None => CookieState::Invalid("malformed session cookie"),
        });
    }
    found.unwrap_or(CookieState::Absent)
}

/// Every well-formed token of our cookie name in a `Cookie` header, for a
/// login or logout to end: cookies planted beside the real one (from a
/// sibling subdomain or a deeper path, which browsers send first) must not
/// keep the real one alive, however many there are. The header's own limit
/// bounds the work: about 1,300 tokens in 64 KiB, a store lookup each.
pub fn all_tokens(header: &str, name: &str) -> Vec<Token> {
    if header.len() > MAX_COOKIE_HEADER {
        return Vec::new();
    }
    Cookie::split_parse(header)
        .flatten()
        .filter(|c| c.name() == name)
        .filter_map(|c| Token::parse(c.value_trimmed()))
        .collect()
}

fn base_cookie(config: &Config, req: &Request, mount: &str, value: String) -> Cookie<'static> {
    named_cookie(config, &config.cookie_name, req, mount, value)
}

fn named_cookie(config: &Config, name: &str, req: &Request, mount: &str, value: String) -> Cookie<'static> {
    // The prefixes make browsers refuse the cookie from a sibling subdomain
    // or plain HTTP (cookie tossing); they require Secure, and __Host- Path=/.
    let host_prefix = name.starts_with("__Host-");
    let prefixed = host_prefix || name.starts_with("__Secure-");
    let secure = prefixed
        || match config.cookie_secure {
            CookieSecure::Always => true,
            CookieSecure::Never => false,
            CookieSecure::Auto => req.https,
        };
    let path = if host_prefix { "/" } else { mount };
    Cookie::build((name.to_string(), value))
        .path(path.to_string())
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .build()
}

/// The `Set-Cookie` value that gives the browser a new session.
///
/// A session cookie (no `Max-Age`) unless `lifetime` is given: the server's
/// idle and absolute rules end the session whatever the browser keeps.
pub fn session_cookie(config: &Config, req: &Request, mount: &str, token: &Token, lifetime: Option<i64>) -> String {
    let mut c = base_cookie(config, req, mount, token.as_str().to_string());
    if let Some(seconds) = lifetime {
        c.set_max_age(cookie::time::Duration::seconds(seconds));
    }
    c.to_string()
}

/// The `Set-Cookie` value that makes the browser drop the session cookie.
pub fn expire_cookie(config: &Config, req: &Request, mount: &str) -> String {
    expired(base_cookie(config, req, mount, String::new()))
}

/// `c` as a `Set-Cookie` value that makes the browser drop it.
fn expired(mut c: Cookie<'static>) -> String {
    c.set_max_age(cookie::time::Duration::ZERO);
    c.set_expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
    c.to_string()
}

/// The name of the pending second-factor step's cookie: the session
/// cookie's name (and so its prefix) with `-pending`. A cookie of its own, so
/// that no route that reads the session cookie ever sees a pending token.
pub fn pending_cookie_name(config: &Config) -> String {
    format!("{}-pending", config.cookie_name)
}

/// The `Set-Cookie` value for a pending second-factor step: like the session
/// cookie, but `SameSite=Strict` (only the login page's own posts need it)
/// and gone after `lifetime` seconds, when the step expires on the server too.
pub fn pending_cookie(config: &Config, req: &Request, mount: &str, token: &Token, lifetime: i64) -> String {
    let mut c = named_cookie(config, &pending_cookie_name(config), req, mount, token.as_str().to_string());
    c.set_same_site(SameSite::Strict);
    c.set_max_age(cookie::time::Duration::seconds(lifetime));
    c.to_string()
}

/// The `Set-Cookie` value that makes the browser drop the pending cookie.
pub fn expire_pending_cookie(config: &Config, req: &Request, mount: &str) -> String {
    let mut c = named_cookie(config, &pending_cookie_name(config), req, mount, String::new());
    c.set_same_site(SameSite::Strict);
    expired(c)
}

/// Why a session found in the store no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Live { touch: bool },
    Idle,
    Expired,
}

/// Applies the idle and absolute rules to a stored session at `now`.
pub fn judge(config: &Config, record: &SessionRecord, now: i64) -> Verdict {
    let idle = record.idle(config.idle_timeout);
    if now >= record.expires_at {
        Verdict::Expired
    } else if now - record.last_seen >= idle {
        Verdict::Idle
    } else {
        Verdict::Live { touch: now - record.last_seen >= crate::config::touch_interval(idle) }
    }
}

/// A live session found for a request.
pub struct Live {
    pub id: SessionId,
    pub username: String,
}

/// Looks up the request's session, ends it if it has run out, and records
/// that it was seen (at most once per touch interval).
pub fn current(
    config: &Config,
    store: &mut dyn SessionStore,
    token: &Token,
    now: i64,
) -> Result<Option<Live>, StoreError> {
    lookup(config, store, token, now, true)
}

/// Like [`current`], but a session that has run out is only not live: the
/// gate in front of other content writes nothing but the last-seen touch.
pub fn current_without_cleanup(
    config: &Config,
    store: &mut dyn SessionStore,
    token: &Token,
    now: i64,
) -> Result<Option<Live>, StoreError> {
    lookup(config, store, token, now, false)
}

fn lookup(
    config: &Config,
    store: &mut dyn SessionStore,
    token: &Token,
    now: i64,
    end_stale: bool,
) -> Result<Option<Live>, StoreError> {
    let id = token.id();
    let Some(record) = store.get(&id)? else { return Ok(None) };
    match judge(config, &record, now) {
        Verdict::Live { touch } => {
            if touch {
                store.touch(&id, now, record.idle(config.idle_timeout))?;
            }
            Ok(Some(Live { id, username: record.username }))
        }
        Verdict::Idle | Verdict::Expired => {
            if end_stale {
                store.delete(&id)?;
            }
            Ok(None)
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::generate().unwrap()
    }

    #[test]
    fn tokens_are_256_bits_base64url_and_distinct() {
        let (a, b) = (token(), token());
        assert_eq!(a.as_str().len(), TOKEN_LEN);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a.as_str(), b.as_str());
        assert_ne!(a.id(), b.id());
        assert!(Token::parse(a.as_str()).is_some());
    }

    #[test]
    fn forged_and_malformed_tokens_do_not_parse() {
        for bad in ["Session::john", "", "abc", &"A".repeat(44), &"*".repeat(43)] {
            assert!(Token::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_store_key_is_the_sha256_of_the_token() {
        let t = token();
        let expected: [u8; 32] = Sha256::digest(t.as_str().as_bytes()).into();
        assert_eq!(t.id().0, expected);
    }

    #[test]
    fn cookie_header_parsing() {
        let t = token();
        let ok = format!("a=1; webauth={}; b=2", t.as_str());
        assert!(matches!(read_cookie(&ok, "webauth"), CookieState::Present(_)));
        assert!(matches!(read_cookie("a=1", "webauth"), CookieState::Absent));
        assert!(matches!(read_cookie("", "webauth"), CookieState::Absent));
        assert!(matches!(read_cookie("webauth=Session::john", "webauth"), CookieState::Invalid(_)));
        let twice = format!("webauth={0}; webauth={0}", t.as_str());
        assert!(matches!(read_cookie(&twice, "webauth"), CookieState::Invalid(_)));
        let large = format!("webauth={}; pad={}", t.as_str(), "x".repeat(20 * 1024));
        assert!(matches!(read_cookie(&large, "webauth"), CookieState::Present(_)));
        let long = format!("webauth={}; pad={}", t.as_str(), "x".repeat(MAX_COOKIE_HEADER));
        assert!(matches!(read_cookie(&long, "webauth"), CookieState::Invalid(_)));
        // A cookie whose name merely ends like ours is someone else's.
        let other = format!("xwebauth={}", t.as_str());
        assert!(matches!(read_cookie(&other, "webauth"), CookieState::Absent));
    }

    #[test]
    fn all_tokens_finds_every_well_formed_cookie_of_our_name() {
        let (a, b) = (token(), token());
        let header = format!("webauth=x; other={}; webauth={}; webauth={}", a.as_str(), a.as_str(), b.as_str());
        let found: Vec<String> = all_tokens(&header, "webauth").iter().map(|t| t.as_str().to_string()).collect();
        assert_eq!(found, vec![a.as_str().to_string(), b.as_str().to_string()]);
        assert!(all_tokens("webauth=Session::john", "webauth").is_empty());
    }

    #[test]
    fn cookie_attributes() {
        let config = Config::default();
        let mut req = Request::fake("POST", "/members/login", "");
        let t = token();
        let set = session_cookie(&config, &req, "/members/", &t, None);
        assert!(set.starts_with(&format!("webauth={}", t.as_str())));
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/members/"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        assert!(!set.contains("Secure"));
        req.https = true;
        assert!(session_cookie(&config, &req, "/", &t, None).contains("Secure"));
        let gone = expire_cookie(&config, &req, "/");
        assert!(gone.contains("Max-Age=0") && gone.contains("Path=/") && gone.contains("Secure"));
    }

    #[test]
    fn the_pending_cookie_has_its_own_name_and_a_short_life() {
        let config = Config::default();
        let req = Request::fake("POST", "/members/login", "");
        let t = token();
        let set = pending_cookie(&config, &req, "/members/", &t, 300);
        assert!(set.starts_with(&format!("webauth-pending={}", t.as_str())), "{set}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/members/", "Max-Age=300"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        // The session cookie's reader never takes it.
        let header = format!("webauth-pending={}", t.as_str());
        assert!(matches!(read_cookie(&header, "webauth"), CookieState::Absent));
        let gone = expire_pending_cookie(&config, &req, "/members/");
        assert!(gone.starts_with("webauth-pending=;") && gone.contains("Max-Age=0"), "{gone}");
        let host = Config { cookie_name: "__Host-webauth".into(), ..Config::default() };
        let set = pending_cookie(&host, &req, "/members/", &t, 300);
        assert!(set.starts_with("__Host-webauth-pending=") && set.contains("Secure"), "{set}");
    }

    #[test]
    fn host_prefixed_cookies_are_secure_with_path_root() {
        let config = Config { cookie_name: "__Host-webauth".into(), ..Config::default() };
        let req = Request::fake("POST", "/members/login", "");
        let set = session_cookie(&config, &req, "/members/", &token(), None);
        assert!(set.contains("Secure") && set.contains("Path=/;") || set.ends_with("Path=/"), "{set}");
        assert!(!set.contains("Path=/members/"), "{set}");
    }

    fn record(created: i64, last_seen: i64, expires_at: i64) -> SessionRecord {
        SessionRecord { id: token().id(), username: "john".into(), created, last_seen, expires_at, idle_timeout: 0 }
    }

    #[test]
    fn a_remembered_session_has_its_own_idle_timeout() {
        let config = Config::default(); // 30 min idle
        let mut r = record(1000, 1000, 1000 + 30 * 86400);
        r.idle_timeout = 7 * 86400;
        assert_eq!(judge(&config, &r, 1000 + 3600), Verdict::Live { touch: true });
        assert_eq!(judge(&config, &r, 1000 + 7 * 86400), Verdict::Idle);
        assert_eq!(judge(&config, &r, 1000 + 30 * 86400), Verdict::Expired);
    }

    #[test]
    fn idle_and_absolute_rules() {
        let config = Config::default(); // 30 min idle, 8 h absolute, touch after 60 s
        let r = record(1000, 1000, 1000 + 8 * 3600);
        assert_eq!(judge(&config, &r, 1030), Verdict::Live { touch: false });
        assert_eq!(judge(&config, &r, 1060), Verdict::Live { touch: true });
        assert_eq!(judge(&config, &r, 1000 + 1800), Verdict::Idle);
        let busy = record(1000, 1000 + 8 * 3600 - 5, 1000 + 8 * 3600);
        assert_eq!(judge(&config, &busy, 1000 + 8 * 3600), Verdict::Expired);
    }
}
