//! A real browser (Debian's headless Chromium through chromium-driver)
//! against the nginx FastCGI deployment and the Apache shared-host folder:
//! with JavaScript on, a wrong password shows the message on the page, the
//! right one shows the user's page, and the logout button logs out; with
//! JavaScript off the plain form posts do the same. No console errors, so
//! the Content-Security-Policy blocks nothing the pages need. Screenshots of
//! the login page (empty and with an error) and of the user page are saved
//! under target/screenshots/ for a person to look at.

mod support;

use std::path::Path;

use support::web::{self, Processes};
use support::webdriver::{screenshot_path, Browser};
use support::{wait_until, STARTUP};

/// nginx's recipe in front of the three programs on `--listen` unix sockets.
fn nginx_site(dir: &Path) -> (Processes, u16) {
    let users = web::users_file(dir);
    let mut procs = Processes::new();
    web::listen_programs(&mut procs, dir, dir, &users);
    let port = web::free_port();
    let recipe = web::recipe("nginx/webauth.conf");
    let recipe = web::fill(&recipe, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let recipe = web::fill(&recipe, "unix:/run/webauth/", &format!("unix:{}/", dir.display()));
    web::start_nginx(&mut procs, dir, port, &web::nginx_conf(dir, &recipe));
    (procs, port)
}

/// The shared-host folder at /members/ under Apache's mod_cgi.
fn apache_site(dir: &Path) -> (Processes, u16) {
    web::open_to_web_server(dir);
    let www = dir.join("www");
    std::fs::create_dir(&www).expect("www");
    let folder = web::shared_host_bundle(&www, "/members/");
    web::give_to_web_server(&folder);
    let port = web::free_port();
    let body = format!(
        "DocumentRoot {www}\n<Directory {www}>\n  AllowOverride All\n  Require all granted\n</Directory>\n",
        www = www.display()
    );
    let mut procs = Processes::new();
    web::start_apache(&mut procs, dir, port, &web::apache_conf(dir, port, &["rewrite", "cgi"], &body));
    (procs, port)
}

/// Console errors other than the failed login itself: a wrong password gets
/// a 401 (the page's fetch with JavaScript, the form post without), which
/// Chromium logs as a failed load.
fn unexpected(errors: Vec<String>) -> Vec<String> {
    errors.into_iter().filter(|e| !(e.contains("login") && e.contains("status of 401"))).collect()
}

fn with_javascript(base: &str, name: &str) {
    let browser = Browser::start(true);
    browser.goto(base);
    browser.wait_for("the login page", |s| s.contains("id=\"login-form\""));
    browser.screenshot(&screenshot_path(&format!("{name}-login-empty")));

    browser.type_into("#username", "john");
    browser.type_into("#password", "wrong password");
    browser.click("#login-form button[type=submit]");
    wait_until("the message on the page", STARTUP, || {
        (browser.text("#message") == "Invalid username or password.").then_some(())
    });
    assert!(browser.url().starts_with(base), "the page stayed: {}", browser.url());
    assert!(!browser.find("#password").is_empty());
    browser.screenshot(&screenshot_path(&format!("{name}-login-error")));

    browser.type_into("#password", "johnpass");
    browser.click("#login-form button[type=submit]");
    browser.wait_for("the user's page", |s| s.contains("John Smith"));
    browser.screenshot(&screenshot_path(&format!("{name}-user-page")));

    browser.click("form[action$=\"logout\"] button");
    browser.wait_for("the login page after logout", |s| s.contains("id=\"login-form\""));
    browser.goto(base);
    let page = browser.wait_for("the login page again", |s| s.contains("id=\"login-form\""));
    assert!(!page.contains("John Smith"), "still logged in after logout");
    assert_eq!(unexpected(browser.console_errors()), Vec::<String>::new(), "{name}: console errors");
}

fn without_javascript(base: &str, name: &str) {
    let browser = Browser::start(false);
    browser.goto(base);
    browser.wait_for("the login page", |s| s.contains("id=\"login-form\""));
    browser.type_into("#username", "john");
    browser.type_into("#password", "wrong password");
    browser.click("#login-form button[type=submit]");
    let page =
        browser.wait_for("the page re-rendered with the message", |s| s.contains("Invalid username or password."));
    assert!(page.contains("value=\"john\""), "the username is kept");
    browser.type_into("#password", "johnpass");
    browser.click("#login-form button[type=submit]");
    browser.wait_for("the user's page", |s| s.contains("John Smith"));
    browser.click("form[action$=\"logout\"] button");
    browser.wait_for("the login page after logout", |s| s.contains("id=\"login-form\""));
    browser.goto(base);
    let page = browser.wait_for("the login page again", |s| s.contains("id=\"login-form\""));
    assert!(!page.contains("John Smith"), "still logged in after logout");
    assert_eq!(unexpected(browser.console_errors()), Vec::<String>::new(), "{name} without JavaScript: console errors");
}

/// john gets TOTP (the test secret) with the real admin command.
fn enrol_john(dir: &Path) -> support::totp::Enrolled {
    let secret = webauth::totp::Secret::from_base32(support::totp::SECRET).expect("the test secret");
    let users = dir.join("users.json");
    let store = std::path::PathBuf::from(format!("sqlite:{}", dir.join("sessions.db").display()));
    let stdin = format!("{}\n{}\n", support::totp::SECRET, support::totp::enrolment_code(&secret));
    let out = web::admin(
        &["user", "totp", "enable", "john", "--secret-stdin"],
        &[("WEBAUTH_USERS", &users), ("WEBAUTH_STORE", &store)],
        &stdin,
    );
    support::totp::Enrolled { secret, recovery: support::totp::recovery_codes(&out) }
}

/// The two-step login with the page's script: a wrong code shows the
/// message on the code page, the right one the user's page.
fn second_factor_with_javascript(base: &str, john: &support::totp::Enrolled) {
    let browser = Browser::start(true);
    browser.goto(base);
    browser.wait_for("the login page", |s| s.contains("id=\"login-form\""));
    browser.type_into("#username", "john");
    browser.type_into("#password", "johnpass");
    browser.click("#login-form button[type=submit]");
    browser.wait_for("the code page", |s| s.contains("id=\"code-form\""));
    assert!(browser.url().ends_with("/login?step=code"), "{}", browser.url());
    browser.screenshot(&screenshot_path("totp-code-page"));

    browser.type_into("#code", &john.wrong_code());
    browser.click("#code-form button[type=submit]");
    wait_until("the message on the code page", STARTUP, || (browser.text("#message") == "Invalid code.").then_some(()));
    browser.screenshot(&screenshot_path("totp-code-page-error"));
    browser.type_into("#code", &john.code());
    browser.click("#code-form button[type=submit]");
    let page = browser.wait_for("the user's page", |s| s.contains("John Smith"));
    assert!(page.contains("Two-step sign-in is on: 10 recovery codes left."), "{page}");
    browser.screenshot(&screenshot_path("totp-user-page"));
    assert_eq!(unexpected(browser.console_errors()), Vec::<String>::new(), "console errors");
}

/// The same without JavaScript, through the recovery-code link.
fn second_factor_without_javascript(base: &str, john: &support::totp::Enrolled) {
    let browser = Browser::start(false);
    browser.goto(base);
    browser.wait_for("the login page", |s| s.contains("id=\"login-form\""));
    browser.type_into("#username", "john");
    browser.type_into("#password", "johnpass");
    browser.click("#login-form button[type=submit]");
    browser.wait_for("the code page", |s| s.contains("id=\"code-form\""));
    browser.click("#use-recovery");
    browser.wait_for("the recovery code page", |s| s.contains("Recovery code"));
    browser.screenshot(&screenshot_path("totp-recovery-page"));
    browser.type_into("#code", &john.recovery[0]);
    browser.click("#code-form button[type=submit]");
    let page = browser.wait_for("the user's page", |s| s.contains("John Smith"));
    assert!(page.contains("9 recovery codes left"), "{page}");
    assert_eq!(unexpected(browser.console_errors()), Vec::<String>::new(), "console errors without JavaScript");
}

#[test]
fn a_browser_signs_in_with_a_second_factor_through_nginx_with_and_without_javascript() {
    let dir = support::temp_dir();
    let (_procs, port) = nginx_site(dir.path());
    let john = enrol_john(dir.path());
    let base = format!("http://127.0.0.1:{port}/");
    second_factor_with_javascript(&base, &john);
    second_factor_without_javascript(&base, &john);
}

#[test]
fn a_browser_logs_in_and_out_through_nginx_with_and_without_javascript() {
    let dir = support::temp_dir();
    let (_procs, port) = nginx_site(dir.path());
    let base = format!("http://127.0.0.1:{port}/");
    with_javascript(&base, "nginx");
    without_javascript(&base, "nginx");
}

#[test]
fn a_browser_logs_in_and_out_of_the_apache_shared_host_folder_with_and_without_javascript() {
    let dir = support::temp_dir();
    let (_procs, port) = apache_site(dir.path());
    let base = format!("http://127.0.0.1:{port}/members/");
    with_javascript(&base, "apache");
    without_javascript(&base, "apache");
}
