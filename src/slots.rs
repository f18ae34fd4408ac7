//! A bound on password verifications running at once on a host.
//!
//! Each argon2id verification holds 19 MiB for about 13 ms. CGI starts a
//! process per request, so a burst of logins (from many addresses, which
//! regulation does not stop) would otherwise be bounded only by the web
//! server's worker count, at tens of MiB each. A verification first takes one
//! of N slots: an exclusive lock (see [`files::lock`]) on one of N small
//! files beside the store, private to the web server's user, which the kernel
//! releases however the process ends, even by SIGKILL.
//! With none free for a while, the login is `503` with `Retry-After`.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::files::{self, Wait};

/// How long a login waits for a free slot before it is refused.
const WAIT: Duration = Duration::from_secs(2);

/// A held slot; dropping it (or the process ending) frees it.
pub struct Slot(#[allow(dead_code)] File);

/// Takes one of `count` slots in `dir`, waiting up to two seconds.
/// `Ok(None)`: all were busy that long. `Err`: the slot files cannot be used.
pub fn acquire(dir: &Path, count: u32) -> std::io::Result<Option<Slot>> {
    let slots = (0..count.max(1))
        .map(|i| files::open_private(&dir.join(format!(".webauth-verify.{i}"))))
        .collect::<std::io::Result<Vec<File>>>()?;
    let start = Instant::now();
    // Processes start at different slots so they do not all queue on the first.
    let offset = std::process::id() as usize % slots.len();
    let mut slots: Vec<Option<File>> = slots.into_iter().map(Some).collect();
    loop {
        for i in 0..slots.len() {
            let k = (i + offset) % slots.len();
            let file = slots[k].as_ref().expect("each file is taken once");
            if files::lock(file, Wait::No)? {
                return Ok(slots[k].take().map(Slot));
            }
        }
        if start.elapsed() >= WAIT {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_freed_on_drop() {
        let dir = std::env::temp_dir().join(format!("webauth-slots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = acquire(&dir, 2).unwrap().expect("first slot");
        let b = acquire(&dir, 2).unwrap().expect("second slot");
        let started = Instant::now();
        assert!(acquire(&dir, 2).unwrap().is_none(), "both slots are held");
        assert!(started.elapsed() >= WAIT);
        drop(a);
        assert!(acquire(&dir, 2).unwrap().is_some(), "a freed slot is taken again");
        drop(b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
