//! Brute-force regulation: failed logins counted in the session store, so the
//! count holds across CGI processes and FastCGI workers.
//!
//! Anyone can fail five times as someone else, so a ban on a username alone
//! would let an attacker lock the real user out. Failures are counted on
//! three keys, each with its own limit:
//! - username and address: `WEBAUTH_MAX_FAILURES` (5): the usual guesser is
//!   banned, and the real user elsewhere is not;
//! - address, any username: 4x that (20): one address spraying many names;
//! - username, any address: 10x that (50): a guesser spread over many
//!   addresses. Only this key locks the real user out, and it takes ten times
//!   the failures; the ban lasts `WEBAUTH_BAN_TIME` and a success clears it.
//!
//! Unknown usernames are counted like known ones, so the answer does not tell
//! which names exist.

use crate::config::Config;
use crate::store::{Attempt, Limit, SessionStore, StoreError};

/// The counters a login attempt for `username` from `addr` touches.
pub fn keys(config: &Config, username: &str, addr: &str) -> Vec<(String, Limit)> {
    let limit = |max| Limit { max, window: config.failure_window, ban: config.ban_time };
    let user = (format!("user:{username}"), limit(config.max_failures_per_user));
    let addr = client_key(addr);
    if addr.is_empty() {
        // No address to tell clients apart: an address key would put every
        // client on one counter, and one guesser would lock everyone out.
        return vec![user];
    }
    // The address goes first in the pair key: a username may contain '|'.
    vec![
        (format!("pair:{addr}|{username}"), limit(config.max_failures)),
        (format!("addr:{addr}"), limit(config.max_failures_per_address)),
        user,
    ]
}

/// The counter of wrong second-factor codes of a user, from any address,
/// on top of the password's keys: 2x `WEBAUTH_MAX_FAILURES` (10) in the
/// window, then a ban of 4x `WEBAUTH_BAN_TIME` (an hour). Whoever knows the
/// password can spread guesses over many addresses, which the per-user key
/// alone (50) would let through at about 7,000 guesses a day; with this one
/// at most about 10 an hour, 240 a day: one chance in about 1,400 a day of
/// hitting one of the three codes a guess can match.
pub fn code_key(config: &Config, username: &str) -> (String, Limit) {
    let limit = Limit {
        max: config.max_failures.saturating_mul(2),
        window: config.failure_window,
        ban: config.ban_time.saturating_mul(4),
    };
    (format!("code:{username}"), limit)
}

/// The address as one client: an IPv4 address, or the /64 of an IPv6 one
/// (a single host usually holds a whole /64 and could rotate through it).
fn client_key(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_default(),
        Ok(ip) => ip.to_string(),
        Err(_) => addr.trim().to_string(),
    }
}

/// Decides and counts an attempt before its password is verified.
pub fn attempt(store: &mut dyn SessionStore, keys: &[(String, Limit)], now: i64) -> Result<Attempt, StoreError> {
    store.attempt(keys, now)
}

/// Seconds until a refused attempt may be made again.
pub fn retry_after(attempt: &Attempt, now: i64) -> Option<i64> {
    attempt.refused_until.map(|until| (until - now).max(1))
}

/// A success clears the user's counts and takes the attempt back from the
/// address's count (one good login must not launder a spray from the same
/// address, nor should it count against it).
pub fn succeeded(store: &mut dyn SessionStore, keys: &[(String, Limit)]) -> Result<(), StoreError> {
    let (forgive, clear): (Vec<String>, Vec<String>) =
        keys.iter().map(|(k, _)| k.clone()).partition(|k| k.starts_with("addr:"));
    store.succeeded(&clear, &forgive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_scale_from_max_failures() {
        let config = Config::from_vars(&[("WEBAUTH_MAX_FAILURES".into(), "3".into())]).unwrap();
        let k = keys(&config, "john", "10.0.0.1");
        assert_eq!(k[0].0, "pair:10.0.0.1|john");
        assert_eq!(k.iter().map(|(_, l)| l.max).collect::<Vec<_>>(), vec![3, 12, 30]);
        assert!(k.iter().all(|(_, l)| l.window == 600 && l.ban == 900));
    }

    #[test]
    fn no_address_counts_only_the_username() {
        let k = keys(&Config::default(), "john", "");
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].0, "user:john");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let c = Config::default();
        let a = keys(&c, "john", "2001:db8:1:2::1");
        let b = keys(&c, "john", "2001:db8:1:2:ffff::9");
        assert_eq!(a, b);
        assert_eq!(a[1].0, "addr:2001:db8:1:2::/64");
        assert_eq!(keys(&c, "john", "::ffff:192.0.2.1")[1].0, "addr:192.0.2.1");
    }
}
