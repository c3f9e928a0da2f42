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
//! - a tracked record renamed upstream: its content is sent again, which
//!   names it after the file (where the sink takes content);
//! - a tracked record whose processing failed: reported with the
//!   upstream's reason, and recorded so `status` shows it failed.
//!
//! A finding that stays as it was (`remains`: an errored record, a
//! duplicate left by policy) keeps the pass from converging: `--reconcile`
//! and `kbsync check` never disagree.
//!
//! A record missing from the listing is looked up once more before it is
//! taken for gone: a listing that pages while documents come and go can
//! skip one.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::{DeletePolicy, Duplicates, JobConfig};
use crate::sink::{ErrorClass, Listed, Sink, SinkError};
use crate::state::{Listing, RemoteStatus, State, StateError, Tracked};

/// What an errored record's finding says of its future.
const REPLACED_LATER: &str = "; it is replaced when the file changes";
/// What a pass does about a finding, as the finding says it, and as
/// `kbsync check` (which changes nothing) says it: `would_do`.
const RESENT: &str = "its file is uploaded again, which restores the name";
const UPLOADED_AGAIN: &str = "a pass uploads its file again";
const ADOPTED: &str = "; adopted";
const RETIRED: &str = "retired per delete_policy";
const TENSES: [(&str, &str); 5] = [
    (
        RESENT,
        "its file would be uploaded again, which would restore the name",
    ),
    (UPLOADED_AGAIN, "a pass would upload its file again"),
    (ADOPTED, "; would be adopted"),
    (RETIRED, "would be retired per delete_policy"),
    (
        REPLACED_LATER,
        "; it would be replaced when the file changes",
    ),
];

/// A finding's detail in the conditional: what a pass would do.
pub fn would_do(detail: &str) -> String {
    TENSES
        .iter()
        .fold(detail.to_owned(), |d, (does, would)| d.replace(does, would))
}

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
    /// Not repaired by this pass: the upstream still differs.
    pub remains: bool,
}

impl AuditReport {
    /// Drift this pass leaves as it found it.
    pub fn remaining(&self) -> usize {
        self.findings.iter().filter(|f| f.remains).count()
    }
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
    /// Renamed records whose content is sent again (restoring the name).
    resend: Vec<String>,
    /// Records whose processing failed upstream: (key, reason).
    errored: Vec<(String, String)>,
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
    let mut found = Found {
        report: AuditReport {
            listed: listing.count()?,
            ..AuditReport::default()
        },
        repairs: Repairs::default(),
    };
    let compared = compare_tracked(sink, job, &listing, &mut found)?;
    // Not in the listing: look again before taking it for gone.
    let found_again = confirm_missing(sink, &compared.unseen).await?;
    settle_unseen(&listing, compared.unseen, &found_again, &mut found)?;
    adopt_unbound(sink, state, job, &listing, compared.unbound, &mut found)?;
    let extra = duplicates(job, &listing, &compared.names, &mut found)?;
    if write {
        // The pass adopts what is left as it meets files new to the state
        // file, and the sink need not list again before its first create.
        listing.keep_unclaimed()?;
        state.mark_listed(&job.name)?;
    }
    drop(listing);
    let Found {
        mut report,
        repairs,
    } = found;
    let retired = if write {
        apply(state, &job.name, repairs)?;
        retire(sink, job, &extra, &mut report).await
    } else {
        Ok(())
    };
    // After the retirement, so the log says what happened.
    for f in &report.findings {
        tracing::warn!(key = %f.key, drift = f.drift.as_str(), "audit: {}", f.detail);
    }
    retired.map(|()| Some(report))
}

/// What the audit found so far, and what it will change.
struct Found {
    report: AuditReport,
    repairs: Repairs,
}

impl Found {
    fn finding(&mut self, key: &str, drift: Drift, detail: String, remains: bool) {
        self.report.findings.push(Finding {
            key: key.to_owned(),
            drift,
            detail,
            remains,
        });
    }

    /// A finding the pass repairs (`repaired`, saying how) or leaves as it
    /// is (saying why).
    fn repaired_or_left(
        &mut self,
        (key, drift): (&str, Drift),
        what: String,
        repaired: bool,
        how: &str,
        why_left: &str,
    ) {
        let then = if repaired { how } else { why_left };
        self.finding(key, drift, format!("{what}; {then}"), !repaired);
    }
}

/// What the walk over the tracked items leaves for the later steps.
#[derive(Default)]
struct Compared {
    /// (key, present, id) of tracked records the listing did not show.
    unseen: Vec<(String, bool, String)>,
    /// Tracked names under which another record is listed (the only ones
    /// that can hold a duplicate).
    names: Vec<(String, String)>,
    /// Present items without a record.
    unbound: Vec<String>,
}

/// Every tracked item against the record its id names.
fn compare_tracked(
    sink: &dyn Sink,
    job: &JobConfig,
    listing: &Listing<'_>,
    found: &mut Found,
) -> Result<Compared, StateError> {
    let shared = listing.shared_names()?;
    let content = job.sink.capabilities().content;
    let mut out = Compared::default();
    listing.each_tracked(&job.name, |item, listed| {
        let Some(id) = item.doc_id.clone() else {
            if item.present {
                out.unbound.push(item.key);
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
            out.names.push((item.key.clone(), name.clone()));
        }
        match listed {
            Some(l) => compare_record(&item, l, &name, content, found),
            None => out.unseen.push((item.key, item.present, id)),
        }
        Ok(())
    })?;
    Ok(out)
}

/// One tracked item against its listed record: status, name, processing.
fn compare_record(item: &Tracked, l: Listed, name: &str, content: bool, found: &mut Found) {
    let key = item.key.as_str();
    if let Some(standing) = l.standing.filter(|s| *s != item.status) {
        let detail = format!(
            "{} upstream, recorded {}",
            status_word(standing),
            status_word(item.status)
        );
        found.finding(key, Drift::Status, detail, false);
        found.repairs.status.push((key.to_owned(), standing));
    }
    let errored = l.state.as_deref() == Some("error");
    // A retired record's name matters to no one; an errored one takes no
    // upload (it is replaced when the file changes).
    if l.name != name && item.present && !errored {
        found.repaired_or_left(
            (key, Drift::Renamed),
            format!("named {:?} upstream, {name:?} expected", l.name),
            content,
            RESENT,
            "left as it is (this target takes no content to rename it by)",
        );
        if content {
            found.repairs.resend.push(key.to_owned());
        }
    }
    if errored {
        let reason = l
            .error
            .unwrap_or_else(|| "the upstream gave no reason".into());
        let detail = format!("its processing failed upstream: {reason}{REPLACED_LATER}");
        found.finding(key, Drift::Errored, detail, item.present);
        if item.present {
            found.repairs.errored.push((key.to_owned(), reason));
        }
    }
}

/// Tracked records the listing did not show, after a second look.
fn settle_unseen(
    listing: &Listing<'_>,
    unseen: Vec<(String, bool, String)>,
    found_again: &HashMap<String, Listed>,
    found: &mut Found,
) -> Result<(), StateError> {
    for (key, present, id) in unseen {
        match found_again.get(&key) {
            // The listing missed it: there after all.
            Some(l) if l.id == id => {}
            Some(l) => {
                // Found under another id: that record is the item's now.
                listing.claim(&l.id)?;
                found.repairs.adopt.push((key, l.clone()));
            }
            None if present => {
                found.finding(
                    &key,
                    Drift::Missing,
                    format!("gone upstream; {UPLOADED_AGAIN}"),
                    false,
                );
                found.repairs.clear.push(key);
            }
            None => {
                let detail = "gone upstream; nothing left to retire".into();
                found.finding(&key, Drift::Missing, detail, false);
                found.repairs.forget.push(key);
            }
        }
    }
    Ok(())
}

/// Present items without a record, whose name is held upstream: adopted.
fn adopt_unbound(
    sink: &dyn Sink,
    state: &State,
    job: &JobConfig,
    listing: &Listing<'_>,
    unbound: Vec<String>,
    found: &mut Found,
) -> Result<(), StateError> {
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
        let detail = match sent {
            Some(_) => format!(
                "record {} has its name: the create sent before an interruption{ADOPTED} with the content it sent",
                l.id
            ),
            None => format!("record {} has its name{ADOPTED}", l.id),
        };
        found.finding(&key, Drift::Untracked, detail, false);
        match sent {
            Some(hash) => found.repairs.adopt_sent.push((key, l, hash)),
            None => found.repairs.adopt.push((key, l)),
        }
    }
    Ok(())
}

/// More records under a tracked name than the tracked one: the ids to
/// retire per the delete policy, with their findings' index (the others
/// are only reported).
fn duplicates(
    job: &JobConfig,
    listing: &Listing<'_>,
    names: &[(String, String)],
    found: &mut Found,
) -> Result<Vec<(usize, String)>, StateError> {
    let retire = job.duplicates == Duplicates::Retire && job.delete_policy != DeletePolicy::Keep;
    let mut extra: Vec<(usize, String)> = Vec::new();
    for (key, name) in names {
        for l in listing.by_name(name)? {
            // Claimed here unless another item owns it already.
            if already_retired(job.delete_policy, l.standing) || !listing.claim(&l.id)? {
                continue;
            }
            found.repaired_or_left(
                (key, Drift::Duplicate),
                format!("record {} has the same name", l.id),
                retire,
                RETIRED,
                "left as it is (duplicates = \"report\", or delete_policy = \"keep\")",
            );
            if retire {
                extra.push((found.report.findings.len() - 1, l.id));
            }
        }
    }
    Ok(extra)
}

/// Retires the duplicates (`extra`: their findings' index and id). A sink
/// that cannot leaves them, and their findings say so; any other failure
/// fails the audit.
async fn retire(
    sink: &dyn Sink,
    job: &JobConfig,
    extra: &[(usize, String)],
    report: &mut AuditReport,
) -> Result<(), AuditError> {
    if extra.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = extra.iter().map(|(_, id)| id.clone()).collect();
    let retired = crate::execute::retire(sink.verbs(), job.sink.kind(), &ids, job.delete_policy);
    match retired.await {
        Ok(()) => report.retired = ids.len(),
        Err(e) if e.is_unsupported() => {
            for (i, id) in extra {
                let f = &mut report.findings[*i];
                f.detail = format!("record {id} has the same name; not retired: {}", e.message);
                f.remains = true;
            }
        }
        Err(e) => return Err(AuditError::Sink(e)),
    }
    Ok(())
}

/// After the pass: an errored record the pass replaced (its file had
/// changed) or removed (its file is gone) no longer remains.
pub fn settle(report: &mut AuditReport, state: &State, job: &str) -> Result<(), StateError> {
    for f in report.findings.iter_mut() {
        if f.remains && f.drift == Drift::Errored && !state.failed_upstream(job, &f.key)? {
            f.remains = false;
            if state.tracks(job, &f.key)? {
                f.detail.push_str(" (replaced by this pass)");
            } else {
                // Its file is gone: nothing replaces it.
                f.detail = f.detail.replace(REPLACED_LATER, "; removed by this pass");
            }
        }
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
    for key in &r.resend {
        state.forget_pushed_hash(job, key)?;
    }
    state.record_upstream_errors(job, &r.errored)?;
    for (key, l, hash) in &r.adopt_sent {
        state.record_content(job, key, &l.id, &l.name, hash, None)?;
        // What the record carries, where that is all it can hold: kept,
        // not sent again with another upload.
        if let Some(m) = l
            .carries
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
        {
            state.record_metadata(job, &[(key.as_str(), &m)])?;
        }
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
