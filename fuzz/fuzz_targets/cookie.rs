//! The cookie header: `session::read_cookie` and `Token::parse`.
//!
//! Input: the `Cookie` header. If it holds a NUL byte, the part before the
//! first NUL is the cookie name (used when it is a valid name, as
//! `WEBAUTH_COOKIE_NAME` must be) and the rest is the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webauth::session::{read_cookie, CookieState, Token, TOKEN_LEN};

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_token(t: &Token) {
    let s = t.as_str();
    assert_eq!(s.len(), TOKEN_LEN, "token of length {}", s.len());
    assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "token {s:?}");
    assert!(Token::parse(s).is_some());
    let _ = t.id().short();
}

fuzz_target!(|data: &[u8]| {
    let (name, header) = match data.iter().position(|&b| b == 0) {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => ("webauth".to_string(), data),
    };
    let name = if valid_name(&name) { name } else { "webauth".to_string() };
    let header = String::from_utf8_lossy(header);

    match read_cookie(&header, &name) {
        CookieState::Present(t) => {
            check_token(&t);
            assert!(header.contains(&name), "found a cookie {name:?} that is not in the header");
            assert!(header.contains(t.as_str()), "the token is not in the header");
        }
        CookieState::Invalid(_) => assert!(header.contains(&name), "Invalid without the name in the header"),
        CookieState::Absent => {}
    }

    if let Some(t) = Token::parse(&header) {
        check_token(&t);
        // A well-formed token is found again in a header of its own.
        let alone = format!("{name}={}", t.as_str());
        assert!(matches!(read_cookie(&alone, &name), CookieState::Present(_)), "{alone:?}");
        // Neighbours whose names only contain ours are someone else's cookies.
        let among = format!("x{name}=1; {name}=\"{}\" ;{name}x=2", t.as_str());
        assert!(matches!(read_cookie(&among, &name), CookieState::Present(_)), "{among:?}");
    }
});
