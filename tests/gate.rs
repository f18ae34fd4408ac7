//! The gate in front of other content through Debian's nginx
//! (deploy/nginx/protect.conf): a static folder and a proxied app behind
//! `auth_request`, the anonymous visitor sent to the login page and back,
//! the username handed on, logout closing the folder again.

mod support;

use support::web::{self, Processes};
use support::ResponseExt;

#[test]
fn nginx_auth_request_protects_a_folder_and_an_app() {
    let dir = support::temp_dir();
    let d = dir.path();
    let users = web::users_file(d);
    let www = d.join("www");
    std::fs::create_dir_all(www.join("private")).expect("folder");
    std::fs::write(www.join("private/file.html"), "<p>the protected file</p>\n").expect("file");
    let mut procs = Processes::new();
    web::listen_programs(&mut procs, d, d, &users);
    let port = web::free_port();
    let app_port = web::free_port();
    let recipe = web::recipe("nginx/protect.conf");
    let recipe = web::fill(&recipe, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let recipe = web::fill(&recipe, "unix:/run/webauth/", &format!("unix:{}/", d.display()));
    let recipe = web::fill(&recipe, "root /var/www;", &format!("root {};", www.display()));
    let recipe =
        web::fill(&recipe, "proxy_pass http://127.0.0.1:8080;", &format!("proxy_pass http://127.0.0.1:{app_port};"));
    // The app behind the gate: says which user nginx handed on.
    let app = format!(
        "server {{\n listen 127.0.0.1:{app_port};\n location / {{ return 200 \"app sees user=$http_x_webauth_user\\n\"; }}\n}}\n"
    );
    web::start_nginx(&mut procs, d, port, &web::nginx_conf(d, &format!("{recipe}\n{app}")));
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    let get = |path: &str, cookie: Option<&str>| {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        web::get_or_post(port, "GET", path, &headers, b"")
    };

    // Anonymous: to the login page, with the page and its query kept.
    let refused = get("/private/file.html?x=1&y=2", None);
    assert_eq!(refused.status, 303, "{:?}\n{}", refused.headers, log());
    let to_login = refused.header("Location").expect("a Location").to_string();
    assert_eq!(to_login, "/login?next=%2Fprivate%2Ffile.html%3Fx%3D1%26y%3D2");
    let page = get(&to_login, None);
    assert_eq!(page.status, 200);
    assert!(page.html().contains("value=\"/private/file.html?x=1&amp;y=2\""), "{}", page.text());
    assert_eq!(get("/app/hello", None).status, 303);

    // Logging in through that page lands back on the protected file.
    let origin = format!("http://127.0.0.1:{port}");
    let form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let body = "username=john&password=johnpass&next=%2Fprivate%2Ffile.html%3Fx%3D1%26y%3D2";
    let login = web::get_or_post(port, "POST", "/login", &form, body.as_bytes());
    assert_eq!(login.status, 303, "{:?}\n{}", login.headers, log());
    assert_eq!(login.header("Location"), Some("/private/file.html?x=1&y=2"));
    let cookie = login.cookie().expect("a session cookie");
    let file = get("/private/file.html?x=1&y=2", Some(&cookie));
    assert_eq!(file.status, 200, "{}\n{}", file.text(), log());
    assert!(file.text().contains("the protected file"));
    assert_eq!(file.header("X-Webauth-User"), Some("john"), "the username reaches the protected location");
    let app = get("/app/hello", Some(&cookie));
    assert_eq!(app.status, 200, "{}", log());
    assert_eq!(app.text(), "app sees user=john\n");

    // A forged cookie is refused; logout closes the folder again.
    assert_eq!(get("/private/file.html", Some("webauth=Session::john")).status, 303);
    assert_eq!(get("/private/file.html", Some(&format!("webauth={}", "A".repeat(43)))).status, 303);
    let mut logout = form.to_vec();
    logout.push(("Cookie", &cookie));
    assert_eq!(web::get_or_post(port, "POST", "/logout", &logout, b"").status, 303);
    assert_eq!(get("/private/file.html", Some(&cookie)).status, 303, "logout makes /private/ refuse again");
}

#[test]
fn apache_mod_authnz_fcgi_protects_a_folder_and_hands_on_remote_user() {
    let dir = support::temp_dir();
    let d = dir.path();
    web::open_to_web_server(d);
    let users = web::users_file(d);
    // A CGI script in the protected folder, printing what Apache gives it.
    let private = d.join("private");
    std::fs::create_dir(&private).expect("folder");
    let script = private.join("whoami.cgi");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"REMOTE_USER=$REMOTE_USER\"\necho \"WEBAUTH_FIRST=$WEBAUTH_FIRST\"\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let run = d.join("run");
    std::fs::create_dir(&run).expect("run");
    web::open_to_web_server(&run);
    let mut procs = Processes::new();
    for program in ["index", "login", "logout"] {
        let socket = run.join(format!("{program}.sock"));
        web::listen_program(&mut procs, program, &socket.display().to_string(), d, &users);
        support::wait_until(program, support::STARTUP, || socket.exists().then_some(()));
        if web::as_root() {
            let status = std::process::Command::new("chgrp").arg("www-data").arg(&socket).status().expect("chgrp");
            assert!(status.success());
        }
    }
    let auth_port = web::free_port();
    web::listen_program(&mut procs, "auth", &format!("127.0.0.1:{auth_port}"), d, &users);
    support::wait_until("auth", support::STARTUP, || std::net::TcpStream::connect(("127.0.0.1", auth_port)).ok());

    let login = web::fill(&web::recipe("apache/proxy-fcgi.conf"), "/run/webauth/", &format!("{}/", run.display()));
    let gate = web::fill(&web::recipe("apache/authorizer.conf"), "127.0.0.1:9101", &format!("127.0.0.1:{auth_port}"));
    let body = format!(
        "{login}\n{gate}\nAlias /private/ {p}/\n<Directory {p}>\n  Options +ExecCGI\n  AddHandler cgi-script .cgi\n</Directory>\n",
        p = private.display()
    );
    let port = web::free_port();
    let conf = web::apache_conf(d, port, &["cgi", "authn_core", "authz_user"], &body);
    web::start_apache(&mut procs, d, port, &conf);
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    let get = |path: &str, cookie: Option<&str>| {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        web::get_or_post(port, "GET", path, &headers, b"")
    };

    // Anonymous: to the login page, keeping where it was going.
    let refused = get("/private/whoami.cgi?a=1", None);
    assert_eq!(refused.status, 303, "{:?}\n{}\n{}", refused.headers, refused.text(), log());
    assert_eq!(refused.header("Location"), Some("/members/login?next=%2Fprivate%2Fwhoami.cgi%3Fa%3D1"));

    let origin = format!("http://127.0.0.1:{port}");
    let json = [("Content-Type", "application/json"), ("Origin", origin.as_str())];
    let ok = web::get_or_post(port, "POST", "/members/login", &json, br#"{"username":"john","password":"johnpass"}"#);
    assert_eq!(ok.status, 200, "{}\n{}", ok.text(), log());
    let cookie = ok.cookie().expect("a session cookie");
    let page = get("/private/whoami.cgi", Some(&cookie));
    assert_eq!(page.status, 200, "{}\n{}", page.text(), log());
    assert!(page.text().contains("REMOTE_USER=john\n"), "{}", page.text());
    assert!(page.text().contains("WEBAUTH_FIRST=John\n"), "{}", page.text());

    for forged in ["webauth=Session::john".to_string(), format!("webauth={}", "A".repeat(43))] {
        assert_eq!(get("/private/whoami.cgi", Some(&forged)).status, 303, "{forged}");
    }
    let logout = [("Content-Type", "application/json"), ("Origin", origin.as_str()), ("Cookie", cookie.as_str())];
    assert_eq!(web::get_or_post(port, "POST", "/members/logout", &logout, b"{}").status, 200);
    assert_eq!(get("/private/whoami.cgi", Some(&cookie)).status, 303, "a logged-out cookie is refused");
}

/// The `auth` program itself (as CGI, the responder role nginx uses): a live
/// session is `204` with the user's names, anything else `401`; it never
/// sets a cookie, never renders a page, and writes nothing to the store but
/// the throttled last-seen touch (a session that ran out is left for the
/// login programs to end).
#[test]
fn auth_answers_204_or_401_and_writes_nothing() {
    use support::{Req, TestSite};
    let ask = |site: &TestSite, cookie: Option<&str>| {
        let req = Req::get().script("/auth");
        site.cgi("auth", &if let Some(c) = cookie { req.cookie(c) } else { req })
    };
    let site = TestSite::new();
    let cookie = site.session_for("john", "johnpass");
    let yes = ask(&site, Some(&cookie));
    assert_eq!(yes.status, 204, "{}", yes.stderr);
    assert_eq!(yes.header("X-Webauth-User"), Some("john"));
    assert_eq!(yes.header("X-Webauth-First"), Some("John"));
    assert_eq!(yes.header("X-Webauth-Last"), Some("Smith"));
    assert!(yes.body.is_empty(), "a page from the gate");
    assert!(yes.headers_named("Set-Cookie").is_empty());

    // Within the touch interval (a minute) nothing is written.
    let files = || {
        let wal = site.store.with_extension("db-wal");
        (std::fs::read(&site.store).expect("the store"), std::fs::read(wal).unwrap_or_default())
    };
    let before = files();
    for _ in 0..3 {
        assert_eq!(ask(&site, Some(&cookie)).status, 204);
    }
    assert!(files() == before, "auth wrote to the store within the touch interval");

    for (what, c) in [
        ("no cookie", None),
        ("a forged cookie", Some(format!("webauth={}", "A".repeat(43)))),
        ("the tutorial's cookie", Some("SID=Session::john".to_string())),
    ] {
        let no = ask(&site, c.as_deref());
        assert_eq!(no.status, 401, "{what}");
        assert!(no.headers_named("Set-Cookie").is_empty(), "{what}: a cookie from the gate");
        assert!(no.header("X-Webauth-User").is_none(), "{what}");
        assert!(no.body.is_empty(), "{what}: a page from the gate");
    }
    // A logged-out cookie.
    let out = site.cgi("logout", &Req::new("POST").cookie(&cookie));
    assert!(out.expires_cookie());
    assert_eq!(ask(&site, Some(&cookie)).status, 401, "a logged-out cookie");

    // A session that ran out is refused but left in place (auth deletes nothing).
    let short = TestSite::with_env(&[("WEBAUTH_IDLE_TIMEOUT", "2")]);
    let idle = short.session_for("john", "johnpass");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert_eq!(ask(&short, Some(&idle)).status, 401, "an idle session");
    let listed = short.admin(&["session", "list"], "");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("john"), "auth ended the session itself");
}
