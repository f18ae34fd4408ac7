//! The modes and locks of the files webauth creates and rewrites: the SQLite
//! store, the verification slots, and the users file.
//!
//! Files the programs create hold session hashes and usernames (the store)
//! or can be locked to stall logins (the slots), so they are not for other
//! local users to open: mode 0600, or 0660 when the file belongs to a group
//! that is not the process's own. That happens in a setgid directory shared
//! with the web server's group, where another account in that group (a
//! second FastCGI pool, an operator's tools) uses the same files. The mode
//! is set on the open file, so the umask does not decide it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode for a new file of group `gid`: see the module's doc.
fn private_mode(gid: u32) -> u32 {
    if gid == rustix::process::getegid().as_raw() {
        0o600
    } else {
        0o660
    }
}

/// Opens `path` for reading and writing, creating it private to this user
/// (see the module's doc) when it is missing. An existing file that others
/// can read loses those bits when it is ours (older versions made 0644).
pub fn open_private(path: &Path) -> io::Result<File> {
    // O_NOFOLLOW: a symlink planted where the file belongs (by anyone who can
    // write the directory) is refused, not followed to another file.
    let nofollow = libc::O_NOFOLLOW;
    match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).custom_flags(nofollow).open(path) {
        Ok(file) => {
            let mode = private_mode(file.metadata()?.gid());
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new().read(true).write(true).custom_flags(nofollow).open(path).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    io::Error::other(format!("{} is a symbolic link; refusing to follow it", path.display()))
                } else {
                    e
                }
            })?;
            let m = file.metadata()?;
            if !m.is_file() {
                return Err(io::Error::other(format!("{} is not a regular file", path.display())));
            }
            if m.mode() & 0o007 != 0 && m.uid() == rustix::process::geteuid().as_raw() {
                file.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o770))?;
            }
            Ok(file)
        }
        Err(e) => Err(e),
    }
}

/// Whether [`lock`] waits for the lock or gives up at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Yes,
    No,
}

/// An exclusive lock on the whole of `file`, which must be open for writing.
/// `Ok(false)`: someone else holds it (only with [`Wait::No`]).
///
/// An open-file-description lock (`F_OFD_SETLK`, Linux): it belongs to this
/// open file, not to the process, so one process can hold several (a FastCGI
/// worker, a test), and closing another descriptor of the same file does not
/// drop it. A write lock needs a descriptor open for writing, so whoever can
/// only read the file cannot take it (unlike `flock`, which took the slots
/// through read-only descriptors). A reader can still take a read lock that
/// conflicts; that is why the files are not readable by others at all.
pub fn lock(file: &File, wait: Wait) -> io::Result<bool> {
    let request = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        // Must be 0 for open-file-description locks.
        l_pid: 0,
    };
    let command = match wait {
        Wait::Yes => libc::F_OFD_SETLKW,
        Wait::No => libc::F_OFD_SETLK,
    };
    loop {
        // SAFETY: fcntl on a descriptor `file` keeps open, with a flock
        // struct that lives across the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), command, &request) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::EACCES) if wait == Wait::No => return Ok(false),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("webauth-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn new_files_are_private_whatever_the_umask() {
        let dir = temp_dir("mode");
        let path = dir.join("f");
        open_private(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_private(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640, "others lose their bits");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_planted_symlink_is_refused_not_followed() {
        let dir = temp_dir("link");
        let victim = dir.join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o646)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("slot")).unwrap();
        let err = open_private(&dir.join("slot")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o646, "the target is untouched");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_setgid_directory_of_another_group_gets_group_access() {
        let dir = temp_dir("group");
        let mode_of_new = |name: &str| {
            let path = dir.join(name);
            open_private(&path).unwrap();
            std::fs::metadata(&path).unwrap().mode() & 0o777
        };
        assert_eq!(mode_of_new("ours"), 0o600, "a file of our own group");
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&dir, None, Some(65534)).unwrap();
            assert_eq!(mode_of_new("plain"), 0o600, "without setgid the file is of our group");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2755)).unwrap();
            assert_eq!(mode_of_new("shared"), 0o660, "a file of the directory's shared group");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn locks_are_per_open_file_and_need_a_writable_descriptor() {
        let dir = temp_dir("lock");
        let path = dir.join("f");
        let a = open_private(&path).unwrap();
        let b = open_private(&path).unwrap();
        assert!(lock(&a, Wait::No).unwrap());
        assert!(!lock(&b, Wait::No).unwrap(), "a second open file of the same process is refused");
        let reader = File::open(&path).unwrap();
        assert!(lock(&reader, Wait::No).is_err(), "a read-only descriptor cannot take a write lock");
        drop(a);
        assert!(lock(&b, Wait::No).unwrap(), "freed when its file is closed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
