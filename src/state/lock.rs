//! One writer per state file: an exclusive `flock` on `<state>.lock`, held
//! for as long as a pass or the service runs. Two writers would both upload
//! what each sees as new and duplicate documents. Readers (`status`,
//! `--dry-run`) take no lock. The kernel drops the lock when the process
//! dies, so a crash never leaves a stale one behind.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StateError;

#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

impl StateLock {
    pub fn acquire(state: &Path) -> Result<StateLock, StateError> {
        let path = lock_path(state);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Folder {
                path: state.to_owned(),
                source,
            })?;
        }
        let io = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let began = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    // A lock this process let go of may still be held for
                    // a moment by a child it forks meanwhile (the child
                    // shares the open file until it executes its program):
                    // waited for, briefly. Another process is refused.
                    if holder.trim() == own_holder() && began.elapsed() < OWN_RELEASE {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    return Err(StateError::Busy {
                        path: state.to_owned(),
                        holder: holder.trim().to_owned(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        // Who holds it, for the message a second instance prints.
        file.set_len(0).map_err(io)?;
        write!(file, "{}", own_holder()).map_err(io)?;
        Ok(StateLock { _file: file, path })
    }
}

/// How long a lock this process held may stay held by a child forked
/// just before it was let go (seen under load as a test's second pass
/// refused by its own first).
const OWN_RELEASE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the lock file says of its holder.
fn own_holder() -> String {
    format!("pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child forked while the lock was held keeps it until it executes
    /// or exits, after the parent let it go: the parent's next pass waits
    /// for that instead of refusing itself.
    #[test]
    fn a_lock_a_forked_child_still_shares_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("kbsync.db");
        let lock = StateLock::acquire(&state).unwrap();
        // The child holds the inherited lock file for 300 ms, then exits
        // (async-signal-safe calls only, as after a fork in a threaded
        // process).
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            unsafe {
                libc::usleep(300_000);
                libc::_exit(0);
            }
        }
        drop(lock);
        let again = StateLock::acquire(&state);
        let mut status = 0;
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(again.is_ok(), "{again:?}");
    }
}
