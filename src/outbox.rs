//! Between the plan and the pusher: the plan's upstream steps are written
//! to the outbox, and the steps the outbox says must wait are held back —
//! permanent failures until their item changes, transient ones (in the
//! service) until their backoff ran out.

use std::collections::{HashMap, HashSet};

use crate::plan::{Op, Plan};
use crate::sink::{ErrorClass, SinkError};
use crate::state::{OutboxRow, Queued, RowError, Setback, StepKind};

/// The outbox form of an upstream op; `None` for local bookkeeping.
pub fn step(op: &Op) -> Option<Queued<'_>> {
    let (kind, fingerprint) = match op {
        Op::Create { hash, .. } | Op::UpdateContent { hash, .. } => {
            (StepKind::Content, hash.clone())
        }
        Op::SetMetadata { metadata, .. } => (
            StepKind::Metadata,
            serde_json::to_string(metadata).unwrap_or_default(),
        ),
        Op::SetStatus { doc_id, action, .. } => {
            (StepKind::Status, format!("{} {doc_id}", action.as_str()))
        }
        Op::Delete { doc_id, .. } => (StepKind::Delete, doc_id.clone()),
        Op::Forget { .. } => return None,
    };
    Some(Queued {
        key: op.key(),
        kind,
        op: op.name(),
        fingerprint,
    })
}

/// A planned step not attempted in this pass, and why.
#[derive(Debug, Clone)]
pub struct Held {
    pub key: String,
    pub op: &'static str,
    pub error: RowError,
    /// Unix seconds of its next attempt; `None` when parked until the item
    /// changes or `kbsync retry`.
    pub until: Option<i64>,
}

/// Splits `plan` into what to push now and what waits. `now` is Unix
/// seconds; with `honour_backoff` false (a one-shot run asked for by
/// hand) transient failures are tried again at once. The plan to push is
/// `None` when nothing waits: push `plan` itself (no copy of a large one).
pub fn hold(
    plan: &Plan,
    rows: &HashMap<(String, StepKind), OutboxRow>,
    now: i64,
    honour_backoff: bool,
) -> (Option<Plan>, Vec<Held>) {
    let mut held = Vec::new();
    // Metadata cannot follow a waiting status change (the document is in
    // the wrong state, archived ones are immutable) nor a waiting create
    // (no document yet); it can follow a waiting update of an existing one.
    let mut blocked: HashSet<&str> = HashSet::new();
    // Nor can an update follow a waiting enable or un_archive: Dify updates
    // only available documents ("Document is not available").
    let mut unavailable: HashSet<&str> = HashSet::new();
    let waits = |op: &Op| -> Option<&OutboxRow> {
        // Only the row's identity is needed here, not the fingerprint
        // (which would serialise the metadata again).
        if !op.is_upstream() {
            return None;
        }
        let row = rows.get(&(op.key().to_owned(), StepKind::of_op(op.name())))?;
        row.error.as_ref()?;
        if row.failed || (honour_backoff && row.next_attempt_at > now) {
            Some(row)
        } else {
            None
        }
    };
    for op in &plan.ops {
        if let Some(row) = waits(op) {
            held.push(Held {
                key: op.key().to_owned(),
                op: op.name(),
                error: row.error.clone().expect("checked above"),
                until: (!row.failed).then_some(row.next_attempt_at),
            });
            if matches!(op, Op::Create { .. } | Op::SetStatus { .. }) {
                blocked.insert(op.key());
            }
            if let Op::SetStatus { action, .. } = op {
                if action.restores() {
                    unavailable.insert(op.key());
                }
            }
        }
    }
    if held.is_empty() {
        return (None, held);
    }
    let held_ops: HashSet<(&str, &str)> = held.iter().map(|h| (h.key.as_str(), h.op)).collect();
    let ops = plan
        .ops
        .iter()
        .filter(|op| {
            let dependent = match op {
                Op::SetMetadata { .. } => blocked.contains(op.key()),
                Op::UpdateContent { .. } => unavailable.contains(op.key()),
                _ => false,
            };
            !(dependent || held_ops.contains(&(op.key(), op.name())))
        })
        .cloned()
        .collect();
    (
        Some(Plan {
            ops,
            warnings: Vec::new(),
        }),
        held,
    )
}

/// How the outbox should treat a failure: `None` for a fatal one (the job
/// stops; the step stays queued as it was).
pub fn setback(e: &SinkError) -> Option<Setback> {
    match e.class {
        ErrorClass::Transient => Some(Setback::Transient {
            retry_after: e.retry_after,
        }),
        ErrorClass::Permanent => Some(Setback::Permanent),
        ErrorClass::Fatal => None,
    }
}

pub fn row_error(e: &SinkError) -> RowError {
    RowError {
        status: e.status,
        code: e.code.clone(),
        message: e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StatusAction;

    fn row(key: &str, kind: StepKind, failed: bool, next: i64) -> ((String, StepKind), OutboxRow) {
        (
            (key.into(), kind),
            OutboxRow {
                key: key.into(),
                kind,
                op: "x".into(),
                fingerprint: "f".into(),
                failed,
                attempts: 1,
                started: false,
                next_attempt_at: next,
                error: Some(RowError {
                    status: Some(503),
                    code: "c".into(),
                    message: "m".into(),
                }),
            },
        )
    }

    #[test]
    fn parked_and_backed_off_steps_wait_with_their_dependents() {
        let plan = Plan {
            ops: vec![
                Op::Create {
                    key: "a.md".into(),
                    size: 1,
                    hash: "h".into(),
                },
                Op::SetMetadata {
                    key: "a.md".into(),
                    doc_id: None,
                    metadata: Default::default(),
                },
                Op::Create {
                    key: "b.md".into(),
                    size: 1,
                    hash: "h".into(),
                },
                Op::SetStatus {
                    key: "c.md".into(),
                    doc_id: "d".into(),
                    action: StatusAction::Disable,
                },
                Op::Create {
                    key: "d.md".into(),
                    size: 1,
                    hash: "h".into(),
                },
                // Its update waits; metadata of the existing document goes.
                Op::UpdateContent {
                    key: "e.md".into(),
                    doc_id: "doc-e".into(),
                    size: 1,
                    hash: "h".into(),
                },
                Op::SetMetadata {
                    key: "e.md".into(),
                    doc_id: Some("doc-e".into()),
                    metadata: Default::default(),
                },
            ],
            warnings: vec![],
        };
        let rows: HashMap<_, _> = [
            row("a.md", StepKind::Content, true, 0),
            row("b.md", StepKind::Content, false, 200),
            row("c.md", StepKind::Status, false, 50),
            row("e.md", StepKind::Content, false, 300),
        ]
        .into_iter()
        .collect();

        let (run, held) = hold(&plan, &rows, 100, true);
        let run = run.unwrap();
        let kept: Vec<(&str, &str)> = run.ops.iter().map(|o| (o.key(), o.name())).collect();
        assert_eq!(
            kept,
            [
                ("c.md", "disable"),
                ("d.md", "create"),
                ("e.md", "metadata")
            ]
        );
        assert_eq!(held.len(), 3);
        assert_eq!(held[0].until, None);
        assert_eq!(held[1].until, Some(200));

        // A run asked for by hand retries transient failures at once, but
        // still not the parked one.
        let (run, held) = hold(&plan, &rows, 100, false);
        let run = run.unwrap();
        let keys: Vec<&str> = run.ops.iter().map(|o| o.key()).collect();
        assert_eq!(keys, ["b.md", "c.md", "d.md", "e.md", "e.md"]);
        assert_eq!(held.len(), 1);

        // Nothing waits: the plan itself is pushed.
        let (run, held) = hold(&plan, &HashMap::new(), 100, true);
        assert!(run.is_none() && held.is_empty());
    }
}
