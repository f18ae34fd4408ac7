//! Every `WEBAUTH_*` variable in one place: read once per process into a
//! [`Config`] and passed down. Nothing else reads the environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the users file is when `WEBAUTH_USERS` is not set.
pub const DEFAULT_USERS: &str = "/etc/webauth/users.json";
/// The session store when `WEBAUTH_STORE` is not set.
pub const DEFAULT_STORE: &str = "sqlite:/var/lib/webauth/sessions.db";
pub const DEFAULT_COOKIE_NAME: &str = "webauth";
/// HSTS over HTTPS when `WEBAUTH_HSTS` is `on` (the default): one year.
pub const DEFAULT_HSTS: &str = "max-age=31536000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSecure {
    /// `Secure` when the request came over HTTPS (`HTTPS=on`).
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where sessions and failure counters live (`WEBAUTH_STORE`), parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// `sqlite:PATH`: the embedded store, one file on this host.
    Sqlite(PathBuf),
    /// `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS:
    /// one store shared by several hosts, with the secret key file
    /// (`WEBAUTH_SECRET_KEY`) that every host has and Redis does not.
    Redis { url: RedisUrl, secret_key: PathBuf },
}

/// A Redis URL as configured. It may hold a password, so it is shown (in
/// logs, errors and `webauth check`) without it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    fn parse(text: &str) -> Option<RedisUrl> {
        let url = url::Url::parse(text).ok()?;
        let db_ok = matches!(url.path(), "" | "/") || url.path()[1..].parse::<u16>().is_ok();
        let plain = url.query().is_none() && url.fragment().is_none();
        (matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_some_and(|h| !h.is_empty()) && db_ok && plain)
            .then(|| RedisUrl(text.to_string()))
    }

    /// The URL with its password, for connecting only.
    pub fn secret(&self) -> &str {
        &self.0
    }

    pub fn tls(&self) -> bool {
        self.0.starts_with("rediss:")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                } else if !url.username().is_empty() {
                    // A user name alone is most likely a misplaced password.
                    let _ = url.set_username("***");
                }
                write!(f, "{url}")
            }
            Err(_) => f.write_str("redis (unparsable URL)"),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

impl Store {
    fn parse(text: &str) -> Option<Store> {
        if is_redis(text) {
            let secret_key = PathBuf::new(); // filled in from WEBAUTH_SECRET_KEY
            return RedisUrl::parse(text).map(|url| Store::Redis { url, secret_key });
        }
        let path = text.strip_prefix("sqlite:")?;
        (!path.is_empty()).then(|| Store::Sqlite(PathBuf::from(path)))
    }

    /// The directory for this host's local files when `WEBAUTH_STATE_DIR` is
    /// not set: beside the SQLite file. A shared store has no such place.
    fn default_state_dir(&self) -> Option<PathBuf> {
        match self {
            Store::Sqlite(path) => Some(match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            }),
            Store::Redis { .. } => None,
        }
    }
}

fn is_redis(text: &str) -> bool {
    text.starts_with("redis://") || text.starts_with("rediss://")
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Store::Redis { url, .. } => write!(f, "{url}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub users: PathBuf,
    pub store: Store,
    /// Local files of this host (the verification slots), also with a shared store.
    pub state_dir: PathBuf,
    pub templates: Option<PathBuf>,
    pub mount: Option<String>,
    pub cookie_name: String,
    pub cookie_secure: CookieSecure,
    /// Seconds without a request after which a session ends.
    pub idle_timeout: i64,
    /// Seconds after login after which a session ends however busy.
    pub absolute_timeout: i64,
    /// The lifetime of a "remember me" session (a persistent cookie); 0: no
    /// such checkbox.
    pub remember: i64,
    /// The idle timeout of a remembered session.
    pub remember_idle_timeout: i64,
    /// Failed logins for one username from one address that start a ban.
    pub max_failures: u32,
    /// Failed logins from one address, any usernames, that start a ban.
    pub max_failures_per_address: u32,
    /// Failed logins for one username, any addresses, that start a ban.
    pub max_failures_per_user: u32,
    pub failure_window: i64,
    /// Password verifications that may run at once on this host, if set;
    /// see [`Config::verification_slots`].
    pub max_verifications: Option<u32>,
    pub ban_time: i64,
    /// Origins (`https://example.org`) whose unsafe requests are let through.
    pub trusted_origins: Vec<String>,
    pub log: LogFormat,
    /// libfcgi's `FCGI_WEB_SERVER_ADDRS`: peers a FastCGI listener serves.
    pub web_server_addrs: Option<Vec<String>>,
    /// `Strict-Transport-Security` for answers over HTTPS; `None` sends none.
    pub hsts: Option<String>,
    /// How long a `--listen` supervisor lets its workers finish on SIGTERM.
    pub stop_timeout: Duration,
    /// Set by a `--listen` supervisor in its workers' environment: its pid.
    pub supervisor: Option<u32>,
    /// The shortest new password the admin command accepts (characters).
    pub min_password: usize,
    /// Whether a bcrypt hash is upgraded to argon2id at its user's next login.
    pub rehash: bool,
    /// Seconds a login may wait between a right password and its second
    /// factor (the pending step's lifetime).
    pub totp_pending: i64,
}

/// A variable that is set to something webauth cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?} is invalid: expected {}", self.name, self.value, self.expected)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Config {
        Config::from_lookup(|_| None).expect("the defaults are valid")
    }
}

impl Config {
    /// The configuration of this process, from its environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&env_vars())
    }

    /// The configuration from name-value pairs; the first pair of a name wins,
    /// so request params can be put before the environment's.
    pub fn from_vars(vars: &[(String, String)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    /// The configuration from any source of variables (the environment,
    /// FastCGI params layered over it, a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let duration = |name: &'static str, default: i64| match var(name) {
            None => Ok(default),
            Some(v) => parse_duration(&v).ok_or(ConfigError {
                name,
                value: v,
                expected: "seconds, or a number with s, m, h or d (30m, 8h, 7d)",
            }),
        };
        let count = |name: &'static str, default: u32| match var(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(ConfigError { name, value: v, expected: "a whole number above zero" }),
            },
        };
        let max_failures = count("WEBAUTH_MAX_FAILURES", 5)?;
        let cookie_name = var("WEBAUTH_COOKIE_NAME").unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string());
        if !is_cookie_name(&cookie_name) {
            return Err(ConfigError {
                name: "WEBAUTH_COOKIE_NAME",
                value: cookie_name,
                expected: "letters, digits, '-' or '_'",
            });
        }
        let cookie_secure = match var("WEBAUTH_COOKIE_SECURE").as_deref().map(str::trim) {
            Some("never") if cookie_name.starts_with("__Host-") || cookie_name.starts_with("__Secure-") => {
                return Err(ConfigError {
                    name: "WEBAUTH_COOKIE_SECURE",
                    value: "never".into(),
                    expected: "auto or always with a __Host- or __Secure- cookie name (browsers drop such cookies without Secure)",
                })
            }
            None | Some("auto") => CookieSecure::Auto,
            Some("always") => CookieSecure::Always,
            Some("never") => CookieSecure::Never,
            Some(v) => {
                return Err(ConfigError {
                    name: "WEBAUTH_COOKIE_SECURE",
                    value: v.to_string(),
                    expected: "auto, always or never",
                })
            }
        };
        let log = match var("WEBAUTH_LOG").as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(ConfigError { name: "WEBAUTH_LOG", value: v.to_string(), expected: "text or json" }),
        };
        let mount = match var("WEBAUTH_MOUNT") {
            None => None,
            Some(m) if is_mount_path(&m) => Some(if m.ends_with('/') { m } else { m + "/" }),
            Some(m) => {
                return Err(ConfigError {
                    name: "WEBAUTH_MOUNT",
                    value: m,
                    expected: "an absolute URL path such as / or /members/",
                })
            }
        };
        let store_text = var("WEBAUTH_STORE").unwrap_or_else(|| DEFAULT_STORE.to_string());
        let Some(mut store) = Store::parse(store_text.trim()) else {
            // A Redis URL may hold a password (after @, or as ?password=):
            // it is not repeated.
            let value = if is_redis(store_text.trim()) || store_text.contains('@') {
                "(a Redis URL, not shown: it may hold a password)".into()
            } else {
                store_text
            };
            return Err(ConfigError {
                name: "WEBAUTH_STORE",
                value,
                expected: "sqlite:PATH, or redis://[:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS)",
            });
        };
        #[cfg(not(feature = "redis"))]
        if matches!(store, Store::Redis { .. }) {
            return Err(ConfigError {
                name: "WEBAUTH_STORE",
                value: store.to_string(),
                expected: "sqlite:PATH: these programs were built without the Redis store \
                           (the shared-host build); use the standard build for Redis",
            });
        }
        if let Store::Redis { secret_key, .. } = &mut store {
            match var("WEBAUTH_SECRET_KEY") {
                Some(path) => *secret_key = PathBuf::from(path.trim()),
                None => {
                    return Err(ConfigError {
                        name: "WEBAUTH_SECRET_KEY",
                        value: String::new(),
                        expected: "the path of a file of at least 32 random bytes, the same on every host \
                                   (head -c 32 /dev/urandom > FILE), required with a Redis store",
                    })
                }
            }
        }
        let Some(state_dir) = var("WEBAUTH_STATE_DIR").map(PathBuf::from).or_else(|| store.default_state_dir()) else {
            return Err(ConfigError {
                name: "WEBAUTH_STATE_DIR",
                value: String::new(),
                expected: "a directory on this host for its local files, required with a Redis store",
            });
        };
        let hsts = match var("WEBAUTH_HSTS").as_deref().map(str::trim) {
            None | Some("on") => Some(DEFAULT_HSTS.to_string()),
            Some("off") => None,
            Some(v) if v.starts_with("max-age=") && v.bytes().all(|b| (b' '..=b'~').contains(&b)) => {
                Some(v.to_string())
            }
            Some(v) => {
                return Err(ConfigError {
                    name: "WEBAUTH_HSTS",
                    value: v.to_string(),
                    expected: "on, off, or a header value such as max-age=31536000; includeSubDomains",
                })
            }
        };
        let min_password = match crate::policy::min_length(var("WEBAUTH_MIN_PASSWORD").as_deref()) {
            Ok(n) => n,
            Err(_) => {
                return Err(ConfigError {
                    name: "WEBAUTH_MIN_PASSWORD",
                    value: var("WEBAUTH_MIN_PASSWORD").unwrap_or_default(),
                    expected: "a number of characters from 8 to 1024",
                })
            }
        };
        let rehash = match var("WEBAUTH_REHASH").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(v) => return Err(ConfigError { name: "WEBAUTH_REHASH", value: v.to_string(), expected: "on or off" }),
        };
        let supervisor = match var("WEBAUTH_SUPERVISOR") {
            None => None,
            Some(v) => Some(v.trim().parse::<u32>().map_err(|_| ConfigError {
                name: "WEBAUTH_SUPERVISOR",
                value: v,
                expected: "the supervisor's process id (set by --listen, not by hand)",
            })?),
        };
        let idle_timeout = duration("WEBAUTH_IDLE_TIMEOUT", 30 * 60)?;
        let absolute_timeout = duration("WEBAUTH_ABSOLUTE_TIMEOUT", 8 * 3600)?;
        let remember = match var("WEBAUTH_REMEMBER").as_deref().map(str::trim) {
            Some("0") | Some("off") => 0,
            _ => duration("WEBAUTH_REMEMBER", 30 * 86400)?,
        };
        let remember_idle_timeout = duration("WEBAUTH_REMEMBER_IDLE_TIMEOUT", idle_timeout)?;
        let list = |name: &str| {
            var(name).map(|v| {
                v.split([',', ' '])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim_end_matches('/').to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
        };
        Ok(Config {
            users: PathBuf::from(var("WEBAUTH_USERS").unwrap_or_else(|| DEFAULT_USERS.to_string())),
            store,
            state_dir,
            templates: var("WEBAUTH_TEMPLATES").map(PathBuf::from),
            mount,
            cookie_name,
            cookie_secure,
            idle_timeout,
            absolute_timeout,
            remember,
            remember_idle_timeout,
            max_failures,
            max_failures_per_address: count("WEBAUTH_MAX_FAILURES_PER_ADDRESS", max_failures.saturating_mul(4))?,
            max_failures_per_user: count("WEBAUTH_MAX_FAILURES_PER_USER", max_failures.saturating_mul(10))?,
            failure_window: duration("WEBAUTH_FAILURE_WINDOW", 10 * 60)?,
            max_verifications: match var("WEBAUTH_MAX_VERIFICATIONS") {
                None => None,
                // Set: a whole number above zero (the default here is never used).
                Some(_) => Some(count("WEBAUTH_MAX_VERIFICATIONS", 1)?),
            },
            ban_time: duration("WEBAUTH_BAN_TIME", 15 * 60)?,
            trusted_origins: list("WEBAUTH_TRUSTED_ORIGINS").unwrap_or_default(),
            log,
            // Set but empty admits no one, as in libfcgi.
            web_server_addrs: get("FCGI_WEB_SERVER_ADDRS").map(|_| list("FCGI_WEB_SERVER_ADDRS").unwrap_or_default()),
            hsts,
            stop_timeout: Duration::from_secs(duration("WEBAUTH_STOP_TIMEOUT", 10)?.unsigned_abs()),
            supervisor,
            min_password,
            rehash,
            totp_pending: duration("WEBAUTH_TOTP_PENDING", 5 * 60)?,
        })
    }

    /// Password verifications that may run at once on this host: as set, or
    /// twice the cores. Counted only by a login, so that no other request
    /// reads the cgroup files that `available_parallelism` reads.
    pub fn verification_slots(&self) -> u32 {
        self.max_verifications
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32).saturating_mul(2))
    }

    /// The path the programs are mounted at, ending in `/`: `WEBAUTH_MOUNT`,
    /// or the directory of `SCRIPT_NAME` (`/members/login` -> `/members/`).
    pub fn mount_for(&self, script_name: &str) -> String {
        if let Some(m) = &self.mount {
            return m.clone();
        }
        // SCRIPT_NAME can carry what the client sent (regex locations, rewrites):
        // a mount like `//evil.test/` would become an open redirect and a cookie
        // path with attributes in it, so only a plain path is taken.
        match script_name.rfind('/') {
            Some(i) if is_mount_path(&script_name[..=i]) => script_name[..=i].to_string(),
            _ => "/".to_string(),
        }
    }

    /// How long a `last seen` write may be skipped: a tenth of the idle
    /// timeout, at most a minute, so a session in use never dies of idleness.
    pub fn touch_interval(&self) -> i64 {
        touch_interval(self.idle_timeout)
    }
}

/// How long a `last seen` write may be skipped for a session of this idle
/// timeout: a tenth of it, at most a minute.
pub fn touch_interval(idle_timeout: i64) -> i64 {
    (idle_timeout / 10).min(60)
}

/// Whether a variable configures webauth (in the environment, or as a
/// FastCGI param over it).
pub fn is_config_var(name: &str) -> bool {
    name.starts_with("WEBAUTH_") || name == "FCGI_WEB_SERVER_ADDRS"
}

/// The `WEBAUTH_*` variables among a request's CGI variables, sorted: the
/// per-request overrides a web server sets with `fastcgi_param` or `SetEnv`.
/// `FCGI_WEB_SERVER_ADDRS` is the listener's own and never comes from a request.
pub fn request_overrides<'a>(vars: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> =
        vars.filter(|(k, _)| k.starts_with("WEBAUTH_")).map(|(k, v)| (k.clone(), v.clone())).collect();
    found.sort();
    found
}

/// The variables of the process environment that configure webauth.
pub fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| is_config_var(k))
        .collect()
}

/// `"90"`, `"90s"`, `"30m"`, `"8h"`, `"7d"` -> seconds (at least 1).
pub fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let seconds = n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    (seconds > 0).then_some(seconds)
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An absolute URL path of plain characters, with no empty, `.` or `..`
/// segment (a browser resolves those, so the cookie's Path would not match).
pub fn is_mount_path(m: &str) -> bool {
    let Some(rest) = m.strip_prefix('/') else { return false };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    m.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        && segments.iter().enumerate().all(|(i, s)| !matches!(*s, "." | "..") && (i == last || !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("8h"), Some(28800));
        assert_eq!(parse_duration("7d"), Some(604800));
        assert_eq!(parse_duration(" 2s "), Some(2));
        for bad in ["", "m", "0", "-5", "5w", "1.5h", "99999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::default();
        assert_eq!(c.idle_timeout, 1800);
        assert_eq!(c.absolute_timeout, 8 * 3600);
        assert_eq!((c.max_failures, c.failure_window, c.ban_time), (5, 600, 900));
        assert_eq!(c.cookie_secure, CookieSecure::Auto);
        assert_eq!(c.store.to_string(), DEFAULT_STORE);
        assert_eq!(c.state_dir, Path::new("/var/lib/webauth"));
        assert_eq!(c.hsts.as_deref(), Some("max-age=31536000"));
        assert_eq!(c.stop_timeout, Duration::from_secs(10));
        assert!(c.rehash);
        assert_eq!((c.remember, c.remember_idle_timeout), (30 * 86400, 1800));
        assert_eq!(c.min_password, 8);
        assert_eq!(c.touch_interval(), 60);
    }

    #[test]
    fn touch_interval_is_a_tenth_of_a_short_idle_timeout() {
        assert_eq!(config(&[("WEBAUTH_IDLE_TIMEOUT", "30s")]).unwrap().touch_interval(), 3);
        assert_eq!(config(&[("WEBAUTH_IDLE_TIMEOUT", "5")]).unwrap().touch_interval(), 0);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("WEBAUTH_IDLE_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(err.name, "WEBAUTH_IDLE_TIMEOUT");
        assert!(err.to_string().contains("soon"));
        assert_eq!(config(&[("WEBAUTH_COOKIE_SECURE", "yes")]).unwrap_err().name, "WEBAUTH_COOKIE_SECURE");
        assert_eq!(config(&[("WEBAUTH_COOKIE_NAME", "a;b")]).unwrap_err().name, "WEBAUTH_COOKIE_NAME");
        assert_eq!(config(&[("WEBAUTH_STORE", "mysql://x")]).unwrap_err().name, "WEBAUTH_STORE");
        assert_eq!(config(&[("WEBAUTH_MOUNT", "members")]).unwrap_err().name, "WEBAUTH_MOUNT");
    }

    #[test]
    fn the_store_is_parsed_once_and_the_state_dir_defaults_beside_it() {
        let c = config(&[("WEBAUTH_STORE", "sqlite:/srv/w/s.db")]).unwrap();
        assert_eq!(c.store, Store::Sqlite(PathBuf::from("/srv/w/s.db")));
        assert_eq!(c.state_dir, Path::new("/srv/w"));
        assert_eq!(config(&[("WEBAUTH_STORE", "sqlite:s.db")]).unwrap().state_dir, Path::new("."));
        let c = config(&[("WEBAUTH_STORE", "sqlite:/srv/w/s.db"), ("WEBAUTH_STATE_DIR", "/run/w")]).unwrap();
        assert_eq!(c.state_dir, Path::new("/run/w"));
        assert_eq!(config(&[("WEBAUTH_STORE", "sqlite:")]).unwrap_err().name, "WEBAUTH_STORE");
    }

    #[test]
    fn rehash_is_on_or_off_and_min_password_never_below_8() {
        assert!(!config(&[("WEBAUTH_REHASH", "off")]).unwrap().rehash);
        assert!(!config(&[("WEBAUTH_REHASH", " OFF ")]).unwrap().rehash);
        assert!(config(&[("WEBAUTH_REHASH", "on")]).unwrap().rehash);
        assert_eq!(config(&[("WEBAUTH_REHASH", "maybe")]).unwrap_err().name, "WEBAUTH_REHASH");
        assert_eq!(config(&[("WEBAUTH_MIN_PASSWORD", "15")]).unwrap().min_password, 15);
        assert_eq!(config(&[("WEBAUTH_MIN_PASSWORD", "6")]).unwrap_err().name, "WEBAUTH_MIN_PASSWORD");
    }

    #[test]
    fn remember_is_a_duration_or_off() {
        assert_eq!(config(&[]).unwrap().totp_pending, 300);
        assert_eq!(config(&[("WEBAUTH_TOTP_PENDING", "2")]).unwrap().totp_pending, 2);
        assert_eq!(config(&[("WEBAUTH_TOTP_PENDING", "later")]).unwrap_err().name, "WEBAUTH_TOTP_PENDING");
        assert_eq!(config(&[("WEBAUTH_REMEMBER", "0")]).unwrap().remember, 0);
        assert_eq!(config(&[("WEBAUTH_REMEMBER", "7d")]).unwrap().remember, 7 * 86400);
        assert_eq!(config(&[("WEBAUTH_REMEMBER", "soon")]).unwrap_err().name, "WEBAUTH_REMEMBER");
        let c = config(&[("WEBAUTH_IDLE_TIMEOUT", "10m"), ("WEBAUTH_REMEMBER_IDLE_TIMEOUT", "7d")]).unwrap();
        assert_eq!((c.idle_timeout, c.remember_idle_timeout), (600, 7 * 86400));
    }

    #[test]
    fn hsts_is_on_off_or_a_value() {
        assert_eq!(config(&[("WEBAUTH_HSTS", "off")]).unwrap().hsts, None);
        let sub = "max-age=63072000; includeSubDomains";
        assert_eq!(config(&[("WEBAUTH_HSTS", sub)]).unwrap().hsts.as_deref(), Some(sub));
        assert_eq!(config(&[("WEBAUTH_HSTS", "yes")]).unwrap_err().name, "WEBAUTH_HSTS");
        assert_eq!(config(&[("WEBAUTH_HSTS", "max-age=1\r\nX: y")]).unwrap_err().name, "WEBAUTH_HSTS");
    }

    #[test]
    fn mounts_are_plain_absolute_paths_without_dot_segments() {
        for ok in ["/", "/members/", "/a/b", "/a.b/", "/..a/", "/a../"] {
            assert!(is_mount_path(ok), "{ok}");
        }
        for bad in ["", "members/", "//x/", "/a//b/", "/a/../", "/./", "/a/..", "/a/.", "/a b/", "/a;b/"] {
            assert!(!is_mount_path(bad), "{bad}");
        }
        let c = Config::default();
        assert_eq!(c.mount_for("/a/../login"), "/");
        assert_eq!(c.mount_for("/members/./login"), "/");
        assert_eq!(c.mount_for("/members/login"), "/members/");
        assert_eq!(config(&[("WEBAUTH_MOUNT", "/a/../")]).unwrap_err().name, "WEBAUTH_MOUNT");
    }

    #[test]
    fn only_webauth_variables_are_request_overrides() {
        let vars: HashMap<String, String> =
            [("WEBAUTH_B", "2"), ("WEBAUTH_A", "1"), ("FCGI_WEB_SERVER_ADDRS", "x"), ("HTTP_X", "y")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let found = request_overrides(vars.iter());
        assert_eq!(found, vec![("WEBAUTH_A".into(), "1".into()), ("WEBAUTH_B".into(), "2".into())]);
        assert!(is_config_var("FCGI_WEB_SERVER_ADDRS") && is_config_var("WEBAUTH_X") && !is_config_var("PATH"));
    }

    #[test]
    fn mount_gets_a_trailing_slash() {
        assert_eq!(config(&[("WEBAUTH_MOUNT", "/members")]).unwrap().mount.as_deref(), Some("/members/"));
    }

    #[test]
    fn huge_max_failures_saturates() {
        let c = config(&[("WEBAUTH_MAX_FAILURES", "4000000000")]).unwrap();
        assert_eq!(c.max_failures_per_user, u32::MAX);
    }

    #[test]
    fn web_server_addrs_set_but_empty_admits_no_one() {
        assert_eq!(config(&[("FCGI_WEB_SERVER_ADDRS", "")]).unwrap().web_server_addrs, Some(vec![]));
        assert_eq!(Config::default().web_server_addrs, None);
    }

    #[test]
    fn trusted_origins_are_a_list() {
        let c = config(&[("WEBAUTH_TRUSTED_ORIGINS", "https://a.example, https://B.example/")]).unwrap();
        assert_eq!(c.trusted_origins, vec!["https://a.example", "https://b.example"]);
    }
}
