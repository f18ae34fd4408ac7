//! The Redis store (`WEBAUTH_STORE=redis://...`) with a real `redis-server`
//! from Debian on a free loopback port: the login flow through the real
//! programs, native expiry of idle and absolute sessions, regulation counted
//! atomically across processes, revoking a user's sessions, Redis going away
//! and coming back under a running FastCGI worker, and two nginx hosts that
//! share one Redis.

#![cfg(feature = "redis")]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::redis_server::Redis;
use support::web::{free_port, get_or_post, nginx_conf, recipe, start_nginx, Processes};
use support::{wait_until, CgiReply, Req, ResponseExt, Server, TestSite, STARTUP};
use webauth::session::Token;
use webauth::Response;

const JOHN: &str = "John Smith";

/// The hex SHA-256 of the token in `cookie` (`name=token`): the `id` field
/// of its record (the record's key is an HMAC of it, under the secret key).
fn token_hash(cookie: &str) -> String {
    let token = Token::parse(cookie.split_once('=').expect("name=value").1).expect("a token");
    token.id().0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Redis key of the live session whose cookie is `cookie`, if any.
fn session_key(redis: &Redis, cookie: &str) -> Option<String> {
    let id = token_hash(cookie);
    redis
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("webauth:s:"))
        .find(|k| redis.hash(k).iter().any(|(f, v)| f == "id" && v == &id))
}

fn login_cgi(site: &TestSite, username: &str, password: &str) -> CgiReply {
    site.cgi("login", &Req::login(username, password))
}

fn cookie_of(reply: &Response) -> String {
    assert_eq!(reply.status, 200, "login: {}", reply.text());
    reply.cookie().expect("a session cookie")
}

fn page(site: &TestSite, cookie: &str) -> CgiReply {
    site.cgi("index", &Req::get().cookie(cookie))
}

#[test]
fn the_login_flow_runs_on_redis_and_redis_holds_only_token_hashes() {
    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let login = login_cgi(&site, "john", "johnpass");
    let cookie = cookie_of(&login);
    let shown = page(&site, &cookie);
    assert_eq!(shown.status, 200, "{}", shown.stderr);
    assert!(shown.text().contains(JOHN), "{}", shown.text());

    // The session is a hash under the token's SHA-256, with a native expiry
    // no later than the idle timeout (30 min); no key or value holds the token.
    let key = session_key(&redis, &cookie).expect("the session in Redis");
    let token = cookie.split_once('=').unwrap().1;
    let keys = redis.keys();
    assert!(keys.contains(&key), "{keys:?}");
    assert!(keys.contains(&"webauth:u:john".to_string()), "the user's index: {keys:?}");
    let ttl = redis.ttl(&key);
    assert!((1..=1800).contains(&ttl), "TTL {ttl}");
    let fields = redis.hash(&key);
    assert!(fields.contains(&("username".into(), "john".into())), "{fields:?}");
    for k in &keys {
        assert!(!k.contains(token), "a key holds the live token: {k}");
        assert!(!redis.contents(k).iter().any(|v| v.contains(token)), "{k} holds the token");
    }

    // Logout ends it in Redis: the key is gone, the old cookie is refused.
    let out = site.cgi("logout", &Req::new("POST").cookie(&cookie));
    assert!(out.expires_cookie(), "{}", out.text());
    assert!(!redis.keys().contains(&key), "logout leaves the session: {:?}", redis.keys());
    assert!(!page(&site, &cookie).text().contains(JOHN));
    // A wrong password is refused as before, with its counters in Redis.
    assert_eq!(login_cgi(&site, "john", "wrong-password").status, 401);
    assert!(redis.keys().iter().any(|k| k.starts_with("webauth:f:pair:")), "{:?}", redis.keys());
    // The key does not give the token's hash away either.
    assert!(!redis.keys().iter().any(|k| k.contains(&token_hash(&cookie))), "{:?}", redis.keys());
}

#[test]
fn the_second_factor_runs_on_redis_and_each_code_works_once() {
    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let john = support::totp::enable(&site, "john");
    let send =
        |pending: &str, code: &str| site.cgi("login", &Req::json(&serde_json::json!({"code": code})).cookie(pending));
    let password_step = || {
        let reply = login_cgi(&site, "john", "johnpass");
        assert_eq!(reply.status, 401, "{}{}", reply.text(), reply.stderr);
        reply.cookie().expect("a pending cookie")
    };

    // The pending step lives in Redis under an HMAC of its token's hash
    // (not the hash itself), with an expiry.
    let pending = password_step();
    let hex = token_hash(&pending);
    let key = redis.keys().into_iter().find(|k| k.starts_with("webauth:p:")).expect("the pending step in Redis");
    assert!(!key.contains(&hex), "{key}");
    assert!((1..=300).contains(&redis.ttl(&key)), "TTL {} of {key}: {:?}", redis.ttl(&key), redis.keys());
    assert!(redis.hash(&key).contains(&("username".into(), "john".into())));
    assert!(!redis.keys().iter().any(|k| k.starts_with("webauth:s:")), "no session yet: {:?}", redis.keys());

    let right = john.code();
    let ok = send(&pending, &right);
    assert_eq!(ok.status, 200, "{}{}", ok.text(), ok.stderr);
    assert!(page(&site, &cookie_of(&ok)).text().contains(JOHN));
    assert!(!redis.keys().contains(&key), "the pending step is used up");
    assert!((1..=120).contains(&redis.ttl("webauth:t:john")), "the last step lapses by itself");

    // Another process, the same code: refused by the script's compare-and-set.
    let replay = send(&password_step(), &right);
    assert_eq!(replay.status, 401, "{}", replay.text());
    assert_eq!(replay.json()["message"], "That code was used already. Wait for the next one.");

    let recovery = &john.recovery[0];
    assert_eq!(send(&password_step(), recovery).status, 200);
    assert_eq!(
        redis.contents("webauth:r:john").len(),
        1,
        "the used code's hash: {:?}",
        redis.contents("webauth:r:john")
    );
    assert_eq!(send(&password_step(), recovery).status, 401, "a recovery code works once");

    // Ending the user's sessions ends their logins halfway through too.
    let halfway = password_step();
    assert!(redis.contents("webauth:u:john").iter().any(|m| m.starts_with("p:")), "the pending step is indexed");
    let out = site.admin(&["session", "revoke", "john"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!redis.keys().iter().any(|k| k.starts_with("webauth:p:")), "{:?}", redis.keys());
    assert_eq!(send(&halfway, &john.next_code()).status, 401, "a revoked user's pending step");
}

#[test]
fn idle_sessions_lapse_in_redis_by_themselves() {
    let redis = Redis::start();
    // Times are whole seconds: 4 s idle, used every 1.5 s.
    let site = TestSite::with_redis(&redis.url(), &[("WEBAUTH_IDLE_TIMEOUT", "4")]);
    let cookie = cookie_of(&login_cgi(&site, "john", "johnpass"));
    let key = session_key(&redis, &cookie).expect("the session in Redis");
    assert!((1..=4).contains(&redis.ttl(&key)), "TTL {}", redis.ttl(&key));
    // Used within the idle timeout, it lives on past it: each use moves the expiry.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        assert!(page(&site, &cookie).text().contains(JOHN), "a session in use stays alive");
    }
    // Left alone, Redis drops it without any request or purge.
    wait_until("Redis drops the idle session", Duration::from_secs(8), || (!redis.keys().contains(&key)).then_some(()));
    assert!(!page(&site, &cookie).text().contains(JOHN));
}

#[test]
fn a_session_in_use_still_ends_at_its_absolute_timeout() {
    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[("WEBAUTH_IDLE_TIMEOUT", "4"), ("WEBAUTH_ABSOLUTE_TIMEOUT", "6")]);
    let started = Instant::now();
    let cookie = cookie_of(&login_cgi(&site, "john", "johnpass"));
    let key = session_key(&redis, &cookie).expect("the session in Redis");
    // Kept busy, its expiry never passes the absolute end.
    while started.elapsed() < Duration::from_secs(3) {
        assert!(page(&site, &cookie).text().contains(JOHN));
        assert!(redis.ttl(&key) <= 6, "TTL {} past the absolute end", redis.ttl(&key));
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_until("Redis drops the session at its absolute end", Duration::from_secs(8), || {
        (!redis.keys().contains(&key)).then_some(())
    });
    assert!(started.elapsed() >= Duration::from_secs(5), "gone too early: {:?}", started.elapsed());
    assert!(!page(&site, &cookie).text().contains(JOHN), "busy, but past its absolute end");
}

#[test]
fn twenty_four_parallel_wrong_attempts_verify_exactly_the_limit() {
    // 24 wrong passwords for john from one address, 8 processes at a time:
    // counting and deciding are one Lua script, so exactly five are verified.
    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[("WEBAUTH_BAN_TIME", "60"), ("WEBAUTH_FAILURE_WINDOW", "60")]);
    let replies: Vec<CgiReply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..3)
                        .map(|_| site.cgi("login", &Req::login("john", "wrong").remote("198.51.100.7")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("attempt thread")).collect()
    });
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 401).count(), 5, "statuses: {statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 19, "statuses: {statuses:?}");
    // The ban is a Redis key that lapses with it.
    let ttl = redis.ttl("webauth:b:pair:198.51.100.7|john");
    assert!((50..=61).contains(&ttl), "ban TTL {ttl}");
    // Another process, the right password, the same address: still banned;
    // john elsewhere logs in.
    assert_eq!(site.cgi("login", &Req::login("john", "johnpass").remote("198.51.100.7")).status, 429);
    assert_eq!(site.cgi("login", &Req::login("john", "johnpass").remote("192.0.2.10")).status, 200);
}

#[test]
fn revoking_a_user_ends_all_their_sessions_and_only_theirs() {
    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let johns: Vec<String> = (0..3).map(|_| cookie_of(&login_cgi(&site, "john", "johnpass"))).collect();
    let jane = cookie_of(&login_cgi(&site, "jane", "janepass"));
    let list = site.admin(&["session", "list"], "");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{listed}{}", String::from_utf8_lossy(&list.stderr));
    assert_eq!(listed.lines().filter(|l| l.contains("john")).count(), 3, "{listed}");
    assert_eq!(listed.lines().filter(|l| l.contains("jane")).count(), 1, "{listed}");

    let revoke = site.admin(&["session", "revoke", "john"], "");
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    assert!(String::from_utf8_lossy(&revoke.stdout).contains('3'), "{}", String::from_utf8_lossy(&revoke.stdout));
    for cookie in &johns {
        assert!(!page(&site, cookie).text().contains(JOHN), "a revoked session still works");
        assert_eq!(session_key(&redis, cookie), None);
    }
    assert!(!redis.keys().contains(&"webauth:u:john".to_string()), "{:?}", redis.keys());
    assert!(page(&site, &jane).text().contains("Jane Doe"), "jane's session survives");

    // A new password ends the user's sessions the same way.
    let again = cookie_of(&login_cgi(&site, "john", "johnpass"));
    let passwd = site.admin(&["user", "passwd", "john"], "N3w-Passw0rd-for-John\n");
    assert!(passwd.status.success(), "{}", String::from_utf8_lossy(&passwd.stderr));
    assert!(!page(&site, &again).text().contains(JOHN), "user passwd leaves a session");
    // And deleting the user.
    let janes_second = cookie_of(&login_cgi(&site, "jane", "janepass"));
    let del = site.admin(&["user", "del", "jane"], "");
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    for cookie in [&jane, &janes_second] {
        assert_eq!(session_key(&redis, cookie), None, "user del leaves a session");
    }
}

/// One web host: nginx from deploy/nginx/webauth.conf, and index, login and
/// logout each `--listen`ing with one worker, on `site`'s settings.
struct Host {
    port: u16,
    dir: tempfile::TempDir,
    procs: Processes,
}

impl Host {
    fn start(site: &TestSite) -> Host {
        let dir = support::temp_dir();
        let d = dir.path();
        let mut procs = Processes::new();
        for program in ["index", "login", "logout"] {
            let socket = d.join(format!("{program}.sock"));
            let mut cmd = Command::new(support::bin(program));
            cmd.arg("--listen")
                .arg(&socket)
                .args(["--workers", "1"])
                .env_clear()
                .envs(site.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null());
            procs.push(Server::spawn(program, cmd, &d.join(format!("{program}.err"))));
            wait_until(program, STARTUP, || std::os::unix::net::UnixStream::connect(&socket).ok());
        }
        let port = free_port();
        let server = recipe("nginx/webauth.conf")
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("unix:/run/webauth/", &format!("unix:{}/", d.display()))
            .replace("server_name example.org;", "server_name localhost;");
        assert!(server.contains(&format!("127.0.0.1:{port}")), "the recipe's listen line changed");
        start_nginx(&mut procs, d, port, &nginx_conf(d, &server));
        Host { port, dir, procs }
    }

    fn logs(&self) -> String {
        let error_log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        self.procs.iter().map(|s| format!("{}: {}\n", s.name, s.stderr())).collect::<String>() + &error_log
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn login(&self, username: &str, password: &str) -> Response {
        let body = serde_json::json!({"username": username, "password": password}).to_string();
        let origin = self.origin();
        let headers = [("Content-Type", "application/json"), ("Accept", "application/json"), ("Origin", &origin)];
        get_or_post(self.port, "POST", "/login", &headers, body.as_bytes())
    }

    fn page(&self, cookie: &str) -> Response {
        get_or_post(self.port, "GET", "/", &[("Cookie", cookie)], b"")
    }

    fn logout(&self, cookie: &str) -> Response {
        let origin = self.origin();
        get_or_post(self.port, "POST", "/logout", &[("Cookie", cookie), ("Origin", &origin)], b"")
    }

    /// The stderr of one of this host's programs.
    fn stderr_of(&self, program: &str) -> String {
        self.procs.iter().find(|s| s.name == program).map(|s| s.stderr()).unwrap_or_default()
    }
}

#[test]
fn redis_going_away_is_503_and_service_comes_back_by_itself() {
    let mut redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let host = Host::start(&site);
    let login = host.login("john", "johnpass");
    let cookie = cookie_of(&login);
    assert!(host.page(&cookie).text().contains(JOHN), "{}", host.logs());

    // Redis stops: the same workers answer 503 with Retry-After, say why on
    // stderr, and never log anyone in on a stale answer.
    redis.stop();
    let down = host.page(&cookie);
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(down.header("Retry-After").is_some_and(|s| s.parse::<u32>().is_ok()), "{:?}", down.headers);
    assert!(!down.text().contains(JOHN));
    let refused = host.login("jane", "janepass");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.headers_named("Set-Cookie").is_empty(), "a cookie while the store is down");
    assert!(host.stderr_of("index").contains("redis://127.0.0.1"), "index stderr: {}", host.stderr_of("index"));
    assert!(host.stderr_of("login").contains("redis://127.0.0.1"), "login stderr: {}", host.stderr_of("login"));

    // Redis comes back with its data: the workers reconnect on the next request.
    redis.restart();
    let back = host.page(&cookie);
    assert_eq!(back.status, 200, "{}\n{}", back.text(), host.logs());
    assert!(back.text().contains(JOHN), "the session survives the outage");
    assert_eq!(host.login("jane", "janepass").status, 200, "{}", host.logs());

    // A Redis that hangs (stopped, not gone) is a 503 after the command
    // timeout, not a hung worker; it answers again when it wakes.
    support::signal(redis.pid(), libc::SIGSTOP);
    let started = Instant::now();
    let hung = host.page(&cookie);
    let waited = started.elapsed();
    support::signal(redis.pid(), libc::SIGCONT);
    assert_eq!(hung.status, 503, "{}", hung.text());
    assert!(waited < Duration::from_secs(10), "waited {waited:?} on a hung Redis");
    let woke = host.page(&cookie);
    assert!(woke.text().contains(JOHN), "{}\n{}", woke.text(), host.logs());
}

#[test]
fn two_hosts_share_sessions_logouts_and_bans_through_one_redis() {
    let redis = Redis::start();
    // Each host has its own state directory (its verification slots); the
    // users file and the secret key travel with the deploy: here both read
    // one copy.
    let site_a = TestSite::with_redis(&redis.url(), &[("WEBAUTH_BAN_TIME", "60")]);
    let mut site_b = TestSite::with_redis(&redis.url(), &[("WEBAUTH_BAN_TIME", "60")]);
    site_b.set("WEBAUTH_USERS", &site_a.users.display().to_string());
    site_b.set("WEBAUTH_SECRET_KEY", site_a.setting("WEBAUTH_SECRET_KEY"));
    let a = Host::start(&site_a);
    let b = Host::start(&site_b);
    let logs = || format!("A:\n{}\nB:\n{}", a.logs(), b.logs());

    // A login on A works on B.
    let cookie = cookie_of(&a.login("john", "johnpass"));
    let on_b = b.page(&cookie);
    assert!(on_b.text().contains(JOHN), "{}\n{}", on_b.text(), logs());
    // A logout on B ends it on A.
    let out = b.logout(&cookie);
    assert!(out.status == 200 || out.status == 303, "{}: {}", out.status, out.text());
    assert!(out.expires_cookie(), "{:?}", out.headers);
    assert!(!a.page(&cookie).text().contains(JOHN), "logged out on B, still in on A\n{}", logs());

    // A ban earned on A holds on B (both see the client as 127.0.0.1).
    for i in 1..=5 {
        assert_eq!(a.login("jane", "wrong-password").status, 401, "failure {i} on A");
    }
    let banned = b.login("jane", "janepass");
    assert_eq!(banned.status, 429, "the right password on B during A's ban: {}", banned.text());
    assert!(banned.header("Retry-After").is_some());
    // Other users are not touched by jane's ban.
    assert!(b.page(&cookie_of(&b.login("john", "johnpass"))).text().contains(JOHN));
}

/// A Redis store needs the hosts' secret key and this host's state directory.
#[test]
fn a_redis_store_without_its_key_or_state_directory_is_a_clear_configuration_error() {
    let mut site = TestSite::new();
    site.set("WEBAUTH_STORE", "redis://127.0.0.1:1/0");
    let reply = site.cgi("index", &Req::get());
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.stderr.contains("WEBAUTH_SECRET_KEY"), "{}", reply.stderr);
    site.set("WEBAUTH_SECRET_KEY", "/nonexistent");
    let reply = site.cgi("index", &Req::get());
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.stderr.contains("WEBAUTH_STATE_DIR"), "{}", reply.stderr);
    // A key file too short to be a key: 503 and why.
    let mut site = TestSite::with_redis("redis://127.0.0.1:1/0", &[]);
    let short = site.dir.path().join("short.key");
    std::fs::write(&short, "password").unwrap();
    site.set("WEBAUTH_SECRET_KEY", &short.display().to_string());
    let reply = site.cgi("login", &Req::login("john", "johnpass"));
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.stderr.contains("fewer than 32"), "{}", reply.stderr);
}

/// A password in the URL never reaches a log or an answer: not when Redis
/// cannot be reached (port 1), nor when the URL is refused, nor when it was
/// put where the user name goes, nor as `?password=`.
#[test]
fn the_redis_password_is_never_shown() {
    let token = Token::generate().unwrap();
    let cookie = format!("webauth={}", token.as_str());
    for (url, status, shown) in [
        ("redis://:s3cret-pw@127.0.0.1:1/0", 503, "redis://:***@127.0.0.1:1/0"),
        ("redis://s3cret-pw@127.0.0.1:1/0", 503, "redis://***@127.0.0.1:1/0"),
        ("redis://:s3cret-pw@127.0.0.1:1/x", 500, "WEBAUTH_STORE"),
        ("redis://127.0.0.1:1/0?password=s3cret-pw", 500, "WEBAUTH_STORE"),
    ] {
        let site = TestSite::with_redis(url, &[]);
        let reply = site.cgi("index", &Req::get().cookie(&cookie));
        assert_eq!(reply.status, status, "{url}: {}", reply.text());
        assert!(reply.stderr.contains(shown), "{url}: {}", reply.stderr);
        assert!(!reply.stderr.contains("s3cret-pw") && !reply.text().contains("s3cret-pw"), "{url}: {}", reply.stderr);
        let check = site.admin(&["check"], "");
        let said = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
        assert!(!said.contains("s3cret-pw"), "{url}: {said}");
    }
}

/// Whoever can write to Redis, but has not the hosts' secret key, cannot
/// log in: not with a record under a token of their own, nor by putting
/// another user's name on their own session. Such records are no session,
/// and a line on stderr says the store was written by someone else.
#[test]
fn writing_redis_without_the_secret_key_logs_no_one_in() {
    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let mut c = redis.client().get_connection().unwrap();
    let now = webauth::session::now();
    let forged = Token::generate().unwrap();
    let id_hex: String = forged.id().0.iter().map(|b| format!("{b:02x}")).collect();
    // Under the token's plain SHA-256, as a store without the key would name it.
    let _: () = redis::cmd("HSET")
        .arg(format!("webauth:s:{id_hex}"))
        .arg(&["id", &id_hex, "username", "john", "created", &now.to_string(), "last_seen", &now.to_string()])
        .arg(&["expires_at", &(now + 3600).to_string(), "idle_timeout", "0", "mac", &"0".repeat(64)])
        .query(&mut c)
        .unwrap();
    let shown = page(&site, &format!("webauth={}", forged.as_str()));
    assert!(!shown.text().contains(JOHN), "a forged record logged someone in");

    // Jane's own session, renamed to john's in Redis.
    let janes = cookie_of(&login_cgi(&site, "jane", "janepass"));
    assert!(page_of(&site, &janes).contains("Jane Doe"));
    let key = session_key(&redis, &janes).expect("jane's session");
    assert_ne!(key, format!("webauth:s:{id_hex}"));
    let _: () = redis::cmd("HSET").arg(&key).arg("username").arg("john").query(&mut c).unwrap();
    let renamed = page(&site, &janes);
    assert!(!renamed.text().contains(JOHN) && !renamed.text().contains("Jane Doe"), "{}", renamed.text());
    assert!(renamed.stderr.contains("fails its check"), "{}", renamed.stderr);
    // Nor does the key name give the token's hash away.
    assert!(!key.contains(&token_hash(&janes)), "{key}");
}

fn page_of(site: &TestSite, cookie: &str) -> String {
    page(site, cookie).text()
}

/// Two stores on one Redis with clocks 1000 s apart (two hosts, one
/// without NTP): a ban earned on either holds on both, and revoke-all finds
/// sessions from both.
#[test]
fn hosts_whose_clocks_disagree_still_share_counts_bans_and_revocation() {
    use webauth::store::{self, Limit, SessionId, SessionRecord};
    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let config = webauth::config::Config::from_vars(&site.env).expect("the site's settings");
    let (mut ahead, mut behind) = (store::open(&config.store).unwrap(), store::open(&config.store).unwrap());
    let now = webauth::session::now();
    let keys = vec![("pair:198.51.100.7|john".to_string(), Limit { max: 5, window: 600, ban: 900 })];
    // Four failures on the host that is right, the fifth on the one behind:
    // the ban starts, and holds on both.
    for _ in 0..4 {
        assert_eq!(ahead.attempt(&keys, now).unwrap().refused_until, None);
    }
    assert!(behind.attempt(&keys, now - 1000).unwrap().started_ban);
    let on_ahead = ahead.attempt(&keys, now).unwrap().refused_until.expect("banned on the host ahead");
    assert!((now + 890..=now + 900).contains(&on_ahead), "{on_ahead}");
    let on_behind = behind.attempt(&keys, now - 1000).unwrap().refused_until.expect("banned on the host behind");
    assert!((now - 110..=now - 100).contains(&on_behind), "{on_behind}");

    // Sessions from both hosts are in john's index; revoke-all ends both.
    let record = |byte: u8, at: i64| SessionRecord {
        id: SessionId([byte; 32]),
        username: "john".into(),
        created: at,
        last_seen: at,
        expires_at: at + 3600,
        idle_timeout: 0,
    };
    behind.insert(&record(1, now - 2000), 1800).unwrap();
    ahead.insert(&record(2, now), 1800).unwrap();
    assert_eq!(ahead.delete_user("john").unwrap(), 2, "a session from the host behind escaped");
    assert!(redis.keys().iter().all(|k| !k.starts_with("webauth:s:")), "{:?}", redis.keys());
}

/// The same rules on both stores: each step of a scripted sequence of
/// sessions and attempts gives the same answer from SQLite and from Redis.
/// (Time passing is the SQLite unit tests' and the tests above, on a real
/// clock: Redis counts time itself.)
#[test]
fn redis_and_sqlite_stores_answer_alike() {
    use webauth::config::Store;
    use webauth::store::{self, Limit, SessionId, SessionRecord, SessionStore};

    let redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let redis_store = webauth::config::Config::from_vars(&site.env).expect("a Redis configuration").store;
    assert!(matches!(redis_store, Store::Redis { .. }), "{redis_store:?}");
    let sqlite = Store::Sqlite(site.dir.path().join("s.db"));

    let now = webauth::session::now();
    let tight = Limit { max: 3, window: 60, ban: 30 };
    let loose = Limit { max: 100, window: 60, ban: 30 };
    let keys = vec![("pair:1.2.3.4|john".to_string(), tight), ("user:john".to_string(), loose)];
    let other = vec![("pair:1.2.3.5|john".to_string(), tight), ("user:john".to_string(), loose)];
    let record = |username: &str, byte: u8| SessionRecord {
        id: SessionId([byte; 32]),
        username: username.into(),
        created: now,
        last_seen: now,
        expires_at: now + 100,
        idle_timeout: 0,
    };
    let run = |s: &mut dyn SessionStore| -> Vec<String> {
        let mut out = Vec::new();
        // Whether refused (not when: the stores count time differently), and
        // whether a ban started.
        let mut attempt = |s: &mut dyn SessionStore, keys: &[(String, Limit)]| {
            let a = s.attempt(keys, now).unwrap();
            out.push(format!("refused {} banning {}", a.refused_until.is_some(), a.started_ban));
        };
        for _ in 0..4 {
            attempt(s, &keys);
        }
        // Another address: the pair's ban is not its; the user's count goes on.
        attempt(s, &other);
        s.succeeded(&["pair:1.2.3.5|john".into(), "user:john".into()], &["addr:1.2.3.5".into()]).unwrap();
        attempt(s, &keys);
        attempt(s, &other);
        for (user, byte) in [("john", 1), ("john", 2), ("jane", 3)] {
            s.insert(&record(user, byte), 50).unwrap();
        }
        s.touch(&SessionId([1; 32]), now + 20, 50).unwrap();
        out.push(format!("{:?}", s.get(&SessionId([1; 32])).unwrap()));
        out.push(format!("{:?}", s.get_many(&[SessionId([3; 32]), SessionId([9; 32]), SessionId([2; 32])]).unwrap()));
        out.push(format!("{:?}", s.list().unwrap()));
        s.delete(&SessionId([2; 32])).unwrap();
        out.push(format!("{:?}", s.get(&SessionId([2; 32])).unwrap()));
        s.insert(&record("john", 4), 50).unwrap();
        out.push(format!("ended {}", s.delete_user("john").unwrap()));
        out.push(format!("{:?}", s.list().unwrap()));
        // A touch on an ended session does not bring it back.
        s.touch(&SessionId([1; 32]), now + 30, 50).unwrap();
        out.push(format!("{:?}", s.get(&SessionId([1; 32])).unwrap()));
        // The second factor: a pending step, steps and recovery codes used once.
        let pending = webauth::store::PendingRecord {
            id: SessionId([5; 32]),
            username: "john".into(),
            expires_at: now + 300,
            remember: true,
            next: "/x".into(),
        };
        s.insert_pending(&pending, now).unwrap();
        out.push(format!("{:?}", s.get_pending(&pending.id, now).unwrap()));
        out.push(format!("{:?}", s.get_pending(&pending.id, now + 300).unwrap()));
        out.push(format!("{:?}", s.get(&pending.id).unwrap()));
        out.push(format!("{} {}", s.take_pending(&pending.id).unwrap(), s.take_pending(&pending.id).unwrap()));
        for step in [10, 10, 9, 11] {
            out.push(format!("step {step}: {}", s.use_totp_step("john", step).unwrap()));
        }
        for hash in ["aa", "aa", "bb"] {
            out.push(format!("recovery {hash}: {}", s.use_recovery_code("john", hash, now).unwrap()));
        }
        let mut used = s.used_recovery_codes("john").unwrap();
        used.sort();
        out.push(format!("{used:?}"));
        out
    };
    let from_sqlite = run(store::open(&sqlite).unwrap().as_mut());
    let from_redis = run(store::open(&redis_store).unwrap().as_mut());
    assert_eq!(from_sqlite, from_redis);
    // And the sequence meant something: a ban, a refusal, forgiveness, a count.
    let expected = [
        "refused false banning false",
        "refused false banning false",
        "refused false banning true",
        "refused true banning false",
        "refused false banning false",
        "refused true banning false",
        "refused false banning false",
    ];
    assert_eq!(&from_sqlite[..7], &expected[..], "{from_sqlite:?}");
    assert_eq!(from_sqlite[11], "ended 2", "{from_sqlite:?}");
    assert!(from_sqlite[14].contains("remember: true"), "{from_sqlite:?}");
    assert_eq!(from_sqlite[15..18], ["None", "None", "true false"], "{from_sqlite:?}");
    assert_eq!(from_sqlite[18..22], ["step 10: true", "step 10: false", "step 9: false", "step 11: true"]);
    assert_eq!(
        from_sqlite[22..26],
        ["recovery aa: true", "recovery aa: false", "recovery bb: true", "[\"aa\", \"bb\"]"]
    );
}

/// `rediss://`: the certificate is checked against the system's roots, or
/// the bundle `SSL_CERT_FILE` names; an unknown CA is refused (503).
#[test]
fn rediss_speaks_tls_and_checks_the_certificate() {
    let redis = Redis::start_tls();
    let ca = redis.ca.clone().expect("a TLS Redis");
    let mut site = TestSite::with_redis(&redis.url(), &[]);
    site.set("SSL_CERT_FILE", &ca.display().to_string());
    let cookie = cookie_of(&login_cgi(&site, "john", "johnpass"));
    assert!(page(&site, &cookie).text().contains(JOHN));

    // The same server, but this host does not trust its CA.
    let mut stranger = TestSite::with_redis(&redis.url(), &[]);
    stranger.set("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt");
    let refused = login_cgi(&stranger, "john", "johnpass");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.stderr.contains("rediss://127.0.0.1"), "{}", refused.stderr);
    // And plain TCP to a TLS port is no store either.
    let mut plain = TestSite::with_redis(&redis.url().replace("rediss:", "redis:"), &[]);
    plain.set("SSL_CERT_FILE", &ca.display().to_string());
    assert_eq!(login_cgi(&plain, "john", "johnpass").status, 503);
}

/// `webauth check` asks Redis, and says so when it does not answer.
#[test]
fn webauth_check_asks_redis() {
    let mut redis = Redis::start();
    let site = TestSite::with_redis(&redis.url(), &[]);
    let report = |site: &TestSite| {
        let out = site.admin(&["check"], "");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let up = report(&site);
    assert!(up.contains(&format!("ok    session store redis://127.0.0.1:{}/0 answers", redis.port)), "{up}");
    assert!(!up.contains("plain TCP"), "{up}");
    redis.stop();
    let down = report(&site);
    assert!(down.contains("FAIL") && down.contains("start Redis"), "{down}");
}
