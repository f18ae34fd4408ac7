//! The `auth` program: the gate in front of other content, as a FastCGI
//! Responder (nginx `auth_request`) or Authorizer (Apache `mod_authnz_fcgi`);
//! see `webauth::routes::auth`.

fn main() -> std::process::ExitCode {
    webauth::run_roles(webauth::routes::auth, &[webauth::Role::Responder, webauth::Role::Authorizer])
}
