//! A plan carried out for a sink that takes content, through its verbs
//! and its hooks (`sink::verbs::ContentHooks`), in phases: restore status
//! (an upstream may update only available records) → uploads, with the
//! metadata batches sent beside them (`queue.rs`) → the rest of the
//! metadata → retiring status (`status.rs`) → deletes → forgets. State is
//! written after each confirmed step, so an interrupted pass resumes where
//! it was; a create that may have been applied unanswered is looked for
//! before anything is sent again (`lookup.rs`, `upload.rs`).

mod lookup;
mod queue;
mod status;
mod upload;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use super::Phase;
use crate::config::JobConfig;
use crate::plan::{Op, Plan, StatusAction};
use crate::sink::verbs::{Content, Verbs};
use crate::sink::{ErrorClass, Outcome, PushContext, PushError, Sink, SinkError};
use crate::state::{CachedItem, State};
use lookup::Titles;
use queue::MetaQueue;
pub use upload::replaced_but_kept;
use upload::Upload;

/// Why a record whose processing failed is deleted, for the log.
const RECREATED: &str = "to create it again";
const RETIRED: &str = "as its file is retired";

/// Carries out `plan` for `sink`, whose verbs include `content`.
pub async fn with_content(
    sink: &dyn Sink,
    content: &dyn Content,
    ctx: PushContext<'_>,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    let gone = |e: &SinkError| content.gone(e);
    let push = Push {
        job: ctx.job,
        sink,
        verbs: sink.verbs(),
        content,
        state: ctx.state,
        cached: ctx.cached,
        stop: ctx.stop,
        suspects: ctx.suspects,
        audited: ctx.audited,
        source: ctx.content,
        gone: &gone,
    };
    push.run(plan).await
}

/// One push: what it works with.
struct Push<'a> {
    job: &'a JobConfig,
    sink: &'a dyn Sink,
    verbs: Verbs<'a>,
    content: &'a dyn Content,
    state: &'a State,
    cached: &'a HashMap<String, CachedItem>,
    stop: &'a AtomicBool,
    /// Keys whose create was sent before and never confirmed.
    suspects: &'a HashSet<String>,
    audited: bool,
    source: &'a (dyn crate::source::Content + Send + Sync),
    gone: &'a dyn Fn(&SinkError) -> bool,
}

impl Push<'_> {
    async fn run(&self, plan: &Plan) -> Result<Outcome, PushError> {
        let mut out = Outcome::default();
        // Keys whose earlier step failed: later steps for them would act on
        // a record in the wrong state.
        let mut blocked: HashSet<String> = HashSet::new();

        let restore = status_ops(plan, true);
        if self.statuses(&restore, &mut out, &mut blocked).await? || self.stopping(&mut out) {
            return Ok(out);
        }
        let uploads: Vec<Upload> = upload::uploads(plan, &blocked);
        let forgets = self.orphan_looks(plan);
        let titles = self
            .listing(&uploads, forgets, &mut out, &mut blocked)
            .await?;
        if out.fatal.is_some() {
            return Ok(out);
        }
        let mut meta = MetaQueue::new(plan, &uploads, &blocked, self.cached);
        let Some(prepared) = self.prepare(&meta, &mut out).await else {
            return Ok(out);
        };
        let titles = titles.as_ref();
        self.uploads(
            &uploads,
            titles,
            &mut meta,
            &prepared,
            &mut out,
            &mut blocked,
        )
        .await?;
        if out.fatal.is_some() || self.stopping(&mut out) {
            return Ok(out);
        }
        if self.flush_metadata(&mut meta, &prepared, &mut out).await? || self.stopping(&mut out) {
            return Ok(out);
        }
        let retire = status_ops(plan, false);
        if self.statuses(&retire, &mut out, &mut blocked).await? || self.stopping(&mut out) {
            return Ok(out);
        }
        self.deletes(&plan.deletes(), &mut out).await?;
        if self.stopping(&mut out) {
            return Ok(out);
        }
        self.forget(plan, titles, &mut out).await?;
        Ok(out)
    }

    fn job_name(&self) -> &str {
        &self.job.name
    }

    /// The metadata phase's view of this push.
    fn phase(&self) -> Phase<'_> {
        Phase {
            job: self.job,
            state: self.state,
            cached: self.cached,
            stop: self.stop,
            gone: self.gone,
            binds: false,
        }
    }

    fn stopping(&self, out: &mut Outcome) -> bool {
        if self.stop.load(Ordering::SeqCst) {
            out.interrupted = true;
        }
        out.interrupted
    }

    fn fail(
        &self,
        out: &mut Outcome,
        key: &str,
        op: &'static str,
        error: SinkError,
    ) -> Result<(), PushError> {
        self.phase().fail(out, key, op, error)
    }

    /// Whether the audit found that `key`'s record failed processing (a
    /// state file that cannot say is taken as no).
    fn failed_upstream(&self, key: &str) -> bool {
        self.state
            .failed_upstream(self.job_name(), key)
            .unwrap_or(false)
    }

    /// Deletes a record whose processing failed: it can take no content
    /// and, where the upstream has status, no disable (`why`: what
    /// follows, for the log).
    async fn remove_errored(&self, id: &str, why: &str) -> Result<(), SinkError> {
        tracing::info!(record = %id, "deleting a record whose processing failed upstream, {why}");
        self.delete_record(id).await
    }

    /// Deletes record `id` through the Delete verb (one already gone
    /// counts as deleted).
    async fn delete_record(&self, id: &str) -> Result<(), SinkError> {
        let Some(verb) = self.verbs.delete else {
            return Err(SinkError::unsupported("this API cannot delete records"));
        };
        match verb.delete(&[id]).await?.pop() {
            Some(Err(refused)) => Err(refused.error),
            _ => Ok(()),
        }
    }

    /// The deletes of vanished files' records. Records the state file
    /// holds archived are un-archived first, in status batches (an
    /// archived record cannot be deleted where there is status).
    async fn deletes(&self, ops: &[(&str, &str)], out: &mut Outcome) -> Result<(), PushError> {
        if ops.is_empty() {
            return Ok(());
        }
        let Some(refused) = self.unarchive_for_delete(ops, out).await? else {
            return Ok(());
        };
        let ops: Vec<(&str, &str)> = ops
            .iter()
            .filter(|(k, _)| !refused.contains(k))
            .copied()
            .collect();
        let Some(delete) = self.verbs.delete else {
            let e = SinkError::unsupported("this sink takes no delete step");
            for (key, _) in &ops {
                self.fail(out, key, "delete", e.clone())?;
            }
            return Ok(());
        };
        super::deletes(delete, self.job_name(), self.state, self.stop, &ops, out).await
    }

    /// Forgets the keys the plan forgets. One gone while its create was
    /// unconfirmed first loses the records found under its name: one the
    /// create made would mirror nothing now. Stops at a fatal error.
    async fn forget(
        &self,
        plan: &Plan,
        titles: Option<&Titles>,
        out: &mut Outcome,
    ) -> Result<(), PushError> {
        for op in &plan.ops {
            let Op::Forget { key } = op else { continue };
            if self.suspects.contains(key) {
                if let Err(e) = self.remove_orphans(key, titles).await {
                    let fatal = e.class == ErrorClass::Fatal;
                    // Recorded on the unconfirmed create's own row, so its
                    // backoff grows while the lookup keeps failing.
                    self.fail(out, key, "create", e.clone())?;
                    if fatal {
                        out.fatal = Some(e);
                        return Ok(());
                    }
                    continue;
                }
            }
            self.state.forget(self.job_name(), key)?;
            out.forgotten += 1;
            out.did(key, "forget");
        }
        Ok(())
    }

    /// Deletes the records an unconfirmed create of vanished `key` may
    /// have made; the first error ends it.
    async fn remove_orphans(&self, key: &str, titles: Option<&Titles>) -> Result<(), SinkError> {
        for id in self.orphans(key, titles).await? {
            tracing::info!(%key, record = %id, "removing the record of an unconfirmed create whose file is gone");
            self.delete_record(&id).await?;
        }
        Ok(())
    }
}

/// The plan's status changes that bring records back (`restoring`), or
/// those that retire them.
fn status_ops(plan: &Plan, restoring: bool) -> Vec<(&str, &str, StatusAction)> {
    plan.ops
        .iter()
        .filter_map(|op| match op {
            Op::SetStatus {
                key,
                doc_id,
                action,
            } if action.restores() == restoring => Some((key.as_str(), doc_id.as_str(), *action)),
            _ => None,
        })
        .collect()
}
