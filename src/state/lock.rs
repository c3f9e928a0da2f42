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
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(StateError::Busy {
                    path: state.to_owned(),
                    holder: holder.trim().to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message a second instance prints.
        file.set_len(0).map_err(io)?;
        write!(file, "pid {}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file, path })
    }
}
