//! The delete guard. An unmounted share looks exactly like an emptied
//! folder, and a broken site like one without pages: a pass that would
//! retire (delete, disable or archive) more of a job's upstream records
//! than `max_delete` allows retires none of them, says so, and waits for
//! someone to look. Everything else in the pass goes ahead.

use std::fmt;

pub use crate::model::MaxDelete;
use crate::plan::{Op, Plan, StatusAction};

/// A job with at least this many records never loses all of them in one
/// pass without `--allow-deletes`, whatever `max_delete` says.
pub const ALL_GUARD_FROM: u64 = 10;

/// Why a pass retired nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub retiring: u64,
    pub tracked: u64,
    pub limit: MaxDelete,
    /// Of `retiring`, records already retired under another
    /// `delete_policy`: a policy change applies to earlier retirements
    /// too (`disable` → `delete` deletes what was disabled).
    pub earlier: u64,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, of) = (self.retiring, self.tracked);
        let why = if n >= of {
            "every record of the job".to_owned()
        } else {
            format!("more than max_delete = {}", self.limit)
        };
        let cause = if self.earlier > 0 {
            format!(
                "{} of them retired earlier under another delete_policy, which the changed delete_policy applies to as well",
                self.earlier
            )
        } else {
            "the source may be unmounted, emptied or broken".to_owned()
        };
        write!(
            f,
            "refused to retire {n} of {of} upstream records ({why}): {cause}. \
             Check it; if the removals are meant, run `kbsync --reconcile --allow-deletes` \
             (beside the service: `kbsync retry --allow-deletes`)"
        )
    }
}

fn retires(op: &Op) -> bool {
    match op {
        Op::Delete { .. } => true,
        Op::SetStatus { action, .. } => {
            matches!(action, StatusAction::Disable | StatusAction::Archive)
        }
        _ => false,
    }
}

/// Whether the plan retires anything at all.
pub fn retires_any(plan: &Plan) -> bool {
    plan.ops.iter().any(retires)
}

/// Whether retiring `retiring` of `tracked` records goes beyond `limit`.
pub fn exceeds(retiring: u64, tracked: u64, limit: MaxDelete) -> bool {
    if retiring == 0 {
        return false;
    }
    let over_limit = match limit {
        MaxDelete::Count(n) => retiring > n,
        MaxDelete::Percent(p) => retiring * 100 > u64::from(p) * tracked,
    };
    over_limit || (tracked >= ALL_GUARD_FROM && retiring >= tracked)
}

/// Takes every retirement out of `plan`: a slice of a pass the guard
/// refused as a whole.
pub fn strip(plan: &mut Plan) {
    plan.ops.retain(|op| !retires(op));
}

/// Takes the retirements out of `plan` when they go beyond `limit`, for a
/// job with `tracked` upstream records, and says why. `retired_before`
/// tells the keys whose record is retired already (a policy change).
pub fn check(
    plan: &mut Plan,
    tracked: u64,
    limit: MaxDelete,
    retired_before: &dyn Fn(&str) -> bool,
) -> Option<Refusal> {
    let retiring = plan.ops.iter().filter(|op| retires(op)).count() as u64;
    let earlier = plan
        .ops
        .iter()
        .filter(|op| retires(op) && retired_before(op.key()))
        .count() as u64;
    if !exceeds(retiring, tracked, limit) {
        return None;
    }
    plan.ops.retain(|op| !retires(op));
    Some(Refusal {
        retiring,
        tracked,
        limit,
        earlier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_share_by_count_and_never_all() {
        let half = MaxDelete::Percent(50);
        assert!(!exceeds(0, 0, half));
        assert!(!exceeds(10, 20, half), "exactly half is allowed");
        assert!(exceeds(11, 20, half));
        // Small jobs may lose everything within the share...
        assert!(!exceeds(1, 2, half));
        assert!(exceeds(2, 2, half));
        // ...but from ten records on, never all at once.
        let all = MaxDelete::Percent(100);
        assert!(!exceeds(9, 9, all));
        assert!(exceeds(10, 10, all));
        assert!(!exceeds(9, 10, all));
        let count = MaxDelete::Count(3);
        assert!(!exceeds(3, 1000, count));
        assert!(exceeds(4, 1000, count));
        assert!(exceeds(10, 10, MaxDelete::Count(100)));
    }

    #[test]
    fn a_refused_plan_keeps_everything_but_retirements() {
        let op = |key: &str, action| Op::SetStatus {
            key: key.into(),
            doc_id: format!("d-{key}"),
            action,
        };
        let mut plan = Plan {
            ops: vec![
                op("a", StatusAction::Disable),
                op("b", StatusAction::Archive),
                Op::Delete {
                    key: "c".into(),
                    doc_id: "d-c".into(),
                },
                op("d", StatusAction::Enable),
                Op::Create {
                    key: "e".into(),
                    size: 1,
                    hash: "h".into(),
                },
            ],
            warnings: Vec::new(),
        };
        let r = check(&mut plan, 4, MaxDelete::default(), &|_| false).expect("3 of 4 is over half");
        assert_eq!((r.retiring, r.tracked), (3, 4));
        assert!(r.to_string().contains("refused to retire 3 of 4"), "{r}");
        let left: Vec<&str> = plan.ops.iter().map(|o| o.key()).collect();
        assert_eq!(left, ["d", "e"]);
        assert_eq!(check(&mut plan, 4, MaxDelete::default(), &|_| false), None);
    }
}
