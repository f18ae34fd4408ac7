//! The `next` check: `routes::safe_next` and `routes::is_local_path`, on the
//! raw value and on what the query string and a form body decode to (the
//! two ways `next` reaches the login handler).
//!
//! Input: if it holds a NUL byte, the part before the first NUL is
//! `SCRIPT_NAME` (the mount is derived from it, as `Request::mount` does) and
//! the rest is `next`; otherwise all of it is `next` and the script is
//! `/members/login`.
//!
//! Property: whatever `safe_next` returns is the mount, or starts with '/'
//! and not "//" or "/\", has no ASCII control characters, spaces or
//! backslashes (nor anything non-ASCII), and resolves against the site's own
//! URL to a URL on the same host.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use webauth::config::Config;
use webauth::http::Request;
use webauth::routes::{is_local_path, parse_form, safe_next};

fn check(next: Option<&str>, mount: &str) {
    let target = safe_next(next, mount);
    match next {
        Some(n) if is_local_path(n) => assert_eq!(target, n),
        _ => assert_eq!(target, mount),
    }
    if target == mount {
        return;
    }
    assert!(target.starts_with('/'), "{target:?}");
    assert!(!target.starts_with("//"), "{target:?}");
    assert!(!target.starts_with("/\\"), "{target:?}");
    assert!(
        target.bytes().all(|b| b.is_ascii() && !b.is_ascii_control() && b != b' ' && b != b'\\'),
        "{target:?}"
    );
    // What a browser does with the redirect: it must stay on this site.
    for base in ["https://example.org/members/login", "http://example.org:8080/"] {
        let base = url::Url::parse(base).unwrap();
        let resolved = base.join(&target).unwrap_or_else(|e| panic!("{target:?} does not resolve: {e}"));
        assert_eq!(resolved.origin(), base.origin(), "{target:?} leaves the site: {resolved}");
    }
}

fuzz_target!(|data: &[u8]| {
    let (script, next) = match data.iter().position(|&b| b == 0) {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => ("/members/login".to_string(), data),
    };
    let mut vars = HashMap::new();
    vars.insert("REQUEST_METHOD".to_string(), "GET".to_string());
    vars.insert("SCRIPT_NAME".to_string(), script);
    let text = String::from_utf8_lossy(next).into_owned();
    vars.insert("QUERY_STRING".to_string(), format!("next={text}"));
    let req = Request::from_cgi_vars(&vars, Ok(Vec::new()));
    let mount = req.mount(&Config::default());

    check(None, &mount);
    check(Some(&text), &mount);
    // Through the query string, percent-decoded as `Request::query_param` does.
    check(req.query_param("next").as_deref(), &mount);
    // Through a form body, strictly decoded.
    let mut body = b"next=".to_vec();
    body.extend_from_slice(next);
    if let Ok(fields) = parse_form(&body) {
        check(fields.next.as_deref(), &mount);
    }
    // And against a fixed, configured mount.
    check(Some(&text), "/");
});
