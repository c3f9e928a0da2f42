//! What the service's loop does for the control surface: orders from the
//! control API become pending passes; every pass is announced to the
//! requests that wait for it, and a job's change of state to
//! `[daemon.notify]`; a long pass logs its progress.

use std::time::Instant;

use crate::control::notify::{Ended, Notifier, Transitions};
use crate::control::{Control, Finished, Order};
use crate::reconcile::{JobReport, ReconcileError};
use crate::source::Scope;

use super::Pending;

/// Queues what `order` asks for.
pub fn obey(order: Order, pending: &mut Pending, now: Instant) {
    match order {
        Order::Pass { job, scope } if !scope.is_all() => {
            for path in scope.paths() {
                pending.touch(&job, path.to_owned(), now);
            }
            pending.hurry(&job);
        }
        Order::Pass { job, .. } | Order::Resumed { job } => pending.rescan_now(&job, now),
    }
}

/// Tells the waiting requests and the notify receiver how a pass ended.
pub fn announce(
    control: &Control,
    events: Option<&Notifier>,
    transitions: &mut Transitions,
    (seq, job, scope): (u64, &str, &Scope),
    result: Result<&JobReport, &ReconcileError>,
) {
    let now = crate::state::unix_now();
    let (run, ended) = match result {
        Ok(report) => (
            serde_json::json!({
                "job": job,
                "started_at": now - report.elapsed.as_secs() as i64,
                "finished_at": now,
                "converged": report.converged(),
                "settled": report.settled(),
                "summary": crate::report::summary_line(report),
                "detail": crate::reconcile::run_detail(scope, report),
            }),
            Ended::of(report),
        ),
        Err(e) => (
            serde_json::json!({
                "job": job,
                "started_at": null,
                "finished_at": now,
                "converged": false,
                "settled": false,
                "summary": format!("pass failed: {e}"),
                "detail": null,
            }),
            Ended {
                job,
                error: Some(e.to_string()),
                refused: None,
                parked: Vec::new(),
            },
        ),
    };
    control.pass_finished(Finished {
        seq,
        job: job.to_owned(),
        scope: scope.clone(),
        run,
    });
    let notes = transitions.after(ended, now);
    if let Some(events) = events {
        for note in notes {
            events.post(note);
        }
    }
}

/// Files read and uploads done since a pass began.
pub struct Progress {
    job: String,
    began: Instant,
    read: (u64, u64),
    uploaded: (u64, u64),
}

impl Progress {
    pub fn start(job: &str) -> Progress {
        Progress {
            job: job.to_owned(),
            began: Instant::now(),
            read: crate::progress::READING.get(),
            uploaded: crate::progress::UPLOADING.get(),
        }
    }

    /// `docs: 85 s in; 1200/5000 files read, 300/4800 uploads done`.
    pub fn line(&self) -> String {
        let since = |(done0, total0): (u64, u64), (done, total): (u64, u64)| {
            (done.saturating_sub(done0), total.saturating_sub(total0))
        };
        let (read, to_read) = since(self.read, crate::progress::READING.get());
        let (up, to_up) = since(self.uploaded, crate::progress::UPLOADING.get());
        format!(
            "{}: {} s in; {read}/{to_read} files read, {up}/{to_up} uploads done",
            self.job,
            self.began.elapsed().as_secs()
        )
    }
}
