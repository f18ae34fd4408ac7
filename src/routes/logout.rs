//! `logout`: ends the session on the server and expires the cookie.

use super::{read_fields, BodyKind};
use crate::app::{App, Error};
use crate::audit::{self, Event};
use crate::http::{Request, Response};
use crate::origin;
use crate::render::mount;
use crate::session::{self, expire_cookie, CookieState};

pub fn logout(app: &mut App, req: &Request) -> Result<Response, Error> {
    if req.method != "POST" {
        return Err(Error::MethodNotAllowed("POST"));
    }
    origin::check(app.config(), req).map_err(Error::CrossOrigin)?;
    let (kind, _) = read_fields(req)?;
    let config = app.config().clone();
    if let CookieState::Present(token) = session::read_cookie(&req.cookie_header, &config.cookie_name) {
        let store = app.store()?;
        let id = token.id();
        // Deleted whether or not it is still live: a copied cookie stops now.
        if let Some(record) = store.get(&id)? {
            store.delete(&id)?;
            audit::record(config.log, Event::Logout, &record.username, &req.remote_addr);
        }
    }
    let mount = mount(&config, req);
    let response = if kind == BodyKind::Json || req.wants_json() {
        Response::json(200, &serde_json::json!({"success": true}))
    } else {
        Response::redirect_303(&mount)
    };
    Ok(response.with_header("Set-Cookie", &expire_cookie(&config, req, &mount)))
}
