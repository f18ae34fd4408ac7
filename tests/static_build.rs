//! The static build for shared hosts (scripts/build-static, which
//! scripts/test runs first): `index` needs no dynamic loader and no library,
//! and serves CGI requests from an otherwise empty environment.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use support::parse_response;

/// Where scripts/build-static puts the programs.
fn static_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("x86_64-unknown-linux-gnu/release")
}

/// Runs `program` (a path inside `root`, or on this system) as a CGI script.
fn cgi(command: &mut Command, method: &str, body: &[u8], vars: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut child = command
        .env_clear()
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", method)
        .env("SCRIPT_NAME", "/")
        .env("HTTP_HOST", "localhost")
        .env("SERVER_PORT", "80")
        .env("REMOTE_ADDR", "192.0.2.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the static program");
    child.stdin.take().expect("stdin").write_all(body).expect("body");
    child.wait_with_output().expect("wait")
}

#[test]
fn the_static_programs_need_no_dynamic_loader_and_serve_cgi_from_an_empty_environment() {
    let dir = static_dir();
    for program in ["index", "login", "logout", "webauth"] {
        let path = dir.join(program);
        assert!(path.exists(), "{} is missing: run scripts/build-static (scripts/test does)", path.display());
        let ldd = Command::new("ldd").arg(&path).output().expect("ldd");
        let said = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
        assert!(said.contains("not a dynamic executable") || said.contains("statically linked"), "{program}: {said}");
    }
    // A folder holding nothing but the programs and a users file: as root it
    // becomes the whole file system (chroot), so no loader or library of this
    // machine can be reached.
    let root = support::temp_dir();
    for program in ["index", "login"] {
        std::fs::copy(dir.join(program), root.path().join(program)).expect("copy");
    }
    let users =
        serde_json::json!({"john": {"first": "John", "password": webauth::users::hash_password("johnpass").unwrap()}});
    std::fs::write(root.path().join("users.json"), users.to_string()).expect("users");
    let chrooted = support::running_as_root();
    if chrooted {
        // A static glibc program cannot look up getrandom() with dlsym, so
        // the getrandom crate falls back to /dev/random (to wait for the
        // pool) and /dev/urandom, as on an old kernel: the only files from
        // outside that the folder needs.
        std::fs::create_dir(root.path().join("dev")).expect("dev");
        for (name, minor) in [("random", "8"), ("urandom", "9")] {
            let node = root.path().join("dev").join(name);
            let made = Command::new("/usr/bin/mknod").args(["-m", "444"]).arg(&node).args(["c", "1", minor]).status();
            assert!(made.is_ok_and(|s| s.success()), "mknod {}", node.display());
        }
    }
    let command = |program: &str| {
        if chrooted {
            let mut c = Command::new("/usr/sbin/chroot");
            c.arg(root.path()).arg(format!("/{program}"));
            c
        } else {
            Command::new(root.path().join(program))
        }
    };
    let (users, store) = if chrooted {
        ("/users.json".to_string(), "sqlite:/sessions.db".to_string())
    } else {
        let p = root.path();
        (p.join("users.json").display().to_string(), format!("sqlite:{}", p.join("sessions.db").display()))
    };
    let config = [("WEBAUTH_USERS", users.as_str()), ("WEBAUTH_STORE", store.as_str())];
    let page = cgi(&mut command("index"), "GET", b"", &config);
    let response = parse_response(&page.stdout).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&page.stderr)));
    assert_eq!(response.status, 200);
    assert!(String::from_utf8_lossy(&response.body).contains("name=\"password\""));
    let mut vars = config.to_vec();
    vars.push(("CONTENT_TYPE", "application/json"));
    let login = cgi(&mut command("login"), "POST", br#"{"username":"john","password":"johnpass"}"#, &vars);
    let response =
        parse_response(&login.stdout).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&login.stderr)));
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&login.stderr));
    assert!(response.header("Set-Cookie").is_some_and(|c| c.starts_with("webauth=")));
    assert!(root.path().join("sessions.db").exists(), "the store was created inside the folder");

    // Built without the Redis store: a Redis setting is a clear refusal.
    let redis =
        [("WEBAUTH_USERS", users.as_str()), ("WEBAUTH_STORE", "redis://127.0.0.1:1/0"), ("WEBAUTH_STATE_DIR", "/")];
    let page = cgi(&mut command("index"), "GET", b"", &redis);
    let response = parse_response(&page.stdout).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&page.stderr)));
    assert_eq!(response.status, 500);
    let stderr = String::from_utf8_lossy(&page.stderr);
    assert!(stderr.contains("built without the Redis store"), "{stderr}");
}
