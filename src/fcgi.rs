//! FastCGI front end: a listening socket on fd 0 (spawn-fcgi, mod_fcgid,
//! systemd) or one of our own (`--listen`), served by single-threaded worker
//! processes, one connection and one request at a time, through [`App::handle`].
//!
//! Why our own record layer and not the `fastcgi` crate (FINDINGS.md): on the
//! session page the crate reached 0.32-0.36 of the C libfcgi floor. It spawns a
//! thread per connection (nginx opens one per request), sends every write as
//! its own record in two syscalls and reads records 8 bytes at a time; it also
//! panics on an `accept` error and unwraps protocol errors. A small
//! single-threaded loop with 16 KiB buffered reads and the whole response in
//! one `write_all` reached 0.85-0.95. This module is that loop, with what a
//! front end facing a socket needs besides: bounded params and bodies, read and
//! write timeouts, and an accept loop that survives EMFILE.
//!
//! The layers, inside out: [`parse_record`] and the name-value codec (pure);
//! `Connection`, the state machine one connection's records are fed to, which
//! appends the response records and calls the handler when a request is
//! complete; `Worker::serve`, which drives it over any `Read + Write` (a socket,
//! or the scripted stream of the unit tests and [`fuzz_input`]); then sockets,
//! the accept loop and the supervisor of `--listen`'s worker processes.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::app::{self, App, Handler};
use crate::audit;
use crate::config::{self, Config};
use crate::http::{BodyPlan, Request, Response, Role, MAX_BODY};

const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
/// The largest record the protocol can express: header, content, padding.
const MAX_RECORD: usize = HEADER_LEN + 0xFFFF + 0xFF;
/// Content bytes per STDOUT record: the largest multiple of 8 that fits, so
/// that only the last record of a response needs padding.
const MAX_CHUNK: usize = 0xFFF8;
const READ_BUFFER: usize = 16 * 1024;
/// Encoded PARAMS bytes one request may send. nginx's default header buffers
/// (4 x 8 KiB) plus the CGI variables fit well within it.
pub const MAX_PARAMS: usize = 64 * 1024;
/// How long one read or write may block: a stalled peer or an idle kept-alive
/// connection must not pin a single-threaded worker.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may take to arrive, however steadily it trickles in.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// sysexits.h's EX_CONFIG: the configuration is wrong, restarting won't help.
const EXIT_CONFIG: u8 = 78;

// Record types (FastCGI 1.0, section 8).
const BEGIN_REQUEST: u8 = 1;
const ABORT_REQUEST: u8 = 2;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const DATA: u8 = 8;
const GET_VALUES: u8 = 9;
const GET_VALUES_RESULT: u8 = 10;
const UNKNOWN_TYPE: u8 = 11;

const ROLE_RESPONDER: u16 = 1;
const ROLE_AUTHORIZER: u16 = 2;
const KEEP_CONN: u8 = 1;

const REQUEST_COMPLETE: u8 = 0;
const CANT_MPX_CONN: u8 = 1;
const UNKNOWN_ROLE: u8 = 3;

/// One record as it arrived; `content` excludes the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub request_id: u16,
    pub content: &'a [u8],
}

/// Why a connection was closed: the peer does not speak FastCGI as we do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The first byte of a record is not version 1: not FastCGI, or out of step.
    BadVersion(u8),
    /// A record that makes no sense at this point of the conversation.
    Unexpected { kind: u8, request_id: u16, why: &'static str },
    /// A `BEGIN_REQUEST` whose body is shorter than 8 bytes.
    ShortBeginRequest { request_id: u16, len: usize },
    /// Name-value pairs whose lengths run past the end of their stream.
    BadNameValue { kind: u8, request_id: u16 },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadVersion(v) => {
                write!(f, "record with version {v}, expected 1: is the peer speaking FastCGI?")
            }
            ProtocolError::Unexpected { kind, request_id, why } => {
                write!(f, "record type {kind} for request {request_id}: {why}")
            }
            ProtocolError::ShortBeginRequest { request_id, len } => {
                write!(f, "BEGIN_REQUEST for request {request_id} has {len} content bytes, expected 8")
            }
            ProtocolError::BadNameValue { kind, request_id } => {
                write!(f, "name-value pairs in record type {kind} for request {request_id} run past their end")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The record at the start of `buf`, and the bytes it takes with its padding;
/// `Ok(None)` until the whole record has arrived.
pub fn parse_record(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, ProtocolError> {
    match buf.first() {
        None => return Ok(None),
        Some(&v) if v != VERSION => return Err(ProtocolError::BadVersion(v)),
        Some(_) => {}
    }
    let Some(total) = record_size(buf) else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let content_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let record = Record {
        kind: buf[1],
        request_id: u16::from_be_bytes([buf[2], buf[3]]),
        content: &buf[HEADER_LEN..HEADER_LEN + content_len],
    };
    Ok(Some((record, total)))
}

/// The size of the record whose header starts `buf`, once the header is there.
fn record_size(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..HEADER_LEN)?;
    let content_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    Some(HEADER_LEN + content_len + usize::from(header[6]))
}

fn push_record(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
    let len = u16::try_from(content.len()).expect("callers split content into records of at most 65535 bytes");
    let padding = (8 - content.len() % 8) % 8;
    let id = request_id.to_be_bytes();
    let len = len.to_be_bytes();
    out.extend_from_slice(&[VERSION, kind, id[0], id[1], len[0], len[1], padding as u8, 0]);
    out.extend_from_slice(content);
    out.extend_from_slice(&[0; 8][..padding]);
}

/// `data` as a stream: records of at most [`MAX_CHUNK`] bytes, then the empty
/// record that ends the stream.
fn push_stream(out: &mut Vec<u8>, kind: u8, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CHUNK) {
        push_record(out, kind, request_id, chunk);
    }
    push_record(out, kind, request_id, &[]);
}

fn push_end_request(out: &mut Vec<u8>, request_id: u16, protocol_status: u8) {
    let mut body = [0u8; 8];
    // appStatus stays 0: a responder's outcome is in its Status header.
    body[4] = protocol_status;
    push_record(out, END_REQUEST, request_id, &body);
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let long = u32::try_from(len).ok().filter(|&n| n <= 0x7FFF_FFFF).expect("a name or value under 2 GiB");
            out.extend_from_slice(&(long | 0x8000_0000).to_be_bytes());
        }
    }
}

/// Appends one name-value pair: lengths under 128 take one byte, others four.
pub fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    push_length(out, name.len());
    push_length(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

fn read_length(data: &[u8]) -> Option<(usize, usize)> {
    let first = *data.first()?;
    if first & 0x80 == 0 {
        return Some((usize::from(first), 1));
    }
    let b = data.get(..4)?;
    let len = u32::from_be_bytes([b[0] & 0x7F, b[1], b[2], b[3]]);
    Some((usize::try_from(len).ok()?, 4))
}

/// The name-value pairs of a PARAMS or GET_VALUES stream; `None` when a
/// length runs past the end of the data.
pub fn parse_pairs(mut data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let (name_len, a) = read_length(data)?;
        let (value_len, b) = read_length(data.get(a..)?)?;
        let name_start = a + b;
        let value_start = name_start.checked_add(name_len)?;
        let end = value_start.checked_add(value_len)?;
        pairs.push((data.get(name_start..value_start)?, data.get(value_start..end)?));
        data = &data[end..];
    }
    Some(pairs)
}

/// What the connection does after the records fed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    /// Close once the output is written. `linger`: the peer may still be
    /// sending, so read and drop its bytes for a moment first; closing with
    /// unread input sends a reset that can destroy our last records in flight.
    Close {
        linger: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Params,
    Stdin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyRule {
    /// GET, HEAD and authorizer requests: the body is `Ok(empty)` whatever arrives.
    Ignore,
    Plan(BodyPlan),
}

/// The one request in progress on a connection.
#[derive(Debug)]
struct Active {
    id: u16,
    role: Role,
    keep_conn: bool,
    phase: Phase,
    /// Params over [`MAX_PARAMS`] or that do not decode: dropped, and the
    /// request answered 400 once its streams end.
    bad_params: bool,
    vars: HashMap<String, String>,
    body: BodyRule,
}

/// Request ids that ended before their streams did (a refused role, an abort,
/// an authorizer request): their stream records still in flight are skipped.
#[derive(Debug, Default)]
struct Ended {
    ids: [u16; 4],
    next: usize,
}

impl Ended {
    fn add(&mut self, id: u16) {
        self.ids[self.next] = id;
        self.next = (self.next + 1) % self.ids.len();
    }

    fn contains(&self, id: u16) -> bool {
        id != 0 && self.ids.contains(&id)
    }
}

/// One connection's protocol state: fed the bytes that arrive, it appends
/// the records to send and calls the handler when a request is complete.
struct Connection<'r> {
    roles: &'r [Role],
    active: Option<Active>,
    ended: Ended,
    /// Requests answered on this connection (the request deadline restarts with each).
    answered: u64,
    /// Encoded params of the active request, then its body; kept between
    /// requests so their allocations are reused.
    params: Vec<u8>,
    body: Vec<u8>,
    cgi: Vec<u8>,
}

impl<'r> Connection<'r> {
    fn new(roles: &'r [Role]) -> Connection<'r> {
        Connection {
            roles,
            active: None,
            ended: Ended::default(),
            answered: 0,
            params: Vec::new(),
            body: Vec::new(),
            cgi: Vec::new(),
        }
    }

    /// Forgets the previous connection, keeping the buffers.
    fn reset(&mut self) {
        self.active = None;
        self.ended = Ended::default();
    }

    fn is_busy(&self) -> bool {
        self.active.is_some()
    }

    /// Handles every whole record at the start of `input`; returns the bytes
    /// used and what to do next. The rest of `input` is an incomplete record.
    fn feed(
        &mut self,
        input: &[u8],
        app: &mut App,
        handler: Handler,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Next), ProtocolError> {
        let mut used = 0;
        while let Some((record, len)) = parse_record(&input[used..])? {
            used += len;
            if let Next::Close { linger } = self.on_record(record, app, handler, out)? {
                return Ok((used, Next::Close { linger }));
            }
        }
        Ok((used, Next::Continue))
    }

    fn on_record(
        &mut self,
        record: Record<'_>,
        app: &mut App,
        handler: Handler,
        out: &mut Vec<u8>,
    ) -> Result<Next, ProtocolError> {
        let Record { kind, request_id: id, content } = record;
        let unexpected = |why| ProtocolError::Unexpected { kind, request_id: id, why };
        if id == 0 {
            // Management records: like libfcgi, answer anything but GET_VALUES
            // with UNKNOWN_TYPE.
            if kind == GET_VALUES {
                self.get_values(content, out)?;
            } else {
                push_record(out, UNKNOWN_TYPE, 0, &[kind, 0, 0, 0, 0, 0, 0, 0]);
            }
            return Ok(Next::Continue);
        }
        match kind {
            BEGIN_REQUEST => self.begin(id, content, out),
            ABORT_REQUEST => Ok(self.abort(id, out)),
            PARAMS | STDIN | DATA if self.ended.contains(id) && self.active.as_ref().is_none_or(|a| a.id != id) => {
                Ok(Next::Continue)
            }
            PARAMS => match &mut self.active {
                Some(a) if a.id == id && a.phase == Phase::Params => {
                    if content.is_empty() {
                        Ok(self.params_done(app, handler, out))
                    } else {
                        if a.bad_params || self.params.len() + content.len() > MAX_PARAMS {
                            a.bad_params = true;
                            self.params.clear();
                        } else {
                            self.params.extend_from_slice(content);
                        }
                        Ok(Next::Continue)
                    }
                }
                Some(a) if a.id == id => Err(unexpected("PARAMS after the params stream ended")),
                _ => Err(unexpected("PARAMS for a request that is not in progress")),
            },
            STDIN => match &mut self.active {
                Some(a) if a.id == id && a.phase == Phase::Stdin => {
                    if content.is_empty() {
                        Ok(self.complete(app, handler, out))
                    } else {
                        if matches!(a.body, BodyRule::Plan(BodyPlan::Read(_))) {
                            // One byte over the limit is enough for `check` to say 413;
                            // whatever else arrives is dropped.
                            let room = (MAX_BODY + 1).saturating_sub(self.body.len());
                            self.body.extend_from_slice(&content[..content.len().min(room)]);
                        }
                        Ok(Next::Continue)
                    }
                }
                Some(a) if a.id == id => Err(unexpected("STDIN before the params stream ended")),
                _ => Err(unexpected("STDIN for a request that is not in progress")),
            },
            DATA => Err(unexpected("the DATA stream (Filter role) is not supported")),
            END_REQUEST | STDOUT | STDERR | GET_VALUES_RESULT | UNKNOWN_TYPE => {
                Err(unexpected("a record type only an application sends"))
            }
            GET_VALUES => Err(unexpected("GET_VALUES is a management record (request id 0)")),
            _ => {
                push_record(out, UNKNOWN_TYPE, 0, &[kind, 0, 0, 0, 0, 0, 0, 0]);
                Ok(Next::Continue)
            }
        }
    }

    fn get_values(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let asked = parse_pairs(content).ok_or(ProtocolError::BadNameValue { kind: GET_VALUES, request_id: 0 })?;
        let mut reply = Vec::new();
        for (name, _) in asked {
            // One connection, one request at a time, per process.
            let value: &[u8] = match name {
                b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => b"1",
                b"FCGI_MPXS_CONNS" => b"0",
                _ => continue,
            };
            if reply.len() + name.len() + 10 <= 0xFFFF {
                push_pair(&mut reply, name, value);
            }
        }
        push_record(out, GET_VALUES_RESULT, 0, &reply);
        Ok(())
    }

    fn begin(&mut self, id: u16, content: &[u8], out: &mut Vec<u8>) -> Result<Next, ProtocolError> {
        let Some(body) = content.get(..8) else {
            return Err(ProtocolError::ShortBeginRequest { request_id: id, len: content.len() });
        };
        if let Some(active) = &self.active {
            if active.id == id {
                return Err(ProtocolError::Unexpected {
                    kind: BEGIN_REQUEST,
                    request_id: id,
                    why: "BEGIN_REQUEST for the request already in progress",
                });
            }
            push_end_request(out, id, CANT_MPX_CONN);
            self.ended.add(id);
            return Ok(Next::Continue);
        }
        let keep_conn = body[2] & KEEP_CONN != 0;
        let role = match u16::from_be_bytes([body[0], body[1]]) {
            ROLE_RESPONDER => Some(Role::Responder),
            ROLE_AUTHORIZER => Some(Role::Authorizer),
            _ => None,
        };
        let Some(role) = role.filter(|r| self.roles.contains(r)) else {
            // Never a 200 for a role we do not serve: to a web server an
            // authorizer's 200 means "let in".
            push_end_request(out, id, UNKNOWN_ROLE);
            self.ended.add(id);
            return Ok(if keep_conn { Next::Continue } else { Next::Close { linger: true } });
        };
        self.params.clear();
        self.body.clear();
        self.active = Some(Active {
            id,
            role,
            keep_conn,
            phase: Phase::Params,
            bad_params: false,
            vars: HashMap::new(),
            body: BodyRule::Ignore,
        });
        Ok(Next::Continue)
    }

    /// Ends the request in progress without calling the handler: it runs only
    /// once the request is complete, so it has not run yet.
    fn abort(&mut self, id: u16, out: &mut Vec<u8>) -> Next {
        match self.active.take() {
            Some(active) if active.id == id => {
                self.answered += 1;
                push_end_request(out, id, REQUEST_COMPLETE);
                self.ended.add(id);
                if active.keep_conn {
                    Next::Continue
                } else {
                    Next::Close { linger: true }
                }
            }
            // An abort for a request already answered crossed our answer: nothing to do.
            other => {
                self.active = other;
                Next::Continue
            }
        }
    }

    fn params_done(&mut self, app: &mut App, handler: Handler, out: &mut Vec<u8>) -> Next {
        let active = self.active.as_mut().expect("params_done is called for the active request");
        active.phase = Phase::Stdin;
        if !active.bad_params {
            match parse_pairs(&self.params) {
                Some(pairs) => {
                    active.vars = pairs
                        .into_iter()
                        .map(|(k, v)| {
                            (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())
                        })
                        .collect();
                }
                // Params that do not decode are no request we could answer; a
                // 400 keeps the blame on the request rather than the connection.
                None => active.bad_params = true,
            }
        }
        active.body = match active.role {
            Role::Authorizer => BodyRule::Ignore,
            Role::Responder => {
                let method = active.vars.get("REQUEST_METHOD").map(String::as_str).unwrap_or("");
                if matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "") {
                    BodyRule::Ignore
                } else {
                    BodyRule::Plan(BodyPlan::from_content_length(active.vars.get("CONTENT_LENGTH").map(String::as_str)))
                }
            }
        };
        if active.role == Role::Authorizer {
            // Authorizer requests have no STDIN stream: complete now, and skip
            // an empty STDIN should a server send one anyway.
            let id = active.id;
            self.ended.add(id);
            return self.complete(app, handler, out);
        }
        Next::Continue
    }

    fn complete(&mut self, app: &mut App, handler: Handler, out: &mut Vec<u8>) -> Next {
        let active = self.active.take().expect("complete is called for the active request");
        self.answered += 1;
        self.cgi.clear();
        if active.bad_params {
            Response::text(400, "Request headers too large or malformed.").write_cgi(&mut self.cgi, false);
            push_stream(out, STDOUT, active.id, &self.cgi);
            push_end_request(out, active.id, REQUEST_COMPLETE);
            return Next::Close { linger: false };
        }
        let body = match active.body {
            BodyRule::Ignore => Ok(Vec::new()),
            BodyRule::Plan(plan @ BodyPlan::Read(_)) => plan.check(std::mem::take(&mut self.body)),
            // Like the CGI front end: no body read when the length is invalid
            // or too large, whatever was sent.
            BodyRule::Plan(plan) => plan.check(Vec::new()),
        };
        let mut req = Request::from_cgi_vars(&active.vars, body);
        req.role = active.role;
        let response = app.handle(handler, &req);
        response.write_cgi(&mut self.cgi, req.is_head());
        push_stream(out, STDOUT, active.id, &self.cgi);
        push_end_request(out, active.id, REQUEST_COMPLETE);
        if let Ok(mut body) = req.body {
            body.clear();
            self.body = body;
        }
        if active.keep_conn {
            Next::Continue
        } else {
            Next::Close { linger: false }
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
enum Ending {
    /// The last request was answered and the connection is not kept.
    Done,
    /// Done, but the peer may still be sending (see [`Next::Close`]).
    Linger,
    /// The peer closed, perhaps mid-request: its right, not a fault.
    PeerClosed,
    Protocol(ProtocolError),
    Io {
        error: io::Error,
        busy: bool,
    },
    Deadline,
}

/// What a worker process keeps from one connection to the next.
struct Worker<'r> {
    handler: Handler,
    conn: Connection<'r>,
    input: Vec<u8>,
    out: Vec<u8>,
}

impl<'r> Worker<'r> {
    fn new(roles: &'r [Role], handler: Handler) -> Worker<'r> {
        Worker {
            handler,
            conn: Connection::new(roles),
            input: vec![0; READ_BUFFER],
            out: Vec::with_capacity(READ_BUFFER),
        }
    }

    /// Serves one connection until it ends. The output of every batch of
    /// records that one read brought goes out in a single `write_all`.
    fn serve<S: Read + Write>(&mut self, stream: &mut S, app: &mut App) -> Ending {
        self.conn.reset();
        self.out.clear();
        let mut filled = 0;
        let mut busy_since: Option<Instant> = None;
        loop {
            if filled == self.input.len() {
                // A record larger than the buffer: grow to fit it (bounded by
                // MAX_RECORD, as the header cannot say more).
                let need = record_size(&self.input[..filled]).unwrap_or(HEADER_LEN).max(filled + 1);
                self.input.resize(need.min(MAX_RECORD), 0);
            }
            let n = match stream.read(&mut self.input[filled..]) {
                Ok(0) => return Ending::PeerClosed,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Ending::Io { error, busy: self.conn.is_busy() || filled > 0 },
            };
            filled += n;
            let answered = self.conn.answered;
            let fed = self.conn.feed(&self.input[..filled], app, self.handler, &mut self.out);
            if !self.out.is_empty() {
                let written = stream.write_all(&self.out);
                self.out.clear();
                if let Err(error) = written {
                    return Ending::Io { error, busy: true };
                }
            }
            let (used, next) = match fed {
                Ok(fed) => fed,
                Err(e) => return Ending::Protocol(e),
            };
            match next {
                Next::Close { linger: false } => return Ending::Done,
                Next::Close { linger: true } => return Ending::Linger,
                Next::Continue => {}
            }
            self.input.copy_within(used..filled, 0);
            filled -= used;
            if self.conn.answered != answered {
                busy_since = None;
            }
            if self.conn.is_busy() || filled > 0 {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() > REQUEST_DEADLINE {
                    return Ending::Deadline;
                }
            } else {
                busy_since = None;
            }
        }
    }
}

/// A stream that reads `input` in slices of `chunk` bytes and swallows what is
/// written, counting the writes; the unit tests and the fuzz target use it.
struct ScriptedStream<'a> {
    input: &'a [u8],
    chunk: usize,
    written: Vec<u8>,
    keep_written: bool,
    writes: usize,
}

impl Read for ScriptedStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for ScriptedStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if self.keep_written {
            self.written.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn fuzz_handler(_app: &mut App, req: &Request) -> Result<Response, app::Error> {
    match &req.body {
        Ok(body) => Ok(Response::text(200, &format!("{} {}", req.method, body.len()))),
        Err(e) => Err(app::Error::Request(e.clone())),
    }
}

/// For the fuzz target: drives the whole connection state machine, in both
/// roles, with a trivial handler, over arbitrary bytes: the first byte picks
/// how many bytes each read returns, the rest is what the peer sends. Must
/// never panic.
pub fn fuzz_input(data: &[u8]) {
    thread_local! {
        static APP: std::cell::RefCell<Option<App>> = const { std::cell::RefCell::new(None) };
    }
    APP.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = App::new(Vec::new()).ok();
        }
        let Some(app) = slot.as_mut() else { return };
        let roles = [Role::Responder, Role::Authorizer];
        let mut worker = Worker::new(&roles, fuzz_handler);
        let Some((&read_size, data)) = data.split_first() else { return };
        let chunk = 1 + usize::from(read_size) * 97;
        let mut stream = ScriptedStream { input: data, chunk, written: Vec::new(), keep_written: false, writes: 0 };
        // What is left after a connection ends is served as the next connection.
        while !stream.input.is_empty() {
            worker.serve(&mut stream, app);
        }
    });
}

fn log(message: &str) {
    audit::fault(&format!("fastcgi[{}]: {message}", std::process::id()));
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    fn prepare(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                // Each response is one write: Nagle could only hold its tail back.
                s.set_nodelay(true)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))
            }
        }
    }

    /// Closes our side and drops what the peer still sends, for a moment, so
    /// that the close is a FIN after our last records rather than a reset.
    fn linger(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => {
                s.shutdown(Shutdown::Write).and_then(|_| s.set_read_timeout(Some(Duration::from_secs(1))))
            }
            Stream::Unix(s) => {
                s.shutdown(Shutdown::Write).and_then(|_| s.set_read_timeout(Some(Duration::from_secs(1))))
            }
        };
        let mut scratch = [0u8; 4096];
        let mut budget = MAX_RECORD * 4;
        while budget > 0 {
            match self.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    }
}

impl Listener {
    /// The listening socket a process manager left on fd 0.
    fn from_fd0() -> io::Result<Listener> {
        let fd: RawFd = 0;
        let family = socket_family(fd)?;
        prepare_listening_fd(fd)?;
        // SAFETY: fd 0 is a listening socket (checked by the caller through
        // SO_ACCEPTCONN, family checked above) that nothing else in this
        // process owns: std's stdin never closes it and is not used in this mode.
        match family {
            libc::AF_UNIX => Ok(Listener::Unix(unsafe { UnixListener::from_raw_fd(fd) })),
            libc::AF_INET | libc::AF_INET6 => Ok(Listener::Tcp(unsafe { TcpListener::from_raw_fd(fd) })),
            other => Err(io::Error::other(format!(
                "fd 0 is a socket of address family {other}; expected a unix or TCP socket"
            ))),
        }
    }

    /// Binds `addr`: a path (containing `/`, or `unix:PATH`) is a unix
    /// socket, anything else `host:port`. Returns the socket file to remove
    /// at exit.
    fn bind(addr: &str) -> io::Result<(Listener, Option<PathBuf>)> {
        let path = addr.strip_prefix("unix:").or_else(|| addr.contains('/').then_some(addr));
        let Some(path) = path.map(Path::new) else {
            let listener = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            return Ok((Listener::Tcp(listener), None));
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket; refusing to replace it", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process is listening on {}", path.display()),
                ));
            }
            // A socket nobody listens on: left over by a process that died.
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", path.display())))?;
        // The web server's group connects; others have no business here.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok((Listener::Unix(listener), Some(path.to_path_buf())))
    }

    /// The next connection and, for TCP, the peer's address. std accepts with
    /// SOCK_CLOEXEC where the platform has it.
    fn accept(&self) -> io::Result<(Stream, Option<IpAddr>)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, peer)| (Stream::Tcp(s), Some(peer.ip()))),
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// Whether fd 0 is a listening socket, i.e. a process manager started us.
pub fn fd0_is_listening_socket() -> bool {
    is_listening_socket(0)
}

fn is_listening_socket(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes, and len is value's size.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&mut value as *mut libc::c_int).cast(), &mut len)
    };
    rc == 0 && value != 0
}

fn socket_family(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and len are valid for writes, and len is addr's size.
    let rc = unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_storage).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(addr.ss_family))
}

/// An inherited listener: close-on-exec, so that nothing we might run gets
/// it, and blocking, so that `accept` waits instead of spinning on EAGAIN.
fn prepare_listening_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we were handed; the flags are read before they are changed.
    unsafe {
        let fd_flags = libc::fcntl(fd, libc::F_GETFD);
        if fd_flags < 0 || libc::fcntl(fd, libc::F_SETFD, fd_flags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        let status = libc::fcntl(fd, libc::F_GETFL);
        if status < 0 {
            return Err(io::Error::last_os_error());
        }
        if status & libc::O_NONBLOCK != 0 && libc::fcntl(fd, libc::F_SETFL, status & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The peers `FCGI_WEB_SERVER_ADDRS` lets in, if it is set.
fn allowed_peers(config: &Config) -> Option<Vec<IpAddr>> {
    let list = config.web_server_addrs.as_ref()?;
    let mut peers = Vec::new();
    for entry in list {
        match entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => peers.push(ip.to_canonical()),
            Err(_) => log(&format!("FCGI_WEB_SERVER_ADDRS: {entry:?} is not an IP address; ignored")),
        }
    }
    if peers.is_empty() {
        log("FCGI_WEB_SERVER_ADDRS names no valid address: every TCP connection will be refused");
    }
    Some(peers)
}

fn peer_allowed(allowed: &[IpAddr], peer: IpAddr) -> bool {
    allowed.contains(&peer.to_canonical())
}

enum AcceptFailure {
    /// Nothing wrong with us: try again at once.
    Retry,
    /// Out of descriptors or memory: say so, give it a moment, try again.
    Pause,
    /// The listener is not a listening socket: nothing will ever succeed.
    Fatal,
}

fn classify_accept_error(e: &io::Error) -> AcceptFailure {
    match e.raw_os_error() {
        // Linux reports the new connection's network errors from accept;
        // accept(2) says to treat them like EAGAIN.
        Some(
            libc::EINTR
            | libc::ECONNABORTED
            | libc::EAGAIN
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ECONNRESET
            | libc::ETIMEDOUT
            | libc::EPERM,
        ) => AcceptFailure::Retry,
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL) => AcceptFailure::Fatal,
        _ => AcceptFailure::Pause,
    }
}

/// Logs the peers refused by `FCGI_WEB_SERVER_ADDRS`, at most once a minute:
/// a scan of an exposed port must not flood the error log.
struct RefusalLog {
    last: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: IpAddr) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            log(&format!(
                "refused {} connection(s) from addresses not in FCGI_WEB_SERVER_ADDRS, latest from {peer}",
                self.since
            ));
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

/// Accepts and serves connections until the listener fails for good.
fn accept_loop(listener: &Listener, worker: &mut Worker<'_>, app: &mut App, allowed: Option<&[IpAddr]>) -> io::Error {
    let mut refusals = RefusalLog { last: None, since: 0 };
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => match classify_accept_error(&e) {
                AcceptFailure::Retry => continue,
                AcceptFailure::Pause => {
                    log(&format!("accept failed: {e}; retrying in 100 ms"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                AcceptFailure::Fatal => return e,
            },
        };
        if let (Some(allowed), Some(peer)) = (allowed, peer) {
            if !peer_allowed(allowed, peer) {
                refusals.refused(peer);
                continue;
            }
        }
        if let Err(e) = stream.prepare() {
            log(&format!("cannot set up an accepted connection: {e}"));
            continue;
        }
        match worker.serve(&mut stream, app) {
            Ending::Done | Ending::PeerClosed => {}
            Ending::Linger => stream.linger(),
            Ending::Protocol(e) => log(&format!("closing connection: {e}")),
            Ending::Deadline => log("closing connection: a request took over 120 s to arrive"),
            Ending::Io { error, busy } => {
                let quiet = matches!(
                    error.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) || (!busy && matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
                if !quiet {
                    log(&format!("closing connection: {error}"));
                }
            }
        }
    }
}

/// One worker: its own App (created here, after any fork, so that no store
/// handle is shared between processes) and the accept loop. Returns the exit code.
fn run_worker(listener: &Listener, handler: Handler, roles: &[Role]) -> u8 {
    let mut app = match App::new(config::env_vars()) {
        Ok(app) => app,
        Err(e) => {
            log(&format!("configuration error: {e}"));
            return EXIT_CONFIG;
        }
    };
    let allowed = allowed_peers(app.config());
    let mut worker = Worker::new(roles, handler);
    let e = accept_loop(listener, &mut worker, &mut app, allowed.as_deref());
    log(&format!("cannot accept on the listening socket: {e}"));
    1
}

/// Serves FastCGI on the listening socket on fd 0, in this one process (the
/// process manager that passed it decides how many of us there are).
pub fn serve_fd0(handler: Handler, roles: &[Role]) -> ExitCode {
    let listener = match Listener::from_fd0() {
        Ok(listener) => listener,
        Err(e) => {
            log(&format!("cannot use fd 0 as a FastCGI listener: {e}"));
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(run_worker(&listener, handler, roles))
}

/// Serves FastCGI on `addr` (`host:port`, or a unix socket path) with
/// `workers` processes (default: one per core). The calling process binds,
/// forks the workers and supervises them, even for one worker, so that a
/// crashed worker is always replaced and SIGTERM always behaves the same:
/// it stops the workers, removes the socket file and exits 0.
pub fn serve_listen(addr: &str, workers: Option<usize>, handler: Handler, roles: &[Role]) -> ExitCode {
    // Workers read the configuration after the fork; a mistake in it is
    // caught here, once, rather than by a loop of workers that exit.
    let config = match Config::from_vars(&config::env_vars()) {
        Ok(config) => config,
        Err(e) => {
            log(&format!("configuration error: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Whoever reaches the socket speaks with the web server's authority
    // (REMOTE_ADDR, HTTPS, WEBAUTH_* params): beyond loopback, only with
    // FCGI_WEB_SERVER_ADDRS naming the web servers.
    if let Ok(sock) = addr.parse::<std::net::SocketAddr>() {
        if !sock.ip().is_loopback() && config.web_server_addrs.is_none() {
            log(&format!(
                "refusing to listen on {addr}: a FastCGI socket beyond loopback needs FCGI_WEB_SERVER_ADDRS \
                 naming the web servers (or use a unix socket)"
            ));
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let (listener, socket_file) = match Listener::bind(addr) {
        Ok(bound) => bound,
        Err(e) => {
            log(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let count = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let code = supervise(&listener, count, handler, roles);
    if let Some(path) = socket_file {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// The write end of the supervisor's self-pipe, for the signal handler.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so
        // a full pipe (signals already pending) just drops this byte.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

const SUPERVISED_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SUPERVISED_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn set_signal_mask(how: libc::c_int) {
    let set = signal_set();
    // SAFETY: set is initialised; the old mask is not wanted.
    unsafe {
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

fn set_handler(signal: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: sigaction is initialised field by field after zeroing, and the
    // handler, when not SIG_DFL, is an async-signal-safe extern "C" fn.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART | if signal == libc::SIGCHLD { libc::SA_NOCLDSTOP } else { 0 };
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

/// A self-pipe the signal handler writes to, so that the supervisor can wait
/// for a signal and a restart time together with poll(2).
struct SignalPipe {
    read: RawFd,
    write: RawFd,
}

impl SignalPipe {
    fn install() -> io::Result<SignalPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds has room for the two descriptors pipe(2) writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            // SAFETY: fcntl on the descriptors just created.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
            }
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        for s in SUPERVISED_SIGNALS {
            set_handler(s, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
        Ok(SignalPipe { read: fds[0], write: fds[1] })
    }

    /// Waits up to `timeout` (forever if `None`) and returns whether SIGTERM
    /// or SIGINT arrived. SIGCHLD just ends the wait.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let ms = timeout.map_or(-1, |t| libc::c_int::try_from(t.as_millis().max(1)).unwrap_or(libc::c_int::MAX));
        let mut pfd = libc::pollfd { fd: self.read, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe {
            libc::poll(&mut pfd, 1, ms);
        }
        let mut stop = false;
        let mut bytes = [0u8; 64];
        loop {
            // SAFETY: bytes is valid for writes of its length.
            let n = unsafe { libc::read(self.read, bytes.as_mut_ptr().cast(), bytes.len()) };
            if n <= 0 {
                break;
            }
            let n = usize::try_from(n).unwrap_or(0);
            stop |= bytes[..n].iter().any(|&b| b == libc::SIGTERM as u8 || b == libc::SIGINT as u8);
        }
        stop
    }

    /// In a forked worker: the default signal handling back, the pipe closed.
    fn release_in_child(&self) {
        SIGNAL_PIPE.store(-1, Ordering::Relaxed);
        for s in SUPERVISED_SIGNALS {
            set_handler(s, libc::SIG_DFL);
        }
        // SAFETY: closing this process's copies of the pipe, which it no longer uses.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    pid: Option<libc::pid_t>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

fn spawn_worker(
    slot: &mut Slot,
    pipe: &SignalPipe,
    listener: &Listener,
    handler: Handler,
    roles: &[Role],
) -> io::Result<()> {
    // Signals stay blocked across the fork until the child has its default
    // handling back, so no signal meant for it runs the parent's handler.
    set_signal_mask(libc::SIG_BLOCK);
    // SAFETY: the supervisor is single-threaded, so the child may go on
    // running ordinary Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        pipe.release_in_child();
        set_signal_mask(libc::SIG_UNBLOCK);
        die_with_parent();
        std::process::exit(i32::from(run_worker(listener, handler, roles)));
    }
    set_signal_mask(libc::SIG_UNBLOCK);
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    slot.pid = Some(pid);
    slot.started = Instant::now();
    slot.restart_at = None;
    Ok(())
}

/// A worker whose supervisor is gone (SIGKILL, OOM) stops too, rather than
/// serving on, unsupervised, a socket a new supervisor wants to bind.
#[cfg(target_os = "linux")]
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and nothing else.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() == 1 {
            // The parent died before the prctl took effect.
            libc::_exit(0);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent() {}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended with status {status}")
    }
}

/// Forks `count` workers and keeps them running until SIGTERM or SIGINT.
fn supervise(listener: &Listener, count: usize, handler: Handler, roles: &[Role]) -> ExitCode {
    // Installing our SIGCHLD handler also undoes an inherited SIG_IGN, under
    // which children would reap themselves and never be seen to die.
    let pipe = match SignalPipe::install() {
        Ok(pipe) => pipe,
        Err(e) => {
            log(&format!("cannot set up signal handling: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let now = Instant::now();
    let mut slots = vec![Slot { pid: None, started: now, backoff: Duration::ZERO, restart_at: Some(now) }; count];
    loop {
        let now = Instant::now();
        for slot in slots.iter_mut().filter(|s| s.pid.is_none() && s.restart_at.is_some_and(|t| t <= now)) {
            if let Err(e) = spawn_worker(slot, &pipe, listener, handler, roles) {
                log(&format!("cannot start a worker: {e}"));
                slot.backoff = next_backoff(slot.backoff);
                slot.restart_at = Some(now + slot.backoff);
            }
        }
        let wake = slots.iter().filter_map(|s| s.restart_at).min();
        if pipe.wait(wake.map(|t| t.saturating_duration_since(Instant::now()))) {
            stop_workers(&mut slots);
            return ExitCode::SUCCESS;
        }
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: status is valid for writes.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let Some(slot) = slots.iter_mut().find(|s| s.pid == Some(pid)) else { continue };
            slot.pid = None;
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == i32::from(EXIT_CONFIG) {
                log("a worker found the configuration invalid; stopping");
                stop_workers(&mut slots);
                return ExitCode::from(EXIT_CONFIG);
            }
            // A worker that dies as soon as it starts would otherwise be
            // restarted in a tight loop.
            slot.backoff = if slot.started.elapsed() < Duration::from_secs(1) {
                next_backoff(slot.backoff)
            } else {
                Duration::ZERO
            };
            log(&format!("worker {pid} {}; restarting it in {} ms", describe_status(status), slot.backoff.as_millis()));
            slot.restart_at = Some(Instant::now() + slot.backoff);
        }
    }
}

fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// SIGTERM to every worker, SIGKILL to those still there after 5 s, and
/// every one reaped.
fn stop_workers(slots: &mut [Slot]) {
    for pid in slots.iter().filter_map(|s| s.pid) {
        // SAFETY: pid is a child of ours that we have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while slots.iter().any(|s| s.pid.is_some()) {
        for slot in slots.iter_mut() {
            let Some(pid) = slot.pid else { continue };
            let mut status: libc::c_int = 0;
            // SAFETY: status is valid for writes; pid is our child.
            let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if reaped == pid || reaped < 0 {
                slot.pid = None;
            } else if Instant::now() >= deadline {
                // SAFETY: as above; the blocking wait after SIGKILL is short.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                slot.pid = None;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Out {
        kind: u8,
        id: u16,
        content: Vec<u8>,
    }

    fn begin(out: &mut Vec<u8>, id: u16, role: u16, keep_conn: bool) {
        let r = role.to_be_bytes();
        push_record(out, BEGIN_REQUEST, id, &[r[0], r[1], u8::from(keep_conn), 0, 0, 0, 0, 0]);
    }

    fn params(out: &mut Vec<u8>, id: u16, vars: &[(&str, &str)]) {
        let mut encoded = Vec::new();
        for (k, v) in vars {
            push_pair(&mut encoded, k.as_bytes(), v.as_bytes());
        }
        push_stream(out, PARAMS, id, &encoded);
    }

    /// A whole responder request: BEGIN, PARAMS, STDIN.
    fn request(out: &mut Vec<u8>, id: u16, keep_conn: bool, vars: &[(&str, &str)], body: &[u8]) {
        begin(out, id, ROLE_RESPONDER, keep_conn);
        params(out, id, vars);
        push_stream(out, STDIN, id, body);
    }

    fn get(out: &mut Vec<u8>, id: u16, keep_conn: bool) {
        request(out, id, keep_conn, &[("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/"), ("CONTENT_LENGTH", "")], b"");
    }

    fn echo(_app: &mut App, req: &Request) -> Result<Response, app::Error> {
        let role = match req.role {
            Role::Responder => "responder",
            Role::Authorizer => "authorizer",
        };
        match &req.body {
            Ok(body) => Ok(Response::text(
                200,
                &format!("{role} {} {} body={}", req.method, req.script_name, String::from_utf8_lossy(body)),
            )),
            Err(e) => Ok(Response::text(e.status(), &e.message())),
        }
    }

    fn panics(_app: &mut App, _req: &Request) -> Result<Response, app::Error> {
        panic!("handler failure for the test")
    }

    struct Run {
        records: Vec<Out>,
        ending: Ending,
        writes: usize,
    }

    impl Run {
        /// The STDOUT text of request `id`, checking it ends with an empty
        /// STDOUT and a complete END_REQUEST.
        fn stdout(&self, id: u16) -> String {
            let mine: Vec<&Out> = self.records.iter().filter(|r| r.id == id).collect();
            let end = mine.iter().position(|r| r.kind == END_REQUEST).expect("an END_REQUEST");
            assert_eq!(mine[end].content[4], REQUEST_COMPLETE);
            assert!(end >= 1 && mine[end - 1].kind == STDOUT && mine[end - 1].content.is_empty());
            let bytes: Vec<u8> =
                mine[..end].iter().filter(|r| r.kind == STDOUT).flat_map(|r| r.content.clone()).collect();
            String::from_utf8(bytes).expect("UTF-8 output")
        }

        fn ends(&self) -> Vec<(u16, u8)> {
            self.records.iter().filter(|r| r.kind == END_REQUEST).map(|r| (r.id, r.content[4])).collect()
        }
    }

    fn run_with(roles: &[Role], handler: Handler, input: &[u8], chunk: usize) -> Run {
        let mut app = App::new(Vec::new()).expect("the default configuration is valid");
        let mut worker = Worker::new(roles, handler);
        let mut stream = ScriptedStream { input, chunk, written: Vec::new(), keep_written: true, writes: 0 };
        let ending = worker.serve(&mut stream, &mut app);
        let mut records = Vec::new();
        let mut rest = stream.written.as_slice();
        while let Some((r, len)) = parse_record(rest).expect("we write valid records") {
            records.push(Out { kind: r.kind, id: r.request_id, content: r.content.to_vec() });
            rest = &rest[len..];
        }
        assert!(rest.is_empty(), "no partial record written");
        assert!(stream.written.len() % 8 == 0, "records are padded to 8 bytes");
        Run { records, ending, writes: stream.writes }
    }

    fn run(input: &[u8]) -> Run {
        run_with(&[Role::Responder], echo, input, usize::MAX)
    }

    #[test]
    fn record_round_trips_with_padding() {
        for len in [0, 1, 7, 8, 9, 1000, 0xFFFF] {
            let content: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = Vec::new();
            push_record(&mut buf, STDIN, 513, &content);
            assert_eq!(buf.len() % 8, 0);
            let (r, used) = parse_record(&buf).unwrap().unwrap();
            assert_eq!((r.kind, r.request_id, r.content, used), (STDIN, 513, &content[..], buf.len()));
        }
    }

    #[test]
    fn a_partial_record_is_not_parsed_yet() {
        let mut buf = Vec::new();
        push_record(&mut buf, PARAMS, 1, b"abcdefghij");
        for cut in 0..buf.len() {
            assert_eq!(parse_record(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_bad_version_is_a_protocol_error() {
        assert_eq!(parse_record(b"GET / HTTP/1.1\r\n"), Err(ProtocolError::BadVersion(b'G')));
    }

    #[test]
    fn pairs_use_one_byte_lengths_under_128_and_four_above() {
        let long_value = vec![b'v'; 70_000];
        let name_127 = vec![b'n'; 127];
        let name_128 = vec![b'N'; 128];
        let mut buf = Vec::new();
        push_pair(&mut buf, b"A", b"");
        assert_eq!(buf, [1, 0, b'A']);
        push_pair(&mut buf, &name_127, b"x");
        assert_eq!(buf[3], 127);
        let at = buf.len();
        push_pair(&mut buf, &name_128, &long_value);
        assert_eq!(&buf[at..at + 8], &[0x80, 0, 0, 128, 0x80, 1, 0x11, 0x70]);
        let pairs = parse_pairs(&buf).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0], (&b"A"[..], &b""[..]));
        assert_eq!(pairs[1], (&name_127[..], &b"x"[..]));
        assert_eq!(pairs[2], (&name_128[..], &long_value[..]));
    }

    #[test]
    fn pairs_that_run_past_the_end_are_refused() {
        assert_eq!(parse_pairs(&[5, 1, b'a']), None);
        assert_eq!(parse_pairs(&[0x80, 0, 0]), None);
        assert_eq!(parse_pairs(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(parse_pairs(&[]), Some(vec![]));
    }

    #[test]
    fn a_get_is_answered_with_stdout_and_end_request_in_one_write() {
        let mut input = Vec::new();
        get(&mut input, 1, false);
        let run = run(&input);
        let text = run.stdout(1);
        assert!(text.starts_with("Status: 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nresponder GET / body="), "{text}");
        assert!(matches!(run.ending, Ending::Done));
        assert_eq!(run.writes, 1);
    }

    #[test]
    fn a_post_body_reaches_the_handler() {
        let mut input = Vec::new();
        request(&mut input, 7, false, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "11")], b"hello world");
        assert!(run(&input).stdout(7).ends_with("responder POST  body=hello world"));
    }

    #[test]
    fn a_request_read_one_byte_at_a_time_is_answered_the_same() {
        let mut input = Vec::new();
        let body = vec![b'b'; 40_000];
        request(&mut input, 3, false, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "40000")], &body);
        let whole = run(&input);
        let trickled = run_with(&[Role::Responder], echo, &input, 1);
        assert_eq!(whole.records, trickled.records);
        assert!(whole.stdout(3).ends_with(&"b".repeat(40_000)));
    }

    #[test]
    fn records_larger_than_the_read_buffer_are_read_whole() {
        let mut input = Vec::new();
        begin(&mut input, 1, ROLE_RESPONDER, false);
        params(&mut input, 1, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "65535")]);
        push_record(&mut input, STDIN, 1, &[b'x'; 0xFFFF]);
        push_record(&mut input, STDIN, 1, &[]);
        for chunk in [usize::MAX, 5000, 7] {
            let run = run_with(&[Role::Responder], echo, &input, chunk);
            assert!(run.stdout(1).ends_with(&"x".repeat(0xFFFF)));
        }
    }

    #[test]
    fn a_large_response_is_split_into_records_of_at_most_65535_bytes() {
        fn big(_app: &mut App, _req: &Request) -> Result<Response, app::Error> {
            Ok(Response::text(200, &"z".repeat(200_000)))
        }
        let mut input = Vec::new();
        get(&mut input, 1, false);
        let run = run_with(&[Role::Responder], big, &input, usize::MAX);
        assert!(run.records.iter().all(|r| r.content.len() <= 0xFFFF));
        assert!(run.records.iter().filter(|r| r.kind == STDOUT).count() >= 5);
        assert!(run.stdout(1).ends_with(&"z".repeat(200_000)));
        assert_eq!(run.writes, 1);
    }

    #[test]
    fn head_gets_headers_without_the_body() {
        let mut input = Vec::new();
        request(&mut input, 1, false, &[("REQUEST_METHOD", "HEAD")], b"");
        let text = run(&input).stdout(1);
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(text.contains("Content-Length: 21\r\n"), "{text}"); // "responder HEAD  body="
    }

    #[test]
    fn get_values_answers_only_the_names_asked() {
        let mut asked = Vec::new();
        push_pair(&mut asked, b"FCGI_MPXS_CONNS", b"");
        push_pair(&mut asked, b"FCGI_MAX_CONNS", b"");
        push_pair(&mut asked, b"SOMETHING_ELSE", b"");
        let mut input = Vec::new();
        push_record(&mut input, GET_VALUES, 0, &asked);
        let run = run(&input);
        assert_eq!(run.records.len(), 1);
        assert_eq!((run.records[0].kind, run.records[0].id), (GET_VALUES_RESULT, 0));
        let pairs = parse_pairs(&run.records[0].content).unwrap();
        assert_eq!(pairs, vec![(&b"FCGI_MPXS_CONNS"[..], &b"0"[..]), (&b"FCGI_MAX_CONNS"[..], &b"1"[..])]);
        assert!(matches!(run.ending, Ending::PeerClosed));
    }

    #[test]
    fn an_unknown_record_type_gets_unknown_type_and_the_connection_goes_on() {
        let mut input = Vec::new();
        push_record(&mut input, 42, 0, b"whatever");
        push_record(&mut input, 200, 9, b"");
        push_record(&mut input, ABORT_REQUEST + 100, 0, b"");
        get(&mut input, 1, false);
        let run = run(&input);
        let unknown: Vec<&Out> = run.records.iter().filter(|r| r.kind == UNKNOWN_TYPE).collect();
        assert_eq!(unknown.len(), 3);
        assert_eq!(unknown[0].content, [42, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(unknown[1].content[0], 200);
        assert!(unknown.iter().all(|r| r.id == 0));
        assert!(run.stdout(1).starts_with("Status: 200"));
    }

    #[test]
    fn an_unknown_role_gets_unknown_role_and_never_reaches_the_handler() {
        for role in [3, 0, 99] {
            let mut input = Vec::new();
            begin(&mut input, 1, role, false);
            params(&mut input, 1, &[("REQUEST_METHOD", "GET")]);
            push_stream(&mut input, STDIN, 1, b"");
            let run = run(&input);
            assert_eq!(run.ends(), vec![(1, UNKNOWN_ROLE)]);
            assert!(run.records.iter().all(|r| r.kind != STDOUT));
            assert!(matches!(run.ending, Ending::Linger));
        }
    }

    #[test]
    fn an_unknown_role_on_a_kept_connection_is_skipped_and_the_next_request_served() {
        let mut input = Vec::new();
        begin(&mut input, 1, ROLE_AUTHORIZER, true);
        params(&mut input, 1, &[("REQUEST_METHOD", "GET")]);
        push_stream(&mut input, STDIN, 1, b"");
        get(&mut input, 2, false);
        let run = run(&input);
        assert_eq!(run.ends(), vec![(1, UNKNOWN_ROLE), (2, REQUEST_COMPLETE)]);
        assert!(run.stdout(2).ends_with("responder GET / body="));
    }

    #[test]
    fn an_authorizer_request_completes_when_its_params_end() {
        let mut input = Vec::new();
        begin(&mut input, 5, ROLE_AUTHORIZER, true);
        params(&mut input, 5, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "99")]);
        // A server that sends an empty STDIN anyway is tolerated.
        push_record(&mut input, STDIN, 5, b"");
        get(&mut input, 6, false);
        let run = run_with(&[Role::Responder, Role::Authorizer], echo, &input, usize::MAX);
        assert!(run.stdout(5).ends_with("authorizer POST  body="), "{}", run.stdout(5));
        assert!(run.stdout(6).ends_with("responder GET / body="));
    }

    #[test]
    fn an_authorizer_only_program_refuses_responder_requests() {
        let mut input = Vec::new();
        get(&mut input, 1, false);
        let run = run_with(&[Role::Authorizer], echo, &input, usize::MAX);
        assert_eq!(run.ends(), vec![(1, UNKNOWN_ROLE)]);
    }

    #[test]
    fn a_second_request_on_a_busy_connection_gets_cant_mpx_conn() {
        let mut input = Vec::new();
        begin(&mut input, 1, ROLE_RESPONDER, false);
        begin(&mut input, 2, ROLE_RESPONDER, false);
        // Request 2's streams, crossing our refusal, are skipped.
        params(&mut input, 2, &[("REQUEST_METHOD", "GET")]);
        params(&mut input, 1, &[("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/one")]);
        push_stream(&mut input, STDIN, 2, b"");
        push_stream(&mut input, STDIN, 1, b"");
        let run = run(&input);
        assert_eq!(run.ends(), vec![(2, CANT_MPX_CONN), (1, REQUEST_COMPLETE)]);
        assert!(run.stdout(1).ends_with("responder GET /one body="));
    }

    #[test]
    fn keep_conn_serves_requests_in_a_row_and_its_absence_closes() {
        let mut input = Vec::new();
        for id in 1..=20 {
            get(&mut input, id, true);
        }
        get(&mut input, 21, false);
        get(&mut input, 22, false);
        let run = run(&input);
        let ids: Vec<u16> = run.ends().iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, (1..=21).collect::<Vec<_>>());
        assert!(matches!(run.ending, Ending::Done));
    }

    #[test]
    fn a_kept_connection_survives_a_handler_panic() {
        let mut input = Vec::new();
        get(&mut input, 1, true);
        get(&mut input, 2, false);
        let run = run_with(&[Role::Responder], panics, &input, usize::MAX);
        assert!(run.stdout(1).starts_with("Status: 500"));
        assert!(run.stdout(2).starts_with("Status: 500"));
    }

    #[test]
    fn params_over_the_limit_get_400_and_close() {
        let big = "c".repeat(MAX_PARAMS);
        let mut input = Vec::new();
        request(&mut input, 1, true, &[("REQUEST_METHOD", "GET"), ("HTTP_COOKIE", &big)], b"");
        get(&mut input, 2, true);
        let run = run(&input);
        assert!(run.stdout(1).starts_with("Status: 400"));
        assert_eq!(run.ends(), vec![(1, REQUEST_COMPLETE)]);
        assert!(matches!(run.ending, Ending::Done));
    }

    #[test]
    fn params_that_do_not_decode_get_400() {
        let mut input = Vec::new();
        begin(&mut input, 1, ROLE_RESPONDER, false);
        push_stream(&mut input, PARAMS, 1, &[9, 9, b'x']);
        push_stream(&mut input, STDIN, 1, b"");
        assert!(run(&input).stdout(1).starts_with("Status: 400"));
    }

    #[test]
    fn a_body_declared_too_large_is_dropped_and_gets_413() {
        let mut input = Vec::new();
        let body = vec![b'x'; 200_000];
        request(&mut input, 1, true, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "200000")], &body);
        get(&mut input, 2, false);
        let run = run(&input);
        assert!(run.stdout(1).starts_with("Status: 413"), "{}", run.stdout(1));
        assert!(run.stdout(2).starts_with("Status: 200"));
    }

    #[test]
    fn more_body_than_the_limit_gets_413_whatever_was_declared() {
        let mut input = Vec::new();
        let body = vec![b'x'; MAX_BODY + 10];
        request(&mut input, 1, false, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "10")], &body);
        assert!(run(&input).stdout(1).starts_with("Status: 413"));
    }

    #[test]
    fn a_body_other_than_declared_is_400() {
        for body in [&b"abc"[..], &b"abcdefghijkl"[..]] {
            let mut input = Vec::new();
            request(&mut input, 1, false, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "10")], body);
            let text = run(&input).stdout(1);
            assert!(text.starts_with("Status: 400"), "{text}");
            assert!(text.contains(&format!("has {} bytes", body.len())), "{text}");
        }
    }

    #[test]
    fn a_post_without_a_length_is_400() {
        let mut input = Vec::new();
        request(&mut input, 1, false, &[("REQUEST_METHOD", "POST")], b"data");
        assert!(run(&input).stdout(1).starts_with("Status: 400"));
    }

    #[test]
    fn a_get_body_is_ignored() {
        let mut input = Vec::new();
        request(&mut input, 1, false, &[("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "")], b"ignored");
        assert!(run(&input).stdout(1).ends_with("body="));
    }

    #[test]
    fn an_abort_ends_the_request_without_the_handler() {
        let mut input = Vec::new();
        begin(&mut input, 1, ROLE_RESPONDER, true);
        params(&mut input, 1, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "5")]);
        push_record(&mut input, STDIN, 1, b"ab");
        push_record(&mut input, ABORT_REQUEST, 1, b"");
        // The rest of the aborted body, already in flight, is skipped.
        push_record(&mut input, STDIN, 1, b"cde");
        push_record(&mut input, STDIN, 1, b"");
        // An abort for a request already answered is ignored.
        push_record(&mut input, ABORT_REQUEST, 9, b"");
        get(&mut input, 2, false);
        let run = run(&input);
        assert_eq!(run.ends(), vec![(1, REQUEST_COMPLETE), (2, REQUEST_COMPLETE)]);
        assert!(run.records.iter().all(|r| r.id != 1 || r.kind == END_REQUEST));
        assert!(run.stdout(2).starts_with("Status: 200"));
    }

    #[test]
    fn an_abort_without_keep_conn_closes() {
        let mut input = Vec::new();
        begin(&mut input, 1, ROLE_RESPONDER, false);
        push_record(&mut input, ABORT_REQUEST, 1, b"");
        let run = run(&input);
        assert_eq!(run.ends(), vec![(1, REQUEST_COMPLETE)]);
        assert!(matches!(run.ending, Ending::Linger));
    }

    #[test]
    fn truncated_input_ends_quietly_without_an_answer() {
        let mut input = Vec::new();
        get(&mut input, 1, false);
        for cut in [0, 3, 8, 20, input.len() - 1] {
            let run = run(&input[..cut]);
            assert!(run.records.is_empty(), "cut at {cut}");
            assert!(matches!(run.ending, Ending::PeerClosed), "cut at {cut}: {:?}", run.ending);
        }
    }

    #[test]
    fn out_of_place_records_are_protocol_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("params for an unknown id", {
                let mut v = Vec::new();
                params(&mut v, 4, &[("A", "b")]);
                v
            }),
            ("stdin before the params end", {
                let mut v = Vec::new();
                begin(&mut v, 1, ROLE_RESPONDER, false);
                push_record(&mut v, STDIN, 1, b"x");
                v
            }),
            ("params after they ended", {
                let mut v = Vec::new();
                begin(&mut v, 1, ROLE_RESPONDER, false);
                params(&mut v, 1, &[("A", "b")]);
                push_record(&mut v, PARAMS, 1, b"\x01\x01ab");
                v
            }),
            ("a short begin request", {
                let mut v = Vec::new();
                push_record(&mut v, BEGIN_REQUEST, 1, &[0, 1]);
                v
            }),
            ("the same id begun twice", {
                let mut v = Vec::new();
                begin(&mut v, 1, ROLE_RESPONDER, false);
                begin(&mut v, 1, ROLE_RESPONDER, false);
                v
            }),
            ("data for a responder", {
                let mut v = Vec::new();
                begin(&mut v, 1, ROLE_RESPONDER, false);
                push_record(&mut v, DATA, 1, b"x");
                v
            }),
            ("stdout from the server", {
                let mut v = Vec::new();
                push_record(&mut v, STDOUT, 1, b"x");
                v
            }),
            ("malformed get values", {
                let mut v = Vec::new();
                push_record(&mut v, GET_VALUES, 0, &[9]);
                v
            }),
        ];
        for (name, input) in cases {
            let run = run(&input);
            assert!(matches!(run.ending, Ending::Protocol(_)), "{name}: {:?}", run.ending);
            assert!(run.records.iter().all(|r| r.kind != STDOUT), "{name}");
        }
    }

    #[test]
    fn the_peers_in_fcgi_web_server_addrs_are_let_in() {
        let config = Config::from_vars(&[("FCGI_WEB_SERVER_ADDRS".into(), "127.0.0.1, ::1,bogus".into())]).unwrap();
        let allowed = allowed_peers(&config).unwrap();
        assert!(peer_allowed(&allowed, "127.0.0.1".parse().unwrap()));
        assert!(peer_allowed(&allowed, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(peer_allowed(&allowed, "::1".parse().unwrap()));
        assert!(!peer_allowed(&allowed, "10.0.0.1".parse().unwrap()));
        assert_eq!(allowed_peers(&Config::from_vars(&[]).unwrap()), None);
    }

    #[test]
    fn only_a_listening_socket_counts_as_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening_socket(listener.as_raw_fd()));
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_listening_socket(stream.as_raw_fd()));
        assert_eq!(socket_family(listener.as_raw_fd()).unwrap(), libc::AF_INET);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_listening_socket(file.as_raw_fd()));
    }

    #[test]
    fn accept_errors_that_pass_are_not_fatal() {
        let kind = |code| classify_accept_error(&io::Error::from_raw_os_error(code));
        assert!(matches!(kind(libc::EMFILE), AcceptFailure::Pause));
        assert!(matches!(kind(libc::ENFILE), AcceptFailure::Pause));
        assert!(matches!(kind(libc::ENOBUFS), AcceptFailure::Pause));
        assert!(matches!(kind(libc::ENOMEM), AcceptFailure::Pause));
        assert!(matches!(kind(libc::EINTR), AcceptFailure::Retry));
        assert!(matches!(kind(libc::ECONNABORTED), AcceptFailure::Retry));
        assert!(matches!(kind(libc::EBADF), AcceptFailure::Fatal));
    }

    /// A small deterministic generator, so that the fuzz smoke test needs no crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn fuzz_input_survives_random_and_mutated_streams() {
        let mut valid = Vec::new();
        get(&mut valid, 1, true);
        request(&mut valid, 2, true, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "3")], b"abc");
        begin(&mut valid, 3, ROLE_AUTHORIZER, true);
        params(&mut valid, 3, &[("REQUEST_METHOD", "GET")]);
        push_record(&mut valid, GET_VALUES, 0, b"\x0e\x00FCGI_MAX_CONNS");
        push_record(&mut valid, ABORT_REQUEST, 3, b"");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        fuzz_input(&[]);
        fuzz_input(&[[0].as_slice(), &valid].concat());
        for _ in 0..3000 {
            let mut data = [&[xorshift(&mut seed) as u8 % 4], valid.as_slice()].concat();
            for _ in 0..(xorshift(&mut seed) % 8) {
                let at = (xorshift(&mut seed) as usize) % data.len();
                data[at] = xorshift(&mut seed) as u8;
            }
            let cut = (xorshift(&mut seed) as usize) % (data.len() + 1);
            fuzz_input(&data[..cut]);
            let noise: Vec<u8> = (0..(xorshift(&mut seed) % 64)).map(|_| xorshift(&mut seed) as u8).collect();
            fuzz_input(&noise);
        }
    }
}
