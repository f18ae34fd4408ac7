//! The routes in process (SPEC.md, "Routes", "Session cookie"): the login
//! flow, sessions and mounting, each case a request to a [`TestSite`] and
//! the `Response` its handler returns. What needs the real programs (HEAD
//! through the CGI writer, stderr, usage) is in cgi.rs.

mod support;

use support::{Req, ResponseExt, TestSite};

const INVALID: &str = "Invalid username or password.";

#[test]
fn anonymous_get_shows_the_login_page() {
    let site = TestSite::new();
    let reply = site.get("index");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("text/html; charset=utf-8"));
    let page = reply.html();
    assert!(page.contains("<form") && page.contains("action=\"/login\""), "{page}");
    assert!(page.contains("name=\"password\""));
    assert!(reply.headers_named("Set-Cookie").is_empty(), "no cookie without a session");
}

#[test]
fn cookie_is_secure_over_https() {
    let site = TestSite::new();
    let reply = site.call("login", &Req::login("john", "johnpass").var("HTTPS", "on"));
    assert_eq!(reply.status, 200);
    assert!(reply.header("Set-Cookie").unwrap().contains("Secure"));
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_401() {
    let site = TestSite::new();
    let wrong = site.login_json("john", "nope");
    let unknown = site.login_json("nosuchuser", "johnpass");
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
        let reply = site.post_json("login", body.clone());
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
    let reply = site.post_form("login", "username=john&password=johnpass");
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("Location"), Some("/"));
    assert!(reply.cookie().is_some());
}

#[test]
fn form_login_goes_to_a_safe_next() {
    let site = TestSite::new();
    let reply = site.post_form("login", "username=john&password=johnpass&next=%2Fprivate%2Fa.html");
    assert_eq!(reply.header("Location"), Some("/private/a.html"));
    let evil = site.post_form("login", "username=john&password=johnpass&next=%2F%2Fevil.test%2F");
    assert_eq!(evil.header("Location"), Some("/"));
}

#[test]
fn failed_form_login_shows_the_page_with_the_username_escaped() {
    let site = TestSite::new();
    let reply = site.post_form("login", "username=%3Cscript%3Ealert(1)%3C%2Fscript%3E&password=hunter2");
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
    let cookie = site.session_for("john", "johnpass");
    let reply = site.index_with(&cookie);
    assert_eq!(reply.status, 200);
    let page = reply.html();
    assert!(page.contains("John Smith"), "{page}");
    assert!(page.contains("action=\"/logout\""), "a logout form: {page}");
    assert!(!page.contains("$argon2id$"), "the hash never leaves the users module");
}

#[test]
fn json_logout_and_logout_without_a_session_are_idempotent() {
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    for _ in 0..2 {
        let reply = site.call("logout", &Req::json(&serde_json::json!({})).cookie(&cookie));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), serde_json::json!({"success": true}));
    }
    let none = site.post_json("logout", serde_json::json!({}));
    assert_eq!(none.status, 200);
}

#[test]
fn forged_tutorial_cookie_does_not_log_in() {
    let site = TestSite::new();
    let reply = site.index_with("webauth=Session::john");
    assert!(!reply.text().contains("John Smith"));
    assert!(reply.text().contains("name=\"password\""));
    assert!(reply.expires_cookie());
    let tutorial = site.index_with("SID=Session::john");
    assert!(!tutorial.text().contains("John Smith"));
}

#[test]
fn a_well_formed_but_unknown_token_does_not_log_in() {
    let site = TestSite::new();
    let reply = site.index_with(&format!("webauth={}", "A".repeat(43)));
    assert!(!reply.text().contains("John Smith"));
    assert!(reply.expires_cookie());
}

#[test]
fn idle_session_expires() {
    let site = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "2")]);
    let cookie = site.session_for("john", "johnpass");
    assert!(site.index_with(&cookie).text().contains("John Smith"));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let reply = site.index_with(&cookie);
    assert!(!reply.text().contains("John Smith"), "idle session must end");
    assert!(reply.expires_cookie());
}

#[test]
fn idle_timeout_slides_while_the_session_is_used() {
    // Idle 4 s: requests every 1.5 s for 7 s keep it alive past the idle time.
    let site = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "4")]);
    let cookie = site.session_for("john", "johnpass");
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(site.index_with(&cookie).text().contains("John Smith"), "a session in use stays alive");
    }
}

#[test]
fn absolute_lifetime_ends_a_busy_session() {
    let site = TestSite::with_env(&[("WEBAUTH_ABSOLUTE_TIMEOUT", "3")]);
    let cookie = site.session_for("john", "johnpass");
    for _ in 0..2 {
        assert!(site.index_with(&cookie).text().contains("John Smith"));
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!site.index_with(&cookie).text().contains("John Smith"));
}

#[test]
fn every_login_issues_a_new_token_and_ends_the_old_one() {
    let site = TestSite::new();
    let first = site.session_for("john", "johnpass");
    let reply = site.call("login", &Req::login("john", "johnpass").cookie(&first));
    let second = reply.cookie().unwrap();
    assert_ne!(first, second);
    assert!(!site.index_with(&first).text().contains("John Smith"), "the old session is replaced");
    assert!(site.index_with(&second).text().contains("John Smith"));
}

#[test]
fn get_login_renders_the_page_keeping_a_safe_next() {
    let site = TestSite::new();
    let reply = site.call("login", &Req::get().with_query("next=%2Fprivate%2Fx.html"));
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("value=\"&#x2F;private&#x2F;x.html\""), "{}", reply.text());
    let evil = site.call("login", &Req::get().with_query("next=https%3A%2F%2Fevil.test"));
    assert!(!evil.text().contains("evil.test"));
}

#[test]
fn other_methods_get_405_with_allow() {
    let site = TestSite::new();
    for (route, method, allow) in [
        ("index", "POST", "GET, HEAD"),
        ("index", "DELETE", "GET, HEAD"),
        ("logout", "GET", "POST"),
        ("login", "PUT", "GET, HEAD, POST"),
    ] {
        let reply = site.call(route, &Req::new(method));
        assert_eq!(reply.status, 405, "{route} {method}");
        assert_eq!(reply.header("Allow"), Some(allow), "{route} {method}");
    }
}

#[test]
fn mounted_under_a_prefix_links_and_cookie_follow() {
    let site = TestSite::new();
    let reply = site.call("login", &Req::login("john", "johnpass").script("/members/login"));
    assert_eq!(reply.json()["redirect"], "/members/");
    assert!(reply.header("Set-Cookie").unwrap().contains("Path=/members/"));
    let text = site.call("index", &Req::get().script("/members/")).html();
    assert!(text.contains("action=\"/members/login\""), "{text}");
}

#[test]
fn templates_from_a_directory_change_without_a_rebuild() {
    let mut site = TestSite::new();
    let dir = site.dir.path().join("templates");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("user.html"), "Howdy {{ user.first }} from a custom page").unwrap();
    site.set("WEBAUTH_TEMPLATES", dir.to_str().unwrap());
    let cookie = site.session_for("john", "johnpass");
    assert_eq!(site.index_with(&cookie).text(), "Howdy John from a custom page");
    // Pages not in the directory fall back to the built-in ones.
    assert!(site.get("index").text().contains("name=\"password\""));
}

// ---- Remember me ----

fn remembered_login(site: &TestSite, remember: bool) -> webauth::Response {
    site.post_json("login", serde_json::json!({"username": "john", "password": "johnpass", "remember": remember}))
}

#[test]
fn the_remember_me_checkbox_shows_unless_turned_off() {
    assert!(TestSite::new().get("index").text().contains("name=\"remember\""));
    assert!(!TestSite::with_env(&[("WEBAUTH_REMEMBER", "0")]).get("index").text().contains("name=\"remember\""));
}

#[test]
fn remember_me_gives_a_persistent_cookie_and_outlives_the_absolute_lifetime() {
    let site = TestSite::with_env(&[("WEBAUTH_ABSOLUTE_TIMEOUT", "2"), ("WEBAUTH_REMEMBER", "1d")]);
    let kept = remembered_login(&site, true);
    assert_eq!(kept.status, 200);
    let set = kept.header("Set-Cookie").expect("a cookie").to_string();
    assert!(set.contains("Max-Age=86400"), "{set}");
    let plain = remembered_login(&site, false);
    assert!(!plain.header("Set-Cookie").expect("a cookie").contains("Max-Age"), "a session cookie without it");
    let (kept, plain) = (kept.cookie().unwrap(), plain.cookie().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(site.index_with(&kept).text().contains("John Smith"), "the remembered session lives on");
    assert!(!site.index_with(&plain).text().contains("John Smith"), "the plain one ended after 2 s");
}

#[test]
fn a_form_login_with_the_box_checked_is_remembered() {
    let site = TestSite::new();
    let reply = site.post_form("login", "username=john&password=johnpass&remember=on");
    assert_eq!(reply.status, 303);
    assert!(reply.header("Set-Cookie").is_some_and(|c| c.contains("Max-Age=2592000")), "{:?}", reply.headers);
}

#[test]
fn a_remembered_session_still_idles_out_and_can_be_revoked() {
    let site = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "2")]);
    let idle = remembered_login(&site, true).cookie().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert!(!site.index_with(&idle).text().contains("John Smith"), "the idle timeout still applies");
    let longer = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "2"), ("WEBAUTH_REMEMBER_IDLE_TIMEOUT", "1h")]);
    let kept = remembered_login(&longer, true).cookie().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert!(longer.index_with(&kept).text().contains("John Smith"), "a longer idle timeout for remembered sessions");
    let out = longer.admin(&["session", "revoke", "john"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!longer.index_with(&kept).text().contains("John Smith"), "revoked on the server");
}
