//! File-system watching: one inotify watcher (via `notify`) for all folder
//! jobs, feeding touched paths into [`Pending`]. The watcher only says
//! *where* to look; what changed is decided by re-scanning those paths, so
//! a lost or reordered event can at worst delay a change, never corrupt one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use notify::event::{AccessKind, AccessMode};
use notify::{ErrorKind, Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::pending::Pending;
use crate::config::Config;
use crate::source::scope::key_under;

/// What the watcher thread and the daemon loop share.
#[derive(Default)]
pub struct Shared {
    pub pending: Mutex<Pending>,
    /// Woken on every change to `pending`.
    pub wake: Notify,
}

impl Shared {
    pub fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Root {
    job: String,
    path: PathBuf,
}

/// Starts watching every job's root. Problems (no inotify, watch limit
/// reached) are logged and leave the daemon on periodic full reconciles
/// for the affected jobs; they do not stop it.
pub fn start(
    config: &Config,
    avoid: &[PathBuf],
    shared: Arc<Shared>,
) -> Option<RecommendedWatcher> {
    let roots: Vec<Root> = config
        .jobs
        .iter()
        .filter_map(|j| {
            Some(Root {
                job: j.name.clone(),
                path: j.folder()?.root.clone(),
            })
        })
        .collect();
    let avoid = avoid.to_vec();
    let handler_shared = shared.clone();
    let handler = move |res: notify::Result<Event>| {
        handle(&handler_shared, &roots, &avoid, res);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot watch folders ({e}); changes are picked up by the periodic full reconcile only");
            return None;
        }
    };
    for job in &config.jobs {
        let Some(folder) = job.folder() else {
            continue;
        };
        match watcher.watch(&folder.root, RecursiveMode::Recursive) {
            Ok(()) => tracing::info!(job = %job.name, root = %folder.root.display(), "watching"),
            Err(e) => {
                report_error(&e, Some(&job.name));
                // Whatever happened while the watch was incomplete is found
                // by a full pass.
                shared.pending().rescan(&job.name, Instant::now());
            }
        }
    }
    Some(watcher)
}

fn handle(shared: &Shared, roots: &[Root], avoid: &[PathBuf], res: notify::Result<Event>) {
    let now = Instant::now();
    match res {
        Ok(event) => {
            tracing::trace!(kind = ?event.kind, paths = ?event.paths, "file event");
            if event.need_rescan() {
                tracing::warn!("the kernel dropped file events (inotify queue overflow): rescanning everything; raise it with `sysctl fs.inotify.max_queued_events=65536`");
                let mut pending = shared.pending();
                for r in roots {
                    pending.rescan(&r.job, now);
                }
            } else if is_noise(&event.kind) {
                return;
            } else {
                let mut pending = shared.pending();
                for path in &event.paths {
                    if avoid.iter().any(|a| a == path) {
                        continue;
                    }
                    for r in roots {
                        if let Some(key) = key_under(&r.path, path) {
                            pending.touch(&r.job, key, now);
                        }
                    }
                }
            }
        }
        Err(e) => {
            report_error(&e, None);
            let mut pending = shared.pending();
            for r in roots {
                if e.paths.is_empty() {
                    pending.rescan(&r.job, now);
                }
                for path in &e.paths {
                    if let Some(key) = key_under(&r.path, path) {
                        pending.touch(&r.job, key, now);
                    }
                }
            }
        }
    }
    shared.wake.notify_one();
}

/// Opening and reading files (kbsync's own hashing among them) changes
/// nothing; closing a file that was open for writing does.
fn is_noise(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

fn report_error(e: &notify::Error, job: Option<&str>) {
    let job = job.unwrap_or("*");
    match &e.kind {
        ErrorKind::MaxFilesWatch => tracing::error!(
            %job,
            "the inotify watch limit is reached, so some folders are not watched: changes there are only picked up by the periodic full reconcile. Raise the limit with `sysctl fs.inotify.max_user_watches=1048576` (persist it in /etc/sysctl.d/)"
        ),
        ErrorKind::Io(io) if io.raw_os_error() == Some(24) => tracing::error!(
            %job,
            "too many inotify instances for this user; raise `sysctl fs.inotify.max_user_instances`"
        ),
        _ => tracing::warn!(%job, paths = ?e.paths, "watch error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, Flag, ModifyKind};
    use std::time::Duration;

    fn setup() -> (Shared, Vec<Root>, Vec<PathBuf>) {
        let roots = vec![
            Root {
                job: "a".into(),
                path: "/data/a".into(),
            },
            Root {
                job: "b".into(),
                path: "/data/b".into(),
            },
        ];
        (
            Shared::default(),
            roots,
            vec!["/data/a/kbsync.db-wal".into()],
        )
    }

    fn due(shared: &Shared) -> Vec<(String, crate::source::Scope)> {
        let far = Instant::now() + Duration::from_secs(3600);
        shared
            .pending()
            .take_due(far, Duration::ZERO, Duration::ZERO)
    }

    fn event(kind: EventKind, path: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(path.into()))
    }

    #[test]
    fn changes_land_in_the_job_whose_root_holds_them() {
        let (shared, roots, avoid) = setup();
        let modify = EventKind::Modify(ModifyKind::Any);
        handle(&shared, &roots, &avoid, event(modify, "/data/a/x/y.md"));
        handle(&shared, &roots, &avoid, event(modify, "/elsewhere/z.md"));
        let d = due(&shared);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "a");
        assert_eq!(d[0].1.paths().collect::<Vec<_>>(), ["x/y.md"]);
    }

    #[test]
    fn reads_and_the_state_file_are_not_changes() {
        let (shared, roots, avoid) = setup();
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read_done = EventKind::Access(AccessKind::Close(AccessMode::Read));
        handle(&shared, &roots, &avoid, event(open, "/data/a/x.md"));
        handle(&shared, &roots, &avoid, event(read_done, "/data/a/x.md"));
        let modify = EventKind::Modify(ModifyKind::Any);
        handle(
            &shared,
            &roots,
            &avoid,
            event(modify, "/data/a/kbsync.db-wal"),
        );
        assert!(due(&shared).is_empty());
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        handle(&shared, &roots, &avoid, event(written, "/data/b/new.md"));
        assert_eq!(due(&shared).len(), 1);
    }

    #[test]
    fn lost_events_mean_a_full_rescan_of_every_job() {
        let (shared, roots, avoid) = setup();
        let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        handle(&shared, &roots, &avoid, Ok(overflow));
        let d = due(&shared);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|(_, s)| s.is_all()));
        // A watch error without paths (e.g. the watch limit) does the same.
        let err = notify::Error::new(ErrorKind::MaxFilesWatch);
        handle(&shared, &roots, &avoid, Err(err));
        assert!(due(&shared).iter().all(|(_, s)| s.is_all()));
        let created = EventKind::Create(CreateKind::Folder);
        handle(&shared, &roots, &avoid, event(created, "/data/b"));
        assert!(due(&shared)[0].1.is_all(), "the root itself: everything");
    }
}
