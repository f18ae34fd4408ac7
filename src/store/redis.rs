//! The shared store: one Redis for several web hosts, so that a session
//! started on one host is good on all of them, and so are a ban and a logout.
//!
//! Whoever can write to Redis must not be able to log in. So the hosts share
//! a secret key (`WEBAUTH_SECRET_KEY`, a file Redis never sees), and:
//! - a session's key is `s:` and an HMAC of its token's SHA-256: knowing a
//!   token of one's own, one cannot name its record without the key;
//! - each record carries an HMAC of its id, user and lifetimes: a record
//!   written or edited without the key (another user's name put on one's own
//!   session) fails its check and counts as no session.
//!
//! No live token is in Redis; a copy of Redis holds nothing to log in with.
//!
//! Keys, all under `webauth:`:
//! - `s:<name>`: a session, a hash of its fields. Its native expiry is the
//!   first of its idle and absolute ends and moves with each last-seen touch.
//! - `u:<username>`: the user's session names in a sorted set, so that "end
//!   every session of a user" is one script.
//! - `f:<regulation key>`: a failure count that lapses with its window;
//!   `b:<regulation key>`: a ban that lapses with itself.
//! - `p:<name>`: a login waiting for its second factor (username, expiry,
//!   remember, next), named and sealed like a session, lapsing when it
//!   expires.
//! - `t:<username>`: the last TOTP time step the user used, lapsing once no
//!   code it could refuse would be accepted anyway.
//! - `r:<username>`: the hashes of the recovery codes the user used, a set
//!   without expiry (a code stays in the users file until it is replaced).
//!
//! Every step that reads and then writes is one Lua script, which Redis runs
//! atomically: counting an attempt and deciding the ban cannot interleave
//! with another host's attempt (`BEGIN IMMEDIATE` does this for SQLite).
//! Regulation uses only relative expiry (`EXPIRE`, `SET EX`), so hosts whose
//! clocks disagree still share one count and one ban. Sessions hold absolute
//! times, as with SQLite: the hosts' clocks must agree (NTP).
//!
//! A connection is made on first use, with a connect timeout, and every
//! reply has a timeout. Any error drops the connection and is a
//! [`StoreError`] (a `503`); the next request connects again, so service
//! comes back by itself when Redis does.
//!
//! The scripts touch keys they compute (a session's user index), which a
//! Redis Cluster refuses: a standalone Redis is what this store expects.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use redis::{Connection, RedisResult, Script};
use sha2::Sha256;

use super::{Attempt, Limit, PendingRecord, SessionId, SessionRecord, SessionStore, StoreError};
use crate::config::RedisUrl;
use crate::totp;

/// How long connecting (TCP, TLS) and each reply may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The shortest secret key file accepted: 256 bits.
pub const MIN_SECRET_KEY: usize = 32;

const PREFIX: &str = "webauth:";
const SESSIONS: &str = "webauth:s:";
const INDEXES: &str = "webauth:u:";

pub struct RedisStore {
    client: redis::Client,
    label: String,
    conn: Option<Connection>,
    key: Vec<u8>,
}

/// KEYS: session, user index. ARGV: id, username, created, last_seen,
/// expires_at, idle_timeout, mac, seconds to live, name, now, session
/// prefix, store prefix (pending steps are `p:<name>` in the index).
/// Names in the index whose session is gone are dropped (checked by
/// existence, so another host's clock does not matter).
const INSERT: &str = r"
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'username', ARGV[2], 'created', ARGV[3], 'last_seen', ARGV[4],
    'expires_at', ARGV[5], 'idle_timeout', ARGV[6], 'mac', ARGV[7])
local ttl = tonumber(ARGV[8])
redis.call('EXPIRE', KEYS[1], ttl)
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[10], 'LIMIT', 0, 100)) do
    local key = ARGV[11] .. name
    if string.sub(name, 1, 2) == 'p:' then key = ARGV[12] .. name end
    if redis.call('EXISTS', key) == 0 then redis.call('ZREM', KEYS[2], name) end
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[10]) + ttl, ARGV[9])
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
";

/// KEYS: session. ARGV: now, idle timeout, name, user index prefix.
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

/// KEYS: session. ARGV: name, user index prefix.
const DELETE: &str = r"
local user = redis.call('HGET', KEYS[1], 'username')
redis.call('DEL', KEYS[1])
if user then redis.call('ZREM', ARGV[2] .. user, ARGV[1]) end
return 1
";

/// KEYS: user index. ARGV: session key prefix, store prefix. Ends the
/// user's sessions and pending second-factor steps (`p:<name>` in the
/// index); returns how many sessions were live.
const DELETE_USER: &str = r"
local n = 0
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(name, 1, 2) == 'p:' then
        redis.call('DEL', ARGV[2] .. name)
    else
        n = n + redis.call('DEL', ARGV[1] .. name)
    end
end
redis.call('DEL', KEYS[1])
return n
";

/// KEYS: pending step, user index. ARGV: username, expires_at, remember,
/// next, mac, seconds to live, its name in the index, now.
const INSERT_PENDING: &str = r"
redis.call('HSET', KEYS[1], 'username', ARGV[1], 'expires_at', ARGV[2], 'remember', ARGV[3], 'next', ARGV[4],
    'mac', ARGV[5])
local ttl = tonumber(ARGV[6])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], tonumber(ARGV[8]) + ttl, ARGV[7])
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
";

/// KEYS: a count and a ban key for each regulation key. ARGV: max, window
/// and ban for each. Returns {milliseconds a ban has left or 0, 1 if this
/// attempt started a ban}. The rules of the SQLite store's `attempt`: a ban
/// on any key refuses without counting; otherwise every key is counted, and
/// a key reaching its limit within its window is banned and counts anew.
const ATTEMPT: &str = r"
local n = #KEYS / 2
local refused = 0
for i = 1, n do
    local left = redis.call('PTTL', KEYS[2 * i])
    if left > refused then refused = left end
end
if refused > 0 then return {refused, 0} end
local started = 0
for i = 1, n do
    local max, window, ban = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
    local count = redis.call('INCR', KEYS[2 * i - 1])
    if count == 1 then redis.call('EXPIRE', KEYS[2 * i - 1], math.max(window, 1)) end
    if count >= max then
        started = 1
        redis.call('DEL', KEYS[2 * i - 1])
        if ban > 0 then redis.call('SET', KEYS[2 * i], '1', 'EX', ban) end
    end
end
return {0, started}
";

/// KEYS: count and ban keys to clear, then counts to forgive one attempt.
/// ARGV: how many keys to clear.
const SUCCEEDED: &str = r"
local clear = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    if i <= clear then
        redis.call('DEL', key)
    elseif tonumber(redis.call('GET', key) or '0') > 0 then
        redis.call('DECR', key)
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
    insert_pending: Script,
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
        insert_pending: Script::new(INSERT_PENDING),
    })
}

fn count_key(key: &str) -> String {
    format!("{PREFIX}f:{key}")
}

fn ban_key(key: &str) -> String {
    format!("{PREFIX}b:{key}")
}

fn index_key(username: &str) -> String {
    format!("{INDEXES}{username}")
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

/// A session's fields as `HMGET` returns them, in this order.
const FIELDS: [&str; 7] = ["id", "username", "created", "last_seen", "expires_at", "idle_timeout", "mac"];

/// Reads the secret key file: at least [`MIN_SECRET_KEY`] bytes.
pub fn read_secret_key(path: &Path) -> Result<Vec<u8>, String> {
    let key = std::fs::read(path).map_err(|e| format!("secret key file {}: {e}", path.display()))?;
    if key.len() < MIN_SECRET_KEY {
        return Err(format!(
            "secret key file {}: {} bytes, fewer than {MIN_SECRET_KEY} (make one: head -c 32 /dev/urandom > FILE)",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

impl RedisStore {
    /// Reads the secret key and checks the URL; the connection is made on
    /// first use.
    pub fn open(url: &RedisUrl, secret_key: &Path) -> Result<RedisStore, StoreError> {
        let label = url.to_string();
        let unavailable = |cause: String| StoreError::Unavailable { store: label.clone(), cause };
        let key = read_secret_key(secret_key).map_err(unavailable)?;
        if url.tls() {
            // The one crypto provider compiled in; an error means one is set.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url.secret()).map_err(|e| unavailable(redact(&e.to_string(), url)))?;
        Ok(RedisStore { client, label, conn: None, key })
    }

    fn mac(&self, purpose: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose);
        mac
    }

    /// The name of a session's record: an HMAC of its id under the key.
    fn name(&self, id: &SessionId) -> String {
        let mut mac = self.mac(b"webauth redis session name v1\0");
        mac.update(&id.0);
        hex(&mac.finalize().into_bytes())
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{SESSIONS}{}", self.name(id))
    }

    /// The HMAC over what a record says, but its last-seen time (which each
    /// touch moves, within the lifetimes the HMAC covers).
    fn record_mac(&self, r: &SessionRecord) -> Hmac<Sha256> {
        let mut mac = self.mac(b"webauth redis session record v1\0");
        mac.update(&r.id.0);
        mac.update(&(r.username.len() as u64).to_le_bytes());
        mac.update(r.username.as_bytes());
        for n in [r.created, r.expires_at, r.idle_timeout] {
            mac.update(&n.to_le_bytes());
        }
        mac
    }

    /// A pending login's key: an HMAC of its token's hash, like a session's.
    fn pending_key(&self, id: &SessionId) -> String {
        let mut mac = self.mac(b"webauth redis pending name v1\0");
        mac.update(&id.0);
        format!("{PREFIX}p:{}", hex(&mac.finalize().into_bytes()))
    }

    /// The HMAC over everything a pending login says.
    fn pending_mac(&self, p: &PendingRecord) -> Hmac<Sha256> {
        let mut mac = self.mac(b"webauth redis pending record v1\0");
        mac.update(&p.id.0);
        for text in [&p.username, &p.next] {
            mac.update(&(text.len() as u64).to_le_bytes());
            mac.update(text.as_bytes());
        }
        mac.update(&p.expires_at.to_le_bytes());
        mac.update(&[u8::from(p.remember)]);
        mac
    }

    /// The record a name's fields hold, if they are whole and carry our HMAC.
    fn record_from_fields(&self, name: &str, fields: Vec<Option<String>>) -> Option<SessionRecord> {
        let record = parse_fields(&fields)?;
        let tag = fields.get(6).cloned().flatten().and_then(|t| unhex(&t));
        let good = tag.is_some_and(|tag| self.record_mac(&record).verify_slice(&tag).is_ok());
        if !good || self.name(&record.id) != name {
            // Not written by a host with the key: someone else wrote Redis.
            eprintln!("webauth: error: session store {}: a session record fails its check; ignored", self.label);
            return None;
        }
        Some(record)
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

/// The fields of a record (without checking its HMAC).
fn parse_fields(fields: &[Option<String>]) -> Option<SessionRecord> {
    let text = |i: usize| fields.get(i)?.as_deref();
    let number = |i: usize| text(i)?.parse::<i64>().ok();
    Some(SessionRecord {
        id: SessionId(unhex(text(0)?)?),
        username: text(1)?.to_string(),
        created: number(2)?,
        last_seen: number(3)?,
        expires_at: number(4)?,
        idle_timeout: number(5)?,
    })
}

/// An error message from parsing the URL might quote it: no password in logs.
fn redact(message: &str, url: &RedisUrl) -> String {
    let parsed = url::Url::parse(url.secret()).ok();
    let mut message = message.to_string();
    for secret in
        [parsed.as_ref().and_then(|u| u.password()), parsed.as_ref().map(|u| u.username())].into_iter().flatten()
    {
        if !secret.is_empty() {
            message = message.replace(secret, "***");
        }
    }
    message
}

impl SessionStore for RedisStore {
    fn insert(&mut self, r: &SessionRecord, idle: i64) -> Result<(), StoreError> {
        let lapses = r.expires_at.min(r.last_seen + idle);
        let ttl = (lapses - r.last_seen).max(1);
        let name = self.name(&r.id);
        let tag = hex(&self.record_mac(r).finalize().into_bytes());
        let script = &scripts().insert;
        self.run(|c| {
            script
                .key(format!("{SESSIONS}{name}"))
                .key(index_key(&r.username))
                .arg(hex(&r.id.0))
                .arg(&r.username)
                .arg(r.created)
                .arg(r.last_seen)
                .arg(r.expires_at)
                .arg(r.idle_timeout)
                .arg(tag)
                .arg(ttl)
                .arg(&name)
                .arg(r.last_seen)
                .arg(SESSIONS)
                .arg(PREFIX)
                .invoke::<i64>(c)
        })
        .map(|_| ())
    }

    fn get(&mut self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.get_many(std::slice::from_ref(id))?.pop().flatten())
    }

    /// One round trip for all of them (a request may carry many cookies).
    fn get_many(&mut self, ids: &[SessionId]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = ids.iter().map(|id| self.name(id)).collect();
        let rows: Vec<Vec<Option<String>>> = self.run(|c| {
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.cmd("HMGET").arg(format!("{SESSIONS}{name}")).arg(&FIELDS[..]);
            }
            pipe.query(c)
        })?;
        Ok(names
            .iter()
            .zip(rows)
            .zip(ids)
            .map(|((name, fields), id)| {
                if fields.iter().all(Option::is_none) {
                    return None;
                }
                self.record_from_fields(name, fields).filter(|r| &r.id == id)
            })
            .collect())
    }

    fn touch(&mut self, id: &SessionId, now: i64, idle: i64) -> Result<(), StoreError> {
        let script = &scripts().touch;
        let (key, name) = (self.session_key(id), self.name(id));
        self.run(|c| script.key(key).arg(now).arg(idle).arg(name).arg(INDEXES).invoke::<i64>(c)).map(|_| ())
    }

    fn delete(&mut self, id: &SessionId) -> Result<(), StoreError> {
        let script = &scripts().delete;
        let (key, name) = (self.session_key(id), self.name(id));
        self.run(|c| script.key(key).arg(name).arg(INDEXES).invoke::<i64>(c)).map(|_| ())
    }

    fn delete_user(&mut self, username: &str) -> Result<usize, StoreError> {
        let script = &scripts().delete_user;
        let n: i64 = self.run(|c| script.key(index_key(username)).arg(SESSIONS).arg(PREFIX).invoke(c))?;
        Ok(n.max(0) as usize)
    }

    fn list(&mut self) -> Result<Vec<SessionRecord>, StoreError> {
        let pattern = format!("{SESSIONS}*");
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
        let rows: Vec<Vec<Option<String>>> = self.run(|c| {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("HMGET").arg(key).arg(&FIELDS[..]);
            }
            pipe.query(c)
        })?;
        // A session that lapsed between the scan and the read is left out.
        let mut records: Vec<SessionRecord> = keys
            .iter()
            .zip(rows)
            .filter(|(_, fields)| fields.iter().any(Option::is_some))
            .filter_map(|(key, fields)| self.record_from_fields(key.strip_prefix(SESSIONS)?, fields))
            .collect();
        records.sort_by(|a, b| (&a.username, a.created, a.id.0).cmp(&(&b.username, b.created, b.id.0)));
        Ok(records)
    }

    /// Redis lapses sessions and counters by itself; a user's index drops
    /// names of ended sessions when a session is added to it, and lapses
    /// with the last.
    fn purge(&mut self, _now: i64, _idle_timeout: i64, _failure_window: i64) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn attempt(&mut self, keys: &[(String, Limit)], now: i64) -> Result<Attempt, StoreError> {
        let script = &scripts().attempt;
        let (refused_ms, started): (i64, i64) = self.run(|c| {
            let mut call = script.prepare_invoke();
            for (key, limit) in keys {
                call.key(count_key(key)).key(ban_key(key)).arg(limit.max).arg(limit.window).arg(limit.ban);
            }
            call.invoke(c)
        })?;
        // The ban's end in this host's time: what it has left, rounded up.
        let refused_until = (refused_ms > 0).then(|| now + (refused_ms + 999) / 1000);
        Ok(Attempt { refused_until, started_ban: started == 1 })
    }

    fn succeeded(&mut self, clear: &[String], forgive: &[String]) -> Result<(), StoreError> {
        let script = &scripts().succeeded;
        self.run(|c| {
            let mut call = script.prepare_invoke();
            call.arg(clear.len() * 2);
            for key in clear {
                call.key(count_key(key)).key(ban_key(key));
            }
            for key in forgive {
                call.key(count_key(key));
            }
            call.invoke::<i64>(c)
        })
        .map(|_| ())
    }

    fn insert_pending(&mut self, p: &PendingRecord, now: i64) -> Result<(), StoreError> {
        let key = self.pending_key(&p.id);
        let member = key.strip_prefix(PREFIX).unwrap_or(&key).to_string();
        let tag = hex(&self.pending_mac(p).finalize().into_bytes());
        let ttl = (p.expires_at - now).max(1);
        let script = &scripts().insert_pending;
        self.run(|c| {
            script
                .key(&key)
                .key(index_key(&p.username))
                .arg(&p.username)
                .arg(p.expires_at)
                .arg(i64::from(p.remember))
                .arg(&p.next)
                .arg(tag)
                .arg(ttl)
                .arg(member)
                .arg(now)
                .invoke::<i64>(c)
        })
        .map(|_| ())
    }

    fn get_pending(&mut self, id: &SessionId, now: i64) -> Result<Option<PendingRecord>, StoreError> {
        let key = self.pending_key(id);
        let fields: Vec<Option<String>> = self.run(|c| {
            redis::cmd("HMGET").arg(&key).arg(&["username", "expires_at", "remember", "next", "mac"]).query(c)
        })?;
        let [Some(username), Some(expires_at), Some(remember), Some(next), mac] =
            <[_; 5]>::try_from(fields).ok().unwrap_or_default()
        else {
            return Ok(None);
        };
        let Ok(expires_at) = expires_at.parse::<i64>() else { return Ok(None) };
        let record = PendingRecord { id: *id, username, expires_at, remember: remember == "1", next };
        // Whoever writes Redis without the key must not skip the password.
        let sealed =
            mac.and_then(|t| unhex(&t)).is_some_and(|tag| self.pending_mac(&record).verify_slice(&tag).is_ok());
        if !sealed {
            eprintln!("webauth: error: session store {}: a pending login fails its check; ignored", self.label);
            return Ok(None);
        }
        // Redis lapses it by its own clock; this host's decides too.
        Ok((expires_at > now).then_some(record))
    }

    fn take_pending(&mut self, id: &SessionId) -> Result<bool, StoreError> {
        let key = self.pending_key(id);
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
    use crate::config::{Config, Store};

    fn store(key: &[u8]) -> (tempfile::TempDir, RedisStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, key).unwrap();
        let config = Config::from_vars(&[
            ("WEBAUTH_STORE".into(), "redis://:hunter2@127.0.0.1:6379/3".into()),
            ("WEBAUTH_STATE_DIR".into(), "/tmp".into()),
            ("WEBAUTH_SECRET_KEY".into(), path.display().to_string()),
        ])
        .unwrap();
        let Store::Redis { url, secret_key } = config.store else { panic!("a Redis store") };
        let store = RedisStore::open(&url, &secret_key).unwrap();
        (dir, store)
    }

    fn record() -> SessionRecord {
        SessionRecord {
            id: SessionId([7; 32]),
            username: "john".into(),
            created: 1,
            last_seen: 2,
            expires_at: 3,
            idle_timeout: 0,
        }
    }

    fn fields(s: &RedisStore, r: &SessionRecord) -> Vec<Option<String>> {
        let tag = hex(&s.record_mac(r).finalize().into_bytes());
        [hex(&r.id.0), r.username.clone(), "1".into(), "2".into(), "3".into(), "0".into(), tag]
            .into_iter()
            .map(Some)
            .collect()
    }

    #[test]
    fn names_and_records_need_the_key() {
        let (_d1, a) = store(&[1; 32]);
        let (_d2, b) = store(&[2; 32]);
        let r = record();
        assert_ne!(a.name(&r.id), b.name(&r.id), "the name depends on the key");
        assert_ne!(a.name(&r.id), hex(&r.id.0), "the name is not the id");
        let name = a.name(&r.id);
        assert_eq!(a.record_from_fields(&name, fields(&a, &r)), Some(r.clone()));
        // Written with another key, or edited: no session.
        assert_eq!(a.record_from_fields(&name, fields(&b, &r)), None);
        let mut edited = fields(&a, &r);
        edited[1] = Some("jane".into());
        assert_eq!(a.record_from_fields(&name, edited), None, "another user's name on one's own record");
        let mut longer = fields(&a, &r);
        longer[4] = Some("999999".into());
        assert_eq!(a.record_from_fields(&name, longer), None, "a later absolute end");
        // A good record under another session's name.
        assert_eq!(a.record_from_fields(&a.name(&SessionId([8; 32])), fields(&a, &r)), None);
        // The last-seen time may move (each touch moves it).
        let mut touched = fields(&a, &r);
        touched[3] = Some("3".into());
        assert_eq!(a.record_from_fields(&name, touched).map(|r| r.last_seen), Some(3));
    }

    #[test]
    fn pending_logins_are_named_and_sealed_with_the_key() {
        let (_d1, a) = store(&[1; 32]);
        let (_d2, b) = store(&[2; 32]);
        let p = PendingRecord {
            id: SessionId([5; 32]),
            username: "jane".into(),
            expires_at: 9,
            remember: false,
            next: "/".into(),
        };
        assert_ne!(a.pending_key(&p.id), b.pending_key(&p.id));
        assert!(!a.pending_key(&p.id).contains(&hex(&p.id.0)), "the name is not the id");
        let tag = a.pending_mac(&p).finalize().into_bytes();
        assert!(a.pending_mac(&p).verify_slice(&tag).is_ok());
        assert!(b.pending_mac(&p).verify_slice(&tag).is_err(), "another key");
        for edited in [
            PendingRecord { username: "john".into(), ..p.clone() },
            PendingRecord { expires_at: 99, ..p.clone() },
            PendingRecord { remember: true, ..p.clone() },
            PendingRecord { next: "/admin".into(), ..p.clone() },
        ] {
            assert!(a.pending_mac(&edited).verify_slice(&tag).is_err(), "{edited:?}");
        }
    }

    #[test]
    fn a_short_or_missing_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, [1u8; 31]).unwrap();
        assert!(read_secret_key(&short).unwrap_err().contains("fewer than 32"));
        assert!(read_secret_key(&dir.path().join("none")).unwrap_err().contains("none"));
    }

    #[test]
    fn ids_round_trip_through_hex() {
        assert_eq!(unhex(&hex(&[0xab; 32])), Some([0xab; 32]));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn no_password_in_the_label() {
        let (_dir, store) = store(&[1; 32]);
        assert!(!store.label.contains("hunter2"), "{}", store.label);
        assert!(store.label.contains("127.0.0.1:6379/3"), "{}", store.label);
    }
}
