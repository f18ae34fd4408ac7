//! The `webauth` admin command: manages the users file and the sessions that
//! the route programs read, and runs the demo.
//!
//! Passwords come from a prompt without echo, or from stdin when it is not a
//! terminal; never from the command line, where `ps` would show them.

mod totp;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use crate::config::Config;
use crate::policy;
use crate::session::now;
use crate::store::{self, SessionStore};
use crate::users::{self, hash_password, normalize_username, shown_username, valid_username, UsersFile, MAX_PASSWORD};

const USAGE: &str = "usage:
  webauth hash                         print the argon2id hash of a password read from stdin
  webauth user add NAME [--first F] [--last L] [--field KEY=VALUE]... [--allow-weak]
  webauth user passwd NAME [--allow-weak]  set a new password (ends the user's sessions)
  webauth user del NAME                remove a user (ends the user's sessions)
  webauth user list                    names and hash kinds (argon2id, or bcrypt until the next login)
  webauth user import-htpasswd FILE    add the bcrypt users of an Apache .htpasswd (htpasswd -B)
  webauth user totp enable NAME [--issuer NAME] [--secret-stdin]
                                       a second factor: prints a QR code and the otpauth:// URI, asks for
                                       a current code, then saves it with 10 recovery codes (ends sessions)
  webauth user totp disable NAME       remove the second factor (a lost device; ends the user's sessions)
  webauth user totp recovery NAME      print 10 new recovery codes (the old ones stop working)
  webauth session list
  webauth session revoke NAME          end every session of a user
  webauth session purge                remove expired sessions and stale counters
  webauth serve --demo [--listen ADDR] the three routes on http://127.0.0.1:8080 with demo users
  webauth check [--htaccess FILE | --unit FILE]
                                       check a deployment: users file, store, templates, file modes
  webauth bundle shared-host DIR --mount /members/ --user NAME [--first F] [--last L]
                 [--data ABSOLUTE_DIR] [--programs DIR]
                                       lay out a folder to upload to an Apache host with .htaccess and CGI

Passwords are prompted for without echo, or read from stdin (one line) when it is not a terminal.
--secret-stdin reads an existing base32 secret as the first line of stdin, before the code
(to move an enrolment from another system); never on the command line, where `ps` shows it.
A new password needs at least 8 characters (WEBAUTH_MIN_PASSWORD raises it), must not be a
common password or the user's names; --allow-weak sets it anyway, with a warning.
Files and store come from WEBAUTH_USERS and WEBAUTH_STORE (see the README).";

/// A failed command: the message for stderr and the exit code.
struct Fail(String, u8);

fn fail(message: impl Into<String>) -> Fail {
    Fail(message.into(), 1)
}

fn usage(problem: &str) -> Fail {
    Fail(format!("{problem}\n{USAGE}"), 2)
}

pub fn main(args: &[String]) -> ExitCode {
    match dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(message, code)) => {
            eprintln!("webauth: {message}");
            ExitCode::from(code)
        }
    }
}

fn dispatch(args: &[String]) -> Result<(), Fail> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["hash"] => {
            let password = read_password(false)?;
            println!("{}", hash_password(&password).map_err(fail)?);
            Ok(())
        }
        ["user", "add", name, rest @ ..] => user_add(name, rest),
        ["user", "passwd", name] => user_passwd(name, false),
        ["user", "passwd", name, "--allow-weak"] => user_passwd(name, true),
        ["user", "del", name] => user_del(name),
        ["user", "list"] => user_list(),
        ["user", "import-htpasswd", file] => user_import_htpasswd(file),
        ["user", "totp", "enable", name, rest @ ..] => totp::enable(name, rest),
        ["user", "totp", "disable", name] => totp::disable(name),
        ["user", "totp", "recovery", name] => totp::recovery(name),
        ["session", "list"] => session_list(),
        ["session", "revoke", name] => session_revoke(name),
        ["session", "purge"] => session_purge(),
        ["serve", "--demo"] => crate::serve::demo("127.0.0.1:8080").map_err(fail),
        ["serve", "--demo", "--listen", addr] | ["serve", "--listen", addr, "--demo"] => {
            crate::serve::demo(addr).map_err(fail)
        }
        ["serve", ..] => {
            Err(usage("serve runs the demo only: webauth serve --demo (production runs behind a web server)"))
        }
        ["check"] => check(crate::check::Deployment { vars: crate::config::env_vars(), ..Default::default() }),
        ["check", "--htaccess", file] => {
            check(crate::check::Deployment::from_htaccess(file.as_ref()).map_err(|e| fail(format!("{file}: {e}")))?)
        }
        ["check", "--unit", file] => {
            check(crate::check::Deployment::from_unit(file.as_ref()).map_err(|e| fail(format!("{file}: {e}")))?)
        }
        ["bundle", "shared-host", dir, rest @ ..] => bundle_shared_host(dir, rest),
        ["help"] | ["--help"] | ["-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        [] => Err(usage("no command given")),
        _ => Err(usage(&format!("unknown command: {}", args.join(" ")))),
    }
}

fn config() -> Result<Config, Fail> {
    Config::from_env().map_err(|e| fail(e.to_string()))
}

fn open_users(config: &Config) -> Result<UsersFile, Fail> {
    UsersFile::open(&config.users).map_err(|e| fail(e.to_string()))
}

/// The users file, locked for a change until the value is dropped. Taken
/// after any password prompt, so a login that upgrades a hash never waits
/// for someone typing.
fn lock_users(config: &Config) -> Result<UsersFile, Fail> {
    UsersFile::lock(&config.users).map_err(|e| fail(e.to_string()))
}

fn save(file: &UsersFile) -> Result<(), Fail> {
    file.save().map_err(|e| fail(format!("cannot write {}: {e}", file.path.display())))
}

fn user_add(name: &str, options: &[&str]) -> Result<(), Fail> {
    add_user_to(&config()?.users, name, options)
}

fn add_user_to(users: &std::path::Path, name: &str, options: &[&str]) -> Result<(), Fail> {
    let username = normalize_username(name);
    if !valid_username(&username) {
        return Err(fail(format!(
            "invalid username {}: use ASCII letters, digits and . _ - @ + (at most {} characters); \
             names in other scripts go in --first and --last",
            shown_username(name),
            users::MAX_USERNAME
        )));
    }
    let min = min_password_length()?;
    let mut fields = serde_json::Map::new();
    let mut allow_weak = false;
    let mut it = options.iter();
    while let Some(option) = it.next() {
        if *option == "--allow-weak" {
            allow_weak = true;
            continue;
        }
        let value = it.next().ok_or_else(|| usage(&format!("{option} needs a value")))?;
        let (key, value) = match *option {
            "--first" => ("first", *value),
            "--last" => ("last", *value),
            "--field" => value.split_once('=').ok_or_else(|| usage("--field takes KEY=VALUE"))?,
            other => return Err(usage(&format!("unknown option {other}"))),
        };
        if key == "password" {
            return Err(usage("the password is never given on the command line"));
        }
        fields.insert(key.to_string(), serde_json::Value::String(value.to_string()));
    }
    let exists = |file: &UsersFile| match file.key_of(&username) {
        Some(key) => Err(fail(format!(
            "user {} exists already as {} (use `webauth user passwd {key}`)",
            shown_username(name),
            shown_username(&key)
        ))),
        None => Ok(()),
    };
    exists(&UsersFile::open(users).map_err(|e| fail(e.to_string()))?)?;
    let password = read_password(true)?;
    let name = |k: &str| fields.get(k).and_then(|v| v.as_str()).unwrap_or("");
    check_password(&password, min, [&username, name("first"), name("last")], allow_weak)?;
    fields.insert("password".into(), hash_password(&password).map_err(fail)?.into());
    let mut file = UsersFile::lock(users).map_err(|e| fail(e.to_string()))?;
    exists(&file)?;
    file.entries.insert(username.clone(), serde_json::Value::Object(fields));
    save(&file)?;
    eprintln!("webauth: added {username} to {}", users.display());
    Ok(())
}

fn user_passwd(name: &str, allow_weak: bool) -> Result<(), Fail> {
    let config = config()?;
    let min = min_password_length()?;
    let no_user = || fail(format!("no user {} in {}", shown_username(name), config.users.display()));
    let file = open_users(&config)?;
    let key = file.key_of(name).ok_or_else(no_user)?;
    let record = &file.entries[&key];
    let field = |k: &str| record.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let password = read_password(true)?;
    check_password(&password, min, [&key, field("first"), field("last")], allow_weak)?;
    let hash = hash_password(&password).map_err(fail)?;
    let mut file = lock_users(&config)?;
    let key = file.key_of(name).ok_or_else(no_user)?;
    match file.entries.get_mut(&key) {
        Some(serde_json::Value::Object(fields)) => {
            fields.insert("password".into(), hash.into());
        }
        _ => return Err(fail(format!("user {} is not an object in {}", shown_username(&key), config.users.display()))),
    }
    save(&file)?;
    eprintln!("webauth: password of {key} changed");
    end_sessions(&config, &normalize_username(&key));
    Ok(())
}

fn user_del(name: &str) -> Result<(), Fail> {
    let config = config()?;
    let mut file = lock_users(&config)?;
    let key = file
        .key_of(name)
        .ok_or_else(|| fail(format!("no user {} in {}", shown_username(name), config.users.display())))?;
    file.entries.shift_remove(&key);
    save(&file)?;
    eprintln!("webauth: removed {key}");
    end_sessions(&config, &normalize_username(&key));
    Ok(())
}

/// Adds the users of an Apache `.htpasswd` file, all or nothing: a line
/// with a hash other than bcrypt (MD5, SHA-1, crypt, plaintext), an invalid
/// username or one that exists refuses the file, each such line named.
fn user_import_htpasswd(path: &str) -> Result<(), Fail> {
    let config = config()?;
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {path}: {e}")))?;
    let mut file = lock_users(&config)?;
    let mut problems = Vec::new();
    let mut new: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{path}:{}", i + 1);
        let Some((name, hash)) = line.split_once(':') else {
            problems.push(format!("{at}: not NAME:HASH"));
            continue;
        };
        let username = normalize_username(name);
        if !valid_username(&username) {
            problems
                .push(format!("{at}: invalid username {} (ASCII letters, digits, . _ - @ +)", shown_username(name)));
        } else if file.key_of(&username).is_some() || new.iter().any(|(n, _)| *n == username) {
            problems.push(format!("{at}: user {} exists already", shown_username(&username)));
        } else if let Err(why) = users::check_htpasswd_hash(hash.trim()) {
            problems.push(format!("{at}: user {}: {why}", shown_username(&username)));
        } else {
            new.push((username, hash.trim().to_string()));
        }
    }
    if !problems.is_empty() {
        return Err(fail(format!("nothing imported; fix or remove these lines:\n  {}", problems.join("\n  "))));
    }
    if new.is_empty() {
        return Err(fail(format!("no users in {path}")));
    }
    for (username, hash) in &new {
        file.entries.insert(username.clone(), serde_json::json!({ "password": hash }));
    }
    save(&file)?;
    let names: Vec<&str> = new.iter().filter(|(_, h)| h.starts_with("$2")).map(|(n, _)| n.as_str()).collect();
    println!("imported {} user(s) from {path}", new.len());
    if !names.is_empty() {
        println!(
            "these keep bcrypt, which counts only the first 72 bytes of a password, until they log in: {}\n\
             a login upgrades the hash to argon2id when the programs can write {} (unless WEBAUTH_REHASH=off)",
            names.join(", "),
            config.users.display()
        );
    }
    Ok(())
}

/// The shortest new password allowed, from `WEBAUTH_MIN_PASSWORD`.
fn min_password_length() -> Result<usize, Fail> {
    Ok(config()?.min_password)
}

/// Refuses a weak new password (see [`policy`]), saying why; with
/// `--allow-weak` (importing accounts) it only warns.
fn check_password(
    password: &str,
    min: usize,
    [username, first, last]: [&str; 3],
    allow_weak: bool,
) -> Result<(), Fail> {
    let personal = [("username", username), ("first name", first), ("last name", last)];
    match policy::check(password, min, &personal) {
        Ok(()) => Ok(()),
        Err(weak) if allow_weak => {
            eprintln!("webauth: warning: {weak}; set anyway because of --allow-weak");
            Ok(())
        }
        Err(weak) => {
            Err(fail(format!("{}. Nothing changed (--allow-weak overrides this, for imports)", weak.advice())))
        }
    }
}

/// Ends a user's sessions after a password change or removal. The users file
/// is already written, so a store that cannot be reached is a warning.
fn end_sessions(config: &Config, username: &str) {
    match store::open_existing(&config.store) {
        Ok(None) => {}
        Ok(Some(mut s)) => match s.delete_user(username) {
            Ok(n) => eprintln!("webauth: ended {n} session(s) of {username}"),
            Err(e) => eprintln!("webauth: warning: sessions of {username} not ended: {e}"),
        },
        Err(e) => eprintln!("webauth: warning: sessions of {username} not ended: {e}"),
    }
}

fn user_list() -> Result<(), Fail> {
    let config = config()?;
    // Loading checks every hash, so a broken file is reported here first.
    if let Err(e) = users::UserDb::load(&config.users) {
        eprintln!("webauth: warning: {e}");
    }
    let file = open_users(&config)?;
    let mut out = std::io::stdout().lock();
    for (name, record) in &file.entries {
        let get = |k: &str| record.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let kind = match get("password") {
            h if h.starts_with("$argon2id$") => "argon2id",
            h if h.starts_with("$2") => "bcrypt",
            _ => "INVALID",
        };
        let totp = if record.get("totp").is_some_and(|t| !t.is_null()) { "\ttotp" } else { "" };
        let _ = writeln!(out, "{name}\t{} {}\t{kind}{totp}", get("first"), get("last"));
    }
    Ok(())
}

/// The store, if there is one yet (the admin command never creates it).
fn open_store(config: &Config) -> Result<Option<Box<dyn SessionStore>>, Fail> {
    store::open_existing(&config.store).map_err(|e| fail(e.to_string()))
}

fn session_list() -> Result<(), Fail> {
    let config = config()?;
    let records = match open_store(&config)? {
        Some(mut store) => store.list().map_err(|e| fail(e.to_string()))?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "id\tuser\tcreated\tlast seen\texpires");
    for r in records {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            r.id.short(),
            r.username,
            time(r.created),
            time(r.last_seen),
            time(r.expires_at.min(r.last_seen + config.idle_timeout))
        );
    }
    Ok(())
}

fn session_revoke(name: &str) -> Result<(), Fail> {
    let config = config()?;
    let username = normalize_username(name);
    let n = match open_store(&config)? {
        Some(mut store) => store.delete_user(&username).map_err(|e| fail(e.to_string()))?,
        None => 0,
    };
    println!("ended {n} session(s) of {username}");
    Ok(())
}

fn session_purge() -> Result<(), Fail> {
    let config = config()?;
    let n = match open_store(&config)? {
        Some(mut store) => {
            store.purge(now(), config.idle_timeout, config.failure_window).map_err(|e| fail(e.to_string()))?
        }
        None => 0,
    };
    println!("removed {n} expired session(s)");
    Ok(())
}

/// `2026-11-26 17:57:10 UTC`.
fn time(t: i64) -> String {
    match cookie::time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            d.month() as u8,
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => t.to_string(),
    }
}

/// A password from a prompt without echo (asked twice when `confirm`), or one
/// line of stdin when stdin is not a terminal.
/// Prints one line per check; fails when any check failed.
fn check(deployment: crate::check::Deployment) -> Result<(), Fail> {
    let findings = crate::check::run(&deployment);
    for finding in &findings {
        println!("{finding}");
    }
    let failed = findings.iter().filter(|f| f.level == crate::check::Level::Fail).count();
    match failed {
        0 => Ok(()),
        n => Err(fail(format!("{n} check(s) failed"))),
    }
}

/// `webauth bundle shared-host DIR --mount M --user NAME ...`: the folder,
/// the first user (asking for the password), then `check` on the result.
fn bundle_shared_host(dir: &str, options: &[&str]) -> Result<(), Fail> {
    let mut mount = None;
    let mut data = None;
    let mut programs = None;
    let mut user = None;
    let mut user_options: Vec<&str> = Vec::new();
    let mut it = options.iter();
    while let Some(option) = it.next() {
        let value = *it.next().ok_or_else(|| usage(&format!("{option} needs a value")))?;
        match *option {
            "--mount" => mount = Some(if value.ends_with('/') { value.to_string() } else { format!("{value}/") }),
            "--data" => data = Some(std::path::PathBuf::from(value)),
            "--programs" => programs = Some(std::path::PathBuf::from(value)),
            "--user" => user = Some(value),
            "--first" | "--last" | "--field" => user_options.extend([*option, value]),
            other => return Err(usage(&format!("unknown option {other}"))),
        }
    }
    let mount = mount.ok_or_else(|| usage("bundle needs --mount, the URL path it will be served at (/members/)"))?;
    let user = user.ok_or_else(|| usage("bundle needs --user NAME, the first user"))?;
    let programs = match programs {
        Some(p) => p,
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
            .ok_or_else(|| fail("cannot tell where the programs are: name their folder with --programs"))?,
    };
    let plan = crate::bundle::Plan { dir: dir.into(), mount, data, programs };
    crate::bundle::lay_out(&plan).map_err(fail)?;
    let users = crate::bundle::users_path(&plan);
    add_user_to(&users, user, &user_options)?;
    set_private(&users)?;
    eprintln!("webauth: laid out {dir}; upload it as it is (keep the modes), then open {}", plan.mount);
    check(crate::check::Deployment::from_htaccess(&plan.dir.join(".htaccess")).map_err(|e| fail(e.to_string()))?)
}

fn set_private(path: &std::path::Path) -> Result<(), Fail> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("{}: {e}", path.display())))
}

fn read_password(confirm: bool) -> Result<String, Fail> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| fail(e.to_string()))?;
        if confirm {
            let again = rpassword::prompt_password("Again: ").map_err(|e| fail(e.to_string()))?;
            if again != first {
                return Err(fail("the passwords differ; nothing changed"));
            }
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| fail(format!("reading stdin: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(fail("empty password; nothing changed"));
    }
    if password.len() > MAX_PASSWORD {
        return Err(fail(format!("password longer than {MAX_PASSWORD} bytes; nothing changed")));
    }
    Ok(password)
}
