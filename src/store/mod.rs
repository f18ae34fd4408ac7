//! Where sessions and failed-login counters live, behind one trait so that the
//! handlers never know which store a deployment chose.

#[cfg(feature = "redis")]
pub mod redis;
pub mod sqlite;

use std::fmt;

use crate::config::Store;

/// The SHA-256 of a session token: the store's key for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 32]);

impl SessionId {
    /// A short, non-secret label for logs and `webauth session list`.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A session as the store keeps it (no token: only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub username: String,
    pub created: i64,
    pub last_seen: i64,
    /// The absolute end of the session (login time plus its lifetime).
    pub expires_at: i64,
    /// This session's idle timeout in seconds ("remember me" may set a longer
    /// one); 0: the configuration's.
    pub idle_timeout: i64,
}

impl SessionRecord {
    /// The idle timeout that applies to this session under `default`.
    pub fn idle(&self, default: i64) -> i64 {
        if self.idle_timeout > 0 {
            self.idle_timeout
        } else {
            default
        }
    }
}

/// A login halfway through: the password was right, the second factor is
/// still to come. Kept under the SHA-256 of its own token, like a session,
/// but in a place of its own: it is never a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub id: SessionId,
    pub username: String,
    pub expires_at: i64,
    /// "Remember me" as chosen at the password step.
    pub remember: bool,
    /// Where to go after the code (a safe local path, checked at the password step).
    pub next: String,
}

/// The rule a failure counter follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window: i64,
    pub ban: i64,
}

/// What the store decided about a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// A ban is in force until then: the attempt is refused, not counted.
    pub refused_until: Option<i64>,
    /// Counting this attempt started a ban (on later attempts).
    pub started_ban: bool,
}

/// The store could not do what was asked. Every variant maps to `503`.
#[derive(Debug)]
pub enum StoreError {
    /// Locked for longer than the busy timeout, read-only, unreadable, missing.
    Unavailable { store: String, cause: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable { store, cause } => write!(f, "session store {store}: {cause}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Sessions and failed-login counters.
///
/// Every method is one short transaction, safe when many CGI processes and
/// FastCGI workers use the same store at once.
///
/// `idle` is the idle timeout that applies to the session (see
/// [`SessionRecord::idle`]): a store with native expiry lets the session's
/// data lapse at the first of its idle and absolute ends.
pub trait SessionStore {
    fn insert(&mut self, record: &SessionRecord, idle: i64) -> Result<(), StoreError>;
    fn get(&mut self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// [`SessionStore::get`] for each id, in order (one round trip where the
    /// store is across a network).
    fn get_many(&mut self, ids: &[SessionId]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        ids.iter().map(|id| self.get(id)).collect()
    }
    /// Records that the session was used at `now`; does nothing if it is gone.
    fn touch(&mut self, id: &SessionId, now: i64, idle: i64) -> Result<(), StoreError>;
    fn delete(&mut self, id: &SessionId) -> Result<(), StoreError>;
    /// Ends every session of a user, and their logins halfway through (pending
    /// second-factor steps); returns how many sessions there were.
    fn delete_user(&mut self, username: &str) -> Result<usize, StoreError>;
    fn list(&mut self) -> Result<Vec<SessionRecord>, StoreError>;
    /// Removes sessions past their idle (their own, or `idle_timeout`) or
    /// absolute end, and stale counters.
    fn purge(&mut self, now: i64, idle_timeout: i64, failure_window: i64) -> Result<usize, StoreError>;

    /// Decides a login attempt in one transaction: refused if any key is
    /// banned at `now`; otherwise counted on every key before the password is
    /// verified (a key reaching its limit within its window is banned), so
    /// that parallel attempts cannot all slip in before the first is counted.
    fn attempt(&mut self, keys: &[(String, Limit)], now: i64) -> Result<Attempt, StoreError>;
    /// After a successful login: forgets the counts on `clear`, and takes the
    /// attempt back from the counts on `forgive`.
    fn succeeded(&mut self, clear: &[String], forgive: &[String]) -> Result<(), StoreError>;

    /// Keeps a pending second-factor step until its `expires_at`.
    fn insert_pending(&mut self, record: &PendingRecord, now: i64) -> Result<(), StoreError>;
    /// The pending step, if it is there and has not expired at `now`.
    fn get_pending(&mut self, id: &SessionId, now: i64) -> Result<Option<PendingRecord>, StoreError>;
    /// Removes a pending step; whether it was there. The step that removes
    /// it is the one that may finish the login (two at once: one wins).
    fn take_pending(&mut self, id: &SessionId) -> Result<bool, StoreError>;
    /// Records that `username` used the TOTP code of time step `step`, if it
    /// is later than the last one they used: one atomic compare-and-set, so
    /// a code works once across processes and hosts. `false`: a replay.
    fn use_totp_step(&mut self, username: &str, step: i64) -> Result<bool, StoreError>;
    /// Records that `username` used the recovery code hashed `hash`, if they
    /// had not: atomic like [`SessionStore::use_totp_step`]. `false`: used before.
    fn use_recovery_code(&mut self, username: &str, hash: &str, now: i64) -> Result<bool, StoreError>;
    /// The hashes of the recovery codes `username` has used.
    fn used_recovery_codes(&mut self, username: &str) -> Result<Vec<String>, StoreError>;
}

/// Opens the store the configuration names if it exists already: for the
/// admin command, which runs as root and must not create a store file the
/// web server's user then cannot write.
pub fn open_existing(store: &Store) -> Result<Option<Box<dyn SessionStore>>, StoreError> {
    match store {
        Store::Sqlite(path) if !path.exists() => Ok(None),
        _ => open(store).map(Some),
    }
}

/// Opens the store the configuration names.
pub fn open(store: &Store) -> Result<Box<dyn SessionStore>, StoreError> {
    match store {
        Store::Sqlite(path) => Ok(Box::new(sqlite::SqliteStore::open(&path.to_string_lossy())?)),
        #[cfg(feature = "redis")]
        Store::Redis { url, secret_key } => Ok(Box::new(redis::RedisStore::open(url, secret_key)?)),
        // Refused when the configuration is read; kept for the match.
        #[cfg(not(feature = "redis"))]
        Store::Redis { url, .. } => Err(StoreError::Unavailable {
            store: url.to_string(),
            cause: "this build has no Redis store (the redis feature)".into(),
        }),
    }
}
