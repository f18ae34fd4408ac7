//! `logout`: ends the session on the server and expires the cookie.

use super::{end_sent_sessions, read_fields, BodyKind};
use crate::app::{App, Error};
use crate::audit::{self, Event};
use crate::http::{Request, Response};
use crate::origin;
use crate::session::expire_cookie;

pub fn logout(app: &mut App, req: &Request) -> Result<Response, Error> {
    if req.method != "POST" {
        return Err(Error::MethodNotAllowed("POST"));
    }
    let config = app.config();
    origin::check(&config, req).map_err(Error::CrossOrigin)?;
    let (kind, _) = read_fields(req)?;
    for username in end_sent_sessions(app, req)? {
        audit::record(config.log, Event::Logout, &username, &req.remote_addr);
    }
    let mount = req.mount(&config);
    let response = if kind == BodyKind::Json || req.wants_json() {
        Response::json(200, &serde_json::json!({"success": true}))
    } else {
        Response::redirect_303(&mount)
    };
    Ok(response.with_header("Set-Cookie", &expire_cookie(&config, req, &mount)))
}
