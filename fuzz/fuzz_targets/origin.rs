//! Cross-origin protection: `origin::check` with fuzzed `Origin`, `Host`,
//! `SERVER_PORT`, `Sec-Fetch-Site`, method, HTTPS and trusted origins.
//!
//! Input: NUL-separated fields, in this order: REQUEST_METHOD, HTTP_ORIGIN,
//! HTTP_HOST, SERVER_PORT, HTTP_SEC_FETCH_SITE, HTTPS,
//! WEBAUTH_TRUSTED_ORIGINS. A missing field is an unset variable.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use webauth::config::Config;
use webauth::http::Request;
use webauth::origin;

const FIELDS: [&str; 7] = [
    "REQUEST_METHOD",
    "HTTP_ORIGIN",
    "HTTP_HOST",
    "SERVER_PORT",
    "HTTP_SEC_FETCH_SITE",
    "HTTPS",
    "WEBAUTH_TRUSTED_ORIGINS",
];

fuzz_target!(|data: &[u8]| {
    let mut vars = HashMap::new();
    for (name, value) in FIELDS.iter().zip(data.split(|&b| b == 0)) {
        vars.insert(name.to_string(), String::from_utf8_lossy(value).into_owned());
    }
    let req = Request::from_cgi_vars(&vars, Ok(Vec::new()));
    let config = Config::from_vars(&req.config_vars).unwrap_or_default();
    let verdict = origin::check(&config, &req);

    let trusted = req.origin.as_deref().is_some_and(|o| {
        let o = o.trim_end_matches('/').to_ascii_lowercase();
        config.trusted_origins.contains(&o)
    });
    let site = req.sec_fetch_site.as_deref().map(str::to_ascii_lowercase);
    if matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        assert!(verdict.is_ok(), "safe method refused");
        return;
    }
    match site.as_deref() {
        Some("same-origin" | "none") => assert!(verdict.is_ok(), "Sec-Fetch-Site {site:?} refused"),
        Some(_) => assert_eq!(verdict.is_ok(), trusted, "Sec-Fetch-Site {site:?}, trusted {trusted}"),
        None if req.origin.is_none() => assert!(verdict.is_ok(), "no Origin, no Sec-Fetch-Site refused"),
        None if verdict.is_ok() && !trusted => {
            // Let through on the Origin fallback. For an Origin that a
            // browser could send (a serialized origin), its host must be the
            // request's own host.
            let o = req.origin.as_deref().unwrap();
            let Ok(url) = url::Url::parse(o) else { return };
            if url.origin().ascii_serialization() != o {
                return;
            }
            let own = url::Url::parse(&format!("http://{}", req.host))
                .unwrap_or_else(|e| panic!("Origin {o:?} passed against unparsable Host {:?}: {e}", req.host));
            assert_eq!(url.host_str(), own.host_str(), "Origin {o:?} passed for Host {:?}", req.host);
        }
        None => {}
    }
});
