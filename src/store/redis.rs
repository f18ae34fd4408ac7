//! The shared store: one Redis for several web hosts, so that a session
//! started on one host is good on all of them, and so are a ban and a logout.
//!
//! Keys, all under `webauth:`:
//! - `s:<hex of the token's SHA-256>`: a session, a hash of its fields. Its
//!   native expiry is the first of its idle and absolute ends and moves with
//!   each last-seen touch. No live token is in Redis, only its hash.
//! - `u:<username>`: the user's sessions, a sorted set of their ids scored by
//!   when each lapses, so that "end every session of a user" is one script.
//! - `f:<regulation key>`: a failure counter (count, window start, ban end),
//!   which lapses with its window or its ban.
//! - `p:<hex of a pending token's SHA-256>`: a login waiting for its second
//!   factor (username, expiry, remember, next), lapsing when it expires.
//! - `t:<username>`: the last TOTP time step the user used, lapsing once no
//!   code it could refuse would be accepted anyway.
//! - `r:<username>`: the hashes of the recovery codes the user used, a set
//!   without expiry (a code stays in the users file until it is replaced).
//!
//! Every step that reads and then writes is one Lua script, which Redis runs
//! atomically: counting an attempt and deciding the ban cannot interleave
//! with another host's attempt (`BEGIN IMMEDIATE` does this for SQLite).
//! Expiry times are relative (`EXPIRE`), so a host's clock need not agree
//! with the Redis server's.
//!
//! A connection is made on first use, with a connect timeout, and every
//! command has a timeout. Any error drops the connection and is a
//! [`StoreError`] (a `503`); the next request connects again, so service
//! comes back by itself when Redis does.
//!
//! The scripts touch keys they compute (a session's user index), which a
//! Redis Cluster refuses: a standalone Redis (with replicas or Sentinel
//! behind one address) is what this store expects.

use std::sync::OnceLock;
use std::time::Duration;

use redis::{Connection, RedisResult, Script};

use super::{Attempt, Limit, PendingRecord, SessionId, SessionRecord, SessionStore, StoreError};
use crate::config::RedisUrl;
use crate::totp;

/// How long a connection (TCP, TLS and the handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long any command may take to be written and answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

const PREFIX: &str = "webauth:";

pub struct RedisStore {
    client: redis::Client,
    label: String,
    conn: Option<Connection>,
}

/// KEYS: session, user index. ARGV: username, created, last_seen,
/// expires_at, idle_timeout, seconds to live, now, id, lapse time.
const INSERT: &str = r"
redis.call('HSET', KEYS[1], 'username', ARGV[1], 'created', ARGV[2], 'last_seen', ARGV[3],
    'expires_at', ARGV[4], 'idle_timeout', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[9], ARGV[8])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('EXPIRE', KEYS[2], math.max(tonumber(last[2]) - tonumber(ARGV[7]), 1))
return 1
";

/// KEYS: session. ARGV: now, idle timeout, id, user index prefix.
/// A session that is gone stays gone: nothing is written for it.
const TOUCH: &str = r"
local h = redis.call('HMGET', KEYS[1], 'last_seen', 'expires_at', 'username')
if not h[1] or not h[2] or not h[3] then return 0 end
local now = tonumber(ARGV[1])
local last = math.max(tonumber(h[1]), now)
local ends = math.min(tonumber(h[2]), last + tonumber(ARGV[2]))
local index = ARGV[4] .. h[3]
if ends <= now then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', index, ARGV[3])
    return 0
end
redis.call('HSET', KEYS[1], 'last_seen', last)
redis.call('EXPIRE', KEYS[1], ends - now)
redis.call('ZADD', index, ends, ARGV[3])
if redis.call('TTL', index) < ends - now then redis.call('EXPIRE', index, ends - now) end
return 1
";

/// KEYS: session. ARGV: id, user index prefix.
const DELETE: &str = r"
local user = redis.call('HGET', KEYS[1], 'username')
redis.call('DEL', KEYS[1])
if user then redis.call('ZREM', ARGV[2] .. user, ARGV[1]) end
return 1
";

/// KEYS: user index. ARGV: session key prefix. Returns how many sessions
/// were live.
const DELETE_USER: &str = r"
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    n = n + redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return n
";

/// KEYS: the counters. ARGV: now, then max, window and ban for each key.
/// Returns {refused until or 0, started a ban 0/1}. The same rules as the
/// SQLite store's `attempt`.
const ATTEMPT: &str = r"
local now = tonumber(ARGV[1])
local refused = 0
for _, key in ipairs(KEYS) do
    local until_ = tonumber(redis.call('HGET', key, 'banned_until') or '0')
    if until_ > now and until_ > refused then refused = until_ end
end
if refused > 0 then return {refused, 0} end
local started = 0
for i, key in ipairs(KEYS) do
    local max = tonumber(ARGV[3 * i - 1])
    local window = tonumber(ARGV[3 * i])
    local ban = tonumber(ARGV[3 * i + 1])
    local h = redis.call('HMGET', key, 'count', 'window_start')
    local count, start = 1, now
    if h[1] and h[2] and now - tonumber(h[2]) < window then
        count, start = tonumber(h[1]) + 1, tonumber(h[2])
    end
    local banned = 0
    if count >= max then
        started, count, start, banned = 1, 0, now, now + ban
    end
    redis.call('HSET', key, 'count', count, 'window_start', start, 'banned_until', banned)
    redis.call('EXPIRE', key, math.max(start + window, banned) - now + 1)
end
return {0, started}
";

/// KEYS: counters to clear, then counters to forgive one attempt.
/// ARGV: how many to clear.
const SUCCEEDED: &str = r"
local clear = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    if i <= clear then
        redis.call('DEL', key)
    elseif tonumber(redis.call('HGET', key, 'count') or '0') > 0 then
        redis.call('HINCRBY', key, 'count', -1)
    end
end
return 1
";

/// KEYS: the user's last step. ARGV: the step, seconds to keep it.
/// Returns 1 if the step is later than the last one (now recorded), else 0.
const USE_STEP: &str = r"
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
local step = tonumber(ARGV[1])
if step <= last then return 0 end
redis.call('SET', KEYS[1], step, 'EX', ARGV[2])
return 1
";

/// The scripts, hashed once per process; `invoke` sends `EVALSHA` and falls
/// back to `EVAL` when the server does not know a script yet.
struct Scripts {
    insert: Script,
    touch: Script,
    delete: Script,
    delete_user: Script,
    attempt: Script,
    succeeded: Script,
    use_step: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        insert: Script::new(INSERT),
        touch: Script::new(TOUCH),
        delete: Script::new(DELETE),
        delete_user: Script::new(DELETE_USER),
        attempt: Script::new(ATTEMPT),
        succeeded: Script::new(SUCCEEDED),
        use_step: Script::new(USE_STEP),
    })
}

fn session_key(id: &SessionId) -> String {
    format!("{PREFIX}s:{}", hex(&id.0))
}

fn user_key(username: &str) -> String {
    format!("{PREFIX}u:{username}")
}

fn failure_key(key: &str) -> String {
    format!("{PREFIX}f:{key}")
}

fn pending_key(id: &SessionId) -> String {
    format!("{PREFIX}p:{}", hex(&id.0))
}

fn step_key(username: &str) -> String {
    format!("{PREFIX}t:{username}")
}

fn recovery_key(username: &str) -> String {
    format!("{PREFIX}r:{username}")
}

/// How long a user's last step is kept: its code is accepted from SKEW steps
/// before it to SKEW steps after, so after that span (and a step's margin
/// for clocks) no code it would refuse is accepted anyway.
const STEP_KEEP: i64 = (2 * totp::SKEW + 2) * totp::STEP;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A session's fields as `HMGET` returns them, in [`FIELDS`] order.
const FIELDS: [&str; 5] = ["username", "created", "last_seen", "expires_at", "idle_timeout"];

fn record_from_fields(id: SessionId, fields: Vec<Option<String>>) -> Option<SessionRecord> {
    let number = |i: usize| fields.get(i)?.as_deref()?.parse::<i64>().ok();
    Some(SessionRecord {
        id,
        username: fields.first()?.clone()?,
        created: number(1)?,
        last_seen: number(2)?,
        expires_at: number(3)?,
        idle_timeout: number(4)?,
    })
}

impl RedisStore {
    /// Checks the URL; the connection is made on first use.
    pub fn open(url: &RedisUrl) -> Result<RedisStore, StoreError> {
        let label = url.to_string();
        if url.tls() {
            // The one crypto provider compiled in; an error means one is set.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url.secret())
            .map_err(|e| StoreError::Unavailable { store: label.clone(), cause: redact(&e.to_string(), url) })?;
        Ok(RedisStore { client, label, conn: None })
    }

    /// Runs `f` on the connection, connecting first if need be. Any error
    /// drops the connection: it may be half-read, and the server may be
    /// gone; the next call connects anew.
    fn run<T>(&mut self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT).and_then(|c| {
                c.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                c.set_write_timeout(Some(COMMAND_TIMEOUT))?;
                Ok(c)
            });
            self.conn = Some(conn.map_err(|e| self.fail(e))?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        match f(conn) {
            Ok(value) => Ok(value),
            Err(e) => {
                self.conn = None;
                Err(self.fail(e))
            }
        }
    }

    fn fail(&self, e: redis::RedisError) -> StoreError {
        StoreError::Unavailable { store: self.label.clone(), cause: e.to_string() }
    }
}

/// An error message from parsing the URL might quote it: no password in logs.
fn redact(message: &str, url: &RedisUrl) -> String {
    match url::Url::parse(url.secret()).ok().and_then(|u| u.password().map(str::to_string)) {
        Some(password) if !password.is_empty() => message.replace(&password, "***"),
        _ => message.to_string(),
    }
}

impl SessionStore for RedisStore {
    fn insert(&mut self, r: &SessionRecord, idle: i64) -> Result<(), StoreError> {
        let lapses = r.expires_at.min(r.last_seen + idle);
        let ttl = (lapses - r.last_seen).max(1);
        let script = &scripts().insert;
        self.run(|c| {
            script
                .key(session_key(&r.id))
                .key(user_key(&r.username))
                .arg(&r.username)
                .arg(r.created)
                .arg(r.last_seen)
                .arg(r.expires_at)
                .arg(r.idle_timeout)
                .arg(ttl)
                .arg(r.last_seen)
                .arg(hex(&r.id.0))
                .arg(lapses)
                .invoke::<i64>(c)
        })
        .map(|_| ())
    }

    fn get(&mut self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let key = session_key(id);
        let fields: Vec<Option<String>> = self.run(|c| redis::cmd("HMGET").arg(&key).arg(&FIELDS[..]).query(c))?;
        Ok(record_from_fields(*id, fields))
    }

    fn touch(&mut self, id: &SessionId, now: i64, idle: i64) -> Result<(), StoreError> {
        let script = &scripts().touch;
        let index_prefix = format!("{PREFIX}u:");
        self.run(|c| script.key(session_key(id)).arg(now).arg(idle).arg(hex(&id.0)).arg(&index_prefix).invoke::<i64>(c))
            .map(|_| ())
    }

    fn delete(&mut self, id: &SessionId) -> Result<(), StoreError> {
        let script = &scripts().delete;
        let index_prefix = format!("{PREFIX}u:");
        self.run(|c| script.key(session_key(id)).arg(hex(&id.0)).arg(&index_prefix).invoke::<i64>(c)).map(|_| ())
    }

    fn delete_user(&mut self, username: &str) -> Result<usize, StoreError> {
        let script = &scripts().delete_user;
        let session_prefix = format!("{PREFIX}s:");
        let n: i64 = self.run(|c| script.key(user_key(username)).arg(&session_prefix).invoke(c))?;
        Ok(n.max(0) as usize)
    }

    fn list(&mut self) -> Result<Vec<SessionRecord>, StoreError> {
        let pattern = format!("{PREFIX}s:*");
        let keys: Vec<String> = self.run(|c| {
            let mut keys = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) =
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(c)?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        })?;
        let ids: Vec<SessionId> =
            keys.iter().filter_map(|k| unhex(k.strip_prefix(&pattern[..pattern.len() - 1])?)).map(SessionId).collect();
        let rows: Vec<Vec<Option<String>>> = self.run(|c| {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET").arg(session_key(id)).arg(&FIELDS[..]);
            }
            pipe.query(c)
        })?;
        // A session that lapsed between the scan and the read is left out.
        let mut records: Vec<SessionRecord> =
            ids.into_iter().zip(rows).filter_map(|(id, fields)| record_from_fields(id, fields)).collect();
        records.sort_by(|a, b| (&a.username, a.created, a.id.0).cmp(&(&b.username, b.created, b.id.0)));
        Ok(records)
    }

    /// Redis lapses sessions and counters by itself; a user's index drops
    /// lapsed ids when a session is added to it, and lapses with the last.
    fn purge(&mut self, _now: i64, _idle_timeout: i64, _failure_window: i64) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn attempt(&mut self, keys: &[(String, Limit)], now: i64) -> Result<Attempt, StoreError> {
        let script = &scripts().attempt;
        let (refused_until, started): (i64, i64) = self.run(|c| {
            let mut call = script.prepare_invoke();
            call.arg(now);
            for (key, limit) in keys {
                call.key(failure_key(key)).arg(limit.max).arg(limit.window).arg(limit.ban);
            }
            call.invoke(c)
        })?;
        Ok(Attempt { refused_until: (refused_until > 0).then_some(refused_until), started_ban: started == 1 })
    }

    fn succeeded(&mut self, clear: &[String], forgive: &[String]) -> Result<(), StoreError> {
        let script = &scripts().succeeded;
        self.run(|c| {
            let mut call = script.prepare_invoke();
            call.arg(clear.len());
            for key in clear.iter().chain(forgive) {
                call.key(failure_key(key));
            }
            call.invoke::<i64>(c)
        })
        .map(|_| ())
    }

    fn insert_pending(&mut self, p: &PendingRecord, now: i64) -> Result<(), StoreError> {
        let key = pending_key(&p.id);
        let ttl = (p.expires_at - now).max(1);
        self.run(|c| {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("username")
                .arg(&p.username)
                .arg("expires_at")
                .arg(p.expires_at)
                .arg("remember")
                .arg(i64::from(p.remember))
                .arg("next")
                .arg(&p.next)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore()
                .query::<()>(c)
        })
    }

    fn get_pending(&mut self, id: &SessionId, now: i64) -> Result<Option<PendingRecord>, StoreError> {
        let key = pending_key(id);
        let fields: Vec<Option<String>> =
            self.run(|c| redis::cmd("HMGET").arg(&key).arg(&["username", "expires_at", "remember", "next"]).query(c))?;
        let [Some(username), Some(expires_at), Some(remember), Some(next)] =
            <[_; 4]>::try_from(fields).ok().unwrap_or_default()
        else {
            return Ok(None);
        };
        let Ok(expires_at) = expires_at.parse::<i64>() else { return Ok(None) };
        // Redis lapses it by its own clock; this host's decides too.
        Ok((expires_at > now).then(|| PendingRecord { id: *id, username, expires_at, remember: remember == "1", next }))
    }

    fn take_pending(&mut self, id: &SessionId) -> Result<bool, StoreError> {
        let key = pending_key(id);
        let n: i64 = self.run(|c| redis::cmd("DEL").arg(&key).query(c))?;
        Ok(n == 1)
    }

    fn use_totp_step(&mut self, username: &str, step: i64) -> Result<bool, StoreError> {
        let script = &scripts().use_step;
        let n: i64 = self.run(|c| script.key(step_key(username)).arg(step).arg(STEP_KEEP).invoke(c))?;
        Ok(n == 1)
    }

    fn use_recovery_code(&mut self, username: &str, hash: &str, _now: i64) -> Result<bool, StoreError> {
        let key = recovery_key(username);
        let n: i64 = self.run(|c| redis::cmd("SADD").arg(&key).arg(hash).query(c))?;
        Ok(n == 1)
    }

    fn used_recovery_codes(&mut self, username: &str) -> Result<Vec<String>, StoreError> {
        let key = recovery_key(username);
        self.run(|c| redis::cmd("SMEMBERS").arg(&key).query(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_key() {
        let id = SessionId([0xab; 32]);
        let key = session_key(&id);
        assert_eq!(unhex(key.strip_prefix("webauth:s:").unwrap()), Some(id.0));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn a_record_needs_every_field() {
        let id = SessionId([1; 32]);
        let full = vec![Some("john".into()), Some("1".into()), Some("2".into()), Some("3".into()), Some("0".into())];
        let r = record_from_fields(id, full.clone()).unwrap();
        assert_eq!((r.username.as_str(), r.created, r.last_seen, r.expires_at, r.idle_timeout), ("john", 1, 2, 3, 0));
        let mut gone = full.clone();
        gone[0] = None;
        assert_eq!(record_from_fields(id, gone), None, "a lapsed session");
        let mut bad = full;
        bad[3] = Some("x".into());
        assert_eq!(record_from_fields(id, bad), None, "a field that is not a number");
    }

    #[test]
    fn no_password_in_the_label() {
        let Some(crate::config::Store::Redis(url)) = crate::config::Config::from_vars(&[
            ("WEBAUTH_STORE".into(), "redis://:hunter2@127.0.0.1:6379/3".into()),
            ("WEBAUTH_STATE_DIR".into(), "/tmp".into()),
        ])
        .ok()
        .map(|c| c.store) else {
            panic!("a Redis store")
        };
        let store = RedisStore::open(&url).unwrap();
        assert!(!store.label.contains("hunter2"), "{}", store.label);
        assert!(store.label.contains("127.0.0.1:6379/3"), "{}", store.label);
    }
}
