//! Many CGI processes on one SQLite store at once, and processes killed in
//! the middle of a request (SPEC.md, "Sessions": concurrent CGI processes are
//! safe). The FastCGI version of this lives with the FastCGI tests.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use support::{CgiReply, Req, ResponseExt, TestSite};

/// (username, password, name shown on the user's page)
const USERS: &[(&str, &str, &str, &str)] = &[
    ("john", "johnpass", "John", "Smith"),
    ("jane", "janepass", "Jane", "Doe"),
    ("alice", "alicepass", "Alice", "Liddell"),
    ("bob", "bobpass", "Bob", "Builder"),
    ("carol", "carolpass", "Carol", "Danvers"),
    ("dave", "davepass", "Dave", "Bowman"),
];

/// john and jane, and the other four users added to the users file.
fn site_with_users() -> TestSite {
    // A slot for each of the 8 threads: these tests are about the store
    // under parallel processes; waiting for slots is tests/faults.rs's, and
    // on a loaded machine 8 logins queued on 4 slots can wait past 2 s.
    let site = TestSite::with_env(&[("WEBAUTH_MAX_VERIFICATIONS", "8")]);
    let text = std::fs::read_to_string(&site.users).expect("read users");
    let mut users: serde_json::Value = serde_json::from_str(&text).expect("users JSON");
    for (user, pass, first, last) in &USERS[2..] {
        let hash = webauth::users::hash_password(pass).expect("hash");
        users[user] = serde_json::json!({"first": first, "last": last, "password": hash});
    }
    std::fs::write(&site.users, users.to_string()).expect("write users");
    site
}

fn login_req(user: &str, pass: &str) -> Req {
    Req::login(user, pass)
}

fn index_with(site: &TestSite, cookie: &str) -> CgiReply {
    site.cgi("index", &Req::get().cookie(cookie))
}

/// Runs `jobs` through `f` on `threads` threads; the results in job order.
fn run_parallel<J: Sync, R: Send>(jobs: &[J], threads: usize, f: impl Fn(&J) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= jobs.len() {
                    break;
                }
                let r = f(&jobs[i]);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|r| r.expect("every job ran")).collect()
}

/// Problems with a reply that should have worked: a 5xx, or a store or other
/// error on stderr.
fn trouble(what: &str, reply: &CgiReply) -> Option<String> {
    let bad_line =
        reply.stderr.lines().find(|l| l.contains("database is locked") || l.to_ascii_lowercase().contains("error"));
    if reply.status >= 500 || bad_line.is_some() {
        Some(format!("{what}: status {}, stderr {:?}", reply.status, reply.stderr))
    } else {
        None
    }
}

#[test]
fn two_hundred_parallel_logins_all_get_working_sessions() {
    // A fresh store: the first processes also race to create the schema.
    let site = site_with_users();
    let jobs: Vec<usize> = (0..200).collect();
    let logins = run_parallel(&jobs, 8, |&i| {
        let (user, pass, _, _) = USERS[i % USERS.len()];
        site.cgi("login", &login_req(user, pass))
    });
    let mut problems = Vec::new();
    let mut cookies = Vec::new();
    for (i, reply) in logins.iter().enumerate() {
        let user = USERS[i % USERS.len()].0;
        problems.extend(trouble(&format!("login {i} as {user}"), reply));
        if reply.status != 200 {
            problems.push(format!("login {i} as {user}: status {} {}", reply.status, reply.text()));
        }
        match reply.cookie() {
            Some(c) => cookies.push((i, c)),
            None => problems.push(format!("login {i} as {user}: no cookie")),
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    let mut distinct: Vec<&String> = cookies.iter().map(|(_, c)| c).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 200, "every login has its own token");

    let pages = run_parallel(&cookies, 8, |(_, cookie)| index_with(&site, cookie));
    for ((i, _), page) in cookies.iter().zip(&pages) {
        let (user, _, first, last) = USERS[i % USERS.len()];
        problems.extend(trouble(&format!("page {i} of {user}"), page));
        if page.status != 200 || !page.text().contains(&format!("{first} {last}")) {
            problems.push(format!("page {i}: not {user}'s page (status {})", page.status));
        }
        for (other, _, f, l) in USERS {
            if *other != user && page.text().contains(&format!("{f} {l}")) {
                problems.push(format!("page {i} of {user} shows {other}"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Starts a login and SIGKILLs it after `delay` (argon2 verification takes
/// tens of milliseconds, so most die mid-request; some inside a store write).
/// Returns whether it was still running when killed.
fn kill_login_after(site: &TestSite, req: &Req, delay: Duration, declared: Option<usize>) -> bool {
    let mut cmd = site.cgi_command("login", req);
    if let Some(n) = declared {
        cmd.env("CONTENT_LENGTH", n.to_string());
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn login");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&req.body).expect("write body");
    if declared.is_none() {
        drop(stdin);
    }
    std::thread::sleep(delay);
    let running = child.try_wait().expect("try_wait").is_none();
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let status = child.wait().expect("wait");
    if running {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    }
    running
}

#[test]
fn logins_killed_mid_request_leave_the_store_usable() {
    let site = site_with_users();
    // The store exists and has sessions before the carnage.
    let before: Vec<String> = USERS
        .iter()
        .map(|(u, p, _, _)| {
            let reply = site.cgi("login", &login_req(u, p));
            assert_eq!(reply.status, 200, "login as {u} failed: {}", reply.text());
            reply.cookie().expect("a session cookie")
        })
        .collect();

    let delays_ms = [0u64, 1, 2, 3, 5, 5, 8, 12, 20, 30];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut killed = 0;
    let traffic = std::thread::scope(|scope| {
        // Real users keep logging in while processes die around them.
        let traffic = scope.spawn(|| {
            let mut problems = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (user, pass, _, _) = USERS[n % USERS.len()];
                let reply = site.cgi("login", &login_req(user, pass));
                problems.extend(trouble(&format!("concurrent login {n} as {user}"), &reply));
                if reply.status != 200 {
                    problems.push(format!("concurrent login {n} as {user}: {}", reply.status));
                }
                n += 1;
            }
            (n, problems)
        });
        for i in 0..20 {
            let delay = Duration::from_millis(delays_ms[i % delays_ms.len()]);
            let (user, pass, _, _) = USERS[i % USERS.len()];
            // Odd rounds fail (a failure-count write), even rounds succeed (a session write),
            // every fifth blocks reading a body longer than what was written.
            let req = if i % 2 == 1 {
                login_req(user, "wrong").remote(&format!("198.51.100.{i}"))
            } else {
                login_req(user, pass)
            };
            let declared = (i % 5 == 4).then(|| req.body.len() + 100);
            if kill_login_after(&site, &req, delay, declared) {
                killed += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
        traffic.join().expect("traffic thread")
    });
    assert!(killed >= 10, "only {killed} of 20 logins were still running when killed");
    let (n, problems) = traffic;
    assert!(problems.is_empty(), "during the kills ({n} logins):\n{}", problems.join("\n"));

    // Afterwards: everyone logs in and sees their page; old sessions still work.
    let mut problems = Vec::new();
    for ((user, pass, first, last), old) in USERS.iter().zip(&before) {
        let reply = site.cgi("login", &login_req(user, pass));
        problems.extend(trouble(&format!("login as {user}"), &reply));
        let Some(cookie) = reply.cookie().filter(|_| reply.status == 200) else {
            problems.push(format!("login as {user}: {} {}", reply.status, reply.text()));
            continue;
        };
        for (what, c) in [("new", &cookie), ("old", old)] {
            let page = index_with(&site, c);
            problems.extend(trouble(&format!("{what} page of {user}"), &page));
            if page.status != 200 || !page.text().contains(&format!("{first} {last}")) {
                problems.push(format!("{what} page of {user}: status {}", page.status));
            }
        }
        let out = site.cgi("logout", &Req::json(&serde_json::json!({})).cookie(&cookie));
        problems.extend(trouble(&format!("logout of {user}"), &out));
        if out.status != 200 {
            problems.push(format!("logout of {user}: {}", out.status));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The admin command reads the same store without complaint.
    let list = site.admin(&["session", "list"], "");
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
}
