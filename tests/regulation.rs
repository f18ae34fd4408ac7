//! Brute-force regulation (SPEC.md, "Errors that every route shares": too
//! many failed logins per user and per client address is `429`): counts,
//! bans and `Retry-After` in process; the audit lines on stderr and attempts
//! racing in parallel processes through the real login program as CGI.

mod support;

use std::time::Duration;

use support::{CgiReply, Req, ResponseExt, TestSite};
use webauth::Response;

const WRONG: &str = "Wr0ng-Guess-7731";
const ATTACKER: &str = "203.0.113.66";
const JOHN_HOME: &str = "192.0.2.10";

/// A JSON login from `addr`, in process.
fn attempt(site: &TestSite, username: &str, password: &str, addr: &str) -> Response {
    site.call("login", &Req::login(username, password).remote(addr))
}

/// The same through the real login program, for its stderr.
fn attempt_cgi(site: &TestSite, username: &str, password: &str, addr: &str) -> CgiReply {
    site.cgi("login", &Req::login(username, password).remote(addr))
}

/// A site with a long ban (so it cannot lapse mid-test) and these extra variables.
fn site(extra: &[(&str, &str)]) -> TestSite {
    let mut env = vec![("WEBAUTH_BAN_TIME", "60"), ("WEBAUTH_FAILURE_WINDOW", "60")];
    env.extend_from_slice(extra);
    TestSite::with_env(&env)
}

fn assert_banned(reply: &Response, ban_time: i64, what: &str) {
    assert_eq!(reply.status, 429, "{what}: {}", reply.text());
    let retry = reply.header("Retry-After").unwrap_or_else(|| panic!("{what}: no Retry-After"));
    let seconds: i64 = retry.parse().unwrap_or_else(|_| panic!("{what}: Retry-After {retry:?} is not an integer"));
    assert!(seconds >= 1 && seconds <= ban_time, "{what}: Retry-After {seconds} not in 1..={ban_time}");
    assert!(reply.headers_named("Set-Cookie").is_empty(), "{what}: a cookie on a ban");
    assert_eq!(reply.json()["success"], false, "{what}");
}

#[test]
fn five_wrong_passwords_then_the_sixth_attempt_is_429() {
    let site = site(&[]);
    for i in 1..=5 {
        let reply = attempt(&site, "john", WRONG, JOHN_HOME);
        assert_eq!(reply.status, 401, "failure {i}");
    }
    assert_banned(&attempt(&site, "john", WRONG, JOHN_HOME), 60, "sixth attempt");
}

#[test]
fn during_a_ban_the_right_password_is_refused() {
    let site = site(&[]);
    for _ in 0..5 {
        assert_eq!(attempt(&site, "john", WRONG, JOHN_HOME).status, 401);
    }
    let reply = attempt_cgi(&site, "john", "johnpass", JOHN_HOME);
    assert_banned(&reply, 60, "right password during the ban");
    assert!(!reply.stderr.contains("login success"), "{}", reply.stderr);
    // The form path is refused the same way, with a page and no cookie.
    let form = site.cgi("login", &Req::form("username=john&password=johnpass").remote(JOHN_HOME));
    assert_eq!(form.status, 429);
    assert!(form.header("Retry-After").is_some());
    assert!(form.cookie().is_none());
    assert!(form.header("Content-Type").unwrap_or("").starts_with("text/html"));
}

#[test]
fn unknown_usernames_are_counted_the_same() {
    let site = site(&[]);
    for i in 1..=5 {
        assert_eq!(attempt(&site, "nosuchuser", WRONG, JOHN_HOME).status, 401, "failure {i}");
    }
    assert_banned(&attempt(&site, "nosuchuser", WRONG, JOHN_HOME), 60, "sixth attempt for an unknown user");
}

#[test]
fn the_ban_lapses_after_its_time() {
    let site = TestSite::with_env(&[("WEBAUTH_BAN_TIME", "3"), ("WEBAUTH_FAILURE_WINDOW", "60")]);
    for _ in 0..5 {
        assert_eq!(attempt(&site, "john", WRONG, JOHN_HOME).status, 401);
    }
    assert_banned(&attempt(&site, "john", "johnpass", JOHN_HOME), 3, "during the ban");
    std::thread::sleep(Duration::from_millis(3300));
    let reply = attempt(&site, "john", "johnpass", JOHN_HOME);
    assert_eq!(reply.status, 200, "after the ban: {}", reply.text());
    assert!(reply.cookie().is_some());
}

#[test]
fn a_success_clears_the_users_count() {
    let site = site(&[]);
    for _ in 0..4 {
        assert_eq!(attempt(&site, "john", WRONG, JOHN_HOME).status, 401);
    }
    assert_eq!(attempt(&site, "john", "johnpass", JOHN_HOME).status, 200);
    for i in 1..=4 {
        assert_eq!(attempt(&site, "john", WRONG, JOHN_HOME).status, 401, "failure {i} after the success");
    }
    assert_eq!(attempt(&site, "john", "johnpass", JOHN_HOME).status, 200, "4 failures since the success: no ban");
}

#[test]
fn an_attacker_elsewhere_does_not_lock_the_real_user_out() {
    let site = site(&[]);
    for _ in 0..5 {
        assert_eq!(attempt(&site, "john", WRONG, ATTACKER).status, 401);
    }
    assert_banned(&attempt(&site, "john", WRONG, ATTACKER), 60, "the attacker's sixth attempt");
    assert_banned(&attempt(&site, "john", "johnpass", ATTACKER), 60, "the attacker with the right password");
    let john = attempt(&site, "john", "johnpass", JOHN_HOME);
    assert_eq!(john.status, 200, "john from his own address: {}", john.text());
    // And the attacker's ban outlives john's success.
    assert_banned(&attempt(&site, "john", "johnpass", ATTACKER), 60, "the attacker after john's success");
}

#[test]
fn one_address_spraying_many_usernames_is_banned_at_four_times_the_limit() {
    // WEBAUTH_MAX_FAILURES=2: per pair 2, per address 8.
    let site = site(&[("WEBAUTH_MAX_FAILURES", "2")]);
    for i in 1..=8 {
        let reply = attempt(&site, &format!("spray{i}"), WRONG, ATTACKER);
        assert_eq!(reply.status, 401, "failure {i} (each username once)");
    }
    assert_banned(&attempt(&site, "spray9", WRONG, ATTACKER), 60, "ninth attempt, yet another username");
    assert_banned(&attempt(&site, "john", "johnpass", ATTACKER), 60, "even john's password from that address");
    // Other addresses are not affected.
    assert_eq!(attempt(&site, "spray9", WRONG, "198.51.100.7").status, 401);
    assert_eq!(attempt(&site, "john", "johnpass", JOHN_HOME).status, 200);
}

#[test]
fn usernames_are_normalized_the_same_for_counting_and_lookup() {
    let site = site(&[]);
    for name in ["John ", "JOHN", " john", "JoHn", "john"] {
        assert_eq!(attempt(&site, name, WRONG, JOHN_HOME).status, 401, "{name:?}");
    }
    assert_banned(&attempt(&site, "john", "johnpass", JOHN_HOME), 60, "five failures under spellings of john");
    assert_banned(&attempt(&site, "JOHN", "johnpass", JOHN_HOME), 60, "and under another spelling");
}

#[test]
fn the_lookup_normalizes_the_username_too() {
    let site = site(&[]);
    let reply = attempt(&site, " John ", "johnpass", JOHN_HOME);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(site.index_with(&reply.cookie().unwrap()).text().contains("John Smith"));
}

/// Runs the whole story (failures, the ban, a banned attempt, a success
/// elsewhere) and returns every stderr line.
fn audit_story(site: &TestSite) -> Vec<String> {
    let mut lines = Vec::new();
    let mut keep = |r: CgiReply| lines.extend(r.stderr.lines().map(str::to_string));
    for _ in 0..5 {
        keep(attempt_cgi(site, "john", WRONG, ATTACKER));
    }
    keep(attempt_cgi(site, "john", "johnpass", ATTACKER));
    keep(attempt_cgi(site, "john", "johnpass", JOHN_HOME));
    lines
}

#[test]
fn audit_lines_name_the_user_and_address_never_the_password() {
    let site = site(&[]);
    let lines = audit_story(&site);
    let find = |outcome: &str| lines.iter().filter(|l| l.contains(&format!("login {outcome} "))).collect::<Vec<_>>();
    let failures = find("failure");
    assert_eq!(failures.len(), 5, "{lines:#?}");
    assert_eq!(find("ban").len(), 1, "one line when the ban starts: {lines:#?}");
    assert_eq!(find("banned").len(), 1, "one line for the banned attempt: {lines:#?}");
    assert_eq!(find("success").len(), 1, "{lines:#?}");
    for outcome in ["failure", "ban", "banned"] {
        for line in find(outcome) {
            assert!(line.contains("user=\"john\"") && line.contains(&format!("addr=\"{ATTACKER}\"")), "{line}");
        }
    }
    assert!(find("success")[0].contains(&format!("addr=\"{JOHN_HOME}\"")), "{lines:#?}");
    for line in &lines {
        assert!(!line.contains(WRONG) && !line.contains("johnpass"), "a password in the log: {line}");
    }
}

#[test]
fn json_audit_lines_parse_with_event_outcome_user_and_addr() {
    let site = site(&[("WEBAUTH_LOG", "json")]);
    let lines = audit_story(&site);
    let mut outcomes = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert_eq!(v["event"], "login", "{line}");
        assert_eq!(v["user"], "john", "{line}");
        assert!(v["addr"] == ATTACKER || v["addr"] == JOHN_HOME, "{line}");
        outcomes.push(v["outcome"].as_str().unwrap_or_else(|| panic!("no outcome: {line}")).to_string());
        assert!(!line.contains(WRONG) && !line.contains("johnpass"), "a password in the log: {line}");
    }
    outcomes.sort();
    let mut want = vec!["failure"; 5];
    want.extend(["ban", "banned", "success"]);
    want.sort();
    assert_eq!(outcomes, want, "{lines:#?}");
}

#[test]
fn an_ipv6_client_rotating_through_its_64_is_still_one_client() {
    let site = site(&[]);
    for i in 1..=5 {
        let addr = format!("2001:db8:1:2::{i:x}");
        assert_eq!(attempt(&site, "john", WRONG, &addr).status, 401, "failure {i} from {addr}");
    }
    assert_banned(&attempt(&site, "john", "johnpass", "2001:db8:1:2:ffff::9"), 60, "another address of the same /64");
    assert_eq!(attempt(&site, "john", "johnpass", "2001:db8:1:3::1").status, 200, "the next /64 is someone else");
}

#[test]
fn parallel_attempts_cannot_slip_past_the_limit() {
    // 24 wrong passwords for john from one address, 8 at a time: each attempt
    // is counted before its password is verified, so only the first five are
    // verified (401) and every other one is refused (429).
    let site = site(&[]);
    let replies: Vec<CgiReply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| (0..3).map(|_| attempt_cgi(&site, "john", "wrong", "198.51.100.7")).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("attempt thread")).collect()
    });
    let verified = replies.iter().filter(|r| r.status == 401).count();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(verified, 5, "statuses: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(refused, replies.len() - 5);
    // The real john elsewhere still logs in: one address cannot reach the
    // per-username limit (50) alone.
    assert_eq!(attempt_cgi(&site, "john", "johnpass", "192.0.2.10").status, 200);
}
