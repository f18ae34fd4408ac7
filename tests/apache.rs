//! The Apache recipes through Debian's Apache on 127.0.0.1: the shared-host
//! folder made by `webauth bundle shared-host` under mod_cgi with
//! `AllowOverride All`, the programs under mod_fcgid (deploy/apache/fcgid.conf),
//! and behind mod_proxy_fcgi on `--listen` unix sockets
//! (deploy/apache/proxy-fcgi.conf). Each runs the whole login flow.

mod support;

use std::path::Path;
use std::process::Command;

use support::web::{self, Processes};
use support::ResponseExt;

fn temp_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("webauth-apache-").tempdir().expect("temp dir");
    web::open_to_web_server(dir.path());
    dir
}

fn log(dir: &Path) -> impl Fn() -> String + '_ {
    move || {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        format!("--- error.log\n{}--- apache.stderr\n{}", read("error.log"), read("apache.stderr"))
    }
}

#[test]
fn mod_cgi_serves_the_shared_host_bundle_at_a_sub_path_and_at_the_root() {
    for mount in ["/members/", "/"] {
        let dir = temp_dir();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).expect("www");
        let folder = web::shared_host_bundle(&www, mount);
        // On a suexec host the programs run as the folder's owner.
        web::give_to_web_server(&folder);
        let port = web::free_port();
        let body = format!(
            "DocumentRoot {www}\n<Directory {www}>\n  AllowOverride All\n  Require all granted\n</Directory>\n",
            www = www.display()
        );
        let conf = web::apache_conf(dir.path(), port, &["rewrite", "cgi"], &body);
        let mut procs = Processes::new();
        web::start_apache(&mut procs, dir.path(), port, &conf);
        web::login_flow(port, mount, &log(dir.path()));
        for private in ["data/users.json", "data/sessions.db", ".htaccess", "data/"] {
            let got = web::get_or_post(port, "GET", &format!("{mount}{private}"), &[], b"");
            assert_eq!(got.status, 403, "{mount}{private} is served: {}", got.text());
        }
        let modes = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(folder.join(p)).expect(p).permissions().mode() & 0o777
        };
        assert_eq!((modes("login.cgi"), modes("data"), modes("data/users.json")), (0o755, 0o700, 0o600));
        assert_eq!(modes("data/sessions.db") & 0o077, 0, "the store is private");
    }
}

#[test]
fn mod_cgi_serves_the_bundle_through_the_alias_recipe() {
    let dir = temp_dir();
    let folder = web::shared_host_bundle_at(&dir.path().join("webauth-members"), "/members/");
    web::give_to_web_server(&folder);
    let recipe = web::fill(&web::recipe("apache/cgi.conf"), "/var/www/webauth-members", &folder.display().to_string());
    let www = dir.path().join("www");
    std::fs::create_dir(&www).expect("www");
    let body = format!("DocumentRoot {}\n{recipe}", www.display());
    let port = web::free_port();
    let conf = web::apache_conf(dir.path(), port, &["rewrite", "cgi"], &body);
    let mut procs = Processes::new();
    web::start_apache(&mut procs, dir.path(), port, &conf);
    web::login_flow(port, "/members/", &log(dir.path()));
    let got = web::get_or_post(port, "GET", "/members/data/users.json", &[], b"");
    assert_eq!(got.status, 403, "{}", got.text());
}

#[test]
fn mod_fcgid_runs_the_programs_from_the_recipe() {
    for mount in ["/members/", "/"] {
        fcgid_flow(mount);
    }
}

fn fcgid_flow(mount: &str) {
    let dir = temp_dir();
    let d = dir.path();
    let lib = d.join("lib");
    let data = d.join("data");
    std::fs::create_dir(&lib).expect("lib");
    std::fs::create_dir(&data).expect("data");
    for p in ["index", "login", "logout"] {
        std::fs::copy(support::bin(p), lib.join(p)).expect("copy a program");
    }
    let users = web::users_file(&data);
    web::give_to_web_server(&data);
    std::fs::create_dir(d.join("fcgid")).expect("fcgid dir");
    web::give_to_web_server(&d.join("fcgid"));
    let recipe = web::recipe("apache/fcgid.conf");
    let recipe = web::fill(&recipe, "/usr/local/lib/webauth", &lib.display().to_string());
    let recipe = web::fill(&recipe, "/etc/webauth/users.json", &users.display().to_string());
    let recipe = web::fill(&recipe, "/var/lib/webauth/sessions.db", &data.join("sessions.db").display().to_string());
    let recipe = web::fill(&recipe, "/members/", mount);
    let body = format!("FcgidIPCDir {d}/fcgid\nFcgidProcessTableFile {d}/fcgid/table\n{recipe}", d = d.display());
    let port = web::free_port();
    let conf = web::apache_conf(d, port, &[], &body);
    let mut procs = Processes::new();
    web::start_apache(&mut procs, d, port, &conf);
    web::login_flow(port, mount, &log(d));
}

#[test]
fn mod_proxy_fcgi_reaches_listen_workers_on_unix_sockets() {
    for mount in ["/members/", "/"] {
        proxy_fcgi_flow(mount);
    }
}

fn proxy_fcgi_flow(mount: &str) {
    let dir = temp_dir();
    let d = dir.path();
    let run = d.join("run");
    std::fs::create_dir(&run).expect("run dir");
    web::open_to_web_server(&run);
    let users = web::users_file(d);
    let mut procs = Processes::new();
    web::listen_programs(&mut procs, d, &run, &users);
    for p in ["index", "login", "logout"] {
        let socket = run.join(format!("{p}.sock"));
        // As systemd's SocketGroup=www-data would: Apache's user connects.
        if web::as_root() {
            let status = Command::new("chgrp").arg("www-data").arg(&socket).status().expect("chgrp");
            assert!(status.success());
        }
    }
    let recipe = web::fill(&web::recipe("apache/proxy-fcgi.conf"), "/run/webauth/", &format!("{}/", run.display()));
    let recipe = web::fill(&recipe, "/members/", mount);
    let port = web::free_port();
    let conf = web::apache_conf(d, port, &[], &recipe);
    web::start_apache(&mut procs, d, port, &conf);
    web::login_flow(port, mount, &log(d));
}
