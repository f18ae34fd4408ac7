//! `webauth check`: a doctor for a deployment. It reads the configuration the
//! programs would get (`SetEnv` lines of an `.htaccess`, `Environment=` lines
//! of a systemd unit, or this process's environment) and checks what a login
//! needs: the configuration parses, the users file loads, the store and the
//! state directory can be written, every template renders, no secret file is
//! readable by others or served from the web folder. One line per check with
//! ok, warn or fail and the fix.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tera::Context;

use crate::config::{Config, CookieSecure, Store};
use crate::http::Request;
use crate::render::Renderer;
use crate::users::UserDb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's outcome: what was checked, and how to fix it when it is not ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{level}  {}", self.what)?;
        if !self.fix.is_empty() {
            write!(f, "\n      fix: {}", self.fix)?;
        }
        Ok(())
    }
}

fn ok(what: impl Into<String>) -> Finding {
    Finding { level: Level::Ok, what: what.into(), fix: String::new() }
}

fn warn(what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { level: Level::Warn, what: what.into(), fix: fix.into() }
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { level: Level::Fail, what: what.into(), fix: fix.into() }
}

/// What the programs of one deployment would see.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// The `WEBAUTH_*` settings.
    pub vars: Vec<(String, String)>,
    /// The programs' working directory, against which relative paths resolve
    /// (Apache runs a CGI program in its own folder).
    pub base: Option<PathBuf>,
    /// The folder the web server serves the programs from, when known.
    pub web_dir: Option<PathBuf>,
    /// Whether that folder's `.htaccess` denies every other file in it.
    pub web_dir_denied: bool,
    /// Lines of the configuration the web server would refuse.
    pub problems: Vec<String>,
}

impl Deployment {
    /// The deployment an `.htaccess` describes: its `SetEnv` lines, relative
    /// paths resolved against its folder.
    pub fn from_htaccess(path: &Path) -> std::io::Result<Deployment> {
        let text = std::fs::read_to_string(path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let problems = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().to_ascii_lowercase().starts_with("setenv ") && apache_words(l).len() > 3)
            .map(|(n, l)| {
                format!(
                    "{}:{}: SetEnv takes a name and one value; Apache refuses {:?}",
                    path.display(),
                    n + 1,
                    l.trim()
                )
            })
            .collect();
        Ok(Deployment {
            vars: setenv_lines(&text),
            problems,
            base: Some(dir.clone()),
            web_dir: Some(dir),
            web_dir_denied: text.lines().any(|l| {
                let l = l.trim();
                l == "RewriteRule ^ - [F]" || l.eq_ignore_ascii_case("Require all denied")
            }),
        })
    }

    /// The deployment a systemd unit describes: its `Environment=` lines.
    pub fn from_unit(path: &Path) -> std::io::Result<Deployment> {
        let text = std::fs::read_to_string(path)?;
        Ok(Deployment { vars: environment_lines(&text), ..Deployment::default() })
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        match &self.base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// `SetEnv NAME VALUE` lines, split into words as Apache splits them
/// (double quotes group), in order.
pub fn setenv_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let words = apache_words(line);
            if !words.first()?.eq_ignore_ascii_case("SetEnv") {
                return None;
            }
            Some((words.get(1)?.clone(), words.get(2).cloned().unwrap_or_default()))
        })
        .collect()
}

/// A configuration line's words: split at white space, double quotes
/// grouping (with `\"` inside them).
fn apache_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'"') => word.push(chars.next().unwrap_or('"')),
                    '"' => break,
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    words
}

/// `Environment=NAME=VALUE ...` lines of a unit (each assignment may be quoted).
pub fn environment_lines(text: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("Environment=") else { continue };
        for assignment in split_quoted(rest) {
            if let Some((name, value)) = assignment.split_once('=') {
                vars.push((name.to_string(), value.to_string()));
            }
        }
    }
    vars
}

/// Splits on spaces outside double quotes, dropping the quotes.
fn split_quoted(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Runs every check; the caller prints them and fails on any [`Level::Fail`].
pub fn run(deployment: &Deployment) -> Vec<Finding> {
    let mut findings: Vec<Finding> =
        deployment.problems.iter().map(|p| fail(p.clone(), "quote the value, or use a path without spaces")).collect();
    let config = match Config::from_vars(&deployment.vars) {
        Ok(config) => config,
        Err(e) => {
            findings.push(fail(format!("configuration: {e}"), format!("correct {} where it is set", e.name)));
            return findings;
        }
    };
    findings.push(ok(format!(
        "configuration parses; mount {}",
        config.mount.as_deref().unwrap_or("derived from SCRIPT_NAME")
    )));
    let users = deployment.resolve(&config.users);
    check_users(&users, &mut findings);
    check_secret_file("users file", &users, deployment, &mut findings);
    match &config.store {
        Store::Sqlite(path) => {
            let path = deployment.resolve(path);
            check_store(&path, runner(deployment), &mut findings);
            check_secret_file("session store", &path, deployment, &mut findings);
        }
        Store::Redis { url, secret_key } => {
            let secret_key = deployment.resolve(secret_key);
            check_redis(&Store::Redis { url: url.clone(), secret_key: secret_key.clone() }, &mut findings);
            check_secret_file("secret key", &secret_key, deployment, &mut findings);
        }
    }
    let state = deployment.resolve(&config.state_dir);
    check_writable_dir("state directory (verification slots)", &state, runner(deployment), &mut findings);
    check_templates(&config, deployment, &mut findings);
    if config.cookie_secure == CookieSecure::Never {
        findings.push(warn(
            "WEBAUTH_COOKIE_SECURE=never: over HTTPS the session cookie would travel without Secure",
            "leave it at auto (Secure when HTTPS=on), or set always behind a TLS proxy",
        ));
    }
    findings
}

fn check_users(path: &Path, findings: &mut Vec<Finding>) {
    match UserDb::load(path) {
        Ok(db) if db.is_empty() => findings
            .push(warn(format!("users file {}: no users", path.display()), "add one with `webauth user add NAME`")),
        Ok(db) => {
            findings.push(ok(format!("users file {}: {} user(s), every password hashed", path.display(), db.len())));
            let bcrypt = bcrypt_users(path);
            if !bcrypt.is_empty() {
                findings.push(warn(
                    format!("users with bcrypt hashes (only their first 72 bytes count): {}", bcrypt.join(", ")),
                    "they move to argon2id at their next login when the programs can write the users file; \
                     or set a new password with `webauth user passwd NAME`",
                ));
            }
        }
        Err(e) => {
            findings.push(fail(e.to_string(), "fix the users file: `webauth user add|passwd` writes valid entries"))
        }
    }
}

fn bcrypt_users(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) else { return Vec::new() };
    map.iter()
        .filter(|(_, v)| v["password"].as_str().is_some_and(|p| p.starts_with("$2")))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A file holding secrets (password hashes, session hashes): not readable by
/// others, and not inside the web folder unless the folder denies it.
fn check_secret_file(what: &str, path: &Path, deployment: &Deployment, findings: &mut Vec<Finding>) {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.mode() & 0o004 != 0 {
            findings.push(fail(
                format!("{what} {} is readable by every user of this machine", path.display()),
                format!("chmod 600 {} (640 if the web server reads it through its group)", path.display()),
            ));
        } else {
            findings.push(ok(format!("{what} {} is not readable by others", path.display())));
        }
    }
    let Some(web_dir) = &deployment.web_dir else { return };
    let (Ok(web), Some(dir)) = (web_dir.canonicalize(), path.parent().and_then(|d| d.canonicalize().ok())) else {
        return;
    };
    if dir.starts_with(&web) {
        if deployment.web_dir_denied {
            findings.push(ok(format!("{what} is inside the web folder, which the .htaccess denies")));
        } else {
            findings.push(fail(
                format!("{what} {} is inside the web folder {} and may be downloaded", path.display(), web.display()),
                "move it outside the web folder, or deny the folder in its .htaccess",
            ));
        }
    }
}

/// Whom the programs run as, when this user (root) is not it and it can be
/// told: under suexec, the owner of the web folder.
fn runner(deployment: &Deployment) -> Option<u32> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let owner = std::fs::metadata(deployment.web_dir.as_ref()?).ok()?.uid();
    (owner != 0).then_some(owner)
}

/// Whether user `uid` (not root) may create files in a directory, by its modes.
fn writable_by(meta: &std::fs::Metadata, uid: u32) -> bool {
    let mode = meta.mode();
    if meta.uid() == uid {
        return mode & 0o300 == 0o300;
    }
    // Group membership cannot be told cheaply; only the owner and others count.
    mode & 0o003 == 0o003
}

fn check_store(path: &Path, runner: Option<u32>, findings: &mut Vec<Finding>) {
    if path.exists() {
        match crate::store::sqlite::SqliteStore::open(&path.to_string_lossy()) {
            Ok(_) => findings.push(ok(format!("session store {} opens for writing", path.display()))),
            Err(e) => findings
                .push(fail(e.to_string(), "give the web server's user write access to the store file and its folder")),
        }
    } else {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let what = format!("folder of the session store {} (created at the first login)", path.display());
        check_writable_dir(&what, dir, runner, findings);
    }
}

/// A shared store: reachable, and answering, from this host.
fn check_redis(store: &Store, findings: &mut Vec<Finding>) {
    let Store::Redis { url, .. } = store else { return };
    let probe =
        crate::store::open(store).and_then(|mut store| store.get(&crate::store::SessionId([0; 32])).map(|_| ()));
    match probe {
        Ok(()) => findings.push(ok(format!("session store {url} answers"))),
        Err(e) => findings.push(fail(
            e.to_string(),
            "start Redis, or fix the host, port, database or password in WEBAUTH_STORE \
             (and allow this host through its firewall)",
        )),
    }
    if crosses_a_network(url) {
        findings.push(warn(
            format!("session store {url}: plain TCP to another machine"),
            "use rediss:// (Redis with TLS) or a private network: session hashes and user names cross it",
        ));
    }
}

/// Plain TCP to a host that is not this one.
fn crosses_a_network(url: &crate::config::RedisUrl) -> bool {
    let host = url::Url::parse(url.secret()).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let local = host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !url.tls() && !local
}

/// Whether this user can create a file in `dir`: tried, not guessed from
/// modes. Run as root for another user (`runner`), their modes decide too.
fn check_writable_dir(what: &str, dir: &Path, runner: Option<u32>, findings: &mut Vec<Finding>) {
    match tempfile::Builder::new().prefix(".webauth-check-").tempfile_in(dir) {
        Ok(_) if runner.is_some_and(|uid| !std::fs::metadata(dir).is_ok_and(|m| writable_by(&m, uid))) => findings
            .push(fail(
                format!(
                    "{what}: {} is not writable by user {} (the web folder's owner, whom the programs run as)",
                    dir.display(),
                    runner.unwrap_or_default()
                ),
                format!("chown that user {} (or run this check as that user)", dir.display()),
            )),
        Ok(_) => {
            let shared = std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o002 != 0);
            if shared {
                findings.push(fail(
                    format!("{what}: {} is writable by every user", dir.display()),
                    format!("chmod o-w {}", dir.display()),
                ));
            } else {
                findings.push(ok(format!("{what}: {} is writable", dir.display())));
            }
        }
        Err(e) => findings.push(fail(
            format!("{what}: cannot write in {}: {e}", dir.display()),
            format!("create {} and give the web server's user write access to it", dir.display()),
        )),
    }
}

fn check_templates(config: &Config, deployment: &Deployment, findings: &mut Vec<Finding>) {
    let dir = config.templates.as_ref().map(|d| deployment.resolve(d));
    let mut renderer = Renderer::new(dir.clone());
    let req = Request::fake("GET", "/", "");
    let mut user = serde_json::Map::new();
    for (k, v) in [("username", "john"), ("first", "John"), ("last", "Smith")] {
        user.insert(k.into(), serde_json::Value::String(v.into()));
    }
    let mut login = Context::new();
    login.insert("action", "/login");
    login.insert("username", "");
    login.insert("message", "");
    login.insert("next", "");
    let mut page = Context::new();
    page.insert("user", &serde_json::Value::Object(user));
    page.insert("logout_action", "/logout");
    page.insert("totp", &serde_json::json!({"enabled": true, "recovery_left": 10}));
    let mut code = Context::new();
    for (k, v) in
        [("action", "/login"), ("message", ""), ("code_url", "/"), ("recovery_url", "/"), ("restart_url", "/")]
    {
        code.insert(k, v);
    }
    code.insert("recovery", &false);
    let source = dir.as_ref().map_or("built-in".to_string(), |d| d.display().to_string());
    for (name, context) in [("login.html", login), ("user.html", page), ("code.html", code)] {
        match renderer.page(config, &req, 200, name, context) {
            Ok(_) => findings.push(ok(format!("template {name} ({source}) renders"))),
            Err(e) => findings
                .push(fail(format!("template {name}: {e}"), "fix the template, or remove it to use the built-in one")),
        }
    }
    match renderer.error_page(config, &req, 404, "Not found.") {
        Ok(_) => findings.push(ok(format!("template error.html ({source}) renders"))),
        Err(e) => findings
            .push(fail(format!("template error.html: {e}"), "fix the template, or remove it to use the built-in one")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_redis_to_another_machine_is_warned_about() {
        let url = |text: &str| match Config::from_vars(&[
            ("WEBAUTH_STORE".into(), text.into()),
            ("WEBAUTH_STATE_DIR".into(), "/tmp".into()),
            ("WEBAUTH_SECRET_KEY".into(), "/tmp/k".into()),
        ])
        .map(|c| c.store)
        {
            Ok(Store::Redis { url, .. }) => url,
            other => panic!("{other:?}"),
        };
        assert!(crosses_a_network(&url("redis://:pw@10.0.0.5:6379/0")));
        assert!(crosses_a_network(&url("redis://redis.internal")));
        assert!(!crosses_a_network(&url("rediss://10.0.0.5:6380/0")));
        for local in ["redis://127.0.0.1:6379", "redis://localhost/1", "redis://[::1]:6379/0", "redis://127.0.0.2"] {
            assert!(!crosses_a_network(&url(local)), "{local}");
        }
    }

    #[test]
    fn setenv_and_environment_lines_are_read_as_the_servers_read_them() {
        let htaccess =
            "# x\nSetEnv WEBAUTH_USERS data/users.json\n  setenv WEBAUTH_MOUNT \"/members/\"\nSetEnv A \"b c\"\nRewriteEngine On\n";
        assert_eq!(
            setenv_lines(htaccess),
            vec![
                ("WEBAUTH_USERS".into(), "data/users.json".into()),
                ("WEBAUTH_MOUNT".into(), "/members/".into()),
                ("A".into(), "b c".into())
            ]
        );
        assert_eq!(apache_words("SetEnv X /my data/users.json").len(), 4, "Apache refuses this line");
        let unit = "[Service]\nEnvironment=WEBAUTH_USERS=/etc/u.json\nEnvironment=\"WEBAUTH_LOG=json\" A=b\n";
        assert_eq!(
            environment_lines(unit),
            vec![
                ("WEBAUTH_USERS".into(), "/etc/u.json".into()),
                ("WEBAUTH_LOG".into(), "json".into()),
                ("A".into(), "b".into())
            ]
        );
    }
}
