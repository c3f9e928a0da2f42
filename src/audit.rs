//! The upstream audit: what the sink holds, compared with what the state
//! file believes it holds. The pass plans from the state file alone, so
//! drift made by hand (a document deleted, disabled or duplicated in Dify)
//! would otherwise never be seen. The audit repairs the state file so that
//! the planner plans the fix, and retires duplicates:
//!
//! - a tracked record that is gone: its id is forgotten, so the file is
//!   uploaded again (or, for a retired item, the row is dropped);
//! - a record enabled, disabled or archived otherwise than recorded: the
//!   recorded status is corrected, so the plan restores or retires it;
//! - a record named as an item kbsync has no record for: adopted;
//! - more records under a name kbsync owns: the tracked one stays, the
//!   others are retired per the delete policy (`keep`: only reported);
//! - a tracked record renamed upstream, or whose processing failed:
//!   reported.
//!
//! A record missing from the listing is looked up once more before it is
//! taken for gone: a listing that pages while documents come and go can
//! skip one.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::{DeletePolicy, Duplicates, JobConfig};
use crate::sink::{ErrorClass, Listed, Sink, SinkError};
use crate::state::{Listing, RemoteStatus, State, StateError};

/// Up to this many records missing from a listing are looked up one by
/// one; more, and the dataset is listed a second time.
const LOOKUPS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drift {
    Missing,
    Status,
    Untracked,
    Duplicate,
    Renamed,
    Errored,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::Status => "status",
            Drift::Untracked => "untracked",
            Drift::Duplicate => "duplicate",
            Drift::Renamed => "renamed",
            Drift::Errored => "errored",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub key: String,
    pub drift: Drift,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Records the listing held.
    pub listed: usize,
    pub findings: Vec<Finding>,
    /// Duplicates retired (deleted, disabled or archived).
    pub retired: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the upstream audit could not list: {0}")]
    Sink(SinkError),
}

/// What to change in the state file.
#[derive(Default)]
struct Repairs {
    clear: Vec<String>,
    forget: Vec<String>,
    status: Vec<(String, RemoteStatus)>,
    adopt: Vec<(String, Listed)>,
    /// Records made by an unconfirmed create, with the content it sent.
    adopt_sent: Vec<(String, Listed, String)>,
}

/// Audits `job` against `sink`: `None` when the sink cannot list. With
/// `write` false (a dry run, `kbsync check`) nothing is changed.
pub async fn audit(
    sink: &dyn Sink,
    state: &State,
    job: &JobConfig,
    write: bool,
) -> Result<Option<AuditReport>, AuditError> {
    // The listing goes into a temporary table page by page: the audit of a
    // million documents holds what differs, not what it lists.
    let listing = state.new_listing()?;
    if !list_into(sink, &listing).await? {
        return Ok(None);
    }
    listing.loaded()?;
    listing.claim_tracked(&job.name)?;
    let shared = listing.shared_names()?;
    let mut report = AuditReport {
        listed: listing.count()?,
        ..AuditReport::default()
    };

    let mut repairs = Repairs::default();
    // (key, present, id) of tracked records the listing did not show.
    let mut unseen: Vec<(String, bool, String)> = Vec::new();
    // Tracked names under which another record is listed (the only ones
    // that can hold a duplicate), and present items without a record.
    let mut names: Vec<(String, String)> = Vec::new();
    let mut unbound: Vec<String> = Vec::new();
    listing.each_tracked(&job.name, |item, listed| {
        let Some(id) = item.doc_id else {
            if item.present {
                unbound.push(item.key);
            }
            return Ok(());
        };
        let name = sink.record_name(&item.key);
        // Listed under its own name, it has company there only if the name
        // is shared; otherwise (renamed, or not listed) look.
        let others = match &listed {
            Some(l) if l.name == name => shared.contains(&name),
            _ => listing.by_name(&name)?.iter().any(|l| l.id != id),
        };
        if others {
            names.push((item.key.clone(), name.clone()));
        }
        let Some(l) = listed else {
            unseen.push((item.key, item.present, id));
            return Ok(());
        };
        if let Some(standing) = l.standing.filter(|s| *s != item.status) {
            report.findings.push(Finding {
                key: item.key.clone(),
                drift: Drift::Status,
                detail: format!(
                    "{} upstream, recorded {}",
                    status_word(standing),
                    status_word(item.status)
                ),
            });
            repairs.status.push((item.key.clone(), standing));
        }
        if l.name != name {
            report.findings.push(Finding {
                key: item.key.clone(),
                drift: Drift::Renamed,
                detail: format!("named {:?} upstream, {name:?} expected", l.name),
            });
        }
        if l.state.as_deref() == Some("error") {
            report.findings.push(Finding {
                key: item.key,
                drift: Drift::Errored,
                detail: "its processing failed upstream; it is replaced when the file changes"
                    .into(),
            });
        }
        Ok(())
    })?;

    // Not in the listing: look again before taking it for gone.
    let found_again = confirm_missing(sink, &unseen).await?;
    for (key, present, id) in unseen {
        match found_again.get(&key) {
            // The listing missed it: there after all.
            Some(l) if l.id == id => {}
            Some(l) => {
                // Found under another id: that record is the item's now.
                listing.claim(&l.id)?;
                repairs.adopt.push((key, l.clone()));
            }
            None => {
                report.findings.push(Finding {
                    key: key.clone(),
                    drift: Drift::Missing,
                    detail: if present {
                        "gone upstream; uploaded again".into()
                    } else {
                        "gone upstream; nothing left to retire".into()
                    },
                });
                if present {
                    repairs.clear.push(key);
                } else {
                    repairs.forget.push(key);
                }
            }
        }
    }

    // Present items without a record, whose name is held upstream.
    for key in unbound {
        let name = sink.record_name(&key);
        let mut free = None;
        for l in listing.by_name(&name)? {
            if listing.claim(&l.id)? {
                free = Some(l);
                break;
            }
        }
        let Some(l) = free else { continue };
        // A create sent just before an interruption, applied upstream: the
        // record holds what it sent (Dify would refuse to take the same
        // bytes again while it is queued).
        let sent = match l.state.as_deref() {
            Some("error") => None,
            _ => state.sent_content(&job.name, &key)?,
        };
        report.findings.push(Finding {
            key: key.clone(),
            drift: Drift::Untracked,
            detail: match sent {
                Some(_) => format!(
                    "record {} has its name: the create sent before an interruption; adopted with the content it sent",
                    l.id
                ),
                None => format!("record {} has its name; adopted", l.id),
            },
        });
        match sent {
            Some(hash) => repairs.adopt_sent.push((key, l, hash)),
            None => repairs.adopt.push((key, l)),
        }
    }

    // More records under a tracked name than the tracked one.
    // (the finding's index, the record's id)
    let mut extra: Vec<(usize, String)> = Vec::new();
    for (key, name) in &names {
        for l in listing.by_name(name)? {
            // Claimed here unless another item owns it already.
            if already_retired(job.delete_policy, l.standing) || !listing.claim(&l.id)? {
                continue;
            }
            let retire =
                job.duplicates == Duplicates::Retire && job.delete_policy != DeletePolicy::Keep;
            report.findings.push(Finding {
                key: key.clone(),
                drift: Drift::Duplicate,
                detail: format!(
                    "record {} has the same name; {}",
                    l.id,
                    if retire {
                        "retired per delete_policy"
                    } else {
                        "left as it is (duplicates = \"report\", or delete_policy = \"keep\")"
                    }
                ),
            });
            if retire {
                extra.push((report.findings.len() - 1, l.id));
            }
        }
    }
    if write {
        // The pass adopts what is left as it meets files new to the state
        // file, and the sink need not list again before its first create.
        listing.keep_unclaimed()?;
        state.mark_listed(&job.name)?;
    }
    drop(listing);
    let retired = if write {
        apply(state, &job.name, repairs)?;
        retire(sink, job.delete_policy, &extra, &mut report).await
    } else {
        Ok(())
    };
    for f in &report.findings {
        tracing::warn!(key = %f.key, drift = f.drift.as_str(), "audit: {}", f.detail);
    }
    retired.map(|()| Some(report))
}

/// Retires the duplicates (`extra`: their findings' index and id). A sink
/// that cannot leaves them, and their findings say so; any other failure
/// fails the audit.
async fn retire(
    sink: &dyn Sink,
    policy: DeletePolicy,
    extra: &[(usize, String)],
    report: &mut AuditReport,
) -> Result<(), AuditError> {
    if extra.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = extra.iter().map(|(_, id)| id.clone()).collect();
    match sink.retire(&ids, policy).await {
        Ok(()) => report.retired = ids.len(),
        Err(e) if e.is_unsupported() => {
            for (i, id) in extra {
                report.findings[*i].detail =
                    format!("record {id} has the same name; not retired: {}", e.message);
            }
        }
        Err(e) => return Err(AuditError::Sink(e)),
    }
    Ok(())
}

/// Lists the sink into `listing`; false when it cannot list.
async fn list_into(sink: &dyn Sink, listing: &Listing<'_>) -> Result<bool, AuditError> {
    let mut failed: Option<StateError> = None;
    let mut each = |page: Vec<Listed>| {
        listing.add(&page).map_err(|e| {
            let message = e.to_string();
            failed = Some(e);
            SinkError::local(ErrorClass::Fatal, "state", message)
        })
    };
    let listed = sink.list_pages(&mut each).await;
    if let Some(e) = failed {
        return Err(AuditError::State(e));
    }
    listed.map_err(AuditError::Sink)
}

/// Records the listing did not show, looked up again: by name one by one,
/// or, when many, by a second listing (of which only their names are kept).
async fn confirm_missing(
    sink: &dyn Sink,
    unseen: &[(String, bool, String)],
) -> Result<HashMap<String, Listed>, AuditError> {
    let mut found = HashMap::new();
    if unseen.is_empty() {
        return Ok(found);
    }
    if unseen.len() <= LOOKUPS {
        for (key, _, _) in unseen {
            if let Some(l) = sink.find(key).await.map_err(AuditError::Sink)? {
                found.insert(key.clone(), l);
            }
        }
        return Ok(found);
    }
    let wanted: HashMap<String, &str> = unseen
        .iter()
        .map(|(key, _, _)| (sink.record_name(key), key.as_str()))
        .collect();
    let mut each = |page: Vec<Listed>| {
        for l in page {
            if let Some(key) = wanted.get(&l.name) {
                found.insert((*key).to_owned(), l);
            }
        }
        Ok(())
    };
    sink.list_pages(&mut each).await.map_err(AuditError::Sink)?;
    Ok(found)
}

fn apply(state: &State, job: &str, r: Repairs) -> Result<(), StateError> {
    for key in &r.clear {
        state.clear_doc_id(job, key)?;
    }
    for key in &r.forget {
        state.forget(job, key)?;
    }
    for (key, status) in &r.status {
        state.set_status(job, key, *status)?;
    }
    for (key, l) in &r.adopt {
        adopt(state, job, key, l)?;
    }
    for (key, l, hash) in &r.adopt_sent {
        state.record_content(job, key, &l.id, &l.name, hash, None)?;
        if let Some(s) = l.standing.filter(|s| *s != RemoteStatus::Enabled) {
            state.set_status(job, key, s)?;
        }
    }
    Ok(())
}

/// Makes record `l` the one of `key`, as it stands upstream.
pub fn adopt(state: &State, job: &str, key: &str, l: &Listed) -> Result<(), StateError> {
    state.record_doc_id(job, key, &l.id, &l.name)?;
    // Its content is not known to be the file's: uploaded again.
    state.forget_pushed_content(job, key)?;
    if let Some(s) = l.standing {
        state.set_status(job, key, s)?;
    }
    Ok(())
}

/// A duplicate already in the state the policy would leave it in.
fn already_retired(policy: DeletePolicy, standing: Option<RemoteStatus>) -> bool {
    matches!(
        (policy, standing),
        (DeletePolicy::Disable, Some(RemoteStatus::Disabled))
            | (
                DeletePolicy::Disable | DeletePolicy::Archive,
                Some(RemoteStatus::Archived)
            )
    )
}

fn status_word(s: RemoteStatus) -> &'static str {
    match s {
        RemoteStatus::Enabled => "enabled",
        RemoteStatus::Disabled => "disabled",
        RemoteStatus::Archived => "archived",
    }
}
