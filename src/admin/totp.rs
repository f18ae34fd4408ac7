//! `webauth user totp enable|disable|recovery`: a user's second factor in
//! the users file, as `"totp": {"secret": "BASE32", "recovery": [hashes]}`.
//!
//! Enabling asks for a current code before it saves anything, so a user is
//! never left with a secret their app does not have.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{json, Value};

use super::{config, end_sessions, fail, lock_users, open_users, save, usage, Fail};
use crate::session::now;
use crate::totp::{self, Secret};
use crate::users::{shown_username, UsersFile};

/// The issuer an app shows beside the account, unless `--issuer` names another.
const DEFAULT_ISSUER: &str = "webauth";

/// `webauth user totp enable NAME [--issuer NAME] [--secret-stdin]`.
pub fn enable(name: &str, options: &[&str]) -> Result<(), Fail> {
    let mut issuer = DEFAULT_ISSUER.to_string();
    let mut secret_from_stdin = false;
    let mut it = options.iter();
    while let Some(option) = it.next() {
        match *option {
            "--issuer" => issuer = it.next().ok_or_else(|| usage("--issuer needs a value"))?.to_string(),
            "--secret-stdin" => secret_from_stdin = true,
            "--secret" => return Err(usage("a secret is never given on the command line: use --secret-stdin")),
            other => return Err(usage(&format!("unknown option {other}"))),
        }
    }
    let config = config()?;
    let file = open_users(&config)?;
    let key = user_key(&file, name)?;
    if has_totp(&file, &key) {
        return Err(fail(format!(
            "{key} has TOTP already: `webauth user totp disable {key}` first (or `user totp recovery {key}` \
             for new recovery codes)"
        )));
    }
    let mut input = std::io::stdin().lock();
    let secret = if secret_from_stdin {
        Secret::from_base32(&read_line(&mut input, "Secret (base32): ")?)
            .map_err(|why| fail(format!("the secret is {why}; nothing saved")))?
    } else {
        Secret::generate().map_err(|e| fail(format!("OS random source: {e}")))?
    };
    let uri = secret.uri(&issuer, &key);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Scan this with an authenticator app (or type in the secret):\n");
    let _ = writeln!(out, "{}", qr(&uri)?);
    let _ = writeln!(out, "{uri}\nsecret: {}\n", grouped(&secret.to_base32()));
    let _ = out.flush();
    let code = read_line(&mut input, "Code from the app: ")?;
    let typed = match totp::parse_code(&code) {
        Some(totp::Code::Totp(digits)) => digits,
        _ => return Err(fail("that is not a 6-digit code; nothing saved")),
    };
    let Some(step) = secret.matching_step(&typed, now()) else {
        return Err(fail(
            "that code does not match (is the device's clock right? codes change every 30 s); nothing saved",
        ));
    };
    let codes = totp::new_recovery_codes().map_err(|e| fail(format!("OS random source: {e}")))?;
    let mut file = lock_users(&config)?;
    let key = user_key(&file, name)?;
    if has_totp(&file, &key) {
        return Err(fail(format!("{key} got TOTP meanwhile; nothing saved")));
    }
    // The step of the code typed here: that code never logs in (see UserTotp).
    let record = json!({"secret": secret.to_base32(), "recovery": hashes(&codes), "step": step});
    entry(&mut file, &key)?.insert("totp".into(), record);
    save(&file)?;
    eprintln!("webauth: TOTP enabled for {key}");
    print_codes(&codes);
    end_sessions(&config, &crate::users::normalize_username(&key));
    Ok(())
}

/// `webauth user totp disable NAME`: for a user who lost their device.
pub fn disable(name: &str) -> Result<(), Fail> {
    let config = config()?;
    let mut file = lock_users(&config)?;
    let key = user_key(&file, name)?;
    if entry(&mut file, &key)?.shift_remove("totp").is_none() {
        return Err(fail(format!("{key} has no TOTP; nothing changed")));
    }
    save(&file)?;
    eprintln!("webauth: TOTP disabled for {key}; they sign in with the password alone");
    end_sessions(&config, &crate::users::normalize_username(&key));
    Ok(())
}

/// `webauth user totp recovery NAME`: ten new codes in place of the old.
pub fn recovery(name: &str) -> Result<(), Fail> {
    let config = config()?;
    let codes = totp::new_recovery_codes().map_err(|e| fail(format!("OS random source: {e}")))?;
    let mut file = lock_users(&config)?;
    let key = user_key(&file, name)?;
    match entry(&mut file, &key)?.get_mut("totp") {
        Some(Value::Object(totp)) => {
            totp.insert("recovery".into(), hashes(&codes).into());
        }
        _ => return Err(fail(format!("{key} has no TOTP: `webauth user totp enable {key}` first"))),
    }
    save(&file)?;
    eprintln!("webauth: new recovery codes for {key}; the old ones no longer work");
    print_codes(&codes);
    Ok(())
}

fn user_key(file: &UsersFile, name: &str) -> Result<String, Fail> {
    file.key_of(name).ok_or_else(|| fail(format!("no user {} in {}", shown_username(name), file.path.display())))
}

fn has_totp(file: &UsersFile, key: &str) -> bool {
    file.entries.get(key).and_then(|u| u.get("totp")).is_some_and(|t| !t.is_null())
}

fn entry<'a>(file: &'a mut UsersFile, key: &str) -> Result<&'a mut serde_json::Map<String, Value>, Fail> {
    let path = file.path.display().to_string();
    match file.entries.get_mut(key) {
        Some(Value::Object(fields)) => Ok(fields),
        _ => Err(fail(format!("user {} is not an object in {path}", shown_username(key)))),
    }
}

fn hashes(codes: &[String]) -> Vec<String> {
    codes.iter().map(|c| totp::recovery_hash(c)).collect()
}

fn print_codes(codes: &[String]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Recovery codes (each works once; keep them somewhere safe, they are not shown again):");
    for code in codes {
        let _ = writeln!(out, "  {code}");
    }
}

/// `ABCD EFGH ...`, as apps ask for a secret typed in.
fn grouped(text: &str) -> String {
    text.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>().join(" ")
}

/// The URI as a QR code in Unicode half blocks, two modules per character
/// cell, light on dark as most terminals are.
fn qr(uri: &str) -> Result<String, Fail> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| fail(format!("QR code: {e}")))?;
    Ok(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build())
}

/// One line from stdin, with a prompt on stderr when it is a terminal.
fn read_line(input: &mut impl BufRead, prompt: &str) -> Result<String, Fail> {
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
    }
    let mut line = String::new();
    input.read_line(&mut line).map_err(|e| fail(format!("reading stdin: {e}")))?;
    let line = line.trim().to_string();
    if line.is_empty() {
        return Err(fail("nothing read from stdin; nothing saved"));
    }
    if line.len() > 256 {
        return Err(fail("the line read is too long; nothing saved"));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_half_blocks() {
        let Ok(text) = qr("otpauth://totp/webauth:john?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ") else {
            panic!("a QR code")
        };
        assert!(text.lines().count() > 10, "{text}");
        assert!(text.chars().all(|c| matches!(c, ' ' | '█' | '▀' | '▄' | '\n')), "{text}");
    }

    #[test]
    fn secrets_are_shown_in_groups_of_four() {
        assert_eq!(grouped("ABCDEFGHIJ"), "ABCD EFGH IJ");
    }
}
