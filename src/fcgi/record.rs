//! The FastCGI 1.0 wire format: records and name-value pairs, both ways.
//! Pure functions over byte slices; nothing here reads or writes a socket.

use std::fmt;

pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// The largest record the protocol can express: header, content, padding.
pub const MAX_RECORD: usize = HEADER_LEN + 0xFFFF + 0xFF;
/// Content bytes per STDOUT record: the largest multiple of 8 that fits, so
/// that only the last record of a response needs padding.
pub const MAX_CHUNK: usize = 0xFFF8;

// Record types (FastCGI 1.0, section 8).
pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

pub const ROLE_RESPONDER: u16 = 1;
pub const ROLE_AUTHORIZER: u16 = 2;
pub const KEEP_CONN: u8 = 1;

pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const UNKNOWN_ROLE: u8 = 3;

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
pub fn record_size(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..HEADER_LEN)?;
    let content_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    Some(HEADER_LEN + content_len + usize::from(header[6]))
}

pub fn push_record(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
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
pub fn push_stream(out: &mut Vec<u8>, kind: u8, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CHUNK) {
        push_record(out, kind, request_id, chunk);
    }
    push_record(out, kind, request_id, &[]);
}

pub fn push_end_request(out: &mut Vec<u8>, request_id: u16, protocol_status: u8) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
