//! One connection's FastCGI conversation: the state machine that records are
//! fed to (it calls the handler when a request is complete and appends the
//! response records), and the worker loop that drives it over any
//! `Read + Write`, one read and one `write_all` at a time.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::*;
use crate::app::{App, Handler};
use crate::http::{BodyPlan, Request, Response, Role, MAX_BODY};

const READ_BUFFER: usize = 16 * 1024;
/// Encoded PARAMS bytes one request may send: room for a Cookie header of
/// [`crate::session::MAX_COOKIE_HEADER`] beside the other headers and the
/// CGI variables, for a web server set up to pass large headers.
pub const MAX_PARAMS: usize = 128 * 1024;
/// How long one request may take to arrive, however steadily it trickles in.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);

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
    /// Authorizer requests have none; responders as [`BodyPlan::for_request`] says.
    body: BodyPlan,
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
                        if matches!(a.body, BodyPlan::Read(_)) {
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
            body: BodyPlan::None,
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
            Role::Authorizer => BodyPlan::None,
            Role::Responder => BodyPlan::for_request(&active.vars),
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
            plan @ BodyPlan::Read(_) => plan.check(std::mem::take(&mut self.body)),
            // Like the CGI front end: no body read when the length is invalid
            // or too large, whatever was sent.
            plan => plan.check(Vec::new()),
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
pub enum Ending {
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
    /// A stop was asked and no request is in hand.
    Stopped,
}

/// How a worker is asked to stop, shared with its SIGTERM handler (see
/// `listen::install_stop`): a worker that holds no request may die at once;
/// one that holds a request finishes it, then stops.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// True while the worker waits holding no request: a SIGTERM then ends the process.
    pub idle: Arc<AtomicBool>,
    /// Set by SIGTERM: finish the request in hand, then stop.
    pub asked: Arc<AtomicBool>,
}

impl Stop {
    /// Marks the worker idle before it blocks; false if a stop was asked
    /// already (checked after marking, so no SIGTERM falls between the two).
    pub fn enter_idle(&self) -> bool {
        self.idle.store(true, Ordering::SeqCst);
        if self.asked.load(Ordering::SeqCst) {
            self.idle.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn leave_idle(&self) {
        self.idle.store(false, Ordering::SeqCst);
    }

    pub fn is_asked(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }
}

/// What a worker process keeps from one connection to the next.
pub struct Worker<'r> {
    handler: Handler,
    conn: Connection<'r>,
    input: Vec<u8>,
    out: Vec<u8>,
    stop: Stop,
}

impl<'r> Worker<'r> {
    pub fn new(roles: &'r [Role], handler: Handler, stop: Stop) -> Worker<'r> {
        Worker {
            handler,
            conn: Connection::new(roles),
            input: vec![0; READ_BUFFER],
            out: Vec::with_capacity(READ_BUFFER),
            stop,
        }
    }

    /// Serves one connection until it ends. The output of every batch of
    /// records that one read brought goes out in a single `write_all`.
    pub fn serve<S: Read + Write>(&mut self, stream: &mut S, app: &mut App) -> Ending {
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
            let holding = self.conn.is_busy() || filled > 0;
            if !holding && !self.stop.enter_idle() {
                return Ending::Stopped;
            }
            let read = stream.read(&mut self.input[filled..]);
            self.stop.leave_idle();
            let n = match read {
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
#[cfg(any(test, fuzzing))]
struct ScriptedStream<'a> {
    input: &'a [u8],
    chunk: usize,
    written: Vec<u8>,
    keep_written: bool,
    writes: usize,
}

#[cfg(any(test, fuzzing))]
impl Read for ScriptedStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

#[cfg(any(test, fuzzing))]
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

#[cfg(any(test, fuzzing))]
fn fuzz_handler(_app: &mut App, req: &Request) -> Result<Response, crate::app::Error> {
    match &req.body {
        Ok(body) => Ok(Response::text(200, &format!("{} {}", req.method, body.len()))),
        Err(e) => Err(crate::app::Error::Request(e.clone())),
    }
}

/// For the fuzz target (built with `--cfg fuzzing`, never into a release
/// binary): drives the whole connection state machine, in both
/// roles, with a trivial handler, over arbitrary bytes: the first byte picks
/// how many bytes each read returns, the rest is what the peer sends. Must
/// never panic.
#[cfg(any(test, fuzzing))]
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
        let mut worker = Worker::new(&roles, fuzz_handler, Stop::default());
        let Some((&read_size, data)) = data.split_first() else { return };
        let chunk = 1 + usize::from(read_size) * 97;
        let mut stream = ScriptedStream { input: data, chunk, written: Vec::new(), keep_written: false, writes: 0 };
        // What is left after a connection ends is served as the next connection.
        while !stream.input.is_empty() {
            worker.serve(&mut stream, app);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app;

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
        let mut worker = Worker::new(roles, handler, Stop::default());
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
