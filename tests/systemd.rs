//! The systemd units in deploy/systemd: verified by `systemd-analyze`, their
//! hardening checked to leave the store writable, and the programs started
//! exactly as the socket units start them (the listening socket on fd 0, the
//! service's `Environment=`; no LISTEN_FDS: `StandardInput=socket` with
//! `Accept=no` hands the socket over as fd 0) behind the nginx recipe.

mod support;

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::web::{self, Processes};
use support::Server;

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

fn unit(name: &str) -> String {
    web::recipe(&format!("systemd/{name}"))
}

/// The value of the first `Key=` line of a unit.
fn setting<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    assert!(Path::new(SYSTEMD_ANALYZE).exists(), "systemd-analyze is needed: scripts/test installs Debian's systemd");
    let dir = tempfile::tempdir().expect("temp dir");
    let programs = Path::new(support::bin("index")).parent().expect("programs").display().to_string();
    let service = web::fill(&unit("webauth@.service"), "/usr/local/lib/webauth/%i", &format!("{programs}/%i"));
    std::fs::write(dir.path().join("webauth@.service"), service).expect("service");
    std::fs::write(dir.path().join("webauth@.socket"), unit("webauth@.socket")).expect("socket");
    for program in ["index", "login", "logout"] {
        let out = Command::new(SYSTEMD_ANALYZE)
            .arg("verify")
            .arg(dir.path().join(format!("webauth@{program}.service")))
            .arg(dir.path().join(format!("webauth@{program}.socket")))
            .output()
            .expect("systemd-analyze");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{program}: {said}");
        assert!(!said.contains("webauth"), "{program}: systemd-analyze has something to say: {said}");
    }
}

#[test]
fn the_hardening_leaves_the_store_and_state_directory_writable() {
    let service = unit("webauth@.service");
    assert_eq!(setting(&service, "ProtectSystem"), Some("strict"), "the check below assumes a read-only system");
    assert_eq!(setting(&service, "NoNewPrivileges"), Some("yes"));
    // Under ProtectSystem=strict only these are writable.
    let mut writable: Vec<PathBuf> = Vec::new();
    if let Some(state) = setting(&service, "StateDirectory") {
        writable.push(Path::new("/var/lib").join(state));
    }
    if let Some(paths) = setting(&service, "ReadWritePaths") {
        writable.extend(paths.split_whitespace().map(PathBuf::from));
    }
    let env = webauth::check::environment_lines(&service);
    let config = webauth::config::Config::from_vars(&env).expect("the unit's Environment= parses");
    let webauth::config::Store::Sqlite(store) = &config.store else {
        panic!("the unit's store is an SQLite file: {:?}", config.store)
    };
    let store_dir = store.parent().expect("the store's folder");
    assert!(writable.iter().any(|w| store_dir.starts_with(w)), "{} is read-only under the unit", store.display());
    assert!(writable.iter().any(|w| config.state_dir.starts_with(w)), "{} is read-only", config.state_dir.display());
    assert_eq!(setting(&service, "ProtectHome"), Some("yes"));
    assert!(!config.users.starts_with("/home"), "ProtectHome hides the users file");
    assert_eq!(setting(&service, "StandardInput"), Some("socket"));
    assert_eq!(setting(&unit("webauth@.socket"), "Accept"), Some("no"), "one long-running program per socket");
}

#[test]
fn programs_started_as_the_socket_units_start_them_serve_the_nginx_recipe() {
    let dir = tempfile::Builder::new().prefix("webauth-systemd-").tempdir().expect("temp dir");
    let d = dir.path();
    let state = d.join("state");
    std::fs::create_dir(&state).expect("state dir");
    let users = web::users_file(d);
    let service = unit("webauth@.service");
    let socket_unit = unit("webauth@.socket");
    // The unit's own Environment=, its paths moved into the temp dir.
    let env: Vec<(String, String)> = webauth::check::environment_lines(&service)
        .into_iter()
        .map(|(k, v)| {
            let v = v.replace("/etc/webauth/users.json", &users.display().to_string());
            (k, v.replace("/var/lib/webauth", &state.display().to_string()))
        })
        .collect();
    assert!(env.iter().any(|(k, _)| k == "WEBAUTH_STORE"), "{env:?}");
    let listen = setting(&socket_unit, "ListenStream").expect("ListenStream");
    let mode = u32::from_str_radix(setting(&socket_unit, "SocketMode").expect("SocketMode"), 8).expect("octal");
    let mut procs = Processes::new();
    for program in ["index", "login", "logout"] {
        let path =
            PathBuf::from(web::fill(listen, "/run/webauth/", &format!("{}/", d.display())).replace("%i", program));
        let listener = UnixListener::bind(&path).expect("bind");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("SocketMode");
        let mut command = Command::new(support::bin(program));
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null());
        procs.push(Server::spawn(program, command, &d.join(format!("{program}.err"))));
    }
    let port = web::free_port();
    let recipe = web::recipe("nginx/webauth.conf");
    let recipe = web::fill(&recipe, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let recipe = web::fill(&recipe, "unix:/run/webauth/", &format!("unix:{}/", d.display()));
    web::start_nginx(&mut procs, d, port, &web::nginx_conf(d, &recipe));
    let log = || {
        ["index.err", "login.err", "logout.err", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(d.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    web::login_flow(port, "/", &log);
    assert!(state.join("sessions.db").exists(), "the store is in the unit's state directory");
}
