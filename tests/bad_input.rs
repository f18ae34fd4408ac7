//! Hostile and broken input to the routes, in process: every row of the
//! table gets its exact status, and every answer keeps the shared promises of
//! SPEC.md ("Errors that every route shares"): no stack trace, no unescaped
//! echo of the input, JSON errors for JSON requests and a page for browsers,
//! no CORS headers. Then the security headers of the pages. (The drain of an
//! over-large body before the 413 needs the real program: cgi.rs.)

mod support;

use support::{leaked_internals, Req, ResponseExt, TestSite};
use webauth::Response;

/// Sent wherever a request can carry it; must never come back raw.
const MARKER: &str = "<script>alert(1)</script>";
/// What a raw echo of [`MARKER`] would contain (the pages' own scripts carry a nonce).
const RAW: &str = "<script>alert(1)";

/// What a row's answer must be besides its status.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An error: `{"success": false, "message": ...}` for a JSON request, an
    /// HTML page otherwise; no session cookie.
    Error,
    /// The login page (no session, not John's page), no session cookie.
    LoginPage,
    /// A redirect to exactly this target, with a session cookie.
    Location(&'static str),
}

struct Row {
    name: &'static str,
    route: &'static str,
    req: Req,
    status: u16,
    expect: Expect,
}

fn row(name: &'static str, route: &'static str, req: Req, status: u16, expect: Expect) -> Row {
    Row { name, route, req, status, expect }
}

fn json_body(text: &str) -> Req {
    Req::new("POST").body("application/json", text.as_bytes())
}

/// A JSON login body of exactly `len` bytes that carries the marker.
fn json_of_length(len: usize) -> Vec<u8> {
    let head = format!("{{\"username\":\"{}\",\"password\":\"", MARKER.replace('/', "\\/"));
    let tail = "\"}";
    let mut body = head.into_bytes();
    body.resize(len - tail.len(), b'a');
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), len);
    body
}

fn form_of_length(len: usize) -> Vec<u8> {
    let mut body = b"username=%3Cscript%3Ealert(1)%3C%2Fscript%3E&password=".to_vec();
    body.resize(len, b'p');
    body
}

fn form_login_next(next_encoded: &str) -> Req {
    Req::form(&format!("username=john&password=johnpass&next={next_encoded}"))
}

/// Everything wrong with `reply` for `row`; empty when it is right.
fn check(row: &Row, reply: &Response) -> Vec<String> {
    let mut problems = Vec::new();
    if reply.status != row.status {
        problems.push(format!("status {} (want {})", reply.status, row.status));
    }
    if let Some(marker) = leaked_internals(reply) {
        problems.push(format!("the reply shows {marker:?}"));
    }
    if reply.text().contains(RAW) {
        problems.push("the body echoes the <script> marker unescaped".into());
    }
    if let Some((name, _)) = reply.headers.iter().find(|(_, v)| v.contains(RAW)) {
        problems.push(format!("the {name} header echoes the <script> marker unescaped"));
    }
    if let Some((name, _)) = reply.headers.iter().find(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-")) {
        problems.push(format!("a CORS header {name}"));
    }
    let content_type = reply.header("Content-Type").unwrap_or("");
    match row.expect {
        Expect::Error if row.req.is_json() => {
            if content_type != "application/json" {
                problems.push(format!("JSON request got Content-Type {content_type:?}"));
            }
            match serde_json::from_slice::<serde_json::Value>(&reply.body) {
                Ok(v) => {
                    let keys: Vec<&String> = v.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                    let message = v["message"].as_str().unwrap_or("");
                    if v["success"] != serde_json::json!(false) || message.is_empty() || keys.len() != 2 {
                        problems.push(format!("JSON body is not {{success: false, message}}: {v}"));
                    }
                }
                Err(e) => problems.push(format!("body is not JSON ({e}): {}", reply.text())),
            }
        }
        Expect::Error => {
            if content_type != "text/html; charset=utf-8" {
                problems.push(format!("browser request got Content-Type {content_type:?}"));
            }
            if !reply.text().to_ascii_lowercase().contains("<html") {
                problems.push("browser request got no HTML page".into());
            }
        }
        Expect::LoginPage => {
            if content_type != "text/html; charset=utf-8" || !reply.text().contains("name=\"password\"") {
                problems.push("not the login page".into());
            }
            if reply.text().contains("John Smith") {
                problems.push("John's page shown".into());
            }
        }
        Expect::Location(target) => {
            let locations = reply.headers_named("Location");
            if locations != [target] {
                problems.push(format!("Location {locations:?} (want {target:?})"));
            }
            if reply.cookie().is_none() {
                problems.push("no session cookie on a successful login".into());
            }
            let cookies = reply.headers_named("Set-Cookie");
            if cookies.len() != 1 || !cookies[0].starts_with("webauth=") {
                problems.push(format!("Set-Cookie headers {cookies:?}"));
            }
        }
    }
    if !matches!(row.expect, Expect::Location(_)) && reply.cookie().is_some() {
        problems.push("a session cookie was set".into());
    }
    problems
}

fn run_table(site: &TestSite, rows: &[Row]) {
    let mut failures = Vec::new();
    for row in rows {
        let reply = site.call(row.route, &row.req);
        let problems = check(row, &reply);
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({} {}): {}\n    body: {}",
                row.name,
                row.req.method,
                row.route,
                problems.join("; "),
                reply.text().chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn malformed_requests_get_their_exact_status_and_no_leak() {
    use Expect::Error;
    let long_name = format!("{MARKER}{}", "a".repeat(300));
    let long_password = format!("{MARKER}{}", "p".repeat(1100));
    let multipart = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\n{MARKER}\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\njohnpass\r\n--XyZ--\r\n"
    );
    let marked_json = serde_json::json!({"username": MARKER, "password": "x"}).to_string();
    let rows = vec![
        row(
            "body over 64 KiB (70000 bytes declared and sent), JSON",
            "login",
            Req::new("POST").body("application/json", &json_of_length(70_000)),
            413,
            Error,
        ),
        row(
            "body over 64 KiB (70000 bytes declared and sent), form",
            "login",
            Req::new("POST").body("application/x-www-form-urlencoded", &form_of_length(70_000)),
            413,
            Error,
        ),
        row(
            "body over 64 KiB on logout",
            "logout",
            Req::new("POST").body("application/json", &json_of_length(70_000)),
            413,
            Error,
        ),
        row(
            "CONTENT_LENGTH of 10^12 with a small body, JSON",
            "login",
            json_body(&marked_json).declared_length("1000000000000"),
            413,
            Error,
        ),
        row(
            "CONTENT_LENGTH of 10^12 with a small body, form",
            "login",
            Req::form("username=john&password=johnpass").declared_length("1000000000000"),
            413,
            Error,
        ),
        row(
            "CONTENT_LENGTH missing on POST, JSON",
            "login",
            json_body(&marked_json).without("CONTENT_LENGTH"),
            400,
            Error,
        ),
        row(
            "CONTENT_LENGTH missing on POST, form",
            "login",
            Req::form("username=%3Cscript%3E&password=x").without("CONTENT_LENGTH"),
            400,
            Error,
        ),
        row("CONTENT_LENGTH missing on a logout POST", "logout", json_body("{}").without("CONTENT_LENGTH"), 400, Error),
        row("CONTENT_LENGTH negative", "login", json_body(&marked_json).declared_length("-5"), 400, Error),
        row("CONTENT_LENGTH not a number", "login", json_body(&marked_json).declared_length("12abc"), 400, Error),
        row(
            "CONTENT_LENGTH not a number, form",
            "login",
            Req::form("username=john&password=johnpass").declared_length("ten"),
            400,
            Error,
        ),
        row(
            "CONTENT_LENGTH larger than what arrives (100 declared, 10 sent)",
            "login",
            json_body("{\"u\":\"<scr").declared_length("100"),
            400,
            Error,
        ),
        row(
            "unsupported Content-Type text/plain",
            "login",
            Req::new("POST").body("text/plain", format!("username={MARKER}&password=johnpass").as_bytes()),
            415,
            Error,
        ),
        row(
            "unsupported Content-Type multipart/form-data",
            "login",
            Req::new("POST").body("multipart/form-data; boundary=XyZ", multipart.as_bytes()),
            415,
            Error,
        ),
        row(
            "unsupported Content-Type on logout",
            "logout",
            Req::new("POST").body(&format!("text/plain; x={MARKER}"), b"bye"),
            415,
            Error,
        ),
        row(
            "malformed JSON",
            "login",
            json_body(&format!("{{\"username\": \"{MARKER}\", \"password\": }}")),
            400,
            Error,
        ),
        row("JSON array", "login", json_body(&format!("[\"{MARKER}\", \"johnpass\"]")), 400, Error),
        row(
            "JSON with the username as a number",
            "login",
            json_body(&format!("{{\"username\": 42, \"password\": \"{MARKER}\"}}")),
            400,
            Error,
        ),
        row("truncated JSON", "login", json_body(&format!("{{\"username\": \"{MARKER}\", \"pass")), 400, Error),
        row(
            "invalid UTF-8 in JSON",
            "login",
            Req::new("POST").body(
                "application/json",
                &[b"{\"username\": \"\xff".as_slice(), MARKER.as_bytes(), b"\", \"password\": \"x\"}"].concat(),
            ),
            400,
            Error,
        ),
        row("malformed JSON on logout", "logout", json_body("{\"a\": "), 400, Error),
        row(
            "bad percent-encoding %zz in a form",
            "login",
            Req::form(&format!("username=%zz{MARKER}&password=x")),
            400,
            Error,
        ),
        row(
            "bad percent-encoding %4 at the end of a form",
            "login",
            Req::form("username=%3Cscript%3Ealert(1)%3C%2Fscript%3E&password=%4"),
            400,
            Error,
        ),
        row(
            "invalid UTF-8 after percent-decoding (%ff)",
            "login",
            Req::form("username=%ff%3Cscript%3Ealert(1)%3C%2Fscript%3E&password=x"),
            400,
            Error,
        ),
        row(
            "username over 256 bytes, JSON",
            "login",
            Req::json(&serde_json::json!({"username": long_name, "password": "johnpass"})),
            400,
            Error,
        ),
        row(
            "username over 256 bytes, form",
            "login",
            Req::form(&format!("username=%3Cscript%3Ealert(1)%3C%2Fscript%3E{}&password=johnpass", "a".repeat(300))),
            400,
            Error,
        ),
        row(
            "password over 1024 bytes",
            "login",
            Req::json(&serde_json::json!({"username": "john", "password": long_password})),
            400,
            Error,
        ),
        row(
            "credentials only in the query string, JSON body {}",
            "login",
            json_body("{}").with_query("username=john&password=johnpass"),
            400,
            Error,
        ),
        row(
            "credentials only in the query string, empty form",
            "login",
            Req::form("").with_query("username=john&password=johnpass"),
            400,
            Error,
        ),
    ];
    let site = TestSite::new();
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|mut r| {
            // A marker in the query string too, wherever the row has no query of its own.
            if r.req.get_var("QUERY_STRING").is_none() {
                r.req = r.req.with_query(&format!("x={MARKER}"));
            }
            r
        })
        .collect();
    run_table(&site, &rows);
}

#[test]
fn bad_session_cookies_are_treated_as_no_session() {
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    let token = cookie.trim_start_matches("webauth=").to_string();
    assert!(site.index_with(&cookie).text().contains("John Smith"), "the valid cookie works on its own");
    let page = |c: String| Req::get().cookie(&c);
    let rows = vec![
        row("malformed session cookie", "index", page(format!("webauth={MARKER}")), 200, Expect::LoginPage),
        row(
            "malformed session cookie (tutorial style)",
            "index",
            page("webauth=Session::john".into()),
            200,
            Expect::LoginPage,
        ),
        row(
            "duplicated session cookie",
            "index",
            page(format!("webauth={token}; webauth={token}")),
            200,
            Expect::LoginPage,
        ),
        row(
            "over-long session cookie value",
            "index",
            page(format!("webauth={token}{}", "A".repeat(5000))),
            200,
            Expect::LoginPage,
        ),
        row(
            "session cookie in a Cookie header over 64 KiB",
            "index",
            page(format!("webauth={token}; pad={}", "x".repeat(70_000))),
            200,
            Expect::LoginPage,
        ),
    ];
    run_table(&site, &rows);
    // Each was refused as a cookie, not by ending the session: it still works.
    assert!(site.index_with(&cookie).text().contains("John Smith"));
}

#[test]
fn a_session_cookie_beside_20_kib_of_other_cookies_still_counts() {
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    let header = format!("_ga={}; {cookie}; prefs={}", "g".repeat(10 * 1024), "p".repeat(10 * 1024));
    assert!(site.index_with(&header).text().contains("John Smith"));
}

#[test]
fn unsafe_next_targets_redirect_to_the_mount_point() {
    let rows = vec![
        row("next //evil.test", "login", form_login_next("%2F%2Fevil.test"), 303, Expect::Location("/")),
        row("next /\\evil.test", "login", form_login_next("%2F%5Cevil.test"), 303, Expect::Location("/")),
        row("next http://evil.test", "login", form_login_next("http%3A%2F%2Fevil.test"), 303, Expect::Location("/")),
        row("next javascript:alert(1)", "login", form_login_next("javascript%3Aalert(1)"), 303, Expect::Location("/")),
        row(
            "next with CR LF (/%0d%0aSet-Cookie:x)",
            "login",
            form_login_next("%2F%0d%0aSet-Cookie%3Ax"),
            303,
            Expect::Location("/"),
        ),
        row(
            "next with a tab (/\\t/evil.test)",
            "login",
            form_login_next("%2F%09%2Fevil.test"),
            303,
            Expect::Location("/"),
        ),
        row("next /private/x is kept", "login", form_login_next("%2Fprivate%2Fx"), 303, Expect::Location("/private/x")),
    ];
    run_table(&TestSite::new(), &rows);
}

/// A `next` that is a path but carries markup must not come back raw in
/// `Location` (nor in the JSON `redirect`): refused, or percent-encoded.
#[test]
fn a_next_path_with_markup_is_not_echoed_raw() {
    let site = TestSite::new();
    let mut problems = Vec::new();
    let form = site.call("login", &form_login_next("%2F%3Cscript%3Ealert(1)%3C%2Fscript%3E"));
    assert_eq!(form.status, 303);
    let location = form.header("Location").unwrap_or("");
    if location.contains(['<', '>', '"']) {
        problems.push(format!("the form login's Location echoes markup raw: {location:?}"));
    }
    let json = site.call(
        "login",
        &Req::json(&serde_json::json!({"username": "john", "password": "johnpass", "next": format!("/{MARKER}")})),
    );
    assert_eq!(json.status, 200);
    if json.text().contains(RAW) {
        problems.push(format!("the JSON login's redirect echoes markup raw: {}", json.text()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn get_login_with_a_next_full_of_markup_escapes_it() {
    let site = TestSite::new();
    let rows = vec![row(
        "GET login with next=/<script>",
        "login",
        Req::get().with_query("next=%2F%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        200,
        Expect::LoginPage,
    )];
    run_table(&site, &rows);
}

#[test]
fn no_reply_carries_cors_headers() {
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    let evil = |r: Req| r.var("HTTP_ORIGIN", "http://evil.test");
    let replies = [
        ("GET / from another origin", site.call("index", &evil(Req::get()))),
        ("GET / with a session from another origin", site.call("index", &evil(Req::get().cookie(&cookie)))),
        ("GET login from another origin", site.call("login", &evil(Req::get()))),
        (
            "OPTIONS preflight",
            site.call(
                "login",
                &evil(Req::new("OPTIONS"))
                    .var("HTTP_ACCESS_CONTROL_REQUEST_METHOD", "POST")
                    .var("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "content-type"),
            ),
        ),
        (
            "cross-site POST login",
            site.call(
                "login",
                &evil(Req::json(&serde_json::json!({"username": "john", "password": "johnpass"})))
                    .var("HTTP_SEC_FETCH_SITE", "cross-site"),
            ),
        ),
        ("same-origin POST login", site.login_json("jane", "janepass")),
    ];
    for (name, reply) in &replies {
        let cors: Vec<_> =
            reply.headers.iter().filter(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-")).collect();
        assert!(cors.is_empty(), "{name}: {cors:?}");
    }
    assert_eq!(replies[0].1.status, 200);
    assert_eq!(replies[4].1.status, 403);
}

/// The nonce in a Content-Security-Policy header (`'nonce-XXX'`).
fn csp_nonce(csp: &str) -> Option<String> {
    let start = csp.find("'nonce-")? + "'nonce-".len();
    let len = csp[start..].find('\'')?;
    Some(csp[start..start + len].to_string())
}

/// Problems with the security headers and inline tags of an HTML reply.
fn page_security_problems(reply: &Response) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in
        [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin")]
    {
        if reply.header(name) != Some(value) {
            problems.push(format!("{name}: {:?} (want {value:?})", reply.header(name)));
        }
    }
    let csps = reply.headers_named("Content-Security-Policy");
    if csps.len() != 1 {
        problems.push(format!("{} Content-Security-Policy headers", csps.len()));
        return problems;
    }
    let csp = csps[0];
    if !csp.contains("frame-ancestors 'none'") {
        problems.push(format!("CSP lacks frame-ancestors 'none': {csp}"));
    }
    if csp.contains("'unsafe-inline'") {
        problems.push(format!("CSP has 'unsafe-inline': {csp}"));
    }
    // Attribute values in the page are HTML-escaped; the browser compares them decoded.
    let html = reply.html().replace("&#x2B;", "+").replace("&#x3D;", "=");
    let nonce = csp_nonce(csp);
    let mut tags = 0;
    for open in ["<script", "<style"] {
        for (at, _) in html.match_indices(open) {
            tags += 1;
            let tag = &html[at..at + html[at..].find('>').unwrap_or(html.len() - at)];
            let ok = nonce.as_ref().is_some_and(|n| tag.contains(&format!("nonce=\"{n}\"")));
            if !ok {
                problems.push(format!("{tag}> lacks the CSP nonce {nonce:?}"));
            }
        }
    }
    if tags > 0 && nonce.is_none() {
        problems.push(format!("inline tags but no nonce in the CSP: {csp}"));
    }
    problems
}

#[test]
fn pages_carry_security_headers_and_nonced_inline_tags() {
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    let pages = [
        ("login page", site.call("index", &Req::get()), 200),
        ("user page", site.index_with(&cookie), 200),
        ("failed form login page", site.call("login", &Req::form("username=john&password=nope")), 401),
        ("error page (415)", site.call("login", &Req::new("POST").body("text/plain", b"x")), 415),
        ("error page (405)", site.call("index", &Req::new("DELETE")), 405),
    ];
    let mut failures = Vec::new();
    for (name, reply, status) in &pages {
        assert_eq!(reply.status, *status, "{name}");
        assert_eq!(reply.header("Content-Type"), Some("text/html; charset=utf-8"), "{name}");
        let problems = page_security_problems(reply);
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(pages[0].1.text().contains("<script"), "the login page has its script");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_and_redirect_replies_carry_the_security_headers_too() {
    let site = TestSite::new();
    for reply in [
        site.login_json("john", "johnpass"),
        site.login_json("john", "wrong"),
        site.call("login", &Req::form("username=john&password=johnpass")),
    ] {
        assert_eq!(reply.header("Cache-Control"), Some("no-store"), "{reply:?}");
        assert_eq!(reply.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(reply.header("Referrer-Policy"), Some("same-origin"));
        assert!(reply.header("Content-Security-Policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    }
}

#[test]
fn post_replies_vary_on_sec_fetch_site_and_origin() {
    let site = TestSite::new();
    let cookie = site.session_for("jane", "janepass");
    let replies = [
        ("JSON login success", site.login_json("john", "johnpass")),
        ("JSON login failure", site.login_json("john", "wrong")),
        ("form login success", site.call("login", &Req::form("username=john&password=johnpass"))),
        ("415", site.call("login", &Req::new("POST").body("text/plain", b"x"))),
        ("403", site.call("login", &Req::json(&serde_json::json!({})).var("HTTP_SEC_FETCH_SITE", "cross-site"))),
        ("logout", site.call("logout", &Req::form("").cookie(&cookie))),
    ];
    for (name, reply) in &replies {
        let vary = reply.headers_named("Vary").join(", ").to_ascii_lowercase();
        assert!(vary.contains("sec-fetch-site") && vary.contains("origin"), "{name}: Vary {vary:?}");
    }
}

#[test]
fn debian_style_get_with_empty_length_and_type_shows_the_page() {
    // What Debian's nginx + fcgiwrap pass on GET: CONTENT_LENGTH and
    // CONTENT_TYPE set but empty, HTTPS=off, REMOTE_USER empty.
    let site = TestSite::new();
    let debian = |r: Req| {
        r.var("CONTENT_LENGTH", "")
            .var("CONTENT_TYPE", "")
            .var("HTTPS", "off")
            .var("REMOTE_USER", "")
            .var("HTTP_CONTENT_LENGTH", "")
    };
    let rows = vec![
        row("Debian GET /", "index", debian(Req::get()), 200, Expect::LoginPage),
        row("Debian GET login", "login", debian(Req::get()), 200, Expect::LoginPage),
        row("POST with CONTENT_LENGTH empty", "login", json_body("{}").declared_length(""), 400, Expect::Error),
        row(
            "form with the username twice",
            "login",
            Req::form("username=john&username=jane&password=x"),
            400,
            Expect::Error,
        ),
    ];
    run_table(&site, &rows);
    let cookie = site.call("login", &Req::form("username=john&password=johnpass").var("HTTPS", "off"));
    assert!(!cookie.header("Set-Cookie").unwrap_or("").contains("Secure"), "HTTPS=off is plain HTTP");
}
