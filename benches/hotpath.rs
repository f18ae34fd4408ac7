//! The per-request hot path without a process or a network: parse a CGI
//! request, look up a session, render the user page; and what a login costs
//! besides its one argon2id verification. `bench/run` runs it and puts its
//! lines in BENCHMARKS.md; by hand: `cargo bench --bench hotpath`.
//!
//! Plain timing, no harness: each case runs in rounds, interleaved, and a
//! line of JSON gives the median time of one call over the rounds and the
//! spread (max - min over median) of the rounds.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use webauth::http::Request;
use webauth::{routes, users, App};

const PASSWORD: &str = "bench-password-1";

fn cgi_vars(
    method: &str,
    script: &str,
    cookie: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", script),
        ("REQUEST_URI", script),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "127.0.0.1"),
        ("HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64) bench"),
        ("HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("HTTP_ACCEPT_LANGUAGE", "en-GB,en;q=0.5"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(cookie) = cookie {
        vars.insert("HTTP_COOKIE".into(), cookie.into());
    }
    if let Some(t) = content_type {
        vars.insert("CONTENT_TYPE".into(), t.into());
        vars.insert("CONTENT_LENGTH".into(), body.len().to_string());
    }
    vars
}

struct Case<'a> {
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
    times: Vec<f64>,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (rounds, fast, slow) = if smoke { (2, 20, 1) } else { (15, 2000, 6) };

    let dir = tempfile::tempdir().expect("a temporary directory");
    let users_path = dir.path().join("users.json");
    let hash = users::hash_password(PASSWORD).expect("hashing");
    let users_json = serde_json::json!({"john": {"first": "John", "last": "Smith", "password": hash}});
    std::fs::write(&users_path, users_json.to_string()).expect("writing the users file");
    let env = vec![
        ("WEBAUTH_USERS".to_string(), users_path.display().to_string()),
        ("WEBAUTH_STORE".to_string(), format!("sqlite:{}", dir.path().join("sessions.db").display())),
    ];
    let mut app = App::new(env.clone()).expect("the configuration");

    let login_body = serde_json::json!({"username": "john", "password": PASSWORD}).to_string().into_bytes();
    let login_vars = cgi_vars("POST", "/login", None, Some("application/json"), &login_body);
    let login = |app: &mut App| {
        let response = app.handle(routes::login, &Request::from_cgi_vars(&login_vars, Ok(login_body.clone())));
        assert_eq!(response.status, 200, "a valid login");
        response
    };
    let response = login(&mut app);
    let set_cookie = &response.headers.iter().find(|(n, _)| n == "Set-Cookie").expect("a cookie").1;
    let cookie = set_cookie.split(';').next().expect("name=value").to_string();
    let page_vars = cgi_vars("GET", "/", Some(&cookie), None, b"");
    let request = Request::from_cgi_vars(&page_vars, Ok(Vec::new()));
    let page = app.handle(routes::index, &request);
    assert!(page.status == 200 && String::from_utf8_lossy(&page.body).contains("logout"), "the user page");

    let db = users::UserDb::load(&users_path).expect("the users file");
    let mut cold_app_env = env.clone();
    cold_app_env.push(("WEBAUTH_COOKIE_NAME".into(), "webauth".into()));
    let mut cases = vec![
        Case {
            name: "parse a CGI request (13 variables)",
            run: Box::new(|| {
                black_box(Request::from_cgi_vars(black_box(&page_vars), Ok(Vec::new())));
            }),
            times: vec![],
        },
        Case {
            name: "look up the session (cookie, SQLite)",
            run: Box::new({
                let mut app = App::new(env.clone()).expect("config");
                let request = Request::from_cgi_vars(&page_vars, Ok(Vec::new()));
                move || {
                    let (live, _) = routes::current_session(&mut app, &request).expect("the store");
                    assert!(live.is_some());
                }
            }),
            times: vec![],
        },
        Case {
            name: "`index` with a session, whole handler (warm worker)",
            run: Box::new({
                let mut app = App::new(env.clone()).expect("config");
                let request = Request::from_cgi_vars(&page_vars, Ok(Vec::new()));
                move || {
                    let r = app.handle(routes::index, &request);
                    assert_eq!(r.status, 200);
                    black_box(r);
                }
            }),
            times: vec![],
        },
        Case {
            name: "`index` with a session, fresh state (a CGI run's own work)",
            run: Box::new(|| {
                let mut app = App::new(cold_app_env.clone()).expect("config");
                let r = app.handle(routes::index, &Request::from_cgi_vars(&page_vars, Ok(Vec::new())));
                assert_eq!(r.status, 200);
                black_box(r);
            }),
            times: vec![],
        },
    ];
    let mut slow_cases = vec![
        Case {
            name: "argon2id verify alone (m=19456 t=2 p=1)",
            run: Box::new(|| {
                assert!(db.verify("john", PASSWORD).is_some());
            }),
            times: vec![],
        },
        Case {
            name: "`login` JSON, valid, whole handler (warm worker)",
            run: Box::new({
                let mut app = App::new(env.clone()).expect("config");
                move || {
                    black_box(login(&mut app));
                }
            }),
            times: vec![],
        },
    ];

    for _ in 0..rounds {
        for (cases, n) in [(&mut cases, fast), (&mut slow_cases, slow)] {
            for case in cases.iter_mut() {
                let start = Instant::now();
                for _ in 0..n {
                    (case.run)();
                }
                case.times.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for case in cases.iter().chain(&slow_cases) {
        let m = median(&case.times);
        let max = case.times.iter().cloned().fold(f64::MIN, f64::max);
        let min = case.times.iter().cloned().fold(f64::MAX, f64::min);
        println!("{}", serde_json::json!({"name": case.name, "median_us": m, "spread": (max - min) / m * 100.0}));
    }
    // What a login costs besides its verification, round by round.
    let extra: Vec<f64> = slow_cases[1].times.iter().zip(&slow_cases[0].times).map(|(l, v)| l - v).collect();
    let m = median(&extra);
    println!(
        "{}",
        serde_json::json!({"name": "`login` minus its argon2id verify (the rest of a login)", "median_us": m,
            "spread": (extra.iter().cloned().fold(f64::MIN, f64::max) - extra.iter().cloned().fold(f64::MAX, f64::min)) / m.abs().max(1.0) * 100.0})
    );
}
