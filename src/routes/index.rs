//! `index`: the user's page with a live session, else the login page.

use serde_json::Value;
use tera::Context;

use super::current_session;
use crate::app::{App, Error};
use crate::http::{Request, Response};
use crate::routes::login::{login_page, LoginForm};
use crate::session::expire_cookie;
use crate::users::User;

pub fn index(app: &mut App, req: &Request) -> Result<Response, Error> {
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return Err(Error::MethodNotAllowed("GET, HEAD"));
    }
    let (live, mut stale) = current_session(app, req)?;
    if let Some(live) = live {
        let users = app.users()?;
        if let Some(user) = users.get(&live.username) {
            return user_page(app, req, user);
        }
        // The user was deleted from the file: their sessions end with them.
        app.store()?.delete(&live.id)?;
        stale = true;
    }
    let page = login_page(app, req, 200, &LoginForm::default())?;
    Ok(if stale {
        let config = app.config();
        let gone = expire_cookie(&config, req, &req.mount(&config));
        page.with_header("Set-Cookie", &gone)
    } else {
        page
    })
}

fn user_page(app: &mut App, req: &Request, user: &User) -> Result<Response, Error> {
    let mut fields = user.fields.clone();
    fields.insert("username".into(), Value::String(user.username.clone()));
    let totp = match &user.totp {
        Some(totp) => {
            // Codes used but still in the file (the programs could not write
            // it) are not left: the store's record is what counts.
            let used = app.store()?.used_recovery_codes(&user.username)?;
            let left = totp.recovery.iter().filter(|h| !used.contains(h)).count();
            serde_json::json!({"enabled": true, "recovery_left": left})
        }
        None => serde_json::json!({"enabled": false, "recovery_left": 0}),
    };
    let config = app.config();
    let mut context = Context::new();
    context.insert("title", "Welcome");
    context.insert("user", &Value::Object(fields));
    context.insert("totp", &totp);
    context.insert("logout_action", &format!("{}logout", req.mount(&config)));
    Ok(app.render.page(&config, req, 200, "user.html", context)?)
}
