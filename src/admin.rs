//! The `webauth` admin command: manages the users file and the sessions that
//! the route programs read, and runs the demo.
//!
//! Passwords come from a prompt without echo, or from stdin when it is not a
//! terminal; never from the command line, where `ps` would show them.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use crate::config::Config;
use crate::session::now;
use crate::store::{self, SessionStore};
use crate::users::{self, hash_password, normalize_username, valid_username, UsersFile, MAX_PASSWORD};

const USAGE: &str = "usage:
  webauth hash                         print the argon2id hash of a password read from stdin
  webauth user add NAME [--first F] [--last L] [--field KEY=VALUE]...
  webauth user passwd NAME             set a new password (ends the user's sessions)
  webauth user del NAME                remove a user (ends the user's sessions)
  webauth user list
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
        ["user", "passwd", name] => user_passwd(name),
        ["user", "del", name] => user_del(name),
        ["user", "list"] => user_list(),
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
            "invalid username {name:?}: use letters, digits and . _ - @ + (at most {} bytes)",
            users::MAX_USERNAME
        )));
    }
    let mut fields = serde_json::Map::new();
    let mut it = options.iter();
    while let Some(option) = it.next() {
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
    let mut file = UsersFile::open(users).map_err(|e| fail(e.to_string()))?;
    if file.key_of(&username).is_some() {
        return Err(fail(format!("user {username:?} exists already (use `webauth user passwd {username}`)")));
    }
    let password = read_password(true)?;
    fields.insert("password".into(), hash_password(&password).map_err(fail)?.into());
    file.entries.insert(username.clone(), serde_json::Value::Object(fields));
    save(&file)?;
    eprintln!("webauth: added {username} to {}", users.display());
    Ok(())
}

fn user_passwd(name: &str) -> Result<(), Fail> {
    let config = config()?;
    let mut file = open_users(&config)?;
    let key = file.key_of(name).ok_or_else(|| fail(format!("no user {name:?} in {}", config.users.display())))?;
    let password = read_password(true)?;
    let hash = hash_password(&password).map_err(fail)?;
    match file.entries.get_mut(&key) {
        Some(serde_json::Value::Object(fields)) => {
            fields.insert("password".into(), hash.into());
        }
        _ => return Err(fail(format!("user {key:?} is not an object in {}", config.users.display()))),
    }
    save(&file)?;
    eprintln!("webauth: password of {key} changed");
    end_sessions(&config, &normalize_username(&key));
    Ok(())
}

fn user_del(name: &str) -> Result<(), Fail> {
    let config = config()?;
    let mut file = open_users(&config)?;
    let key = file.key_of(name).ok_or_else(|| fail(format!("no user {name:?} in {}", config.users.display())))?;
    file.entries.shift_remove(&key);
    save(&file)?;
    eprintln!("webauth: removed {key}");
    end_sessions(&config, &normalize_username(&key));
    Ok(())
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
        let _ = writeln!(out, "{name}\t{} {}\t{kind}", get("first"), get("last"));
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
