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
