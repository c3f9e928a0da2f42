//! Looking for what an earlier create may have made. A create sent
//! without an answer (a timeout, kill -9) may have been applied: its key
//! is a *suspect*, and its record is looked for before anything is sent
//! again. One listing serves the pass: the audit's when it ran (it adopted
//! what it found under the suspects' names), else one made here when the
//! job creates for the first time (records from a lost state file, or
//! made by hand, are adopted rather than duplicated) or when more records
//! are to be looked for than the upstream's hooks look up one by one.

use std::collections::{HashMap, HashSet};

use super::upload::Upload;
use super::Push;
use crate::sink::{ErrorClass, Listed, Outcome, PushError, SinkError};

/// A listing's records by name.
pub(super) type Titles = HashMap<String, Vec<Listed>>;

impl Push<'_> {
    /// Whether `u` may have a record kbsync does not know: a suspect
    /// create the audit did not look for, or any suspect upload where
    /// every upload makes a record.
    pub(super) fn looks_for(&self, u: &Upload<'_>) -> bool {
        self.suspects.contains(u.key)
            && if u.doc_id.is_none() {
                !self.audited
            } else {
                self.content.uploads_create()
            }
    }

    /// The one listing of this push, when it needs one. A listing that
    /// fails holds back the uploads that needed it (uploading blind could
    /// duplicate records); a fatal one stops the push.
    pub(super) async fn listing(
        &self,
        uploads: &[Upload<'_>],
        forgets: usize,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<Option<Titles>, PushError> {
        let creates = uploads.iter().any(|u| u.doc_id.is_none());
        let looks = uploads.iter().filter(|u| self.looks_for(u)).count() + forgets;
        let first = creates && !self.state.listed(self.job_name())?;
        if !(first || looks > self.content.lookups()) {
            return Ok(None);
        }
        let e = match self.sink.list().await {
            Ok(Some(records)) => {
                self.state.mark_listed(self.job_name())?;
                let mut titles = Titles::new();
                for l in records {
                    titles.entry(l.name.clone()).or_default().push(l);
                }
                return Ok(Some(titles));
            }
            Ok(None) => SinkError::unsupported("the upstream cannot list its records to find them"),
            Err(e) => e,
        };
        if e.class == ErrorClass::Fatal {
            out.fatal = Some(e);
            return Ok(None);
        }
        let held = uploads
            .iter()
            .filter(|u| u.doc_id.is_none() || self.looks_for(u));
        for u in held {
            blocked.insert(u.key.to_owned());
            self.fail(out, u.key, "create", e.clone())?;
        }
        Ok(None)
    }

    /// How many forgets of suspects look for orphans.
    pub(super) fn orphan_looks(&self, plan: &crate::plan::Plan) -> usize {
        if self.audited {
            return 0;
        }
        plan.ops
            .iter()
            .filter(
                |op| matches!(op, crate::plan::Op::Forget { key } if self.suspects.contains(key)),
            )
            .count()
    }

    /// What each suspect's unconfirmed create sent: a record found under
    /// its name holds those bytes.
    pub(super) fn sent_before<'u>(
        &self,
        uploads: &[&Upload<'u>],
    ) -> Result<HashMap<&'u str, String>, PushError> {
        let mut sent = HashMap::new();
        for u in uploads.iter().filter(|u| self.suspects.contains(u.key)) {
            if let Some(hash) = self.state.sent_content(self.job_name(), u.key)? {
                sent.insert(u.key, hash);
            }
        }
        Ok(sent)
    }

    /// The records under `u`'s name: from the listing, else looked up by
    /// name when `u` may have one.
    pub(super) async fn records_of(
        &self,
        u: &Upload<'_>,
        titles: Option<&Titles>,
    ) -> Result<Vec<Listed>, SinkError> {
        if let Some(all) = titles {
            return Ok(all
                .get(&self.sink.record_name(u.key))
                .cloned()
                .unwrap_or_default());
        }
        if !self.looks_for(u) {
            return Ok(Vec::new());
        }
        Ok(self.sink.find(u.key).await?.into_iter().collect())
    }

    /// The records an unconfirmed create of vanished `key` may have made:
    /// in the listing, in the audit's unclaimed records, or looked up.
    pub(super) async fn orphans(
        &self,
        key: &str,
        titles: Option<&Titles>,
    ) -> Result<Vec<String>, SinkError> {
        let name = self.sink.record_name(key);
        if let Some(all) = titles {
            let found = all.get(&name).into_iter().flatten();
            return Ok(found.map(|l| l.id.clone()).collect());
        }
        if self.audited {
            let taken = self
                .state
                .take_unclaimed(&name)
                .map_err(|e| SinkError::local(ErrorClass::Fatal, "state", e.to_string()))?;
            return Ok(taken.into_iter().map(|l| l.id).collect());
        }
        Ok(self
            .sink
            .find(key)
            .await?
            .into_iter()
            .map(|l| l.id)
            .collect())
    }
}
