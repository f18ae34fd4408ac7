//! Faults inside the programs (SPEC.md, "Errors that every route shares"): a
//! handler panic, an unusable store, a broken template, a bad users file or
//! configuration. Each is a `500` or `503` with a plain message, its cause on
//! stderr, and nothing of the server's insides (stack trace, paths) in the body.
//! Every case reads stderr, so every case runs the real program as CGI.

mod support;

use std::path::Path;

use support::{leaked_internals, running_as_root, CgiReply, Req, ResponseExt, TestSite};

fn login_req() -> Req {
    Req::login("john", "johnpass")
}

fn login_json(site: &TestSite, username: &str, password: &str) -> CgiReply {
    site.cgi("login", &Req::login(username, password))
}

fn index_with(site: &TestSite, cookie: &str) -> CgiReply {
    site.cgi("index", &Req::get().cookie(cookie))
}

/// Logs in through the CGI program; the `name=value` cookie pair.
fn session_for(site: &TestSite, username: &str, password: &str) -> String {
    let reply = login_json(site, username, password);
    assert_eq!(reply.status, 200, "login as {username} failed: {}", reply.text());
    reply.cookie().expect("a session cookie")
}

/// The promises every fault reply keeps: its status, no session cookie, no
/// stack trace or server path in the body, JSON for a JSON request and HTML
/// otherwise, and a `webauth: error:` line on stderr.
fn assert_fault(site: &TestSite, reply: &CgiReply, status: u16, json: bool, what: &str) {
    assert_eq!(reply.status, status, "{what}: {} / stderr {}", reply.text(), reply.stderr);
    assert!(reply.cookie().is_none(), "{what}: a session cookie on a fault");
    if let Some(marker) = leaked_internals(reply) {
        panic!("{what}: the body shows {marker:?}: {}", reply.text());
    }
    let dir = site.dir.path().to_string_lossy().into_owned();
    for secret in [dir.as_str(), "/tmp", "sessions.db", "users.json", "$argon2"] {
        assert!(!reply.text().contains(secret), "{what}: the body shows {secret:?}: {}", reply.text());
    }
    let content_type = reply.header("Content-Type").unwrap_or("");
    if json {
        assert_eq!(content_type, "application/json", "{what}");
        let v = reply.json();
        assert_eq!(v["success"], false, "{what}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
    } else {
        assert_eq!(content_type, "text/html; charset=utf-8", "{what}");
        assert!(reply.text().contains(&status.to_string()), "{what}: the page names the status: {}", reply.text());
    }
    assert!(reply.stderr.lines().any(|l| l.starts_with("webauth: error:")), "{what}: no cause on stderr");
}

#[test]
fn a_handler_panic_is_a_500_and_one_line_on_stderr() {
    let site = TestSite::new();
    let cases = [
        ("GET / (page)", "index", Req::get(), false),
        ("JSON login", "login", login_req(), true),
        ("form logout", "logout", Req::form(""), false),
    ];
    for (what, program, req, json) in cases {
        // Even with backtraces asked for, the panic is one line.
        let req = req.var("HTTP_X_WEBAUTH_FAULT", "panic").var("RUST_BACKTRACE", "full");
        let reply = site.cgi(program, &req);
        assert_fault(&site, &reply, 500, json, what);
        for text in ["panic", "fault injected", "X-Webauth-Fault"] {
            assert!(!reply.text().to_lowercase().contains(&text.to_lowercase()), "{what}: body shows {text:?}");
        }
        let panic_lines: Vec<&str> = reply.stderr.lines().filter(|l| l.contains("panic")).collect();
        assert_eq!(panic_lines.len(), 1, "{what}: exactly one line about the panic: {:?}", reply.stderr);
        assert!(!reply.stderr.contains("stack backtrace"), "{what}: {}", reply.stderr);
        assert!(!reply.stderr.contains("login success"), "{what}: the panic came before any login");
    }
    // Without the trigger the same site works.
    assert_eq!(login_json(&site, "john", "johnpass").status, 200);
}

#[test]
fn a_store_in_a_missing_directory_is_503() {
    let mut site = TestSite::new();
    let path = site.dir.path().join("no-such-dir").join("sessions.db");
    let cookie = session_for(&site, "john", "johnpass");
    site.set("WEBAUTH_STORE", &format!("sqlite:{}", path.display()));
    let login = login_json(&site, "john", "johnpass");
    assert_fault(&site, &login, 503, true, "JSON login");
    assert!(login.header("Retry-After").is_some_and(|r| r.parse::<u32>().is_ok_and(|n| n > 0)), "{login:?}");
    assert!(login.stderr.contains("session store"), "{}", login.stderr);
    let page = index_with(&site, &cookie);
    assert_fault(&site, &page, 503, false, "GET / with a session cookie");
    assert!(page.header("Retry-After").is_some());
    assert!(!path.parent().unwrap().exists(), "the programs do not create the directory");
}

#[test]
fn a_store_file_that_is_not_a_database_is_503() {
    let site = TestSite::new();
    std::fs::write(&site.store, b"this is not an SQLite database, just some bytes\0\x01\x02".repeat(200)).unwrap();
    let login = login_json(&site, "john", "johnpass");
    assert_fault(&site, &login, 503, true, "JSON login");
    assert!(login.header("Retry-After").is_some());
    assert!(login.stderr.contains("not a database"), "{}", login.stderr);
    let form = site.cgi("login", &Req::form("username=john&password=johnpass"));
    assert_fault(&site, &form, 503, false, "form login");
    let page = index_with(&site, &format!("webauth={}", "A".repeat(43)));
    assert_fault(&site, &page, 503, false, "GET / with a cookie");
}

#[test]
fn a_store_path_that_is_a_directory_is_503() {
    let site = TestSite::new();
    std::fs::create_dir(&site.store).unwrap();
    let login = login_json(&site, "john", "johnpass");
    assert_fault(&site, &login, 503, true, "JSON login");
    assert!(login.header("Retry-After").is_some());
}

/// Runs a CGI request as an unprivileged user when the tests run as root, so
/// that file modes apply (root writes through `chmod 0444`).
fn cgi_as_unprivileged(site: &TestSite, program: &str, req: &Req) -> CgiReply {
    let mut cmd = site.cgi_command(program, req);
    if running_as_root() {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534); // nobody / nogroup
    }
    support::run_cgi(cmd, &req.body)
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Restores write permission so the temp dir can be removed.
struct Restore<'a>(&'a Path, &'a Path);
impl Drop for Restore<'_> {
    fn drop(&mut self) {
        chmod(self.0, 0o755);
        if self.1.exists() {
            chmod(self.1, 0o644);
        }
    }
}

#[test]
fn a_read_only_store_is_503_with_retry_after() {
    let mut site = TestSite::new();
    let dir = site.dir.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("sessions.db");
    site.set("WEBAUTH_STORE", &format!("sqlite:{}", db.display()));
    // The unprivileged user (when root) must read the users file and reach the store.
    chmod(site.dir.path(), 0o755);
    chmod(&site.users, 0o644);
    let cookie = session_for(&site, "john", "johnpass");
    assert!(db.exists());
    let _restore = Restore(&dir, &db);

    // First the file alone, then the file and its directory.
    // (As root the programs run as nobody: 0777 lets it create the -wal and -shm files.)
    for (what, dir_mode) in [("file 0444, directory writable", 0o777), ("file 0444, directory 0555", 0o555)] {
        chmod(&db, 0o444);
        chmod(&dir, dir_mode);
        let login = cgi_as_unprivileged(&site, "login", &login_req());
        assert_fault(&site, &login, 503, true, &format!("{what}: JSON login"));
        assert!(login.header("Retry-After").is_some_and(|r| r.parse::<u32>().is_ok_and(|n| n > 0)), "{what}");
        assert!(login.stderr.contains("session store"), "{what}: {}", login.stderr);
        let failure = cgi_as_unprivileged(
            &site,
            "login",
            &Req::form("username=john&password=wrong").var("HTTP_ACCEPT", "text/html"),
        );
        assert_fault(&site, &failure, 503, false, &format!("{what}: failed form login (a counter write)"));
        let logout = cgi_as_unprivileged(&site, "logout", &Req::json(&serde_json::json!({})).cookie(&cookie));
        assert_fault(&site, &logout, 503, true, &format!("{what}: logout (a delete)"));
        chmod(&dir, 0o755);
        // A read-only connection leaves -wal and -shm behind with the file's 0444.
        for file in [db.clone(), dir.join("sessions.db-wal"), dir.join("sessions.db-shm")] {
            if file.exists() {
                chmod(&file, 0o644);
            }
        }
    }
    // Writable again: the same store works, and the session survived.
    assert!(index_with(&site, &cookie).text().contains("John Smith"));
    assert_eq!(login_json(&site, "jane", "janepass").status, 200);
}

fn site_with_templates(files: &[(&str, &str)]) -> TestSite {
    let mut site = TestSite::new();
    let dir = site.dir.path().join("templates");
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    site.set("WEBAUTH_TEMPLATES", dir.to_str().unwrap());
    site
}

#[test]
fn a_broken_login_template_is_a_500_fallback_page() {
    let site = site_with_templates(&[("login.html", "{% if %}broken")]);
    let page = site.cgi("index", &Req::get());
    assert_fault(&site, &page, 500, false, "GET / with a broken login.html");
    assert!(page.stderr.contains("template error"), "{}", page.stderr);
    assert!(!page.text().contains("{%"), "no template source in the body");
    let form = site.cgi("login", &Req::form("username=john&password=wrong"));
    assert_fault(&site, &form, 500, false, "failed form login with a broken login.html");
    // JSON logins need no template.
    assert_eq!(login_json(&site, "john", "johnpass").status, 200);
}

#[test]
fn a_broken_user_template_is_a_500_fallback_page() {
    let site = site_with_templates(&[("user.html", "Hello {{ user.first | no_such_filter }}")]);
    let cookie = session_for(&site, "john", "johnpass");
    let page = index_with(&site, &cookie);
    assert_fault(&site, &page, 500, false, "GET / with a broken user.html");
    assert!(page.stderr.contains("template error"), "{}", page.stderr);
}

#[test]
fn a_broken_error_template_still_gives_the_status_with_a_plain_page() {
    let site = site_with_templates(&[("error.html", "{% if %}")]);
    let reply = site.cgi("login", &Req::new("POST").body("text/plain", b"x"));
    assert!(reply.status == 415 || reply.status == 500, "{}", reply.status);
    assert_fault(&site, &reply, reply.status, false, "415 with a broken error.html");
    assert!(reply.stderr.contains("template error"), "{}", reply.stderr);
}

#[test]
fn a_plaintext_password_in_the_users_file_is_500_naming_the_user() {
    let site = TestSite::new();
    let jane = webauth::users::hash_password("janepass").unwrap();
    let users = serde_json::json!({
        "jane": {"first": "Jane", "password": jane},
        "mallory": {"first": "M", "password": "hunter2"},
    });
    std::fs::write(&site.users, users.to_string()).unwrap();
    for (what, reply, json) in [
        ("JSON login", login_json(&site, "jane", "janepass"), true),
        ("form login", site.cgi("login", &Req::form("username=jane&password=janepass")), false),
    ] {
        assert_fault(&site, &reply, 500, json, what);
        assert!(reply.stderr.contains("\"mallory\""), "{what}: stderr names the user: {}", reply.stderr);
        assert!(!reply.stderr.contains("hunter2"), "{what}: stderr shows the password");
        assert!(!reply.text().contains("mallory"), "{what}: the body names no user");
    }
}

#[test]
fn an_unparsable_password_hash_is_500_naming_the_user() {
    let site = TestSite::new();
    std::fs::write(&site.users, r#"{"john": {"first": "John", "password": "$argon2id$garbage"}}"#).unwrap();
    let reply = login_json(&site, "john", "johnpass");
    assert_fault(&site, &reply, 500, true, "JSON login");
    assert!(reply.stderr.contains("\"john\""), "{}", reply.stderr);
}

#[test]
fn a_users_file_that_is_not_json_is_500() {
    let site = TestSite::new();
    std::fs::write(&site.users, "{\"john\": ").unwrap();
    let cookie_free = login_json(&site, "john", "johnpass");
    assert_fault(&site, &cookie_free, 500, true, "JSON login");
    assert!(cookie_free.stderr.contains("users file"), "{}", cookie_free.stderr);
}

#[test]
fn a_bad_configuration_value_is_500_naming_the_variable() {
    let site = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "soon")]);
    let page = site.cgi("index", &Req::get());
    assert_fault(&site, &page, 500, false, "GET / with WEBAUTH_IDLE_TIMEOUT=soon");
    assert!(page.stderr.contains("WEBAUTH_IDLE_TIMEOUT"), "{}", page.stderr);
}

#[test]
fn logins_beyond_the_verification_slots_wait_then_get_503() {
    let site = TestSite::with_env(&[("WEBAUTH_MAX_VERIFICATIONS", "1")]);
    // Hold the host's only slot, as a login in another process would.
    let slot = webauth::slots::acquire(site.dir.path(), 1).unwrap().expect("the only slot is free");
    let busy = login_json(&site, "john", "johnpass");
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("Retry-After"), Some("1"));
    assert!(busy.cookie().is_none());
    assert!(busy.stderr.contains("verification slots busy"), "{}", busy.stderr);
    drop(slot);
    assert_eq!(login_json(&site, "john", "johnpass").status, 200, "a freed slot lets logins through");
}
