//! The files the programs create (the SQLite store and its -wal/-shm, the
//! verification slots) are private to their user, and the slots no longer
//! use `flock`, which anyone who could open a slot file took through a
//! read-only descriptor. (A read-only descriptor can still take a read lock
//! that conflicts with the slots' write lock: the modes are what keep other
//! users from opening the files at all.)

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{ResponseExt, TestSite};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The slot files a login left in the store's directory.
fn slot_files(site: &TestSite) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(site.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".webauth-verify."))
        .collect();
    files.sort();
    files
}

#[test]
fn store_and_slot_files_are_private_after_first_login() {
    let site = TestSite::with_env(&[("WEBAUTH_MAX_VERIFICATIONS", "2")]);
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    site.session_for("john", "johnpass");
    assert_eq!(mode(&site.store), 0o600, "sessions.db");
    let slots = slot_files(&site);
    assert_eq!(slots.len(), 2, "{slots:?}");
    for slot in &slots {
        assert_eq!(mode(slot), 0o600, "{}", slot.display());
    }
    // SQLite gives -wal and -shm the database file's mode: see them while a
    // connection holds them open.
    let mut store = webauth::store::sqlite::SqliteStore::open(site.store.to_str().unwrap()).unwrap();
    use webauth::store::SessionStore;
    store.purge(webauth::session::now(), 60, 60).unwrap();
    for suffix in ["-wal", "-shm"] {
        let path = site.store.with_file_name(format!("sessions.db{suffix}"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    if support::running_as_root() {
        // Another local user cannot read the store or open a slot file.
        use std::os::unix::process::CommandExt;
        for path in std::iter::once(&site.store).chain(&slots) {
            let out = std::process::Command::new("/bin/cat").arg(path).uid(65534).gid(65534).output().unwrap();
            assert!(!out.status.success(), "nobody read {}", path.display());
        }
    }
}

#[test]
fn flock_or_a_write_lock_through_a_read_only_descriptor_does_not_block_logins() {
    let site = TestSite::with_env(&[("WEBAUTH_MAX_VERIFICATIONS", "1")]);
    site.session_for("john", "johnpass");
    let slots = slot_files(&site);
    assert_eq!(slots.len(), 1, "{slots:?}");
    let reader = std::fs::File::open(&slots[0]).unwrap();
    // What used to take the slot: flock through a descriptor opened for reading.
    // SAFETY: flock on a descriptor this test owns.
    let _ = unsafe { libc::flock(reader.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    // The lock the slots use now needs a descriptor open for writing.
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: fcntl with a flock struct that lives across the call.
    let r = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    assert_eq!(r, -1, "a write lock through a read-only descriptor");
    let started = std::time::Instant::now();
    let reply = site.login_json("jane", "janepass");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "the login waited for the slot");
    drop(reader);
}
