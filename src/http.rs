//! The one request and response type every route handler takes and returns.
//!
//! No I/O here: a front end (CGI, FastCGI, the demo server) gathers the CGI
//! variables and the body, calls [`Request::from_cgi_vars`], hands the request
//! to a handler, and writes the [`Response`] back with [`Response::write_cgi`].

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use crate::config;

/// Largest request body any route accepts (SPEC.md: over 64 KiB is `413`).
pub const MAX_BODY: usize = 64 * 1024;

/// What is wrong with a request before any route looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// `CONTENT_LENGTH` over [`MAX_BODY`], or more body than that arrived.
    TooLarge,
    /// `CONTENT_LENGTH` missing, negative or not a number on a request with a body.
    BadLength(String),
    /// Fewer (or more) bytes arrived than `CONTENT_LENGTH` declared.
    ShortBody { declared: usize, received: usize },
    /// A content type the route does not read.
    UnsupportedType(String),
    /// A body that does not parse: the message says what and where.
    Malformed(String),
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::TooLarge => 413,
            RequestError::UnsupportedType(_) => 415,
            _ => 400,
        }
    }

    /// The message for the client: says what to fix, never echoes raw input.
    pub fn message(&self) -> String {
        match self {
            RequestError::TooLarge => format!("Request body too large (limit {} KiB).", MAX_BODY / 1024),
            RequestError::BadLength(why) => format!("Invalid Content-Length: {why}."),
            RequestError::ShortBody { declared, received } => {
                format!("Request body has {received} bytes but Content-Length says {declared}.")
            }
            RequestError::UnsupportedType(_) => {
                "Unsupported Content-Type: send application/json or application/x-www-form-urlencoded.".to_string()
            }
            RequestError::Malformed(why) => format!("Malformed request: {why}."),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// What body a request carries and how much of it a front end reads: decided
/// once, here, for CGI, FastCGI and the demo server alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// GET, HEAD, or no method at all: no body, whatever arrives.
    None,
    /// Read exactly this many bytes (possibly zero).
    Read(usize),
    /// Declared larger than [`MAX_BODY`]: drain (bounded) and answer 413.
    TooLarge(u64),
    /// Missing, empty, negative or not a number.
    Invalid,
}

impl BodyPlan {
    /// The plan for a request from its CGI variables.
    pub fn for_request(vars: &HashMap<String, String>) -> BodyPlan {
        let method = vars.get("REQUEST_METHOD").map(String::as_str).unwrap_or("");
        if matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "") {
            return BodyPlan::None;
        }
        // A server that cuts a body at its own limit (mod_fcgid under
        // LimitRequestBody) passes the cut length in CONTENT_LENGTH; the
        // client's own header, which servers pass as HTTP_CONTENT_LENGTH,
        // still says the body was too large.
        if let too_large @ BodyPlan::TooLarge(_) =
            BodyPlan::from_content_length(vars.get("HTTP_CONTENT_LENGTH").map(String::as_str))
        {
            return too_large;
        }
        BodyPlan::from_content_length(vars.get("CONTENT_LENGTH").map(String::as_str))
    }

    pub fn from_content_length(value: Option<&str>) -> BodyPlan {
        match value.map(str::trim) {
            None | Some("") => BodyPlan::Invalid,
            Some(v) if !v.bytes().all(|b| b.is_ascii_digit()) => BodyPlan::Invalid,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n <= MAX_BODY as u64 => BodyPlan::Read(n as usize),
                Ok(n) => BodyPlan::TooLarge(n),
                // More digits than a u64 holds is still a number, and far too large.
                Err(_) => BodyPlan::TooLarge(u64::MAX),
            },
        }
    }

    /// Reads the body from a stream (CGI's stdin, the demo's connection):
    /// exactly the declared length, or up to `drain` bytes of a body that is
    /// too large, thrown away so the web server can read our answer.
    pub fn read<R: Read + ?Sized>(self, input: &mut R, drain: u64) -> Result<Vec<u8>, RequestError> {
        let mut body = Vec::new();
        match self {
            // A short read is reported by `check` as a body shorter than declared.
            BodyPlan::Read(n) => drop(input.take(n as u64).read_to_end(&mut body)),
            BodyPlan::TooLarge(n) => drop(std::io::copy(&mut input.take(n.min(drain)), &mut std::io::sink())),
            BodyPlan::None | BodyPlan::Invalid => {}
        }
        self.check(body)
    }

    /// The body outcome for a request whose body a front end has read.
    pub fn check(self, body: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        match self {
            BodyPlan::None => Ok(Vec::new()),
            BodyPlan::TooLarge(_) => Err(RequestError::TooLarge),
            BodyPlan::Invalid if body.is_empty() => {
                Err(RequestError::BadLength("missing, empty or not a non-negative number".into()))
            }
            BodyPlan::Invalid => Err(RequestError::BadLength("body sent without a valid length".into())),
            BodyPlan::Read(_) if body.len() > MAX_BODY => Err(RequestError::TooLarge),
            BodyPlan::Read(n) if body.len() != n => Err(RequestError::ShortBody { declared: n, received: body.len() }),
            BodyPlan::Read(_) => Ok(body),
        }
    }
}

/// The FastCGI role a request arrived in (CGI and the demo are always Responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Responder,
    Authorizer,
}

/// A request as the handlers see it: the CGI variables that matter, and the body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub script_name: String,
    pub path_info: String,
    pub query: String,
    /// `REQUEST_URI`: the path and query the browser asked for, which after a
    /// web server's internal redirect (an error page) is not this program's.
    pub request_uri: String,
    pub content_type: String,
    pub cookie_header: String,
    /// `HTTP_HOST` as sent (may lack the port, see SPEC.md).
    pub host: String,
    pub server_port: String,
    pub https: bool,
    pub origin: Option<String>,
    pub sec_fetch_site: Option<String>,
    pub accept: String,
    pub remote_addr: String,
    pub role: Role,
    /// The body, or what went wrong reading it. Only unsafe methods look at it.
    pub body: Result<Vec<u8>, RequestError>,
    /// `WEBAUTH_*` variables that came with this request (FastCGI params), if any.
    pub config_vars: Vec<(String, String)>,
    /// Test-only fault trigger (see `routes::fault_trigger`).
    #[cfg(feature = "fault-injection")]
    pub fault: Option<String>,
}

impl Request {
    /// Builds a request from CGI variables (the environment of a CGI program,
    /// or the params of a FastCGI request) and the body a front end read.
    pub fn from_cgi_vars(vars: &HashMap<String, String>, body: Result<Vec<u8>, RequestError>) -> Request {
        let get = |name: &str| vars.get(name).map(String::as_str).unwrap_or("");
        let non_empty = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        Request {
            method: get("REQUEST_METHOD").to_ascii_uppercase(),
            script_name: get("SCRIPT_NAME").to_string(),
            path_info: get("PATH_INFO").to_string(),
            query: get("QUERY_STRING").to_string(),
            request_uri: get("REQUEST_URI").to_string(),
            content_type: get("CONTENT_TYPE").to_string(),
            cookie_header: get("HTTP_COOKIE").to_string(),
            host: get("HTTP_HOST").to_string(),
            server_port: get("SERVER_PORT").to_string(),
            https: matches!(get("HTTPS").to_ascii_lowercase().as_str(), "on" | "1")
                || get("REQUEST_SCHEME").eq_ignore_ascii_case("https"),
            origin: non_empty("HTTP_ORIGIN"),
            sec_fetch_site: non_empty("HTTP_SEC_FETCH_SITE"),
            accept: get("HTTP_ACCEPT").to_string(),
            remote_addr: get("REMOTE_ADDR").to_string(),
            role: Role::Responder,
            body,
            config_vars: config::request_overrides(vars.iter()),
            #[cfg(feature = "fault-injection")]
            fault: non_empty("HTTP_X_WEBAUTH_FAULT"),
        }
    }

    /// A GET request for tests: `Request::fake("GET", "/", "")`.
    pub fn fake(method: &str, script_name: &str, body: &str) -> Request {
        let mut vars = HashMap::new();
        vars.insert("REQUEST_METHOD".to_string(), method.to_string());
        vars.insert("SCRIPT_NAME".to_string(), script_name.to_string());
        vars.insert("CONTENT_LENGTH".to_string(), body.len().to_string());
        vars.insert("REMOTE_ADDR".to_string(), "127.0.0.1".to_string());
        vars.insert("HTTP_HOST".to_string(), "localhost".to_string());
        Request::from_cgi_vars(&vars, Ok(body.as_bytes().to_vec()))
    }

    /// The mount point this request was made under (see [`config::Config::mount_for`]).
    pub fn mount(&self, config: &config::Config) -> String {
        config.mount_for(&self.script_name)
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The media type of the body, lower-cased, without parameters.
    pub fn media_type(&self) -> String {
        media_type(&self.content_type)
    }

    /// Whether the client would rather read JSON than a page: a JSON body, or
    /// an `Accept` that names JSON and not HTML.
    pub fn wants_json(&self) -> bool {
        self.media_type() == "application/json"
            || (self.accept.contains("application/json") && !self.accept.contains("text/html"))
    }

    /// One query-string parameter, decoded (lossy: the query only carries `next`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

/// `"Application/JSON; charset=utf-8"` -> `"application/json"`.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A response: status, headers and body, written the same way by every front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    pub fn html(status: u16, body: String) -> Response {
        Response::new(status).with_header("Content-Type", "text/html; charset=utf-8").with_body(body.into_bytes())
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status).with_header("Content-Type", "application/json").with_body(value.to_string().into_bytes())
    }

    /// `{"success": false, "message": ...}` with the given status.
    pub fn json_error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({"success": false, "message": message}))
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(body.as_bytes().to_vec())
    }

    pub fn redirect_303(location: &str) -> Response {
        Response::new(303).with_header("Location", location)
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// Adds the header unless the response already has one of that name.
    pub fn with_default_header(self, name: &str, value: &str) -> Response {
        if self.header(name).is_some() {
            self
        } else {
            self.with_header(name, value)
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Writes `Status:`, the headers and (unless `head_only`) the body, as a CGI
    /// program prints them and as a FastCGI responder sends them on stdout.
    pub fn write_cgi(&self, out: &mut Vec<u8>, head_only: bool) {
        out.extend_from_slice(b"Status: ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            // Header values are ours, but a stray CR/LF must never split a header.
            out.extend(name.bytes().filter(|b| !b"\r\n:".contains(b)));
            out.extend_from_slice(b": ");
            out.extend(value.bytes().filter(|b| !b"\r\n".contains(b)));
            out.extend_from_slice(b"\r\n");
        }
        if self.status != 204 && self.status != 304 && self.header("Content-Length").is_none() {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(self.body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase for the status codes webauth sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_plans() {
        assert_eq!(BodyPlan::from_content_length(Some("12")), BodyPlan::Read(12));
        assert_eq!(BodyPlan::from_content_length(Some("0")), BodyPlan::Read(0));
        assert_eq!(BodyPlan::from_content_length(None), BodyPlan::Invalid);
        assert_eq!(BodyPlan::from_content_length(Some("")), BodyPlan::Invalid);
        assert_eq!(BodyPlan::from_content_length(Some("-1")), BodyPlan::Invalid);
        assert_eq!(BodyPlan::from_content_length(Some("1e3")), BodyPlan::Invalid);
        assert_eq!(BodyPlan::from_content_length(Some("65537")), BodyPlan::TooLarge(65537));
        assert_eq!(BodyPlan::from_content_length(Some("99999999999999999999999")), BodyPlan::TooLarge(u64::MAX));
    }

    #[test]
    fn only_requests_with_a_method_that_has_a_body_read_one() {
        let plan = |method: &str, length: Option<&str>| {
            let mut vars = HashMap::new();
            vars.insert("REQUEST_METHOD".to_string(), method.to_string());
            if let Some(l) = length {
                vars.insert("CONTENT_LENGTH".to_string(), l.to_string());
            }
            BodyPlan::for_request(&vars)
        };
        assert_eq!(plan("GET", Some("")), BodyPlan::None);
        assert_eq!(plan("head", Some("5")), BodyPlan::None);
        assert_eq!(plan("", Some("5")), BodyPlan::None);
        assert_eq!(plan("POST", Some("5")), BodyPlan::Read(5));
        assert_eq!(plan("DELETE", None), BodyPlan::Invalid);
        let mut cut = HashMap::new();
        for (k, v) in [("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "65536"), ("HTTP_CONTENT_LENGTH", "70000")] {
            cut.insert(k.to_string(), v.to_string());
        }
        assert_eq!(BodyPlan::for_request(&cut), BodyPlan::TooLarge(70000), "a body the server cut is still too large");
        assert_eq!(BodyPlan::None.check(b"ignored".to_vec()), Ok(Vec::new()));
    }

    #[test]
    fn reading_takes_the_declared_length_and_drains_a_large_body() {
        let mut input: &[u8] = b"abcdef";
        assert_eq!(BodyPlan::Read(3).read(&mut input, 0).unwrap(), b"abc");
        let big = vec![b'x'; 100_000];
        let mut input: &[u8] = &big;
        assert_eq!(BodyPlan::TooLarge(100_000).read(&mut input, 1 << 20).unwrap_err().status(), 413);
        assert!(input.is_empty(), "the body was drained");
        let mut input: &[u8] = b"ab";
        let err = BodyPlan::Read(10).read(&mut input, 0).unwrap_err();
        assert_eq!(err, RequestError::ShortBody { declared: 10, received: 2 });
    }

    #[test]
    fn short_body_is_an_error() {
        let err = BodyPlan::Read(10).check(b"abc".to_vec()).unwrap_err();
        assert_eq!(err, RequestError::ShortBody { declared: 10, received: 3 });
        assert_eq!(err.status(), 400);
        assert_eq!(BodyPlan::TooLarge(1 << 20).check(Vec::new()).unwrap_err().status(), 413);
    }

    #[test]
    fn write_cgi_has_status_headers_and_length() {
        let mut out = Vec::new();
        Response::text(401, "no").with_header("X-A", "b\r\nInjected: yes").write_cgi(&mut out, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Status: 401 Unauthorized\r\n"));
        assert!(text.contains("X-A: bInjected: yes\r\n"));
        assert!(text.contains("Content-Length: 2\r\n\r\nno"));
    }

    #[test]
    fn head_only_omits_body_but_keeps_length() {
        let mut out = Vec::new();
        Response::html(200, "<p>hi</p>".into()).write_cgi(&mut out, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Content-Length: 9\r\n\r\n"));
    }

    #[test]
    fn media_type_drops_parameters() {
        assert_eq!(media_type("Application/JSON; charset=UTF-8"), "application/json");
        assert_eq!(media_type(""), "");
    }
}
