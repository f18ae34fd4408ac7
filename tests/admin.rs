//! The `webauth` admin command against a real users file and store, checked
//! by logging in to the same site in process.

mod support;

use support::{ResponseExt, TestSite};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn add_login_change_password_old_one_fails() {
    let site = TestSite::new();
    ok(&site.admin(&["user", "add", "alice", "--first", "Alice", "--last", "Liddell"], "white rabbit pocket watch\n"));
    let cookie = site.session_for("alice", "white rabbit pocket watch");
    assert!(site.index_with(&cookie).text().contains("Alice Liddell"));

    ok(&site.admin(&["user", "passwd", "alice"], "through the looking-glass\n"));
    assert_eq!(site.login_json("alice", "white rabbit pocket watch").status, 401, "the old password fails");
    assert_eq!(site.login_json("alice", "through the looking-glass").status, 200);
    assert!(!site.index_with(&cookie).text().contains("Alice Liddell"), "a password change ends the sessions");
}

#[test]
fn add_keeps_other_users_and_their_unknown_fields() {
    let site = TestSite::new();
    let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    file["john"]["email"] = "john@example.org".into();
    file["john"]["groups"] = serde_json::json!(["staff"]);
    std::fs::write(&site.users, file.to_string()).unwrap();
    ok(&site.admin(&["user", "add", "bob", "--field", "email=bob@example.org"], "bob the patient builder\n"));
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&site.users).unwrap()).unwrap();
    assert_eq!(after["john"]["email"], "john@example.org");
    assert_eq!(after["john"]["groups"], serde_json::json!(["staff"]));
    assert_eq!(after["john"]["password"], file["john"]["password"]);
    assert_eq!(after["bob"]["email"], "bob@example.org");
    assert!(after["bob"]["password"].as_str().unwrap().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert_eq!(site.login_json("john", "johnpass").status, 200);
}

#[test]
fn add_refuses_an_existing_user_and_a_password_on_argv() {
    let site = TestSite::new();
    let dup = site.admin(&["user", "add", "John"], "x\n");
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists"));
    let argv = site.admin(&["user", "add", "carol", "--field", "password=secret"], "x\n");
    assert!(!argv.status.success());
    let empty = site.admin(&["user", "add", "dave"], "\n");
    assert!(!empty.status.success(), "an empty password is refused");
    let bad = site.admin(&["user", "add", "<script>"], "x\n");
    assert!(!bad.status.success());
}

#[test]
fn del_removes_the_user_and_ends_their_sessions() {
    let site = TestSite::new();
    let cookie = site.session_for("jane", "janepass");
    ok(&site.admin(&["user", "del", "jane"], ""));
    assert!(!site.index_with(&cookie).text().contains("Jane Doe"));
    assert_eq!(site.login_json("jane", "janepass").status, 401);
    assert!(!ok(&site.admin(&["user", "list"], "")).contains("jane"));
}

#[test]
fn user_list_shows_names_and_hash_kinds() {
    let site = TestSite::new();
    let list = ok(&site.admin(&["user", "list"], ""));
    assert!(list.contains("john\tJohn Smith\targon2id"), "{list}");
    assert!(list.contains("jane\tJane Doe\targon2id"), "{list}");
    assert!(!list.contains("$argon2id$"), "hashes are not printed");
}

#[test]
fn hash_prints_a_verifiable_argon2id_string() {
    let site = TestSite::new();
    let hash = ok(&site.admin(&["hash"], "s3cret\n")).trim().to_string();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    let users = serde_json::json!({"eve": {"first": "Eve", "password": hash}});
    std::fs::write(&site.users, users.to_string()).unwrap();
    assert_eq!(site.login_json("eve", "s3cret").status, 200);
}

#[test]
fn session_list_revoke_and_purge() {
    let site = TestSite::new();
    let john = site.session_for("john", "johnpass");
    let jane = site.session_for("jane", "janepass");
    let list = ok(&site.admin(&["session", "list"], ""));
    assert!(list.contains("\tjohn\t") && list.contains("\tjane\t"), "{list}");
    assert!(!list.contains(john.trim_start_matches("webauth=")), "tokens are never listed");
    let revoked = ok(&site.admin(&["session", "revoke", "john"], ""));
    assert!(revoked.contains("ended 1 session"), "{revoked}");
    assert!(!site.index_with(&john).text().contains("John Smith"));
    assert!(site.index_with(&jane).text().contains("Jane Doe"));
    let purged = ok(&site.admin(&["session", "purge"], ""));
    assert!(purged.contains("removed 0 expired"), "{purged}");
}

#[test]
fn purge_removes_idle_sessions() {
    let mut site = TestSite::new();
    site.session_for("john", "johnpass");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    site.set("WEBAUTH_IDLE_TIMEOUT", "1");
    assert!(ok(&site.admin(&["session", "purge"], "")).contains("removed 1 expired"));
    assert!(!ok(&site.admin(&["session", "list"], "")).contains("john"));
}

#[test]
fn unknown_commands_print_usage() {
    let site = TestSite::new();
    let out = site.admin(&["frobnicate"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

#[test]
fn admin_commands_never_create_the_store() {
    let site = TestSite::new();
    for args in [&["session", "list"][..], &["session", "revoke", "john"], &["session", "purge"]] {
        ok(&site.admin(args, ""));
    }
    ok(&site.admin(&["user", "passwd", "john"], "another long passphrase\n"));
    assert!(!site.store.exists(), "a root-run admin command must not create a store the web user cannot write");
}

#[test]
fn writing_the_users_file_keeps_its_owner_group_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let site = TestSite::new();
    std::fs::set_permissions(&site.users, std::fs::Permissions::from_mode(0o640)).unwrap();
    // As root (CI), hand the file to another owner the way a deployment does
    // (root:webauth); otherwise the owner is ours and must stay ours.
    if support::running_as_root() {
        std::os::unix::fs::chown(&site.users, Some(65534), Some(65534)).unwrap();
    }
    let before = std::fs::metadata(&site.users).unwrap();
    ok(&site.admin(&["user", "add", "zoe"], "zoe keeps a passphrase\n"));
    let after = std::fs::metadata(&site.users).unwrap();
    assert_eq!((after.uid(), after.gid(), after.mode() & 0o777), (before.uid(), before.gid(), 0o640));
    assert!(std::fs::symlink_metadata(&site.users).unwrap().file_type().is_file());
}

#[test]
fn the_demo_serves_loopback_only() {
    let site = TestSite::new();
    let out = site.admin(&["serve", "--demo", "--listen", "0.0.0.0:0"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback only"));
}

#[test]
fn passwd_through_a_symlinked_users_file_writes_its_target() {
    use std::os::unix::fs::PermissionsExt;
    let mut site = TestSite::new();
    let real = site.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let target = real.join("users.json");
    std::fs::rename(&site.users, &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = site.dir.path().join("link.json");
    std::os::unix::fs::symlink("real/users.json", &link).unwrap();
    site.set("WEBAUTH_USERS", link.to_str().unwrap());

    ok(&site.admin(&["user", "passwd", "john"], "orange kettle under moonlight\n"));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640, "the target keeps its mode");
    assert_eq!(site.login_json("john", "johnpass").status, 401, "the target has the new hash");
    assert_eq!(site.login_json("john", "orange kettle under moonlight").status, 200);
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 1, "no temporary file left beside the target");
}

#[test]
fn a_symlink_planted_by_another_user_is_not_followed() {
    if !support::running_as_root() {
        // Only root can make a link owned by someone else; the rule itself
        // is unit-tested (users::tests::only_roots_and_our_own_symlinks_are_followed).
        // CI runs as root.
        return;
    }
    let mut site = TestSite::new();
    let elsewhere = site.dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, "{}").unwrap();
    let link = site.dir.path().join("planted.json");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    // The web server's user planted it (www-data, as after opting in to rehash).
    std::os::unix::fs::lchown(&link, Some(33), Some(33)).unwrap();
    site.set("WEBAUTH_USERS", link.to_str().unwrap());
    let out = site.admin(&["user", "add", "carol"], "zebra pancake seventy seven\n");
    assert!(!out.status.success(), "root followed another user's link");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("owned by another user"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "{}", "the link's target is untouched");
}

#[test]
fn weak_passwords_are_refused_with_the_reason_unless_the_operator_insists() {
    let mut site = TestSite::new();
    let before = std::fs::read_to_string(&site.users).unwrap();
    for (password, why) in [
        ("short1", "at least 8"),
        ("Password1", "most common"),
        ("Liddell2024", "last name"),
        ("ALICE.LIDDELL", "username"),
    ] {
        let out = site.admin(
            &["user", "add", "alice.liddell", "--first", "Alice", "--last", "Liddell"],
            &format!("{password}\n"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{password:?} accepted");
        assert!(stderr.contains(why) && stderr.contains("passphrase"), "{password:?}: {stderr}");
    }
    for password in ["short1", "Password1", "John2024"] {
        let passwd = site.admin(&["user", "passwd", "john"], &format!("{password}\n"));
        assert!(!passwd.status.success(), "passwd {password:?} accepted");
    }
    let johns = site.admin(&["user", "passwd", "john"], "SMITH424242\n");
    assert!(String::from_utf8_lossy(&johns.stderr).contains("last name"), "{}", String::from_utf8_lossy(&johns.stderr));
    assert_eq!(std::fs::read_to_string(&site.users).unwrap(), before, "nothing changed");

    let forced = site.admin(&["user", "add", "alice.liddell", "--allow-weak"], "short1\n");
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert!(String::from_utf8_lossy(&forced.stderr).contains("warning"), "the override is not silent");
    assert_eq!(site.login_json("alice.liddell", "short1").status, 200);

    site.set("WEBAUTH_MIN_PASSWORD", "12");
    let short = site.admin(&["user", "passwd", "jane"], "q7#Lm2!vXz\n");
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least 12"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    ok(&site.admin(&["user", "passwd", "jane"], "q7#Lm2!vXz-plus\n"));
    site.set("WEBAUTH_MIN_PASSWORD", "4");
    assert!(!site.admin(&["user", "passwd", "jane"], "abcdefg\n").status.success(), "the minimum is never below 8");
}

#[test]
fn look_alike_usernames_are_one_user_or_refused() {
    let site = TestSite::new();
    let passphrase = "orange kettle under moonlight\n";
    // Fullwidth letters are a compatibility form of ASCII: the same user.
    let fullwidth = site.admin(&["user", "add", "ｊｏｈｎ"], passphrase);
    assert!(!fullwidth.status.success(), "fullwidth john added beside john");
    assert!(
        String::from_utf8_lossy(&fullwidth.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&fullwidth.stderr)
    );
    assert_eq!(site.login_json("ＪＯＨＮ", "johnpass").status, 200, "login normalises the same way");
    // Letters of other scripts that look Latin (Cyrillic je, Greek omicron) are refused.
    for name in ["јohn", "jοhn", "jöhn", "jo\u{200b}hn"] {
        let out = site.admin(&["user", "add", name], passphrase);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name:?} added");
        assert!(stderr.contains("invalid username"), "{name:?}: {stderr}");
    }
    let list = ok(&site.admin(&["user", "list"], ""));
    assert_eq!(list.lines().count(), 2, "{list}");
    // An over-long name is cut in the message, not echoed whole.
    let long = format!("{}<", "a".repeat(5000));
    let out = site.admin(&["user", "add", &long], passphrase);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.len() < 1000 && stderr.contains('…'), "{stderr}");
}
