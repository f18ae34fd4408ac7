//! The second factor through the real programs run as CGI scripts (each
//! request its own process, as the replay and one-time rules must hold
//! across processes) and the real admin command: enrolment, the pending
//! step, codes, recovery codes, expiry, regulation, and the pages.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use support::totp::{enable, now, recovery_codes, Enrolled, SECRET};
use support::{CgiReply, Req, ResponseExt, TestSite};
use webauth::totp::Secret;
use webauth::Response;

const JOHN: &str = "John Smith";
const NEED_CODE: &str = "Enter the 6-digit code from your authenticator app.";

/// The `name=value` of the cookie called `name` that `reply` sets (not one
/// it expires).
fn set_cookie(reply: &Response, name: &str) -> Option<String> {
    reply
        .headers_named("Set-Cookie")
        .into_iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap_or("").to_string())
        .find(|pair| pair.split_once('=').is_some_and(|(n, _)| n == name))
}

fn expires(reply: &Response, name: &str) -> bool {
    reply.headers_named("Set-Cookie").iter().any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0"))
}

fn login(site: &TestSite, username: &str, password: &str) -> CgiReply {
    site.cgi("login", &Req::login(username, password))
}

/// The password step for john: the pending cookie (`webauth-pending=...`).
fn password_step(site: &TestSite) -> String {
    let reply = login(site, "john", "johnpass");
    assert_eq!(reply.status, 401, "{}{}", reply.text(), reply.stderr);
    set_cookie(&reply, "webauth-pending").expect("a pending cookie")
}

fn send_code(site: &TestSite, pending: &str, code: &str) -> CgiReply {
    site.cgi("login", &Req::json(&serde_json::json!({"code": code})).cookie(pending))
}

fn page(site: &TestSite, cookie: &str) -> CgiReply {
    site.cgi("index", &Req::get().cookie(cookie))
}

fn enrolled_site(env: &[(&str, &str)]) -> (TestSite, Enrolled) {
    let site = TestSite::with_env(env);
    let john = enable(&site, "john");
    (site, john)
}

#[test]
fn the_password_alone_gives_a_pending_step_and_no_session() {
    let (site, _john) = enrolled_site(&[]);
    let reply = login(&site, "john", "johnpass");
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        serde_json::json!({"success": false, "second_factor": "totp", "message": NEED_CODE}),
        "{}",
        reply.text()
    );
    assert_eq!(set_cookie(&reply, "webauth"), None, "no session cookie");
    let set = reply.header("Set-Cookie").expect("the pending cookie");
    for attr in ["webauth-pending=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=300"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(reply.stderr.contains("login code-needed user=\"john\""), "{}", reply.stderr);

    // The pending token is no session, whichever cookie carries it.
    let pending = set_cookie(&reply, "webauth-pending").unwrap();
    let token = pending.split_once('=').unwrap().1;
    let as_session = format!("webauth={token}");
    for cookie in [pending.as_str(), as_session.as_str()] {
        let shown = page(&site, cookie);
        assert_eq!(shown.status, 200);
        assert!(!shown.text().contains(JOHN) && shown.text().contains("name=\"password\""), "{}", shown.text());
        assert_eq!(site.cgi("auth", &Req::get().cookie(cookie)).status, 401, "auth with {cookie}");
    }
    let store = rusqlite::Connection::open(&site.store).unwrap();
    let sessions: i64 = store.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(sessions, 0, "the password alone made no session");
    let kept: Vec<u8> = store.query_row("SELECT id FROM pending", [], |r| r.get(0)).unwrap();
    assert_ne!(kept, token.as_bytes(), "the store keeps only the token's hash");
    assert_eq!(kept, webauth::session::Token::parse(token).unwrap().id().0.to_vec());
}

#[test]
fn the_right_code_gives_the_session_and_the_same_code_again_is_refused() {
    let (site, john) = enrolled_site(&[]);
    let code = john.code();
    let pending = password_step(&site);
    let ok = send_code(&site, &pending, &code);
    assert_eq!(ok.status, 200, "{}{}", ok.text(), ok.stderr);
    assert_eq!(ok.json(), serde_json::json!({"success": true, "redirect": "/"}));
    assert!(expires(&ok, "webauth-pending"), "the pending cookie is dropped: {:?}", ok.headers);
    let session = set_cookie(&ok, "webauth").expect("a session cookie");
    assert!(page(&site, &session).text().contains(JOHN));
    assert_eq!(site.cgi("auth", &Req::get().cookie(&session)).status, 204);
    assert!(ok.stderr.contains("login success user=\"john\""), "{}", ok.stderr);

    // The pending step was used up with the login.
    assert_eq!(send_code(&site, &pending, &john.next_code()).status, 401);
    // The same code on a new pending step, in another process: a replay.
    let again = send_code(&site, &password_step(&site), &code);
    assert_eq!(again.status, 401, "{}", again.text());
    assert_eq!(again.json()["message"], "That code was used already. Wait for the next one.");
    assert_eq!(again.json()["second_factor"], "totp");
    assert_eq!(set_cookie(&again, "webauth"), None);
}

#[test]
fn a_wrong_code_is_401_counted_and_the_pending_step_stays() {
    let (site, john) = enrolled_site(&[]);
    let pending = password_step(&site);
    let wrong = send_code(&site, &pending, &john.wrong_code());
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.json(),
        serde_json::json!({"success": false, "second_factor": "totp", "message": "Invalid code."})
    );
    assert!(wrong.stderr.contains("login code-failure user=\"john\" addr=\"192.0.2.10\""), "{}", wrong.stderr);
    let store = rusqlite::Connection::open(&site.store).unwrap();
    let count: i64 =
        store.query_row("SELECT count FROM failures WHERE key = 'pair:192.0.2.10|john'", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 2, "the password attempt and the wrong code are counted");
    // A typo does not end the step: the right code still works.
    let ok = send_code(&site, &pending, &john.code());
    assert_eq!(ok.status, 200, "{}", ok.text());
    let cleared: i64 =
        store.query_row("SELECT count(*) FROM failures WHERE key LIKE '%john'", [], |r| r.get(0)).unwrap();
    assert_eq!(cleared, 0, "the whole login clears the counts");
}

#[test]
fn bans_apply_to_codes() {
    let (site, john) = enrolled_site(&[("WEBAUTH_MAX_FAILURES", "3")]);
    let pending = password_step(&site); // attempt 1
    assert_eq!(send_code(&site, &pending, &john.wrong_code()).status, 401); // 2
    let banning = send_code(&site, &pending, &john.wrong_code()); // 3: the ban starts
    assert_eq!(banning.status, 401);
    assert!(banning.stderr.contains("login ban user=\"john\""), "{}", banning.stderr);
    let refused = send_code(&site, &pending, &john.code());
    assert_eq!(refused.status, 429, "even the right code: {}", refused.text());
    assert!(refused.header("Retry-After").is_some());
    assert_eq!(set_cookie(&refused, "webauth"), None);
    assert_eq!(login(&site, "john", "johnpass").status, 429, "and the password step");
}

#[test]
fn a_right_password_does_not_buy_new_guesses_at_the_code() {
    let (site, john) = enrolled_site(&[("WEBAUTH_MAX_FAILURES", "4")]);
    assert_eq!(send_code(&site, &password_step(&site), &john.wrong_code()).status, 401); // 1, 2
    assert_eq!(send_code(&site, &password_step(&site), &john.wrong_code()).status, 401); // 3, 4: banned
    assert_eq!(login(&site, "john", "johnpass").status, 429);
}

#[test]
fn a_recovery_code_works_once() {
    let (site, john) = enrolled_site(&[]);
    let code = &john.recovery[3];
    let before = std::fs::read_to_string(&site.users).unwrap();
    let hash = webauth::totp::recovery_hash(code);
    assert!(before.contains(&hash) && !before.contains(code.as_str()), "the file keeps only hashes");

    // Typed as people type it: lower case, spaces for dashes.
    let typed = code.to_lowercase().replace('-', " ");
    let ok = send_code(&site, &password_step(&site), &typed);
    assert_eq!(ok.status, 200, "{}{}", ok.text(), ok.stderr);
    let session = set_cookie(&ok, "webauth").unwrap();
    let shown = page(&site, &session);
    assert!(shown.text().contains("Two-step sign-in is on: 9 recovery codes left."), "{}", shown.text());
    assert!(!std::fs::read_to_string(&site.users).unwrap().contains(&hash), "removed from the writable file");

    let again = send_code(&site, &password_step(&site), code);
    assert_eq!(again.status, 401, "{}", again.text());
    assert_eq!(again.json()["message"], "Invalid code.");
    assert_eq!(send_code(&site, &password_step(&site), &john.recovery[4]).status, 200, "another one works");
}

#[test]
fn a_used_recovery_code_stays_used_when_the_file_keeps_it() {
    if support::running_as_root() {
        // Root writes a read-only file anyway: run the same check as the
        // file being restored from a backup after the login.
        let (site, john) = enrolled_site(&[]);
        let before = std::fs::read_to_string(&site.users).unwrap();
        assert_eq!(send_code(&site, &password_step(&site), &john.recovery[0]).status, 200);
        std::fs::write(&site.users, before).unwrap();
        let again = send_code(&site, &password_step(&site), &john.recovery[0]);
        assert_eq!(again.status, 401, "the store remembers: {}", again.text());
        let session = set_cookie(&send_code(&site, &password_step(&site), &john.code()), "webauth").unwrap();
        assert!(page(&site, &session).text().contains("9 recovery codes left"), "the used one is not counted");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let (site, john) = enrolled_site(&[]);
    std::fs::set_permissions(&site.users, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(send_code(&site, &password_step(&site), &john.recovery[0]).status, 200);
    assert_eq!(send_code(&site, &password_step(&site), &john.recovery[0]).status, 401);
}

#[test]
fn the_pending_step_expires() {
    let (site, john) = enrolled_site(&[("WEBAUTH_TOTP_PENDING", "1")]);
    let reply = login(&site, "john", "johnpass");
    assert!(reply.header("Set-Cookie").unwrap().contains("Max-Age=1"), "{:?}", reply.headers);
    let pending = set_cookie(&reply, "webauth-pending").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let late = send_code(&site, &pending, &john.code());
    assert_eq!(late.status, 401, "{}", late.text());
    assert_eq!(
        late.json(),
        serde_json::json!({"success": false, "message": "Your sign-in took too long. Please sign in again."})
    );
    assert!(expires(&late, "webauth-pending"));
    assert_eq!(set_cookie(&late, "webauth"), None);
    let form = site.cgi("login", &Req::get().with_query("step=code").cookie(&pending));
    assert!(form.text().contains("took too long") && form.text().contains("name=\"password\""), "{}", form.text());
}

#[test]
fn a_user_without_totp_logs_in_as_before() {
    let (site, _john) = enrolled_site(&[]);
    let jane = login(&site, "jane", "janepass");
    assert_eq!(jane.status, 200, "{}", jane.text());
    assert_eq!(jane.json(), serde_json::json!({"success": true, "redirect": "/"}));
    let session = set_cookie(&jane, "webauth").unwrap();
    assert_eq!(set_cookie(&jane, "webauth-pending"), None);
    let shown = page(&site, &session);
    assert!(shown.text().contains("Jane Doe") && shown.text().contains("Two-step sign-in is off."), "{}", shown.text());
}

#[test]
fn a_wrong_password_for_a_totp_user_looks_like_any_wrong_password() {
    let (site, _john) = enrolled_site(&[]);
    let john = login(&site, "john", "wrong password");
    let jane = login(&site, "jane", "wrong password");
    let nobody = login(&site, "nobody", "wrong password");
    for reply in [&john, &jane, &nobody] {
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json(), serde_json::json!({"success": false, "message": "Invalid username or password."}));
        assert!(reply.header("Set-Cookie").is_none(), "{:?}", reply.headers);
    }
    // With a code in the same request too: the password decides first.
    let with_code =
        site.cgi("login", &Req::json(&serde_json::json!({"username": "john", "password": "nope", "code": "123456"})));
    assert_eq!(with_code.json(), jane.json());
}

#[test]
fn username_password_and_code_in_one_request() {
    let (site, john) = enrolled_site(&[]);
    let body = |code: &str| serde_json::json!({"username": "john", "password": "johnpass", "code": code});
    let wrong = site.cgi("login", &Req::json(&body(&john.wrong_code())));
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["message"], "Invalid code.");
    assert_eq!(wrong.header("Set-Cookie"), None, "no pending step either");
    let ok = site.cgi("login", &Req::json(&body(&john.code())));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(page(&site, &set_cookie(&ok, "webauth").unwrap()).text().contains(JOHN));
    let replay = site.cgi("login", &Req::json(&body(&john.code())));
    assert_eq!(replay.status, 401, "{}", replay.text());
}

#[test]
fn the_form_flow_without_javascript_and_remember_me() {
    let (site, john) = enrolled_site(&[]);
    let first = site.cgi("login", &Req::form("username=john&password=johnpass&remember=on&next=%2Fprivate%2Fx"));
    assert_eq!(first.status, 303, "{}", first.text());
    assert_eq!(first.header("Location"), Some("/login?step=code"));
    let pending = set_cookie(&first, "webauth-pending").unwrap();

    let code_page = site.cgi("login", &Req::get().with_query("step=code").cookie(&pending));
    assert_eq!(code_page.status, 200);
    let html = code_page.html();
    assert!(
        html.contains(NEED_CODE) && html.contains("name=\"code\"") && html.contains("autocomplete=\"one-time-code\"")
    );
    assert!(html.contains("href=\"/login?step=recovery\""), "the recovery link: {html}");
    let recovery_page = site.cgi("login", &Req::get().with_query("step=recovery").cookie(&pending));
    assert!(recovery_page.text().contains("Recovery code"), "{}", recovery_page.text());
    // Without the pending cookie the code page is the login page.
    assert!(site.cgi("login", &Req::get().with_query("step=code")).text().contains("name=\"password\""));

    let wrong = site.cgi("login", &Req::form(&format!("code={}", john.wrong_code())).cookie(&pending));
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("Invalid code.") && wrong.text().contains("name=\"code\""), "{}", wrong.text());

    let ok = site.cgi("login", &Req::form(&format!("code={}", john.code())).cookie(&pending));
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert_eq!(ok.header("Location"), Some("/private/x"), "next is carried through the pending step");
    let set = ok.headers_named("Set-Cookie").into_iter().find(|c| c.starts_with("webauth=")).unwrap();
    assert!(set.contains("Max-Age=2592000"), "remember me is carried through the pending step: {set}");
    assert!(page(&site, &set_cookie(&ok, "webauth").unwrap()).text().contains(JOHN));
}

#[test]
fn the_code_post_is_refused_cross_origin() {
    let (site, john) = enrolled_site(&[]);
    let pending = password_step(&site);
    let req =
        Req::json(&serde_json::json!({"code": john.code()})).cookie(&pending).var("HTTP_ORIGIN", "http://evil.test");
    let refused = site.cgi("login", &req);
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("Set-Cookie"), None);
    assert_eq!(send_code(&site, &pending, &john.code()).status, 200, "the code was not used up");
}

#[test]
fn a_new_password_step_ends_the_pending_step_the_browser_held() {
    let (site, john) = enrolled_site(&[]);
    let old = password_step(&site);
    let reply = site.cgi("login", &Req::login("john", "johnpass").cookie(&old));
    let new = set_cookie(&reply, "webauth-pending").unwrap();
    assert_ne!(new, old);
    assert_eq!(send_code(&site, &old, &john.code()).status, 401, "the old step ended");
    assert_eq!(send_code(&site, &new, &john.code()).status, 200);
}

#[test]
fn enabling_and_disabling_end_the_users_sessions() {
    let site = TestSite::new();
    let before = site.session_for("john", "johnpass");
    let john = enable(&site, "john");
    assert!(!site.index_with(&before).text().contains(JOHN), "enabling ends the sessions");
    let session = set_cookie(&send_code(&site, &password_step(&site), &john.code()), "webauth").unwrap();
    let list = String::from_utf8_lossy(&site.admin(&["user", "list"], "").stdout).into_owned();
    assert!(list.contains("john\tJohn Smith\targon2id\ttotp"), "{list}");

    // A lost device: the operator turns it off; the password alone works again.
    let off = site.admin(&["user", "totp", "disable", "john"], "");
    assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));
    assert!(!site.index_with(&session).text().contains(JOHN), "disabling ends the sessions");
    assert_eq!(site.login_json("john", "johnpass").status, 200);
    let twice = site.admin(&["user", "totp", "disable", "john"], "");
    assert!(!twice.status.success());
}

#[test]
fn new_recovery_codes_replace_the_old_ones() {
    let (site, john) = enrolled_site(&[]);
    let out = site.admin(&["user", "totp", "recovery", "john"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh = recovery_codes(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(send_code(&site, &password_step(&site), &john.recovery[0]).status, 401, "an old code");
    assert_eq!(send_code(&site, &password_step(&site), &fresh[0]).status, 200, "a new one");
    let none = site.admin(&["user", "totp", "recovery", "jane"], "");
    assert!(!none.status.success(), "jane has no TOTP");
}

#[test]
fn enrolment_needs_a_current_code_and_saves_nothing_without_one() {
    let site = TestSite::new();
    let before = std::fs::read_to_string(&site.users).unwrap();
    for stdin in [format!("{SECRET}\n000000\n"), format!("{SECRET}\n"), "JBSWY3DPEHPK3PXP\n123456\n".to_string()] {
        let out = site.admin(&["user", "totp", "enable", "john", "--secret-stdin"], &stdin);
        assert!(!out.status.success(), "{stdin:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nothing saved"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_to_string(&site.users).unwrap(), before);
    let argv = site.admin(&["user", "totp", "enable", "john", "--secret", SECRET], "");
    assert_eq!(argv.status.code(), Some(2), "no secret on the command line");
    assert_eq!(site.login_json("john", "johnpass").status, 200, "still the password alone");
}

/// Enrolment as a person does it: read the printed URI (and see the QR
/// code), type the code the app then shows.
#[test]
fn enrolment_prints_a_qr_code_and_uri_then_asks_for_a_code() {
    let site = TestSite::new();
    let mut child = Command::new(support::bin("webauth"))
        .args(["user", "totp", "enable", "jane", "--issuer", "Example Site"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(site.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("webauth");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut shown = String::new();
    let uri = loop {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "no URI in {shown}");
        shown.push_str(&line);
        if line.starts_with("otpauth://") {
            break line.trim().to_string();
        }
    };
    assert!(shown.contains('▀') || shown.contains('▄'), "a QR code in half blocks: {shown}");
    assert!(uri.starts_with("otpauth://totp/Example%20Site:jane?secret="), "{uri}");
    assert!(uri.ends_with("&issuer=Example%20Site&algorithm=SHA1&digits=6&period=30"), "{uri}");
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    assert_eq!(secret.len(), 32, "160 bits");
    let secret = Secret::from_base32(secret).unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", secret.code_now(now())).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    let codes = recovery_codes(&rest);

    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    assert_eq!(file["jane"]["totp"]["secret"], secret.to_base32());
    assert_eq!(file["jane"]["first"], "Jane", "the other fields are kept");
    assert_eq!(file["jane"]["totp"]["recovery"].as_array().unwrap().len(), 10);
    let reply = login(&site, "jane", "janepass");
    let pending = set_cookie(&reply, "webauth-pending").expect("jane now needs a code");
    assert_eq!(send_code(&site, &pending, &codes[9]).status, 200);
}

#[test]
fn a_malformed_totp_entry_is_a_load_error_not_a_password_login() {
    let site = TestSite::new();
    let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    file["john"]["totp"] = serde_json::json!({"secret": "not base32!"});
    std::fs::write(&site.users, file.to_string()).unwrap();
    let reply = login(&site, "john", "johnpass");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.stderr.contains("user \"john\": TOTP secret not base32"), "{}", reply.stderr);
    assert!(reply.stderr.contains("webauth user totp disable"), "{}", reply.stderr);
}

#[test]
fn an_over_long_or_empty_code_is_400_and_not_counted() {
    let (site, _john) = enrolled_site(&[]);
    let pending = password_step(&site);
    for code in ["", &"1".repeat(65)] {
        let reply = send_code(&site, &pending, code);
        assert_eq!(reply.status, 400, "{code:?}: {}", reply.text());
        assert_eq!(reply.json()["second_factor"], "totp");
    }
    let store = rusqlite::Connection::open(&site.store).unwrap();
    let count: i64 =
        store.query_row("SELECT count FROM failures WHERE key = 'pair:192.0.2.10|john'", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 1, "only the password attempt");
}

/// A pending step started with the old password must not survive
/// `user passwd` (nor `session revoke`): the operator's answer to a leaked
/// password leaves the attacker only the code to find for 5 minutes.
#[test]
fn a_pending_step_does_not_survive_a_password_change_or_revoke() {
    let (site, john) = enrolled_site(&[]);
    let pending = password_step(&site);
    let out = site.admin(&["user", "passwd", "john"], "a brand new long passphrase\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(login(&site, "john", "johnpass").status, 401, "the old password is refused");
    let reply = send_code(&site, &pending, &john.code());
    assert_ne!(reply.status, 200, "the old password's pending step gave a session: {}", reply.text());
    assert_eq!(set_cookie(&reply, "webauth"), None);
    // Nor `session revoke`.
    let new_password = "a brand new long passphrase";
    let again = login(&site, "john", new_password);
    assert_eq!(again.status, 401, "{}", again.text());
    let pending = set_cookie(&again, "webauth-pending").expect("a pending cookie");
    let pending = format!("webauth-pending={pending}");
    let out = site.admin(&["session", "revoke", "john"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(send_code(&site, &pending, &john.code()).status, 200, "a revoked user's pending step gave a session");
}

/// The code typed at `user totp enable` was seen on the operator's screen:
/// it must be used up like any other, not log in a second time.
#[test]
fn the_enrolment_code_is_used_up() {
    let site = TestSite::new();
    let secret = Secret::from_base32(SECRET).unwrap();
    let code = secret.code_now(now());
    let out = site.admin(&["user", "totp", "enable", "john", "--secret-stdin"], &format!("{SECRET}\n{code}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply =
        site.cgi("login", &Req::json(&serde_json::json!({"username": "john", "password": "johnpass", "code": code})));
    assert_ne!(reply.status, 200, "the enrolment code logged in: {}", reply.text());
}

/// The bcrypt upgrade rewrites the password hash before the second factor:
/// someone with the first 72 bytes of a long password, and no device, sets
/// the user's password to one of their choosing (and locks the user out).
#[test]
fn no_bcrypt_rehash_before_the_second_factor() {
    let site = TestSite::new();
    let real = format!("{}-the-users-own-tail", "x".repeat(72));
    let mut users: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    let hash = bcrypt::hash(&real, 5).unwrap().replacen("$2b$", "$2y$", 1);
    users["bob"] = serde_json::json!({"first": "Bob", "last": "B", "password": hash});
    std::fs::write(&site.users, users.to_string()).unwrap();
    let secret = Secret::from_base32(SECRET).unwrap();
    let out = site.admin(
        &["user", "totp", "enable", "bob", "--secret-stdin"],
        &format!("{SECRET}\n{}\n", secret.code_now(now())),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let attacker = format!("{}ATTACKER", "x".repeat(72));
    assert_eq!(login(&site, "bob", &attacker).status, 401, "a pending step (bcrypt reads 72 bytes)");
    let reply = login(&site, "bob", &real);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["second_factor"], "totp", "the real password still works: {}", reply.text());
}

/// Wrong codes have a counter of their own per user, from any address: the
/// per-user password key (50 per window) would let a guesser who knows the
/// password spread about 7,000 guesses a day over many addresses.
#[test]
fn wrong_codes_from_many_addresses_are_banned_after_ten() {
    let (site, john) = enrolled_site(&[("WEBAUTH_BAN_TIME", "60")]);
    let wrong = john.wrong_code();
    let one_request = |addr: &str, code: &str| {
        let body = serde_json::json!({"username": "john", "password": "johnpass", "code": code});
        site.cgi("login", &Req::json(&body).remote(addr))
    };
    // Two guesses from each of five addresses: each below its own limits.
    for i in 0..10 {
        let reply = one_request(&format!("198.51.100.{}", i / 2), &wrong);
        assert_eq!(reply.status, 401, "guess {i}: {}", reply.text());
    }
    let banned = one_request("198.51.100.50", &john.code());
    assert_eq!(banned.status, 429, "the right code from a sixth address after ten wrong ones: {}", banned.text());
    let retry: i64 = banned.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=240).contains(&retry), "the code ban is 4x the ban time: {retry}");
}
