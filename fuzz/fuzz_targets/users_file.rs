//! The users-file loader: `UserDb::parse` on any text, as the programs read
//! `WEBAUTH_USERS`. It must never panic; a file it accepts must give every
//! listed user, found by the name as written and under a normalised name
//! that normalising again leaves alone (logins normalise twice); a file it
//! refuses gets a message of bounded length (usernames are cut).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use webauth::users::{normalize_username, UserDb};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match UserDb::parse(text, Path::new("users.json")) {
        Ok(db) => {
            let value: serde_json::Value = serde_json::from_str(text).expect("an accepted file is JSON");
            let map = value.as_object().expect("an accepted file is an object");
            assert_eq!(db.len(), map.len(), "one user per entry");
            for (name, record) in map {
                let user = db.get(name).expect("every user is found by the name as written");
                assert_eq!(user.username, normalize_username(name));
                assert_eq!(normalize_username(&user.username), user.username, "normalising twice changes nothing");
                assert!(db.get(&user.username).is_some(), "found by the normalised name");
                assert!(user.fields.get("password").is_none(), "the hash never reaches the pages");
                let strings = record.as_object().map_or(0, |r| r.values().filter(|v| v.is_string()).count());
                assert_eq!(user.fields.len(), strings - 1, "every string field but the password");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.chars().count() < 1000, "message of {} characters", message.chars().count());
            assert_eq!(message.lines().count(), 1, "one line for the log: {message:?}");
        }
    }
});
