//! The login and logout bodies: `routes::parse_form`, `routes::parse_json`,
//! and `routes::read_fields`, which picks between them by content type; and
//! `totp::parse_code`, which reads the code field they carry.
//!
//! Input: the first byte picks the `Content-Type` (see `content_type`), the
//! rest is the body. Both parsers see every body whatever the first byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webauth::http::{Request, RequestError};
use webauth::routes::{parse_form, parse_json, read_fields, BodyKind, Fields};
use webauth::totp::{parse_code, Code, MAX_CODE_FIELD};

fn content_type(selector: u8) -> &'static str {
    match selector {
        b'j' => "application/json",
        b'J' => "Application/JSON; charset=utf-8",
        b'f' => "application/x-www-form-urlencoded",
        b'F' => "application/x-www-form-urlencoded;charset=UTF-8",
        b'e' => "",
        b'm' => "multipart/form-data; boundary=x",
        _ => "text/plain",
    }
}

/// Encodes every byte that is not unreserved, the strictest form there is.
fn form_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_fields(f: &Fields) -> String {
    let mut parts = Vec::new();
    for (name, value) in [("username", &f.username), ("password", &f.password), ("next", &f.next), ("code", &f.code)] {
        if let Some(v) = value {
            parts.push(format!("{name}={}", form_encode(v)));
        }
    }
    if f.remember {
        parts.push("remember=on".to_string());
    }
    parts.join("&")
}

/// A client error's message names what to fix and never echoes the body.
fn check_error(e: &RequestError) {
    assert!(matches!(e.status(), 400 | 413 | 415), "status {}", e.status());
    let message = e.message();
    assert!(message.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "message {message:?}");
    assert!(message.len() < 200, "message {message:?}");
}

/// The code field's reader: a six-digit code is six ASCII digits, a
/// recovery code sixteen base32 letters, and nothing over-long is either.
fn check_code(field: &str) {
    match parse_code(field) {
        Some(Code::Totp(c)) => assert!(c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()), "{c:?}"),
        Some(Code::Recovery(c)) => {
            assert!(c.len() == 16 && c.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)), "{c:?}")
        }
        None => {}
    }
    if field.len() > MAX_CODE_FIELD {
        assert_eq!(parse_code(field), None, "an over-long field is no code");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    if let Ok(text) = std::str::from_utf8(body) {
        check_code(text);
    }

    let form = parse_form(body);
    match &form {
        Ok(f) => {
            assert!(std::str::from_utf8(body).is_ok(), "a form body that is not UTF-8 parsed");
            let again = encode_fields(f);
            assert_eq!(parse_form(again.as_bytes()).as_ref(), Ok(f), "form round trip through {again:?}");
        }
        Err(e) => check_error(e),
    }

    let json = parse_json(body);
    match &json {
        Ok(f) => {
            let value = serde_json::json!({
                "username": f.username, "password": f.password, "next": f.next, "remember": f.remember,
                "code": f.code,
            });
            let again = value.to_string();
            assert_eq!(parse_json(again.as_bytes()).as_ref(), Ok(f), "JSON round trip through {again:?}");
        }
        Err(e) => check_error(e),
    }

    let mut req = Request::fake("POST", "/login", "");
    req.content_type = content_type(selector).to_string();
    req.body = Ok(body.to_vec());
    match (req.media_type().as_str(), read_fields(&req)) {
        ("application/json", r) => {
            assert_eq!(r.as_ref().map(|(k, f)| (*k, f)), json.as_ref().map(|f| (BodyKind::Json, f)))
        }
        ("application/x-www-form-urlencoded", r) => {
            assert_eq!(r.as_ref().map(|(k, f)| (*k, f)), form.as_ref().map(|f| (BodyKind::Form, f)))
        }
        ("", Ok((kind, f))) => assert!(body.is_empty() && kind == BodyKind::Empty && f == Fields::default()),
        (_, Ok(r)) => panic!("read {r:?} from content type {:?}", req.content_type),
        (_, Err(e)) => {
            check_error(&e);
            assert_eq!(e.status(), 415);
        }
    }
});
