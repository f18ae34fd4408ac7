//! FastCGI front end: a listening socket on fd 0 (spawn-fcgi, mod_fcgid,
//! systemd, or the workers of a `--listen` supervisor, see
//! [`crate::supervise`]), served by one single-threaded process, one
//! connection and one request at a time, through [`crate::App::handle`].
//!
//! Why our own record layer and not the `fastcgi` crate (FINDINGS.md): on the
//! session page the crate reached 0.32-0.36 of the C libfcgi floor. It spawns a
//! thread per connection (nginx opens one per request), sends every write as
//! its own record in two syscalls and reads records 8 bytes at a time; it also
//! panics on an `accept` error and unwraps protocol errors. A small
//! single-threaded loop with 16 KiB buffered reads and the whole response in
//! one `write_all` reached 0.85-0.95. This package is that loop, with what a
//! front end facing a socket needs besides: bounded params and bodies, read and
//! write timeouts, an accept loop that survives EMFILE, and a graceful stop.
//!
//! A file per layer, inside out, each readable without the others:
//! - [`record`]: the wire format, records and name-value pairs (pure);
//! - [`conn`]: one connection's state machine and the worker loop over any
//!   `Read + Write`;
//! - [`listen`]: sockets, fd 0, the accept loop and SIGTERM.

pub mod conn;
pub mod listen;
pub mod record;

#[cfg(any(test, fuzzing))]
pub use conn::fuzz_input;
pub use listen::{fd0_is_listening_socket, serve_fd0};
