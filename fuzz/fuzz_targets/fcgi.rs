//! The FastCGI record layer and connection state machine, through
//! `fcgi::fuzz_input`: the first byte picks the read size, the rest is served
//! as one or more connections, in both roles, with a trivial handler.
//! Seeds: fuzz/seeds/make_fcgi_seeds.py.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    webauth::fcgi::fuzz_input(data);
});
