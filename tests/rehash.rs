//! bcrypt hashes from an imported `.htpasswd` look at only the first 72 bytes
//! of a password: a login upgrades them to argon2id when the users file is
//! writable, and `webauth user import-htpasswd` brings them in.

mod support;

use support::TestSite;

/// A password longer than bcrypt's 72 bytes.
fn long_password() -> String {
    "correct horse battery staple ".repeat(4).trim_end().to_string()
}

fn stored_hash(site: &TestSite, username: &str) -> String {
    let users: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    users[username]["password"].as_str().unwrap_or("").to_string()
}

/// Adds a user with a bcrypt hash, as `htpasswd -B` writes it.
fn add_bcrypt_user(site: &TestSite, username: &str, password: &str) {
    let mut users: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    let hash = bcrypt::hash(password, 5).unwrap().replacen("$2b$", "$2y$", 1);
    users[username] = serde_json::json!({"first": "Long", "last": "Password", "password": hash});
    std::fs::write(&site.users, users.to_string()).unwrap();
}

#[test]
fn a_bcrypt_user_is_upgraded_to_argon2id_at_the_first_login() {
    let site = TestSite::new();
    let password = long_password();
    assert!(password.len() > 100);
    add_bcrypt_user(&site, "lp", &password);
    let prefix_and_more = format!("{}anything", &password[..72]);

    assert_eq!(site.login_json("lp", &password).status, 200);
    assert!(stored_hash(&site, "lp").starts_with("$argon2id$"), "{}", stored_hash(&site, "lp"));
    assert_eq!(site.login_json("lp", &prefix_and_more).status, 401, "the whole password counts now");
    assert_eq!(site.login_json("lp", &password).status, 200);
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    assert_eq!(after["lp"]["first"], "Long", "the other fields stay");
    assert!(after["john"]["password"].as_str().unwrap().starts_with("$argon2id$"));
}

#[test]
fn rehash_off_keeps_the_bcrypt_hash() {
    let site = TestSite::with_env(&[("WEBAUTH_REHASH", "off")]);
    add_bcrypt_user(&site, "lp", &long_password());
    let before = stored_hash(&site, "lp");
    assert_eq!(site.login_json("lp", &long_password()).status, 200);
    assert_eq!(stored_hash(&site, "lp"), before);
}

#[test]
fn concurrent_upgrades_keep_each_others_writes() {
    let site = TestSite::new();
    let names = ["u1", "u2", "u3", "u4"];
    for name in names {
        add_bcrypt_user(&site, name, &format!("{name} {}", long_password()));
    }
    // The store exists before the race: the race is over the users file.
    site.session_for("john", "johnpass");
    std::thread::scope(|s| {
        for name in names {
            let site = &site;
            s.spawn(move || {
                let reply = site.cgi("login", &support::Req::login(name, &format!("{name} {}", long_password())));
                assert_eq!(reply.status, 200, "{}", reply.stderr);
            });
        }
    });
    for name in names {
        assert!(stored_hash(&site, name).starts_with("$argon2id$"), "{name}: {}", stored_hash(&site, name));
    }
}

#[test]
fn a_users_file_the_programs_cannot_write_is_left_alone_and_logged() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let site = TestSite::new();
    add_bcrypt_user(&site, "lp", &long_password());
    let before = stored_hash(&site, "lp");
    std::fs::set_permissions(&site.users, std::fs::Permissions::from_mode(0o444)).unwrap();
    let req = support::Req::json(&serde_json::json!({"username": "lp", "password": long_password()}));
    let mut cmd = site.cgi_command("login", &req);
    if support::running_as_root() {
        // Root may write any file: log in as nobody, who can create the
        // store in the site's directory but not write the users file.
        std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        cmd.uid(65534).gid(65534);
    }
    let reply = support::run_cgi(cmd, &req.body);
    assert_eq!(reply.status, 200, "{}", reply.stderr);
    assert!(
        reply.stderr.contains("webauth: user \"lp\" needs rehash (bcrypt; the users file is not writable)"),
        "{}",
        reply.stderr
    );
    assert_eq!(stored_hash(&site, "lp"), before);
}

#[test]
fn import_htpasswd_takes_bcrypt_and_refuses_other_hashes() {
    let site = TestSite::new();
    let hash = |p: &str| bcrypt::hash(p, 5).unwrap().replacen("$2b$", "$2y$", 1);
    let htpasswd = site.dir.path().join(".htpasswd");
    let md5 = "mallory:$apr1$x9Yh3AGN$bIsKx0e3rDVxAnzhq4I0a/";
    let good = format!("alice:{}\nbob:{}\n", hash("alice in wonderland"), hash(&long_password()));
    std::fs::write(&htpasswd, format!("{good}{md5}\ncarol:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")).unwrap();
    let before = std::fs::read_to_string(&site.users).unwrap();
    let refused = site.admin(&["user", "import-htpasswd", htpasswd.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("mallory") && stderr.contains("MD5"), "{stderr}");
    assert!(stderr.contains("carol") && stderr.contains("SHA"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&site.users).unwrap(), before, "nothing imported");

    std::fs::write(&htpasswd, format!("# staff\n{good}")).unwrap();
    let imported = site.admin(&["user", "import-htpasswd", htpasswd.to_str().unwrap()], "");
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(stdout.contains("alice") && stdout.contains("bob") && stdout.contains("bcrypt"), "{stdout}");
    let list = String::from_utf8_lossy(&site.admin(&["user", "list"], "").stdout).into_owned();
    assert!(list.contains("alice\t \tbcrypt"), "{list}");
    assert_eq!(site.login_json("alice", "alice in wonderland").status, 200);
    assert!(stored_hash(&site, "alice").starts_with("$argon2id$"));

    let again = site.admin(&["user", "import-htpasswd", htpasswd.to_str().unwrap()], "");
    assert!(!again.status.success(), "existing users are not replaced");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}
