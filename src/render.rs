//! Pages: Tera templates from `WEBAUTH_TEMPLATES` when set (edited pages show
//! without a rebuild), else the copies built into the binary.
//!
//! Only the templates a response needs are parsed (a CGI process renders one
//! page), and a FastCGI process keeps them until a file changes on disk.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tera::{Context, Tera};

use crate::config::Config;
use crate::http::{reason, Request, Response};

/// The pages every deployment has, and their built-in text.
const BUILTIN: [(&str, &str); 5] = [
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("code.html", include_str!("../templates/code.html")),
    ("user.html", include_str!("../templates/user.html")),
    ("error.html", include_str!("../templates/error.html")),
];

/// A template that failed to load or render; the cause is for stderr.
#[derive(Debug)]
pub struct RenderError(String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RenderError {}

/// Where a loaded template came from, to notice when it changes.
#[derive(Clone, PartialEq)]
enum Source {
    Builtin,
    File(PathBuf, Option<SystemTime>),
}

pub struct Renderer {
    dir: Option<PathBuf>,
    tera: Tera,
    loaded: Vec<(&'static str, Source)>,
}

impl Renderer {
    pub fn new(dir: Option<PathBuf>) -> Renderer {
        Renderer { dir, tera: Tera::default(), loaded: Vec::new() }
    }

    fn source(&self, name: &str) -> Source {
        match &self.dir {
            Some(dir) => {
                let path = dir.join(name);
                match std::fs::metadata(&path) {
                    Ok(m) => Source::File(path, m.modified().ok()),
                    Err(_) => Source::Builtin,
                }
            }
            None => Source::Builtin,
        }
    }

    /// Makes sure `base.html` and `page` are parsed and current.
    fn load(&mut self, page: &'static str) -> Result<(), RenderError> {
        let mut wanted: Vec<&'static str> = self.loaded.iter().map(|(n, _)| *n).collect();
        for name in ["base.html", page] {
            if !wanted.contains(&name) {
                wanted.push(name);
            }
        }
        let sources: Vec<(&'static str, Source)> = wanted.iter().map(|n| (*n, self.source(n))).collect();
        if sources == self.loaded {
            return Ok(());
        }
        let mut texts = Vec::with_capacity(sources.len());
        for (name, source) in &sources {
            let text = match source {
                Source::Builtin => builtin(name).to_string(),
                Source::File(path, _) => read_template(path)?,
            };
            texts.push((*name, text));
        }
        let mut tera = Tera::default();
        tera.add_raw_templates(texts).map_err(|e| RenderError(tera_error("loading templates", &e)))?;
        self.tera = tera;
        self.loaded = sources;
        Ok(())
    }

    /// Renders `page` with `context` plus the variables every page has, as a
    /// response with a Content-Security-Policy that admits only this page's
    /// nonce'd `<style>` and `<script>`.
    pub fn page(
        &mut self,
        config: &Config,
        req: &Request,
        status: u16,
        page: &'static str,
        mut context: Context,
    ) -> Result<Response, RenderError> {
        self.load(page)?;
        let nonce = nonce();
        context.insert("nonce", &nonce);
        context.insert("mount", &req.mount(config));
        if !context.contains_key("title") {
            context.insert("title", "Sign in");
        }
        let html = self.tera.render(page, &context).map_err(|e| RenderError(tera_error(page, &e)))?;
        let csp = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        Ok(Response::html(status, html).with_header("Content-Security-Policy", &csp))
    }

    /// The error page for a status, with a way back to the login page.
    pub fn error_page(
        &mut self,
        config: &Config,
        req: &Request,
        status: u16,
        message: &str,
    ) -> Result<Response, RenderError> {
        let mut context = Context::new();
        context.insert("title", reason(status));
        context.insert("status", &status);
        context.insert("message", message);
        context.insert("login_url", &req.mount(config));
        self.page(config, req, status, "error.html", context)
    }
}

fn builtin(name: &str) -> &'static str {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or("")
}

fn read_template(path: &Path) -> Result<String, RenderError> {
    std::fs::read_to_string(path).map_err(|e| RenderError(format!("template {}: {e}", path.display())))
}

/// Tera's error with its causes, on one line.
fn tera_error(what: &str, e: &tera::Error) -> String {
    let mut text = format!("template error in {what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', " ")
}

fn nonce() -> String {
    let mut bytes = [0u8; 16];
    // A nonce only has to be unguessable for this one page; if the OS source
    // fails the process has bigger problems, and a fixed nonce is still no XSS.
    let _ = getrandom::fill(&mut bytes);
    // URL-safe: no `/` for Tera to escape, so every page has the same length.
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A page that needs no template, for when the templates are what failed.
pub fn fallback_page(status: u16, message: &str) -> String {
    let message = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\
         <body><h1>{status} {reason}</h1><p>{message}</p></body></html>\n",
        reason = reason(status)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(script: &str) -> Request {
        Request::fake("GET", script, "")
    }

    #[test]
    fn mount_is_the_script_directory() {
        let c = Config::default();
        assert_eq!(req("/login").mount(&c), "/");
        assert_eq!(req("/members/login").mount(&c), "/members/");
        assert_eq!(req("/members/index.cgi").mount(&c), "/members/");
        assert_eq!(req("/members/").mount(&c), "/members/");
        assert_eq!(req("").mount(&c), "/");
        assert_eq!(req("//evil.test/logout").mount(&c), "/");
        assert_eq!(req("/x;Domain=example.org;/login").mount(&c), "/");
        let configured = Config { mount: Some("/x/".into()), ..Config::default() };
        assert_eq!(req("/cgi-bin/login.cgi").mount(&configured), "/x/");
    }

    #[test]
    fn builtin_pages_render_escaped() {
        let c = Config::default();
        let mut r = Renderer::new(None);
        let mut ctx = Context::new();
        ctx.insert("action", "/login");
        ctx.insert("next", "");
        ctx.insert("username", "<script>alert(1)</script>");
        ctx.insert("message", "Invalid username or password.");
        let resp = r.page(&c, &req("/login"), 401, "login.html", ctx).unwrap();
        let html = String::from_utf8(resp.body).unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"), "{html}");
        assert!(!html.contains("<script>alert(1)"));
        let csp = resp.headers.iter().find(|(n, _)| n == "Content-Security-Policy").unwrap();
        assert!(csp.1.contains("frame-ancestors 'none'") && csp.1.contains("script-src 'nonce-"));
    }

    #[test]
    fn template_dir_overrides_and_reloads() {
        let dir = std::env::temp_dir().join(format!("webauth-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("error.html"), "custom {{ status }}").unwrap();
        let c = Config::default();
        let mut r = Renderer::new(Some(dir.clone()));
        let body = r.error_page(&c, &req("/"), 404, "x").unwrap().body;
        assert_eq!(body, b"custom 404");
        // A changed file is picked up without a restart (mtime granularity aside).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("error.html"), "changed {{ status }}").unwrap();
        let f = std::fs::File::options().append(true).open(dir.join("error.html")).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        let body = r.error_page(&c, &req("/"), 404, "x").unwrap().body;
        assert_eq!(body, b"changed 404");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_template_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("webauth-tpl-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("error.html"), "{% if %}").unwrap();
        let mut r = Renderer::new(Some(dir.clone()));
        let err = r.error_page(&Config::default(), &req("/"), 500, "x").unwrap_err();
        assert!(err.to_string().contains("template error"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fallback_page_escapes() {
        assert!(fallback_page(500, "<b>").contains("&lt;b&gt;"));
    }
}
