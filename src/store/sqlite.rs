//! The embedded store: one SQLite file in WAL mode, shared by every CGI
//! process and FastCGI worker on the host.
//!
//! WAL lets readers go on while one process writes; the busy timeout makes a
//! writer wait its turn instead of failing with "database is locked". The
//! -wal and -shm files stay between processes (see [`keep_wal_files`]), so a
//! CGI request that only reads creates and deletes no file. Every
//! write is one short `BEGIN IMMEDIATE` transaction, so a process killed
//! mid-request leaves at most a rolled-back journal behind.

use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::SessionId;
use super::{Attempt, Limit, PendingRecord, SessionRecord, SessionStore, StoreError};
use crate::{files, totp};

const SCHEMA_VERSION: i64 = 3;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id         BLOB PRIMARY KEY,
    username   TEXT NOT NULL,
    created    INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    idle_timeout INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_username ON sessions(username);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions(last_seen);
CREATE TABLE IF NOT EXISTS failures (
    key          TEXT PRIMARY KEY,
    count        INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    banned_until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    id         BLOB PRIMARY KEY,
    username   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    remember   INTEGER NOT NULL,
    next       TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totp_steps (
    username  TEXT PRIMARY KEY,
    last_step INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recovery_used (
    username TEXT NOT NULL,
    hash     TEXT NOT NULL,
    used_at  INTEGER NOT NULL,
    PRIMARY KEY (username, hash)
) WITHOUT ROWID;
";

pub struct SqliteStore {
    path: String,
    conn: Connection,
}

impl SqliteStore {
    /// Opens (and on first use creates) the store at `path`. The directory
    /// must exist and be writable by the web server's user.
    ///
    /// The file is created by [`files::open_private`] before SQLite sees it
    /// (an empty file is a new database), because SQLite would create it
    /// 0644 under the usual umask; SQLite then gives its -wal and -shm files
    /// the database file's mode.
    pub fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let fail = |e: rusqlite::Error| unavailable(path, e);
        if let Err(e) = files::open_private(std::path::Path::new(path)) {
            return Err(StoreError::Unavailable {
                store: format!("sqlite:{path}"),
                cause: format!("{e} (does the directory exist and can this user write it and the file?)"),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        // SQLite falls back to read-only when the file is not writable; it
        // would then serve reads and fail every write, and leave -wal/-shm
        // files behind that stay read-only after the file is fixed.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(fail)? {
            return Err(StoreError::Unavailable {
                store: format!("sqlite:{path}"),
                cause: "the store is read-only (can this user write the file and its directory?)".into(),
            });
        }
        keep_wal_files(&conn).map_err(fail)?;
        let mut store = SqliteStore { path: path.to_string(), conn };
        // Processes that open a new store at once race to switch it to WAL,
        // and that switch can fail busy without waiting for the busy
        // timeout: try again (the migration is idempotent) for as long.
        let started = std::time::Instant::now();
        loop {
            match store.migrate() {
                Ok(()) => return Ok(store),
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        // journal_mode cannot change inside a transaction; it sticks to the file.
        self.conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read again under the write lock: another process may have migrated.
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 1 {
            // Version 2: each session may have its own idle timeout (remember me).
            tx.execute_batch("ALTER TABLE sessions ADD COLUMN idle_timeout INTEGER NOT NULL DEFAULT 0")?;
        }
        // Version 3 only adds tables (the second factor), which SCHEMA creates.
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        tx.commit()
    }

    fn fail(&self, e: rusqlite::Error) -> StoreError {
        unavailable(&self.path, e)
    }
}

/// Keeps the -wal and -shm files when the last connection closes, emptied.
///
/// By default the last connection to close (every CGI process, on every
/// request) checkpoints, then deletes both files, and the next one creates
/// them again: two file creations and two unlinks per request, with their
/// directory writes. Persistent, they are created once. `journal_size_limit
/// = 0` has the closing connection truncate the WAL after its checkpoint: a
/// WAL left full of already-copied frames would be read again, whole, by the
/// next process to open the store (recovery), and copied again at its close.
fn keep_wal_files(conn: &Connection) -> rusqlite::Result<()> {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the connection's handle is open for as long as `conn` lives;
    // SQLITE_FCNTL_PERSIST_WAL reads and writes one int through the pointer,
    // which points at `on` for the length of the call.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            Some("SQLITE_FCNTL_PERSIST_WAL".into()),
        ));
    }
    conn.query_row("PRAGMA journal_size_limit = 0", [], |_| Ok(()))?;
    // In WAL mode, NORMAL syncs the disk at checkpoints rather than at every
    // commit: a login's four short writes waited for the disk four times
    // (tens of ms on a shared host). A crash of the program loses nothing; a
    // power cut may lose the last commits (a session just issued, a failure
    // just counted), never the file's consistency.
    conn.pragma_update(None, "synchronous", "NORMAL")
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn unavailable(path: &str, e: rusqlite::Error) -> StoreError {
    let mut cause = e.to_string();
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == rusqlite::ErrorCode::CannotOpen {
            cause.push_str(" (does the directory exist and can this user write it?)");
        }
    }
    StoreError::Unavailable { store: format!("sqlite:{path}"), cause }
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let id: Vec<u8> = row.get(0)?;
    let mut bytes = [0u8; 32];
    if id.len() == 32 {
        bytes.copy_from_slice(&id);
    }
    Ok(SessionRecord {
        id: SessionId(bytes),
        username: row.get(1)?,
        created: row.get(2)?,
        last_seen: row.get(3)?,
        expires_at: row.get(4)?,
        idle_timeout: row.get(5)?,
    })
}

impl SessionStore for SqliteStore {
    fn insert(&mut self, r: &SessionRecord, _idle: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (id, username, created, last_seen, expires_at, idle_timeout) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![&r.id.0[..], r.username, r.created, r.last_seen, r.expires_at, r.idle_timeout])
            })
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn get(&mut self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, username, created, last_seen, expires_at, idle_timeout FROM sessions WHERE id = ?1",
            )
            .and_then(|mut s| s.query_row(params![&id.0[..]], record_from_row).optional())
            .map_err(|e| self.fail(e))
    }

    fn touch(&mut self, id: &SessionId, now: i64, _idle: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE sessions SET last_seen = max(last_seen, ?2) WHERE id = ?1")
            .and_then(|mut s| s.execute(params![&id.0[..], now]))
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn delete(&mut self, id: &SessionId) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM sessions WHERE id = ?1")
            .and_then(|mut s| s.execute(params![&id.0[..]]))
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn delete_user(&mut self, username: &str) -> Result<usize, StoreError> {
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM sessions WHERE username = ?1", params![username])?;
            // A login halfway through ends too: it was begun with what changed.
            tx.execute("DELETE FROM pending WHERE username = ?1", params![username])?;
            tx.commit()?;
            Ok(n)
        })();
        result.map_err(|e| self.fail(e))
    }

    fn list(&mut self) -> Result<Vec<SessionRecord>, StoreError> {
        let result = (|| {
            let mut s = self.conn.prepare(
                "SELECT id, username, created, last_seen, expires_at, idle_timeout FROM sessions \
                 ORDER BY username, created, id",
            )?;
            let rows = s.query_map([], record_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        result.map_err(|e| self.fail(e))
    }

    fn purge(&mut self, now: i64, idle_timeout: i64, failure_window: i64) -> Result<usize, StoreError> {
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM sessions WHERE expires_at <= ?1 \
                 OR last_seen <= ?1 - (CASE WHEN idle_timeout > 0 THEN idle_timeout ELSE ?2 END)",
                params![now, idle_timeout],
            )?;
            tx.execute(
                "DELETE FROM failures WHERE banned_until <= ?1 AND window_start <= ?1 - ?2",
                params![now, failure_window],
            )?;
            tx.execute("DELETE FROM pending WHERE expires_at <= ?1", params![now])?;
            // A step's code is accepted up to SKEW steps after it: an older
            // last step refuses nothing that would be accepted anyway.
            tx.execute("DELETE FROM totp_steps WHERE last_step < ?1", params![totp::step_of(now) - totp::SKEW - 1])?;
            tx.commit()?;
            Ok(n)
        })();
        result.map_err(|e| self.fail(e))
    }

    fn attempt(&mut self, keys: &[(String, Limit)], now: i64) -> Result<Attempt, StoreError> {
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut refused_until: Option<i64> = None;
            for (key, _) in keys {
                let until: Option<i64> = tx
                    .prepare_cached("SELECT banned_until FROM failures WHERE key = ?1 AND banned_until > ?2")?
                    .query_row(params![key, now], |r| r.get(0))
                    .optional()?;
                refused_until = refused_until.max(until);
            }
            if refused_until.is_some() {
                return Ok(Attempt { refused_until, started_ban: false });
            }
            let mut started_ban = false;
            for (key, limit) in keys {
                let row: Option<(i64, i64)> = tx
                    .prepare_cached("SELECT count, window_start FROM failures WHERE key = ?1")?
                    .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (count, start) = match row {
                    Some((count, start)) if now - start < limit.window => (count + 1, start),
                    _ => (1, now),
                };
                // Reaching the limit bans the key and starts a fresh count, so
                // the attempts after a ban are counted anew.
                let (count, start, banned) = if count >= limit.max as i64 {
                    started_ban = true;
                    (0, now, now + limit.ban)
                } else {
                    (count, start, 0)
                };
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO failures (key, count, window_start, banned_until) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![key, count, start, banned])?;
            }
            tx.commit()?;
            Ok(Attempt { refused_until: None, started_ban })
        })();
        result.map_err(|e| self.fail(e))
    }

    fn succeeded(&mut self, clear: &[String], forgive: &[String]) -> Result<(), StoreError> {
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for key in clear {
                tx.prepare_cached("DELETE FROM failures WHERE key = ?1")?.execute(params![key])?;
            }
            for key in forgive {
                tx.prepare_cached("UPDATE failures SET count = max(count - 1, 0) WHERE key = ?1")?
                    .execute(params![key])?;
            }
            tx.commit()
        })();
        result.map_err(|e| self.fail(e))
    }

    fn insert_pending(&mut self, p: &PendingRecord, _now: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO pending (id, username, expires_at, remember, next) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![&p.id.0[..], p.username, p.expires_at, p.remember, p.next]))
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn get_pending(&mut self, id: &SessionId, now: i64) -> Result<Option<PendingRecord>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT username, expires_at, remember, next FROM pending WHERE id = ?1 AND expires_at > ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![&id.0[..], now], |r| {
                    Ok(PendingRecord {
                        id: *id,
                        username: r.get(0)?,
                        expires_at: r.get(1)?,
                        remember: r.get(2)?,
                        next: r.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.fail(e))
    }

    fn take_pending(&mut self, id: &SessionId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM pending WHERE id = ?1")
            .and_then(|mut s| s.execute(params![&id.0[..]]))
            .map(|n| n == 1)
            .map_err(|e| self.fail(e))
    }

    fn use_totp_step(&mut self, username: &str, step: i64) -> Result<bool, StoreError> {
        // One statement, so one atomic write under SQLite's lock: it changes
        // a row only when the step is later than the one recorded.
        self.conn
            .prepare_cached(
                "INSERT INTO totp_steps (username, last_step) VALUES (?1, ?2) \
                 ON CONFLICT (username) DO UPDATE SET last_step = excluded.last_step \
                 WHERE excluded.last_step > totp_steps.last_step",
            )
            .and_then(|mut s| s.execute(params![username, step]))
            .map(|n| n == 1)
            .map_err(|e| self.fail(e))
    }

    fn use_recovery_code(&mut self, username: &str, hash: &str, now: i64) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO recovery_used (username, hash, used_at) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![username, hash, now]))
            .map(|n| n == 1)
            .map_err(|e| self.fail(e))
    }

    fn used_recovery_codes(&mut self, username: &str) -> Result<Vec<String>, StoreError> {
        let result = (|| {
            let mut s = self.conn.prepare_cached("SELECT hash FROM recovery_used WHERE username = ?1")?;
            let rows = s.query_map(params![username], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        })();
        result.map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Token;

    fn temp_store() -> (tempdir::Dir, SqliteStore) {
        let dir = tempdir::Dir::new();
        let store = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_version_1_store_is_migrated_and_keeps_its_sessions() {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE sessions (id BLOB PRIMARY KEY, username TEXT NOT NULL, created INTEGER NOT NULL, \
                 last_seen INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID; \
                 CREATE TABLE failures (key TEXT PRIMARY KEY, count INTEGER NOT NULL, window_start INTEGER NOT NULL, \
                 banned_until INTEGER NOT NULL) WITHOUT ROWID; PRAGMA user_version = 1;",
            )
            .unwrap();
            conn.execute("INSERT INTO sessions VALUES (?1, 'john', 1, 2, 3)", params![&[7u8; 32][..]]).unwrap();
        }
        let mut store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let old = store.get(&SessionId([7; 32])).unwrap().expect("the old session");
        assert_eq!((old.username.as_str(), old.expires_at, old.idle_timeout), ("john", 3, 0));
        let version: i64 = store.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(store);
        assert!(SqliteStore::open(path.to_str().unwrap()).is_ok(), "opens again without migrating twice");
    }

    #[test]
    fn processes_creating_the_store_at_once_all_get_it() {
        for _ in 0..20 {
            let dir = tempdir::Dir::new();
            let path = dir.path().join("s.db").to_str().unwrap().to_string();
            let barrier = std::sync::Barrier::new(6);
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        barrier.wait();
                        if let Err(e) = SqliteStore::open(&path) {
                            panic!("{e}");
                        }
                    });
                }
            });
        }
    }

    fn record(username: &str, now: i64) -> SessionRecord {
        let id = Token::generate().unwrap().id();
        SessionRecord {
            id,
            username: username.into(),
            created: now,
            last_seen: now,
            expires_at: now + 100,
            idle_timeout: 0,
        }
    }

    #[test]
    fn insert_get_touch_delete() {
        let (_dir, mut s) = temp_store();
        let r = record("john", 1000);
        s.insert(&r, 60).unwrap();
        assert_eq!(s.get(&r.id).unwrap(), Some(r.clone()));
        s.touch(&r.id, 1050, 60).unwrap();
        assert_eq!(s.get(&r.id).unwrap().unwrap().last_seen, 1050);
        s.delete(&r.id).unwrap();
        assert_eq!(s.get(&r.id).unwrap(), None);
    }

    #[test]
    fn delete_user_ends_only_that_users_sessions() {
        let (_dir, mut s) = temp_store();
        let (a, b, c) = (record("john", 1), record("john", 1), record("jane", 1));
        for r in [&a, &b, &c] {
            s.insert(r, 60).unwrap();
        }
        assert_eq!(s.delete_user("john").unwrap(), 2);
        assert_eq!(s.list().unwrap(), vec![c]);
    }

    #[test]
    fn purge_removes_idle_and_expired_sessions() {
        let (_dir, mut s) = temp_store();
        let fresh = record("a", 1000);
        let idle = record("b", 100);
        s.insert(&fresh, 60).unwrap();
        s.insert(&idle, 60).unwrap();
        assert_eq!(s.purge(1010, 500, 600).unwrap(), 1);
        assert_eq!(s.list().unwrap(), vec![fresh]);
    }

    fn refused(until: i64) -> Attempt {
        Attempt { refused_until: Some(until), started_ban: false }
    }

    const COUNTED: Attempt = Attempt { refused_until: None, started_ban: false };
    const BANNING: Attempt = Attempt { refused_until: None, started_ban: true };

    #[test]
    fn attempts_are_counted_and_the_limit_bans_the_next_ones() {
        let (_dir, mut s) = temp_store();
        let keys = vec![("pair:john|1.2.3.4".to_string(), Limit { max: 3, window: 60, ban: 30 })];
        assert_eq!(s.attempt(&keys, 100).unwrap(), COUNTED);
        assert_eq!(s.attempt(&keys, 101).unwrap(), COUNTED);
        assert_eq!(s.attempt(&keys, 102).unwrap(), BANNING);
        assert_eq!(s.attempt(&keys, 110).unwrap(), refused(132));
        assert_eq!(s.attempt(&keys, 131).unwrap(), refused(132));
        assert_eq!(s.attempt(&keys, 132).unwrap(), COUNTED, "the ban lapsed");
    }

    #[test]
    fn attempts_outside_the_window_start_a_new_count() {
        let (_dir, mut s) = temp_store();
        let keys = vec![("addr:1.2.3.4".to_string(), Limit { max: 2, window: 10, ban: 30 })];
        assert_eq!(s.attempt(&keys, 100).unwrap(), COUNTED);
        assert_eq!(s.attempt(&keys, 200).unwrap(), COUNTED);
        assert_eq!(s.attempt(&keys, 201).unwrap(), BANNING);
    }

    #[test]
    fn success_clears_and_forgives() {
        let (_dir, mut s) = temp_store();
        let limit = Limit { max: 3, window: 60, ban: 30 };
        let keys = vec![("user:john".to_string(), limit), ("addr:1.2.3.4".to_string(), limit)];
        s.attempt(&keys, 100).unwrap();
        s.attempt(&keys, 101).unwrap();
        s.succeeded(&["user:john".to_string()], &["addr:1.2.3.4".to_string()]).unwrap();
        // user:john starts again at zero; addr is at one: two more attempts ban it.
        assert_eq!(s.attempt(&keys, 102).unwrap(), COUNTED);
        assert_eq!(s.attempt(&keys, 103).unwrap(), BANNING);
    }

    #[test]
    fn a_ban_on_any_key_refuses_without_counting_the_others() {
        let (_dir, mut s) = temp_store();
        let tight = Limit { max: 1, window: 60, ban: 30 };
        let loose = Limit { max: 100, window: 60, ban: 30 };
        let keys = vec![("pair:x".to_string(), tight), ("user:x".to_string(), loose)];
        assert_eq!(s.attempt(&keys, 100).unwrap(), BANNING);
        assert_eq!(s.attempt(&keys, 101).unwrap(), refused(130));
        let count: i64 = s.conn.query_row("SELECT count FROM failures WHERE key = 'user:x'", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 1, "a refused attempt is not counted");
    }

    #[test]
    fn a_version_2_store_gains_the_second_factor_tables() {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("v2.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE sessions (id BLOB PRIMARY KEY, username TEXT NOT NULL, created INTEGER NOT NULL, \
                 last_seen INTEGER NOT NULL, expires_at INTEGER NOT NULL, idle_timeout INTEGER NOT NULL DEFAULT 0) \
                 WITHOUT ROWID; CREATE TABLE failures (key TEXT PRIMARY KEY, count INTEGER NOT NULL, \
                 window_start INTEGER NOT NULL, banned_until INTEGER NOT NULL) WITHOUT ROWID; \
                 PRAGMA user_version = 2;",
            )
            .unwrap();
            conn.execute("INSERT INTO sessions VALUES (?1, 'john', 1, 2, 3, 0)", params![&[7u8; 32][..]]).unwrap();
        }
        let mut store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        assert!(store.get(&SessionId([7; 32])).unwrap().is_some(), "the old session is kept");
        assert!(store.use_totp_step("john", 10).unwrap());
        let version: i64 = store.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_totp_step_is_used_once_and_only_later_ones_after_it() {
        let (_dir, mut s) = temp_store();
        assert!(s.use_totp_step("john", 100).unwrap());
        assert!(!s.use_totp_step("john", 100).unwrap(), "the same step again is a replay");
        assert!(!s.use_totp_step("john", 99).unwrap(), "an earlier step after a later one");
        assert!(s.use_totp_step("john", 101).unwrap());
        assert!(s.use_totp_step("jane", 100).unwrap(), "per user");
    }

    #[test]
    fn a_recovery_code_is_used_once() {
        let (_dir, mut s) = temp_store();
        assert!(s.use_recovery_code("john", "aa", 1).unwrap());
        assert!(!s.use_recovery_code("john", "aa", 2).unwrap());
        assert!(s.use_recovery_code("jane", "aa", 2).unwrap(), "per user");
        assert_eq!(s.used_recovery_codes("john").unwrap(), vec!["aa".to_string()]);
    }

    #[test]
    fn pending_steps_expire_and_are_taken_once() {
        let (_dir, mut s) = temp_store();
        let p = PendingRecord {
            id: Token::generate().unwrap().id(),
            username: "john".into(),
            expires_at: 1300,
            remember: true,
            next: "/x".into(),
        };
        s.insert_pending(&p, 1000).unwrap();
        assert_eq!(s.get_pending(&p.id, 1299).unwrap(), Some(p.clone()));
        assert_eq!(s.get_pending(&p.id, 1300).unwrap(), None, "expired");
        assert_eq!(s.get(&p.id).unwrap(), None, "a pending step is no session");
        assert!(s.take_pending(&p.id).unwrap());
        assert!(!s.take_pending(&p.id).unwrap(), "taken once");
        s.insert_pending(&p, 1000).unwrap();
        s.purge(1300, 60, 60).unwrap();
        assert!(!s.take_pending(&p.id).unwrap(), "purged when expired");
    }

    #[test]
    fn reopening_keeps_sessions() {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("s.db");
        let r = record("john", 1);
        SqliteStore::open(path.to_str().unwrap()).unwrap().insert(&r, 60).unwrap();
        assert_eq!(SqliteStore::open(path.to_str().unwrap()).unwrap().get(&r.id).unwrap(), Some(r));
    }

    #[test]
    fn the_wal_files_stay_empty_between_connections() {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("s.db");
        let (wal, shm) = (dir.path().join("s.db-wal"), dir.path().join("s.db-shm"));
        let r = record("john", 1);
        SqliteStore::open(path.to_str().unwrap()).unwrap().insert(&r, 60).unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "checkpointed and truncated at close");
        let inode = |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = (inode(&wal), inode(&shm));
        assert_eq!(SqliteStore::open(path.to_str().unwrap()).unwrap().get(&r.id).unwrap(), Some(r));
        assert_eq!((inode(&wal), inode(&shm)), before, "a read created no file");
    }

    #[test]
    fn missing_directory_is_unavailable_with_a_hint() {
        let err = SqliteStore::open("/nonexistent-dir-webauth/s.db").err().unwrap();
        assert!(err.to_string().contains("does the directory exist"), "{err}");
    }

    /// A temporary directory removed on drop (no extra crate for one helper).
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let name = format!(
                    "webauth-test-{}-{}",
                    std::process::id(),
                    crate::session::Token::generate().unwrap().as_str()
                );
                let path = std::env::temp_dir().join(name);
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
