//! FastCGI front end (being written).

use crate::app::Handler;
use crate::http::Role;
use std::process::ExitCode;

pub fn fd0_is_listening_socket() -> bool {
    false
}

pub fn serve_fd0(_handler: Handler, _roles: &[Role]) -> ExitCode {
    ExitCode::FAILURE
}

pub fn serve_listen(_addr: &str, _workers: Option<usize>, _handler: Handler, _roles: &[Role]) -> ExitCode {
    ExitCode::FAILURE
}
