//! `webauth check` on a shared-host folder made by `webauth bundle`: a good
//! folder is all ok; each broken variant is named, with its fix, and fails.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str, as_nobody: bool) -> Output {
    let mut command = Command::new(support::bin("webauth"));
    command.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    if as_nobody {
        command.uid(65534).gid(65534);
    }
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("webauth");
    let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    child.wait_with_output().expect("webauth")
}

/// A fresh folder made by the bundle command, with john as its first user.
fn bundle() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("webauth-check-").tempdir().expect("temp dir");
    let folder = dir.path().join("members");
    let programs = Path::new(support::bin("index")).parent().expect("programs").to_str().expect("UTF-8").to_string();
    let out = run(
        &[
            "bundle",
            "shared-host",
            folder.to_str().expect("UTF-8"),
            "--mount",
            "/members/",
            "--user",
            "john",
            "--programs",
            &programs,
        ],
        "johnpass\n",
        false,
    );
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (dir, folder)
}

fn check(folder: &Path, as_nobody: bool) -> (bool, String) {
    let htaccess = folder.join(".htaccess");
    let out = run(&["check", "--htaccess", htaccess.to_str().expect("UTF-8")], "", as_nobody);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn failing_lines(report: &str) -> Vec<&str> {
    report.lines().filter(|l| l.starts_with("FAIL")).collect()
}

#[test]
fn a_good_bundle_is_all_ok() {
    let (_dir, folder) = bundle();
    let (passed, report) = check(&folder, false);
    assert!(passed, "{report}");
    assert!(report.lines().filter(|l| !l.starts_with("      fix:")).all(|l| l.starts_with("ok")), "{report}");
    for topic in ["configuration parses", "users file", "session store", "state directory", "template login.html"] {
        assert!(report.contains(topic), "no check of {topic}: {report}");
    }
}

#[test]
fn a_plaintext_password_is_named_with_the_user() {
    let (_dir, folder) = bundle();
    std::fs::write(folder.join("data/users.json"), r#"{"john": {"password": "johnpass"}}"#).expect("write");
    let (passed, report) = check(&folder, false);
    assert!(!passed, "{report}");
    let fails = failing_lines(&report);
    assert!(fails.iter().any(|l| l.contains("\"john\"")), "{report}");
    assert!(!report.contains("johnpass"), "the password is echoed: {report}");
}

#[test]
fn a_users_file_readable_by_others_is_named() {
    let (_dir, folder) = bundle();
    let users = folder.join("data/users.json");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (passed, report) = check(&folder, false);
    assert!(!passed, "{report}");
    assert!(failing_lines(&report).iter().any(|l| l.contains("readable by every user")), "{report}");
    assert!(report.contains("fix: chmod 600"), "{report}");
}

#[test]
fn an_unwritable_store_directory_is_named() {
    let (_dir, folder) = bundle();
    let data = folder.join("data");
    // Root writes anywhere: check as another user who owns the folder, as
    // the web server's user would.
    let as_nobody = support::running_as_root();
    if as_nobody {
        let status = Command::new("chown").arg("-R").arg("65534:65534").arg(&folder).status().expect("chown");
        assert!(status.success());
        let mut d = folder.parent();
        while let Some(p) = d.filter(|p| p.starts_with(std::env::temp_dir()) && *p != std::env::temp_dir()) {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            d = p.parent();
        }
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let (passed, report) = check(&folder, as_nobody);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert!(!passed, "{report}");
    let fails = failing_lines(&report);
    assert!(fails.iter().any(|l| l.contains("session store") && l.contains("cannot write")), "{report}");
}

#[test]
fn a_broken_template_is_named() {
    let (_dir, folder) = bundle();
    let templates = folder.join("data/templates");
    std::fs::create_dir(&templates).expect("templates dir");
    std::fs::write(templates.join("login.html"), "{% if %}").expect("template");
    let mut htaccess = std::fs::OpenOptions::new().append(true).open(folder.join(".htaccess")).expect("open");
    writeln!(htaccess, "SetEnv WEBAUTH_TEMPLATES data/templates").expect("append");
    let (passed, report) = check(&folder, false);
    assert!(!passed, "{report}");
    assert!(failing_lines(&report).iter().any(|l| l.contains("template login.html")), "{report}");
    assert!(report.lines().any(|l| l.starts_with("ok") && l.contains("template user.html")), "{report}");
}

#[test]
fn cookie_secure_never_is_a_warning() {
    let (_dir, folder) = bundle();
    let mut htaccess = std::fs::OpenOptions::new().append(true).open(folder.join(".htaccess")).expect("open");
    writeln!(htaccess, "SetEnv WEBAUTH_COOKIE_SECURE never").expect("append");
    let (passed, report) = check(&folder, false);
    assert!(passed, "a warning alone passes: {report}");
    assert!(report.lines().any(|l| l.starts_with("warn") && l.contains("WEBAUTH_COOKIE_SECURE=never")), "{report}");
}

#[test]
fn run_as_root_the_folder_owner_is_who_must_write() {
    if !support::running_as_root() {
        // Not root: the check already runs as the user it checks for; the
        // unwritable-folder case above covers it.
        let (_dir, folder) = bundle();
        assert!(check(&folder, false).0);
        return;
    }
    let (_dir, folder) = bundle();
    // Under suexec the programs run as the folder's owner: nobody here, while
    // data/ stays root's 0700.
    let status = Command::new("chown").arg("65534").arg(&folder).status().expect("chown");
    assert!(status.success());
    let (passed, report) = check(&folder, false);
    assert!(!passed, "{report}");
    assert!(failing_lines(&report).iter().any(|l| l.contains("not writable by user 65534")), "{report}");
    let status = Command::new("chown").arg("-R").arg("65534").arg(&folder).status().expect("chown");
    assert!(status.success());
    let (passed, report) = check(&folder, false);
    assert!(passed, "owned by the folder's owner: {report}");
}

#[test]
fn a_setenv_line_apache_would_refuse_is_named() {
    let (_dir, folder) = bundle();
    let mut htaccess = std::fs::OpenOptions::new().append(true).open(folder.join(".htaccess")).expect("open");
    writeln!(htaccess, "SetEnv WEBAUTH_TEMPLATES /my templates/dir").expect("append");
    let (passed, report) = check(&folder, false);
    assert!(!passed, "{report}");
    assert!(failing_lines(&report).iter().any(|l| l.contains("SetEnv takes a name and one value")), "{report}");
}
