//! The planner: a pure function from (observed items, cached state, job
//! rules) to the operations that make upstream match the source. No I/O;
//! `--dry-run` prints its output and tests assert on it directly.

use std::collections::HashMap;

use serde::Serialize;

use crate::metadata::{self, FieldMapping, ItemFacts, MappingWarning, Metadata, SourceFacts};
use crate::model::Capabilities;
use crate::model::DeletePolicy;
use crate::source::Observed;
use crate::state::{CachedItem, RemoteStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusAction {
    Enable,
    Disable,
    Archive,
    UnArchive,
}

impl StatusAction {
    /// The path segment Dify uses for the action.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusAction::Enable => "enable",
            StatusAction::Disable => "disable",
            StatusAction::Archive => "archive",
            StatusAction::UnArchive => "un_archive",
        }
    }

    pub fn resulting_status(self) -> RemoteStatus {
        match self {
            StatusAction::Enable | StatusAction::UnArchive => RemoteStatus::Enabled,
            StatusAction::Disable => RemoteStatus::Disabled,
            StatusAction::Archive => RemoteStatus::Archived,
        }
    }

    /// Actions that bring a document back must run before its content is
    /// updated (Dify only updates available documents).
    pub fn restores(self) -> bool {
        matches!(self, StatusAction::Enable | StatusAction::UnArchive)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Create {
        key: String,
        size: u64,
        hash: String,
    },
    UpdateContent {
        key: String,
        doc_id: String,
        size: u64,
        hash: String,
    },
    /// `doc_id` is `None` for a document created in the same pass.
    SetMetadata {
        key: String,
        doc_id: Option<String>,
        metadata: Metadata,
    },
    SetStatus {
        key: String,
        doc_id: String,
        action: StatusAction,
    },
    Delete {
        key: String,
        doc_id: String,
    },
    /// Local bookkeeping only: an item that vanished before it was pushed.
    Forget {
        key: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. }
            | Op::UpdateContent { key, .. }
            | Op::SetMetadata { key, .. }
            | Op::SetStatus { key, .. }
            | Op::Delete { key, .. }
            | Op::Forget { key } => key,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::UpdateContent { .. } => "update",
            Op::SetMetadata { .. } => "metadata",
            Op::SetStatus { action, .. } => action.as_str(),
            Op::Delete { .. } => "delete",
            Op::Forget { .. } => "forget",
        }
    }

    pub fn is_upstream(&self) -> bool {
        !matches!(self, Op::Forget { .. })
    }
}

impl Plan {
    /// (key, upstream id) of every delete, in plan order.
    pub fn deletes(&self) -> Vec<(&str, &str)> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Delete { key, doc_id } => Some((key.as_str(), doc_id.as_str())),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Metadata values that could not be converted, per item key.
    pub warnings: Vec<(String, MappingWarning)>,
}

impl Plan {
    /// Adds `other`'s steps (up to `keep` in all) and all its warnings.
    pub fn absorb(&mut self, other: Plan, keep: usize) {
        let room = keep.saturating_sub(self.ops.len());
        self.ops.extend(other.ops.into_iter().take(room));
        self.warnings.extend(other.warnings);
    }
}

pub struct Rules<'a> {
    pub mappings: &'a [FieldMapping],
    pub delete_policy: DeletePolicy,
    /// What the target can do; nothing else is planned.
    pub caps: Capabilities,
    /// For targets that take no content: the existing upstream item a key
    /// maps to (items without one are left out, and reported by the caller).
    pub bind: &'a dyn Fn(&str) -> Option<String>,
}

/// Bump when the planner's decisions change for the same inputs: settled
/// items (see `state::settled`) are then evaluated again.
const LOGIC_VERSION: u32 = 1;

/// Everything besides an item's own row and facts that decides its plan,
/// hashed. `bindings` describes `Rules::bind` (the configured upstream ids).
pub fn fingerprint(
    mappings: &[FieldMapping],
    delete_policy: DeletePolicy,
    caps: Capabilities,
    bindings: &str,
) -> String {
    let text = format!(
        "{LOGIC_VERSION} {} {mappings:?} {delete_policy:?} {caps:?} {bindings}",
        env!("CARGO_PKG_VERSION")
    );
    blake3::hash(text.as_bytes()).to_hex()[..16].to_owned()
}

/// Computes the operations for one job. `protected` says which keys exist
/// but could not be read this time: they are left exactly as they are.
///
/// Each key is decided from its own facts and row alone, so planning any
/// subset of keys (their observations and rows) gives exactly the ops the
/// whole would give for them.
pub fn plan<'o>(
    observed: impl IntoIterator<Item = &'o Observed>,
    cached: &HashMap<String, CachedItem>,
    rules: &Rules,
    protected: &dyn Fn(&str) -> bool,
) -> Plan {
    let observed = observed.into_iter();
    let mut out = Plan::default();
    let mut seen = std::collections::HashSet::with_capacity(observed.size_hint().0);
    for item in observed {
        seen.insert(item.key.as_str());
        plan_present(item, cached.get(&item.key), rules, &mut out);
    }
    let mut vanished: Vec<&CachedItem> = cached
        .values()
        .filter(|c| !seen.contains(c.key.as_str()) && !protected(&c.key))
        .collect();
    vanished.sort_by(|a, b| a.key.cmp(&b.key));
    for c in vanished {
        plan_vanished(c, rules, &mut out);
    }
    out
}

/// The ops of an item the source has: its metadata evaluated, then what
/// its row says is missing upstream.
fn plan_present(item: &Observed, cache: Option<&CachedItem>, rules: &Rules, out: &mut Plan) {
    let source = item.validator.as_deref().and_then(SourceFacts::parse);
    let (desired, warnings) = metadata::evaluate(
        rules.mappings,
        &ItemFacts {
            key: &item.key,
            size: item.size,
            mtime_ns: item.mtime_ns,
            hash: &item.hash,
            front_matter: item.front_matter.as_ref(),
            source: source.as_ref(),
        },
    );
    out.warnings
        .extend(warnings.into_iter().map(|w| (item.key.clone(), w)));
    let pushed_meta = cache.and_then(|c| c.pushed_meta.as_ref());
    let meta_differs = pushed_meta.map_or(!desired.is_empty(), |p| *p != desired);

    // Metadata only, onto an item that exists upstream already: all a
    // sink without content does, and all a content sink does for an
    // item the config binds by hand (it is the user's, not an upload).
    if !rules.caps.content || (rules.bind)(&item.key).is_some() {
        plan_metadata_only(item, cache, rules, desired, meta_differs, out);
        return;
    }
    let Some((c, doc_id)) = cache.and_then(|c| c.doc_id.as_ref().map(|id| (c, id))) else {
        out.ops.push(Op::Create {
            key: item.key.clone(),
            size: item.size,
            hash: item.hash.clone(),
        });
        if !desired.is_empty() {
            out.ops.push(Op::SetMetadata {
                key: item.key.clone(),
                doc_id: None,
                metadata: desired,
            });
        }
        return;
    };
    match c.status {
        RemoteStatus::Enabled => {}
        RemoteStatus::Disabled => out.ops.push(status(item, doc_id, StatusAction::Enable)),
        RemoteStatus::Archived => out.ops.push(status(item, doc_id, StatusAction::UnArchive)),
    }
    // An upstream that takes metadata only with an upload gets the
    // content again to carry new metadata.
    let reupload = rules.caps.metadata_with_content && meta_differs;
    if c.pushed_hash.as_deref() != Some(item.hash.as_str()) || reupload {
        out.ops.push(Op::UpdateContent {
            key: item.key.clone(),
            doc_id: doc_id.clone(),
            size: item.size,
            hash: item.hash.clone(),
        });
    }
    if meta_differs {
        out.ops.push(Op::SetMetadata {
            key: item.key.clone(),
            doc_id: Some(doc_id.clone()),
            metadata: desired,
        });
    }
}

/// Metadata onto the record the item is bound to (by the config, or by
/// its row), or onto one the pusher finds or creates.
fn plan_metadata_only(
    item: &Observed,
    cache: Option<&CachedItem>,
    rules: &Rules,
    desired: Metadata,
    meta_differs: bool,
    out: &mut Plan,
) {
    let cached_id = cache.and_then(|c| c.doc_id.clone());
    let Some(id) = (rules.bind)(&item.key).or(cached_id.clone()) else {
        if rules.caps.create_records {
            out.ops.push(Op::SetMetadata {
                key: item.key.clone(),
                doc_id: None,
                metadata: desired,
            });
        }
        return;
    };
    // Bound to another item now: what was pushed is not there.
    let rebound = cached_id.as_deref() != Some(id.as_str());
    if (rebound && !desired.is_empty()) || (!rebound && meta_differs) {
        out.ops.push(Op::SetMetadata {
            key: item.key.clone(),
            doc_id: Some(id),
            metadata: desired,
        });
    }
}

/// The op that retires an item the source no longer has, per the delete
/// policy; or forgets it, when there is nothing upstream of ours.
fn plan_vanished(c: &CachedItem, rules: &Rules, out: &mut Plan) {
    let Some(doc_id) = &c.doc_id else {
        out.ops.push(Op::Forget { key: c.key.clone() });
        return;
    };
    if rules.caps.content && (rules.bind)(&c.key).is_some() {
        // A bound item is never retired: it was there before kbsync.
        out.ops.push(Op::Forget { key: c.key.clone() });
        return;
    }
    // `keep`: the upstream item stays as it is, and so does its record
    // here, so a file that comes back is matched to it again.
    let action = match (rules.delete_policy, c.status) {
        (DeletePolicy::Delete, _) => {
            out.ops.push(Op::Delete {
                key: c.key.clone(),
                doc_id: doc_id.clone(),
            });
            return;
        }
        (DeletePolicy::Disable, RemoteStatus::Enabled) => StatusAction::Disable,
        (DeletePolicy::Archive, RemoteStatus::Enabled | RemoteStatus::Disabled) => {
            StatusAction::Archive
        }
        _ => return,
    };
    out.ops.push(Op::SetStatus {
        key: c.key.clone(),
        doc_id: doc_id.clone(),
        action,
    });
}

fn status(item: &Observed, doc_id: &str, action: StatusAction) -> Op {
    Op::SetStatus {
        key: item.key.clone(),
        doc_id: doc_id.to_owned(),
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Fact, FieldSource, FieldType};
    use crate::source::KnownFacts;

    fn obs(key: &str, hash: &str, mtime: i64) -> Observed {
        Observed {
            key: key.into(),
            size: 10,
            mtime_ns: mtime,
            identity: 0,
            hash: hash.into(),
            front_matter: None,
            rehashed: true,
            racy: false,
            validator: None,
        }
    }

    fn cached(key: &str, hash: &str, status: RemoteStatus, meta: Option<Metadata>) -> CachedItem {
        CachedItem {
            key: key.into(),
            present: true,
            facts: Some(KnownFacts {
                size: 10,
                mtime_ns: 0,
                identity: 0,
                hash: hash.into(),
                front_matter: None,
                racy: false,
                validator: None,
            }),
            doc_id: Some(format!("doc-{key}")),
            doc_name: Some(key.into()),
            pushed_hash: Some(hash.into()),
            pushed_meta: meta,
            status,
            indexing_batch: None,
        }
    }

    fn size_mapping() -> Vec<FieldMapping> {
        vec![FieldMapping {
            name: "modified".into(),
            source: FieldSource::Fact(Fact::Modified),
            kind: FieldType::Time,
        }]
    }

    fn meta(v: i64) -> Metadata {
        Metadata::from([("modified".to_string(), serde_json::Value::from(v))])
    }

    fn run(
        observed: &[Observed],
        cache: Vec<CachedItem>,
        policy: DeletePolicy,
        maps: &[FieldMapping],
    ) -> Vec<String> {
        let cache: HashMap<_, _> = cache.into_iter().map(|c| (c.key.clone(), c)).collect();
        let rules = Rules {
            mappings: maps,
            delete_policy: policy,
            // A sink that can do everything: the planner's full repertoire.
            caps: Capabilities {
                content: true,
                batch_metadata: true,
                status: true,
                delete: true,
                create_records: false,
                metadata_with_content: false,
            },
            bind: &|_| None,
        };
        plan(observed, &cache, &rules, &|k| k.starts_with("locked/"))
            .ops
            .iter()
            .map(|o| format!("{} {}", o.name(), o.key()))
            .collect()
    }

    /// (what, observed, cached rows, delete policy, the ops wanted)
    type Case<'a> = (
        &'a str,
        Vec<Observed>,
        Vec<CachedItem>,
        DeletePolicy,
        &'a [&'a str],
    );

    fn check(cases: &[Case]) {
        let maps = size_mapping();
        for (name, observed, cache, policy, want) in cases {
            assert_eq!(
                run(observed, cache.clone(), *policy, &maps),
                *want,
                "{name}"
            );
        }
    }

    fn on(key: &str, hash: &str) -> CachedItem {
        cached(key, hash, RemoteStatus::Enabled, Some(meta(1)))
    }

    #[test]
    fn table_of_files_present() {
        // Files the source has: new, unchanged, touched, changed, re-added.
        let s = 1_000_000_000;
        check(&[
            (
                "new file: create then metadata",
                vec![obs("a.md", "h1", s)],
                vec![],
                DeletePolicy::Disable,
                &["create a.md", "metadata a.md"],
            ),
            (
                "unchanged: nothing",
                vec![obs("a.md", "h1", s)],
                vec![on("a.md", "h1")],
                DeletePolicy::Disable,
                &[],
            ),
            (
                "touched only: metadata, no upload",
                vec![obs("a.md", "h1", 2 * s)],
                vec![on("a.md", "h1")],
                DeletePolicy::Disable,
                &["metadata a.md"],
            ),
            (
                "content changed",
                vec![obs("a.md", "h2", s)],
                vec![on("a.md", "h1")],
                DeletePolicy::Disable,
                &["update a.md"],
            ),
            (
                "re-added unchanged: re-enable, no upload",
                vec![obs("a.md", "h1", s)],
                vec![cached("a.md", "h1", RemoteStatus::Disabled, Some(meta(1)))],
                DeletePolicy::Disable,
                &["enable a.md"],
            ),
            (
                "re-added changed after archive: un_archive then update",
                vec![obs("a.md", "h9", s)],
                vec![cached("a.md", "h1", RemoteStatus::Archived, Some(meta(1)))],
                DeletePolicy::Archive,
                &["un_archive a.md", "update a.md"],
            ),
        ]);
    }

    #[test]
    fn table_of_files_gone() {
        // Files the source no longer has, under each delete policy.
        let s = 1_000_000_000;
        check(&[
            (
                "vanished under each policy",
                vec![],
                vec![on("a.md", "h1")],
                DeletePolicy::Delete,
                &["delete a.md"],
            ),
            (
                "vanished, disable",
                vec![],
                vec![on("a.md", "h1")],
                DeletePolicy::Disable,
                &["disable a.md"],
            ),
            (
                "vanished, archive",
                vec![],
                vec![on("a.md", "h1")],
                DeletePolicy::Archive,
                &["archive a.md"],
            ),
            (
                "already disabled: nothing more",
                vec![],
                vec![cached("a.md", "h1", RemoteStatus::Disabled, Some(meta(1)))],
                DeletePolicy::Disable,
                &[],
            ),
            (
                "protected key is left alone",
                vec![],
                vec![cached("locked/a.md", "h1", RemoteStatus::Enabled, None)],
                DeletePolicy::Delete,
                &[],
            ),
            (
                "rename: create new, policy for old",
                vec![obs("b.md", "h1", s)],
                vec![on("a.md", "h1")],
                DeletePolicy::Delete,
                &["create b.md", "metadata b.md", "delete a.md"],
            ),
        ]);
    }

    #[test]
    fn metadata_that_travels_with_content_sends_the_content_again() {
        // Open WebUI keeps what an upload carried: a touched file (new
        // `modified`) goes up again, an unchanged one does not.
        let maps = size_mapping();
        let rules = |caps| Rules {
            mappings: &maps,
            delete_policy: DeletePolicy::Delete,
            caps,
            bind: &|_| None,
        };
        let caps = Capabilities {
            content: true,
            batch_metadata: false,
            status: false,
            delete: true,
            create_records: false,
            metadata_with_content: true,
        };
        let s = 1_000_000_000;
        let cache: HashMap<_, _> = [("a.md".to_owned(), on("a.md", "h1"))].into();
        let ops = |mtime| {
            plan(&[obs("a.md", "h1", mtime)], &cache, &rules(caps), &|_| {
                false
            })
            .ops
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
        };
        assert_eq!(ops(2 * s), ["update", "metadata"]);
        assert_eq!(ops(s), Vec::<&str>::new());
    }

    #[test]
    fn never_pushed_and_gone_is_forgotten() {
        let mut c = cached("a.md", "h1", RemoteStatus::Enabled, None);
        c.doc_id = None;
        assert_eq!(
            run(&[], vec![c], DeletePolicy::Delete, &[]),
            vec!["forget a.md"]
        );
    }

    #[test]
    fn removing_all_mappings_clears_pushed_metadata() {
        let c = cached("a.md", "h1", RemoteStatus::Enabled, Some(meta(1)));
        assert_eq!(
            run(&[obs("a.md", "h1", 1)], vec![c], DeletePolicy::Delete, &[]),
            vec!["metadata a.md"]
        );
    }
}
