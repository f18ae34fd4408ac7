//! The CGI request parser: CGI variables and a body, as a CGI front end gets
//! them, through `read_body`, `BodyPlan`, `Request::from_cgi_vars` and what
//! every handler asks of a request first.
//!
//! Input: `NAME=VALUE` entries separated by NUL bytes; an empty entry (two
//! NULs in a row) ends the variables and everything after it is stdin.
//! Names and values are read lossily as UTF-8, like `cgi::run` does.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use webauth::config::Config;
use webauth::http::{BodyPlan, Request, MAX_BODY};
use webauth::routes::{read_fields, safe_next};
use webauth::{cgi, origin, session};

fn split_input(data: &[u8]) -> (HashMap<String, String>, &[u8]) {
    let mut vars = HashMap::new();
    let mut rest = data;
    loop {
        let (entry, after) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if entry.is_empty() {
            return (vars, after.unwrap_or(&[]));
        }
        let text = String::from_utf8_lossy(entry);
        let (name, value) = text.split_once('=').unwrap_or((&text, ""));
        vars.insert(name.to_string(), value.to_string());
        match after {
            Some(a) => rest = a,
            None => return (vars, &[]),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (vars, stdin) = split_input(data);
    let method = vars.get("REQUEST_METHOD").map(String::as_str).unwrap_or("");
    let content_length = vars.get("CONTENT_LENGTH").map(String::as_str);

    // BodyPlan on its own.
    let plan = BodyPlan::from_content_length(content_length);
    match plan {
        BodyPlan::Read(n) => assert!(n <= MAX_BODY, "plan reads {n} > MAX_BODY"),
        BodyPlan::TooLarge(n) => assert!(n > MAX_BODY as u64, "TooLarge({n}) is within MAX_BODY"),
        BodyPlan::Invalid => {}
        BodyPlan::None => unreachable!("from_content_length never says no body"),
    }
    match plan.check(stdin.to_vec()) {
        Ok(body) => {
            assert_eq!(body, stdin);
            assert_eq!(plan, BodyPlan::Read(stdin.len()));
        }
        Err(e) => {
            assert!(matches!(e.status(), 400 | 413), "check gave status {}", e.status());
            assert!(!e.message().is_empty());
        }
    }

    // The plan every front end uses agrees with the method.
    let for_request = BodyPlan::for_request(&vars);
    let bodiless_method = matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "");
    assert_eq!(for_request == BodyPlan::None, bodiless_method, "{method:?} got {for_request:?}");

    // read_body as the CGI front end calls it, on stdin as a reader.
    let mut reader: &[u8] = stdin;
    let body = cgi::read_body(&vars, &mut reader);
    let bodiless = matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "");
    if bodiless {
        assert_eq!(body.as_deref().ok(), Some(&[][..]), "GET/HEAD/no method must read no body");
        assert_eq!(reader.len(), stdin.len(), "GET/HEAD consumed stdin");
    } else if let Ok(b) = &body {
        let BodyPlan::Read(n) = plan else { panic!("body read without a Read plan: {plan:?}") };
        assert_eq!(b.len(), n, "body length differs from CONTENT_LENGTH");
        assert_eq!(&b[..], &stdin[..n]);
    }
    if let Err(e) = &body {
        assert!(matches!(e.status(), 400 | 413), "read_body gave status {}", e.status());
    }

    // The request and what the handlers ask of it.
    let req = Request::from_cgi_vars(&vars, body);
    assert_eq!(req.method, method.to_ascii_uppercase());
    let _ = req.is_head();
    let _ = req.media_type();
    let _ = req.wants_json();
    let next = req.query_param("next");
    if let Some(other) = vars.get("FUZZ_PARAM") {
        let _ = req.query_param(other);
    }
    if let Err(e) = read_fields(&req) {
        assert!(matches!(e.status(), 400 | 413 | 415));
        let _ = e.to_string();
    }
    let config = Config::from_vars(&req.config_vars).unwrap_or_default();
    let _ = origin::check(&config, &req);
    let _ = session::read_cookie(&req.cookie_header, &config.cookie_name);
    let mount = req.mount(&config);
    let target = safe_next(next.as_deref(), &mount);
    assert!(target == mount || webauth::routes::is_local_path(&target));
});
