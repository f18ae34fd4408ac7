//! The login flow through the real `index`, `login` and `logout` binaries run
//! as CGI scripts (environment and stdin in, `Status:` and headers out).

mod support;

use support::{CgiReply, Req, ResponseExt, TestSite};

fn login_json(site: &TestSite, username: &str, password: &str) -> CgiReply {
    site.cgi("login", &Req::login(username, password))
}

/// Logs in through the CGI program; the `name=value` cookie pair.
fn session_for(site: &TestSite, username: &str, password: &str) -> String {
    let reply = login_json(site, username, password);
    assert_eq!(reply.status, 200, "login as {username} failed: {}", reply.text());
    reply.cookie().expect("a session cookie")
}

fn index_with(site: &TestSite, cookie: &str) -> CgiReply {
    site.cgi("index", &Req::get().cookie(cookie))
}

const INVALID: &str = "Invalid username or password.";

#[test]
fn anonymous_get_shows_the_login_page() {
    let site = TestSite::new();
    let reply = site.cgi("index", &Req::get());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("text/html; charset=utf-8"));
    let page = reply.html();
    assert!(page.contains("<form") && page.contains("action=\"/login\""), "{page}");
    assert!(page.contains("name=\"password\""));
    assert!(reply.headers_named("Set-Cookie").is_empty(), "no cookie without a session");
}

#[test]
fn head_on_index_has_headers_and_no_body() {
    let site = TestSite::new();
    let reply = site.cgi("index", &Req::new("HEAD"));
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert!(reply.header("Content-Length").unwrap().parse::<usize>().unwrap() > 100);
}

#[test]
fn json_login_sets_a_session_cookie_with_its_attributes() {
    let site = TestSite::new();
    let reply = login_json(&site, "john", "johnpass");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"success": true, "redirect": "/"}));
    let set = reply.headers_named("Set-Cookie");
    assert_eq!(set.len(), 1);
    let cookie = set[0];
    assert!(cookie.starts_with("webauth="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP gets no Secure flag: {cookie}");
    let token = cookie.split(';').next().unwrap().trim_start_matches("webauth=");
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "base64url: {token}");
    assert!(reply.stderr.contains("login success"), "audit line: {}", reply.stderr);
}

#[test]
fn cookie_is_secure_over_https() {
    let site = TestSite::new();
    let reply = site
        .cgi("login", &Req::json(&serde_json::json!({"username": "john", "password": "johnpass"})).var("HTTPS", "on"));
    assert_eq!(reply.status, 200);
    assert!(reply.header("Set-Cookie").unwrap().contains("Secure"));
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_401() {
    let site = TestSite::new();
    let wrong = login_json(&site, "john", "nope");
    let unknown = login_json(&site, "nosuchuser", "johnpass");
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json(), serde_json::json!({"success": false, "message": INVALID}));
        assert!(reply.headers_named("Set-Cookie").is_empty());
    }
    assert_eq!(wrong.body, unknown.body);
}

#[test]
fn missing_field_is_400() {
    let site = TestSite::new();
    for body in [
        serde_json::json!({"username": "john"}),
        serde_json::json!({"password": "johnpass"}),
        serde_json::json!({"username": "", "password": ""}),
        serde_json::json!({}),
    ] {
        let reply = site.cgi("login", &Req::json(&body));
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(
            reply.json(),
            serde_json::json!({"success": false, "message": "Must provide username and password."})
        );
    }
}

#[test]
fn form_login_redirects_with_a_cookie() {
    let site = TestSite::new();
    let reply = site.cgi("login", &Req::form("username=john&password=johnpass"));
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("Location"), Some("/"));
    assert!(reply.cookie().is_some());
}

#[test]
fn form_login_goes_to_a_safe_next() {
    let site = TestSite::new();
    let reply = site.cgi("login", &Req::form("username=john&password=johnpass&next=%2Fprivate%2Fa.html"));
    assert_eq!(reply.header("Location"), Some("/private/a.html"));
    let evil = site.cgi("login", &Req::form("username=john&password=johnpass&next=%2F%2Fevil.test%2F"));
    assert_eq!(evil.header("Location"), Some("/"));
}

#[test]
fn failed_form_login_shows_the_page_with_the_username_escaped() {
    let site = TestSite::new();
    let reply = site.cgi("login", &Req::form("username=%3Cscript%3Ealert(1)%3C%2Fscript%3E&password=hunter2"));
    assert_eq!(reply.status, 401);
    let page = reply.text();
    assert!(page.contains(INVALID), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"), "{page}");
    assert!(!page.contains("<script>alert(1)"));
    assert!(!page.contains("hunter2"), "the password is never shown");
}

#[test]
fn the_cookie_shows_the_users_page() {
    let site = TestSite::new();
    let cookie = session_for(&site, "john", "johnpass");
    let reply = index_with(&site, &cookie);
    assert_eq!(reply.status, 200);
    let page = reply.html();
    assert!(page.contains("John Smith"), "{page}");
    assert!(page.contains("action=\"/logout\""), "a logout form: {page}");
    assert!(!page.contains("$argon2id$"), "the hash never leaves the users module");
}

#[test]
fn logout_ends_the_session_for_a_saved_copy_of_the_cookie() {
    let site = TestSite::new();
    let cookie = session_for(&site, "jane", "janepass");
    assert!(index_with(&site, &cookie).text().contains("Jane Doe"));
    let out = site.cgi("logout", &Req::form("").cookie(&cookie));
    assert_eq!(out.status, 303);
    assert_eq!(out.header("Location"), Some("/"));
    assert!(out.expires_cookie());
    assert!(out.stderr.contains("logout success"), "{}", out.stderr);
    let after = index_with(&site, &cookie);
    assert_eq!(after.status, 200);
    assert!(after.text().contains("name=\"password\""), "login page again");
    assert!(!after.text().contains("Jane Doe"));
    assert!(after.expires_cookie(), "a cookie naming no session is expired");
}

#[test]
fn json_logout_and_logout_without_a_session_are_idempotent() {
    let site = TestSite::new();
    let cookie = session_for(&site, "john", "johnpass");
    for _ in 0..2 {
        let reply = site.cgi("logout", &Req::json(&serde_json::json!({})).cookie(&cookie));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), serde_json::json!({"success": true}));
    }
    let none = site.cgi("logout", &Req::json(&serde_json::json!({})));
    assert_eq!(none.status, 200);
}

#[test]
fn forged_tutorial_cookie_does_not_log_in() {
    let site = TestSite::new();
    let reply = index_with(&site, "webauth=Session::john");
    assert!(!reply.text().contains("John Smith"));
    assert!(reply.text().contains("name=\"password\""));
    assert!(reply.expires_cookie());
    let tutorial = index_with(&site, "SID=Session::john");
    assert!(!tutorial.text().contains("John Smith"));
}

#[test]
fn a_well_formed_but_unknown_token_does_not_log_in() {
    let site = TestSite::new();
    let reply = index_with(&site, &format!("webauth={}", "A".repeat(43)));
    assert!(!reply.text().contains("John Smith"));
    assert!(reply.expires_cookie());
}

#[test]
fn idle_session_expires() {
    let site = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "2")]);
    let cookie = session_for(&site, "john", "johnpass");
    assert!(index_with(&site, &cookie).text().contains("John Smith"));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let reply = index_with(&site, &cookie);
    assert!(!reply.text().contains("John Smith"), "idle session must end");
    assert!(reply.expires_cookie());
}

#[test]
fn idle_timeout_slides_while_the_session_is_used() {
    // Idle 4 s: requests every 1.5 s for 7 s keep it alive past the idle time.
    let site = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "4")]);
    let cookie = session_for(&site, "john", "johnpass");
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(index_with(&site, &cookie).text().contains("John Smith"), "a session in use stays alive");
    }
}

#[test]
fn absolute_lifetime_ends_a_busy_session() {
    let site = TestSite::with_env(&[("WEBAUTH_ABSOLUTE_TIMEOUT", "3")]);
    let cookie = session_for(&site, "john", "johnpass");
    for _ in 0..2 {
        assert!(index_with(&site, &cookie).text().contains("John Smith"));
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!index_with(&site, &cookie).text().contains("John Smith"));
}

#[test]
fn every_login_issues_a_new_token_and_ends_the_old_one() {
    let site = TestSite::new();
    let first = session_for(&site, "john", "johnpass");
    let reply =
        site.cgi("login", &Req::json(&serde_json::json!({"username": "john", "password": "johnpass"})).cookie(&first));
    let second = reply.cookie().unwrap();
    assert_ne!(first, second);
    assert!(!index_with(&site, &first).text().contains("John Smith"), "the old session is replaced");
    assert!(index_with(&site, &second).text().contains("John Smith"));
}

#[test]
fn get_login_renders_the_page_keeping_a_safe_next() {
    let site = TestSite::new();
    let reply = site.cgi("login", &Req::get().with_query("next=%2Fprivate%2Fx.html"));
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("value=\"&#x2F;private&#x2F;x.html\""), "{}", reply.text());
    let evil = site.cgi("login", &Req::get().with_query("next=https%3A%2F%2Fevil.test"));
    assert!(!evil.text().contains("evil.test"));
}

#[test]
fn other_methods_get_405_with_allow() {
    let site = TestSite::new();
    for (program, method, allow) in [
        ("index", "POST", "GET, HEAD"),
        ("index", "DELETE", "GET, HEAD"),
        ("logout", "GET", "POST"),
        ("login", "PUT", "GET, HEAD, POST"),
    ] {
        let reply = site.cgi(program, &Req::new(method));
        assert_eq!(reply.status, 405, "{program} {method}");
        assert_eq!(reply.header("Allow"), Some(allow), "{program} {method}");
    }
}

#[test]
fn mounted_under_a_prefix_links_and_cookie_follow() {
    let site = TestSite::new();
    let reply = site.cgi("login", &Req::login("john", "johnpass").script("/members/login"));
    assert_eq!(reply.json()["redirect"], "/members/");
    assert!(reply.header("Set-Cookie").unwrap().contains("Path=/members/"));
    let text = site.cgi("index", &Req::get().script("/members/")).html();
    assert!(text.contains("action=\"/members/login\""), "{text}");
}

#[test]
fn plaintext_password_in_the_users_file_logs_nobody_in() {
    let site = TestSite::new();
    std::fs::write(&site.users, r#"{"john": {"first": "John", "last": "Smith", "password": "johnpass"}}"#).unwrap();
    let reply = login_json(&site, "john", "johnpass");
    assert_eq!(reply.status, 500);
    assert!(reply.cookie().is_none());
    assert!(reply.stderr.contains("\"john\"") && reply.stderr.contains("plaintext"), "{}", reply.stderr);
    assert!(!reply.text().contains("plaintext"), "the cause goes to stderr only");
}

#[test]
fn a_missing_users_file_logs_nobody_in() {
    let site = TestSite::new();
    std::fs::remove_file(&site.users).unwrap();
    let reply = login_json(&site, "john", "johnpass");
    assert_eq!(reply.status, 500);
    assert!(reply.stderr.contains("not found"), "{}", reply.stderr);
}

#[test]
fn templates_from_a_directory_change_without_a_rebuild() {
    let mut site = TestSite::new();
    let dir = site.dir.path().join("templates");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("user.html"), "Howdy {{ user.first }} from a custom page").unwrap();
    site.set("WEBAUTH_TEMPLATES", dir.to_str().unwrap());
    let cookie = session_for(&site, "john", "johnpass");
    assert_eq!(index_with(&site, &cookie).text(), "Howdy John from a custom page");
    // Pages not in the directory fall back to the built-in ones.
    assert!(site.cgi("index", &Req::get()).text().contains("name=\"password\""));
}

#[test]
fn no_cgi_environment_prints_usage() {
    let out = std::process::Command::new(support::bin("index")).env_clear().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
