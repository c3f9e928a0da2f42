//! Status changes in batches, one action at a time: the batches of one
//! action share the waits the upstream makes them take
//! (`ContentHooks::status_phase`), a batch refused whole is halved until
//! the refused record stands alone, and what a refusal means for a record
//! is the upstream's to say (`ContentHooks::status_refused`).

use std::collections::{BTreeMap, HashSet};

use futures::FutureExt;

use super::{Push, RETIRED};
use crate::plan::StatusAction;
use crate::sink::bisect::send_in_batches;
use crate::sink::verbs::{Refusal, StatusItem, StatusRefused};
use crate::sink::{Outcome, PushError, SinkError};
use crate::state::RemoteStatus;

impl Push<'_> {
    /// The status changes `ops` (key, record, action), grouped by action.
    /// Returns true on a fatal error.
    pub(super) async fn statuses(
        &self,
        ops: &[(&str, &str, StatusAction)],
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<bool, PushError> {
        if ops.is_empty() {
            return Ok(false);
        }
        let Some(status) = self.verbs.status else {
            for (key, _, action) in ops {
                let e =
                    SinkError::unsupported(format!("this sink takes no {} step", action.as_str()));
                self.fail(out, key, action.as_str(), e)?;
            }
            return Ok(false);
        };
        let mut by_action: BTreeMap<StatusAction, Vec<StatusItem>> = BTreeMap::new();
        for &(key, id, action) in ops {
            // A record the audit found failed takes no disable (Dify: "not
            // completed"): it mirrors nothing, so it is deleted outright.
            if action == StatusAction::Disable && self.failed_upstream(key) {
                self.retire_errored(key, id, None, out, blocked).await?;
                continue;
            }
            let pending = self
                .cached
                .get(key)
                .and_then(|c| c.indexing_batch.as_deref());
            by_action
                .entry(action)
                .or_default()
                .push(StatusItem { key, id, pending });
        }
        for (action, items) in by_action {
            let phase = self.content.status_phase(action);
            let phase = &phase;
            let r = send_in_batches(&items, status.batch_size(), |chunk| {
                phase.set(chunk).boxed_local()
            })
            .await;
            let keys: Vec<&str> = r.applied.iter().map(|&i| items[i].key).collect();
            self.state
                .record_status(self.job_name(), &keys, action.resulting_status())?;
            *out.status.entry(action.as_str()).or_default() += keys.len();
            for key in keys {
                out.did(key, action.as_str());
            }
            for (i, e) in r.failed {
                self.status_failed(action, &items[i], e, out, blocked)
                    .await?;
            }
            if r.fatal.is_some() {
                out.fatal = r.fatal;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A status change the upstream refused for one record.
    async fn status_failed(
        &self,
        action: StatusAction,
        item: &StatusItem<'_>,
        e: SinkError,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<(), PushError> {
        let changed = self.state.status_changed_at(self.job_name(), item.key)?;
        let r = Refusal {
            action,
            item,
            error: e,
            changed_at: changed,
        };
        match self.content.status_refused(r).await {
            StatusRefused::Errored(e) => {
                self.retire_errored(item.key, item.id, Some(e), out, blocked)
                    .await
            }
            StatusRefused::Failed(e) => {
                blocked.insert(item.key.to_owned());
                self.fail(out, item.key, action.as_str(), e)
            }
        }
    }

    /// Retires `key`, whose record `id` failed processing, by deleting
    /// it. When the delete fails too, the step fails with `refusal` (the
    /// status change's), or else the delete's error.
    async fn retire_errored(
        &self,
        key: &str,
        id: &str,
        refusal: Option<SinkError>,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<(), PushError> {
        match self.remove_errored(id, RETIRED).await {
            Ok(()) => {
                self.state.forget(self.job_name(), key)?;
                out.deleted += 1;
                out.did(key, "delete");
                Ok(())
            }
            Err(e) => {
                blocked.insert(key.to_owned());
                let action = StatusAction::Disable.as_str();
                self.fail(out, key, action, refusal.unwrap_or(e))
            }
        }
    }

    /// Records the state file holds archived, un-archived before their
    /// delete (an archived record cannot be deleted), in status batches.
    /// Returns the keys whose un-archive was refused (recorded as failed
    /// deletes), or `None` after a fatal error.
    pub(super) async fn unarchive_for_delete<'k>(
        &self,
        ops: &[(&'k str, &'k str)],
        out: &mut Outcome,
    ) -> Result<Option<HashSet<&'k str>>, PushError> {
        let archived: Vec<(&str, &str)> = ops
            .iter()
            .filter(|(key, _)| {
                self.cached
                    .get(*key)
                    .is_some_and(|c| c.status == RemoteStatus::Archived)
            })
            .copied()
            .collect();
        let mut refused = HashSet::new();
        let status = match self.verbs.status {
            Some(s)
                if !archived.is_empty() && !self.stop.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                s
            }
            _ => return Ok(Some(refused)),
        };
        let action = StatusAction::UnArchive;
        let r = send_in_batches(&archived, status.batch_size(), |chunk| {
            let ids: Vec<&str> = chunk.iter().map(|(_, d)| *d).collect();
            async move { status.set(action, &ids).await }.boxed_local()
        })
        .await;
        let keys: Vec<&str> = r.applied.iter().map(|&i| archived[i].0).collect();
        self.state
            .record_status(self.job_name(), &keys, action.resulting_status())?;
        for (i, e) in r.failed {
            refused.insert(archived[i].0);
            self.fail(out, archived[i].0, "delete", e)?;
        }
        if r.fatal.is_some() {
            out.fatal = r.fatal;
            return Ok(None);
        }
        Ok(Some(refused))
    }
}
