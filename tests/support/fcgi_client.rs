//! A minimal blocking FastCGI client: just enough of the protocol to play the
//! web server's part in integration tests. Written from the specification on
//! its own, without the crate's codec, so that a mistake there is not
//! mirrored here.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

pub const RESPONDER: u16 = 1;
pub const AUTHORIZER: u16 = 2;
pub const FILTER: u16 = 3;

pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const OVERLOADED: u8 = 2;
pub const UNKNOWN_ROLE: u8 = 3;

/// How long a test waits for the application before calling it stuck.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Where a FastCGI application listens.
#[derive(Debug, Clone)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Address {
    pub fn connect(&self) -> io::Result<Conn> {
        let conn = match self {
            Address::Tcp(addr) => Conn::Tcp(TcpStream::connect_timeout(addr, TIMEOUT)?),
            Address::Unix(path) => Conn::Unix(UnixStream::connect(path)?),
        };
        conn.set_timeout(TIMEOUT)?;
        Ok(conn)
    }
}

/// One record as read from the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub request_id: u16,
    pub content: Vec<u8>,
}

/// What the application answered to one request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub app_status: u32,
    pub protocol_status: u8,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Reply {
    /// The `Status:` of the CGI-style response on stdout, if any.
    pub fn status(&self) -> Option<u16> {
        super::parse_response(&self.stdout).map(|r| r.status)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        super::parse_response(&self.stdout)?.header(name).map(str::to_string)
    }

    pub fn body_text(&self) -> String {
        super::parse_response(&self.stdout).map(|r| String::from_utf8_lossy(&r.body).into_owned()).unwrap_or_default()
    }
}

/// A record, padded to a multiple of 8 bytes as libfcgi pads.
pub fn encode_record(kind: u8, request_id: u16, content: &[u8]) -> Vec<u8> {
    assert!(content.len() <= 0xFFFF, "one record holds at most 65535 bytes");
    let padding = (8 - content.len() % 8) % 8;
    let mut out = vec![1, kind];
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&[padding as u8, 0]);
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0, padding));
    out
}

/// A stream: records of at most 65535 bytes, then the empty one that ends it.
pub fn encode_stream(kind: u8, request_id: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(0xFFFF) {
        out.extend(encode_record(kind, request_id, chunk));
    }
    out.extend(encode_record(kind, request_id, &[]));
    out
}

fn encode_length(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    }
}

pub fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        let (name, value) = (name.as_ref(), value.as_ref());
        encode_length(&mut out, name.len());
        encode_length(&mut out, value.len());
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

pub fn decode_pairs(mut data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn length(data: &mut &[u8]) -> usize {
        if data[0] < 128 {
            let n = data[0] as usize;
            *data = &data[1..];
            n
        } else {
            let n = u32::from_be_bytes([data[0] & 0x7F, data[1], data[2], data[3]]) as usize;
            *data = &data[4..];
            n
        }
    }
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let name_len = length(&mut data);
        let value_len = length(&mut data);
        pairs.push((data[..name_len].to_vec(), data[name_len..name_len + value_len].to_vec()));
        data = &data[name_len + value_len..];
    }
    pairs
}

pub fn begin_request(request_id: u16, role: u16, keep_conn: bool) -> Vec<u8> {
    let role = role.to_be_bytes();
    encode_record(BEGIN_REQUEST, request_id, &[role[0], role[1], u8::from(keep_conn), 0, 0, 0, 0, 0])
}

/// A whole request as a web server sends it: BEGIN_REQUEST, PARAMS, STDIN.
pub fn encode_request<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    request_id: u16,
    role: u16,
    keep_conn: bool,
    params: &[(K, V)],
    stdin: &[u8],
) -> Vec<u8> {
    let mut out = begin_request(request_id, role, keep_conn);
    out.extend(encode_stream(PARAMS, request_id, &encode_pairs(params)));
    if role != AUTHORIZER {
        out.extend(encode_stream(STDIN, request_id, stdin));
    }
    out
}

/// The CGI variables nginx's `fastcgi_params` sends for a request without a body.
pub fn nginx_params(method: &str, uri: &str) -> Vec<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", path),
        ("REQUEST_URI", uri),
        ("DOCUMENT_URI", path),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "50000"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_ACCEPT", "text/html"),
        ("REMOTE_USER", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An open connection to the application.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn {
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(timeout)).and_then(|_| s.set_write_timeout(Some(timeout))),
            Conn::Unix(s) => s.set_read_timeout(Some(timeout)).and_then(|_| s.set_write_timeout(Some(timeout))),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    /// The next record, or `None` if the application closed the connection
    /// (cleanly or with a reset) before one began.
    pub fn read_record(&mut self) -> io::Result<Option<Record>> {
        let mut header = [0u8; 8];
        match self.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        if header[0] != 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record version {}", header[0])));
        }
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let mut content = vec![0u8; len + header[6] as usize];
        self.read_exact(&mut content)?;
        content.truncate(len);
        Ok(Some(Record { kind: header[1], request_id: u16::from_be_bytes([header[2], header[3]]), content }))
    }

    /// Whether the application has closed the connection: reads until EOF
    /// (or a reset), failing if a record arrives instead.
    pub fn is_closed(&mut self) -> io::Result<bool> {
        let mut byte = [0u8; 1];
        match self.read(&mut byte) {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Reads STDOUT and STDERR for `request_id` until its END_REQUEST.
    /// Records for other ids are an error: a test decides what it expects.
    pub fn read_reply(&mut self, request_id: u16) -> io::Result<Reply> {
        let mut reply = Reply::default();
        loop {
            let Some(record) = self.read_record()? else {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before END_REQUEST"));
            };
            if record.request_id != request_id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("record {} for request {}, expected {request_id}", record.kind, record.request_id),
                ));
            }
            match record.kind {
                STDOUT => reply.stdout.extend_from_slice(&record.content),
                STDERR => reply.stderr.extend_from_slice(&record.content),
                END_REQUEST if record.content.len() >= 8 => {
                    let c = &record.content;
                    reply.app_status = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    reply.protocol_status = c[4];
                    return Ok(reply);
                }
                other => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected record type {other}")))
                }
            }
        }
    }

    /// Sends a whole request and reads its reply.
    pub fn request<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        request_id: u16,
        role: u16,
        keep_conn: bool,
        params: &[(K, V)],
        stdin: &[u8],
    ) -> io::Result<Reply> {
        self.send(&encode_request(request_id, role, keep_conn, params, stdin))?;
        self.read_reply(request_id)
    }
}

/// One responder request on a connection of its own.
pub fn request_once<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    addr: &Address,
    params: &[(K, V)],
    stdin: &[u8],
) -> io::Result<Reply> {
    addr.connect()?.request(1, RESPONDER, false, params, stdin)
}

/// A GET whose last record (the empty STDIN that completes it) is held back,
/// so that the program holds a request in hand until [`finish_held_request`].
pub fn hold_request(addr: &Address) -> Conn {
    let conn = addr.connect().expect("connect");
    conn.set_timeout(TIMEOUT).expect("timeout");
    let mut conn = conn;
    let mut first = begin_request(1, RESPONDER, false);
    first.extend(encode_stream(PARAMS, 1, &encode_pairs(&nginx_params("GET", "/"))));
    conn.send(&first).expect("send the start of the request");
    conn
}

/// Sends the held request's last record; the HTTP status of its answer.
pub fn finish_held_request(mut conn: Conn) -> Option<u16> {
    conn.send(&encode_record(STDIN, 1, b"")).expect("send the end of the request");
    conn.read_reply(1).ok().and_then(|r| r.status())
}

/// Twenty requests with FCGI_KEEP_CONN on one connection, each answered
/// with the login page, then one without it, after which the program closes
/// the connection: the same for every front end.
pub fn check_keep_conn(addr: &Address) {
    let mut conn = addr.connect().expect("connect");
    for id in 1..=20u16 {
        let reply = conn.request(id, RESPONDER, true, &nginx_params("GET", "/"), b"").expect("reply");
        assert_login_form(&reply, &format!("request {id} on the kept connection"));
    }
    let reply = conn.request(21, RESPONDER, false, &nginx_params("GET", "/"), b"").expect("reply");
    assert_eq!(reply.status(), Some(200));
    assert!(conn.is_closed().expect("read"), "closed after a request without keep-conn");
}

/// A complete request answered 200 with the login page.
pub fn assert_login_form(reply: &Reply, context: &str) {
    assert_eq!(reply.protocol_status, REQUEST_COMPLETE, "{context}");
    assert_eq!(reply.status(), Some(200), "{context}: {}", String::from_utf8_lossy(&reply.stdout));
    assert!(reply.body_text().contains("<form"), "{context}: {}", reply.body_text());
}
