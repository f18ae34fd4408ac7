//! Cross-origin protection of the unsafe routes (login and logout POST), as a
//! browser and the web servers really send the headers: `Sec-Fetch-Site`,
//! `Origin`, and `HTTP_HOST` with or without the port (SPEC.md, "Errors that
//! every route shares" and "What the web servers really pass"). The table
//! runs in process; one test runs its refusals through the CGI program to
//! read stderr.

mod support;

use support::{Req, ResponseExt, TestSite};
use webauth::Response;

struct Case {
    name: &'static str,
    /// CGI variables of the request (over `HTTP_HOST=localhost`, `SERVER_PORT=80`).
    vars: &'static [(&'static str, &'static str)],
    allowed: bool,
}

const fn case(name: &'static str, vars: &'static [(&'static str, &'static str)], allowed: bool) -> Case {
    Case { name, vars, allowed }
}

const CASES: &[Case] = &[
    case(
        "Sec-Fetch-Site same-origin",
        &[("HTTP_SEC_FETCH_SITE", "same-origin"), ("HTTP_ORIGIN", "http://localhost")],
        true,
    ),
    case("Sec-Fetch-Site none (typed or bookmarked)", &[("HTTP_SEC_FETCH_SITE", "none")], true),
    case(
        "Sec-Fetch-Site same-site (a sibling subdomain)",
        &[("HTTP_SEC_FETCH_SITE", "same-site"), ("HTTP_ORIGIN", "http://sub.localhost")],
        false,
    ),
    case(
        "Sec-Fetch-Site cross-site",
        &[("HTTP_SEC_FETCH_SITE", "cross-site"), ("HTTP_ORIGIN", "http://evil.test")],
        false,
    ),
    case("Sec-Fetch-Site cross-site without Origin", &[("HTTP_SEC_FETCH_SITE", "cross-site")], false),
    case("no Sec-Fetch-Site, Origin null (sandboxed frame, data: URL)", &[("HTTP_ORIGIN", "null")], false),
    case("no Sec-Fetch-Site, Origin of another host", &[("HTTP_ORIGIN", "http://evil.test")], false),
    case(
        "no Sec-Fetch-Site, Origin of another host that starts like ours",
        &[("HTTP_ORIGIN", "http://localhost.evil.test")],
        false,
    ),
    case("no Sec-Fetch-Site, Origin on another port of our host", &[("HTTP_ORIGIN", "http://localhost:8081")], false),
    case("no headers at all (not a browser)", &[], true),
    case("no Sec-Fetch-Site, Origin equal to the host", &[("HTTP_ORIGIN", "http://localhost")], true),
    case(
        "Debian nginx: HTTP_HOST without port, SERVER_PORT 8080, Origin :8080",
        &[("HTTP_HOST", "localhost"), ("SERVER_PORT", "8080"), ("HTTP_ORIGIN", "http://localhost:8080")],
        true,
    ),
    case(
        "Debian nginx: HTTP_HOST without port, SERVER_PORT 8080, Origin :9090",
        &[("HTTP_HOST", "localhost"), ("SERVER_PORT", "8080"), ("HTTP_ORIGIN", "http://localhost:9090")],
        false,
    ),
    case(
        "HTTP_HOST with the port, Origin with the same port",
        &[("HTTP_HOST", "localhost:8080"), ("SERVER_PORT", "8080"), ("HTTP_ORIGIN", "http://localhost:8080")],
        true,
    ),
    case(
        "HTTPS on 443, Origin https://localhost",
        &[("HTTPS", "on"), ("SERVER_PORT", "443"), ("HTTP_ORIGIN", "https://localhost")],
        true,
    ),
    case(
        "WEBAUTH_TRUSTED_ORIGINS admits a cross-site request from that origin",
        &[
            ("WEBAUTH_TRUSTED_ORIGINS", "https://app.example"),
            ("HTTP_SEC_FETCH_SITE", "cross-site"),
            ("HTTP_ORIGIN", "https://app.example"),
        ],
        true,
    ),
    case(
        "WEBAUTH_TRUSTED_ORIGINS does not admit another origin",
        &[
            ("WEBAUTH_TRUSTED_ORIGINS", "https://app.example"),
            ("HTTP_SEC_FETCH_SITE", "cross-site"),
            ("HTTP_ORIGIN", "https://evil.example"),
        ],
        false,
    ),
];

fn with_vars(mut req: Req, vars: &[(&str, &str)]) -> Req {
    for (k, v) in vars {
        req = req.var(k, v);
    }
    req
}

fn login_req() -> Req {
    Req::login("john", "johnpass")
}

/// What is wrong with a refusal: it must be a JSON 403 (for a JSON request) and set no cookie.
fn refusal_problems(reply: &Response, json: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if reply.status != 403 {
        problems.push(format!("status {} (want 403)", reply.status));
    }
    if !reply.headers_named("Set-Cookie").is_empty() {
        problems.push(format!("Set-Cookie on a refusal: {:?}", reply.headers_named("Set-Cookie")));
    }
    let content_type = reply.header("Content-Type").unwrap_or("");
    if json {
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        if content_type != "application/json" || body["success"] != false || !body["message"].is_string() {
            problems.push(format!("not a JSON error: {content_type} {}", reply.text()));
        }
    } else if content_type != "text/html; charset=utf-8" {
        problems.push(format!("not an HTML page: {content_type}"));
    }
    problems
}

#[test]
fn login_is_allowed_or_refused_by_origin() {
    let site = TestSite::new();
    let mut failures = Vec::new();
    for c in CASES {
        let reply = site.call("login", &with_vars(login_req(), c.vars));
        let problems = if c.allowed {
            let mut p = Vec::new();
            if reply.status != 200 {
                p.push(format!("status {} (want 200): {}", reply.status, reply.text()));
            }
            if reply.cookie().is_none() {
                p.push("no session cookie".into());
            }
            p
        } else {
            refusal_problems(&reply, true)
        };
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn logout_is_allowed_or_refused_by_origin() {
    let site = TestSite::new();
    let mut failures = Vec::new();
    for c in CASES {
        let cookie = site.session_for("jane", "janepass");
        let reply = site.call("logout", &with_vars(Req::json(&serde_json::json!({})).cookie(&cookie), c.vars));
        let alive = site.index_with(&cookie).text().contains("Jane Doe");
        let mut problems = Vec::new();
        if c.allowed {
            if reply.status != 200 {
                problems.push(format!("status {} (want 200)", reply.status));
            }
            if alive {
                problems.push("the session survived an allowed logout".into());
            }
        } else {
            problems = refusal_problems(&reply, true);
            if !alive {
                problems.push("a refused logout ended the session".into());
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_refused_form_login_gets_an_html_403() {
    let site = TestSite::new();
    let reply = site.call(
        "login",
        &Req::form("username=john&password=johnpass")
            .var("HTTP_SEC_FETCH_SITE", "cross-site")
            .var("HTTP_ORIGIN", "http://evil.test"),
    );
    let problems = refusal_problems(&reply, false);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(reply.header("Location").is_none());
}

#[test]
fn a_refused_cross_site_login_with_a_session_cookie_does_not_touch_it() {
    // A cross-site POST carrying the victim's cookie (SameSite=Lax keeps it off
    // real cross-site POSTs, but older browsers sent it): the session lives on.
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    let reply = site.call(
        "login",
        &Req::login("jane", "janepass")
            .cookie(&cookie)
            .var("HTTP_SEC_FETCH_SITE", "cross-site")
            .var("HTTP_ORIGIN", "http://evil.test"),
    );
    assert_eq!(reply.status, 403);
    assert!(site.index_with(&cookie).text().contains("John Smith"));
}

#[test]
fn cross_site_get_still_shows_the_page() {
    // GET is safe: a link from another site to the login page must work.
    let site = TestSite::new();
    let reply =
        site.call("index", &Req::get().var("HTTP_SEC_FETCH_SITE", "cross-site").var("HTTP_ORIGIN", "http://evil.test"));
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("name=\"password\""));
}

#[test]
fn a_refused_login_through_cgi_writes_no_login_success() {
    // The audit side of the table above: stderr needs the real program.
    let site = TestSite::new();
    let mut failures = Vec::new();
    for c in CASES.iter().filter(|c| !c.allowed) {
        let reply = site.cgi("login", &with_vars(login_req(), c.vars));
        let mut problems = refusal_problems(&reply, true);
        if reply.stderr.contains("login success") {
            problems.push("a refused request logged in".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
