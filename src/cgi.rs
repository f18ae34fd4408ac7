//! CGI front end: one request from the environment and stdin, the response to
//! stdout, then exit.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use crate::app::{App, Handler};
use crate::audit;
use crate::config;
use crate::http::{BodyPlan, Request, Response};

/// How much of an over-large body a CGI program reads and throws away before
/// it answers `413`. fcgiwrap writes the whole body to our stdin before it
/// reads any output, so answering without draining it gives the client a
/// `502` instead; the recipes' `client_max_body_size` keeps it small.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

pub fn run(handler: Handler) -> ExitCode {
    let vars: HashMap<String, String> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    let head_only = vars.get("REQUEST_METHOD").is_some_and(|m| m.eq_ignore_ascii_case("HEAD"));
    let body = read_body(&vars, &mut std::io::stdin().lock());
    let response = match App::new(config::env_vars()) {
        Ok(mut app) => app.handle(handler, &Request::from_cgi_vars(&vars, body)),
        Err(e) => {
            audit::fault(&e.to_string());
            Response::html(500, crate::render::fallback_page(500, "The login service is misconfigured."))
        }
    };
    let mut out = Vec::with_capacity(response.body.len() + 512);
    response.write_cgi(&mut out, head_only);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|_| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The web server went away; nothing more to tell anyone.
        Err(_) => ExitCode::FAILURE,
    }
}

/// Reads the body `CONTENT_LENGTH` declares, if the method has one.
pub fn read_body(vars: &HashMap<String, String>, input: &mut impl Read) -> Result<Vec<u8>, crate::http::RequestError> {
    BodyPlan::for_request(vars).read(input, DRAIN_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(method: &str, length: Option<&str>) -> HashMap<String, String> {
        let mut v = HashMap::new();
        v.insert("REQUEST_METHOD".to_string(), method.to_string());
        if let Some(l) = length {
            v.insert("CONTENT_LENGTH".to_string(), l.to_string());
        }
        v
    }

    #[test]
    fn get_reads_nothing() {
        let mut input: &[u8] = b"abcdef";
        assert_eq!(read_body(&vars("GET", Some("")), &mut input).unwrap(), b"");
        assert_eq!(input.len(), 6);
    }

    #[test]
    fn too_large_is_drained_then_413() {
        let big = vec![b'x'; 100_000];
        let mut input: &[u8] = &big;
        let err = read_body(&vars("POST", Some("100000")), &mut input).unwrap_err();
        assert_eq!(err.status(), 413);
        assert!(input.is_empty(), "the body was drained");
    }

    #[test]
    fn reads_exactly_the_declared_length_and_no_length_on_post_is_400() {
        let mut input: &[u8] = b"abcdef";
        assert_eq!(read_body(&vars("POST", Some("3")), &mut input).unwrap(), b"abc");
        let mut input: &[u8] = b"";
        assert_eq!(read_body(&vars("POST", None), &mut input).unwrap_err().status(), 400);
    }
}
