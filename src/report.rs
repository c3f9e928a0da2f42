//! What a pass prints: the plan (a table, or JSON with `--json`) and a
//! one-line summary per job. Logs go to stderr; this goes to stdout.

use std::io::Write;

use serde_json::json;

use std::time::Duration;

use crate::audit::AuditReport;
use crate::guard::Refusal;
use crate::outbox::Held;
use crate::plan::{Op, Plan};
use crate::sink::Outcome;
use crate::source::Skipped;

/// What one pass of one job did and found: the outcome the summary line,
/// `check` and the exit code are made from.
#[derive(Debug)]
pub struct JobReport {
    pub job: String,
    pub scanned: usize,
    pub hashed_files: usize,
    /// Files found settled and unchanged: neither read nor planned.
    pub unchanged: usize,
    pub skipped: Vec<Skipped>,
    /// What the pass planned: every step on a dry run; on a pass that
    /// pushed, the first `KEPT_OPS` (what it did is in `outcome`).
    pub plan: Plan,
    /// Planned steps the outbox held back (failed before, see `Held`).
    pub held: Vec<Held>,
    pub outcome: Option<Outcome>,
    pub requests: u64,
    /// The scan: walk, triage, reading what changed, and (unless dry
    /// running) recording the facts in the state file.
    pub scan_elapsed: Duration,
    pub elapsed: Duration,
    /// A job-level error (credential, state, fatal upstream answer, a
    /// source that looks unmounted).
    pub error: Option<String>,
    /// The delete guard kept this pass from retiring anything.
    pub refused: Option<Refusal>,
    /// What the upstream audit found (and repaired), when it ran.
    pub audit: Option<AuditReport>,
    /// The audit could not run: the mirror is not known to be exact.
    pub audit_error: Option<String>,
    /// `error` is the config's: the upstream refused the target or the
    /// credential a setting names (`--reconcile` exits 2; the service does
    /// not retry it until the config changes).
    pub config_error: bool,
    /// The source could not be looked at (`error` says why): nothing was
    /// scanned, and nothing is known of how it compares.
    pub unscanned: bool,
}

impl JobReport {
    pub(crate) fn new(job: &str) -> JobReport {
        JobReport {
            job: job.to_owned(),
            scanned: 0,
            hashed_files: 0,
            unchanged: 0,
            skipped: Vec::new(),
            plan: Plan::default(),
            held: Vec::new(),
            outcome: None,
            requests: 0,
            scan_elapsed: Duration::ZERO,
            elapsed: Duration::ZERO,
            error: None,
            refused: None,
            audit: None,
            audit_error: None,
            config_error: false,
            unscanned: false,
        }
    }

    pub fn converged(&self) -> bool {
        self.error.is_none()
            && self.refused.is_none()
            && self.audit_error.is_none()
            && self.skipped.is_empty()
            && self.held.is_empty()
            && self.audit.as_ref().is_none_or(|a| a.remaining() == 0)
            && self.outcome.as_ref().is_none_or(Outcome::converged)
    }

    /// The pass left nothing to retry: whatever did not converge was
    /// skipped or refused for good (parked until it changes), so it synced
    /// everything it could. A converged pass is settled too.
    pub fn settled(&self) -> bool {
        self.error.is_none()
            && self.refused.is_none()
            && self.audit_error.is_none()
            && self.held.iter().all(|h| h.until.is_none())
            && self.outcome.as_ref().is_none_or(Outcome::settled)
    }
}

/// The plan as a table. Time fields show as ISO dates (`config` says
/// which fields are times); `--json` keeps the Unix seconds.
pub fn print_plan(
    out: &mut impl Write,
    reports: &[JobReport],
    config: &crate::config::Config,
) -> std::io::Result<()> {
    let rows: Vec<[String; 4]> = reports
        .iter()
        .flat_map(|r| {
            let times: Vec<&str> = config
                .jobs
                .iter()
                .filter(|j| j.name == r.job)
                .flat_map(|j| j.metadata.iter())
                .filter(|m| m.kind == crate::metadata::FieldType::Time)
                .map(|m| m.name.as_str())
                .collect();
            r.plan.ops.iter().map(move |op| {
                let held = r
                    .held
                    .iter()
                    .find(|h| h.key == op.key() && h.op == op.name())
                    .map(|h| {
                        format!(
                            " (held: refused before with {}; `kbsync retry` to try again)",
                            h.error.code
                        )
                    })
                    .unwrap_or_default();
                [
                    r.job.clone(),
                    op.name().to_owned(),
                    op.key().to_owned(),
                    format!("{}{held}", detail(op, &times)),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        writeln!(out, "plan: nothing to do")?;
        return Ok(());
    }
    let header = ["JOB", "OP", "ITEM", "DETAIL"].map(String::from);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )?;
    }
    Ok(())
}

fn detail(op: &Op, times: &[&str]) -> String {
    match op {
        Op::Create { size, .. } | Op::UpdateContent { size, .. } => human_size(*size),
        Op::SetMetadata { metadata, .. } => metadata
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                serde_json::Value::Number(n) if times.contains(&k.as_str()) => match n.as_i64() {
                    Some(secs) => format!("{k}={}", crate::metadata::format_rfc3339(secs)),
                    None => format!("{k}={n}"),
                },
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Op::SetStatus { doc_id, .. } | Op::Delete { doc_id, .. } => format!("document {doc_id}"),
        Op::Forget { .. } => "never pushed; dropped from the state file".into(),
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn plan_json(reports: &[JobReport]) -> serde_json::Value {
    json!(reports
        .iter()
        .map(|r| json!({
            "job": r.job,
            "scanned": r.scanned,
            "unchanged": r.unchanged,
            "hashed": r.hashed_files,
            "ops": r.plan.ops,
            "skipped": r.skipped.iter().map(|s| json!({"path": s.path, "reason": s.reason})).collect::<Vec<_>>(),
            "held": r.held.iter().map(|h| json!({"item": h.key, "op": h.op, "status": h.error.status, "code": h.error.code, "message": h.error.message, "next_attempt_at": h.until})).collect::<Vec<_>>(),
            "warnings": r.plan.warnings.iter().map(|(k, w)| json!({"item": k, "field": w.field, "message": w.message})).collect::<Vec<_>>(),
        }))
        .collect::<Vec<_>>())
}

pub fn summary_line(r: &JobReport) -> String {
    let mut parts = vec![format!("{} files", r.scanned)];
    match &r.outcome {
        Some(o) => {
            for (n, label) in [
                (o.created, "created"),
                (o.adopted, "adopted"),
                (o.updated, "updated"),
                (o.metadata, "metadata"),
                (o.deleted, "deleted"),
                (o.forgotten, "forgotten"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {label}"));
                }
            }
            for (action, n) in &o.status {
                parts.push(format!("{n} {action}"));
            }
            if !o.failures.is_empty() {
                parts.push(format!("{} failed", o.failures.len()));
            }
            if o.interrupted {
                parts.push("interrupted by shutdown".into());
            }
        }
        None => parts.push(format!("{} planned", r.plan.ops.len())),
    }
    if !r.skipped.is_empty() {
        parts.push(format!("{} skipped", r.skipped.len()));
    }
    if !r.held.is_empty() {
        parts.push(format!("{} held (failed before)", r.held.len()));
    }
    if let Some(a) = r.audit.as_ref().filter(|a| !a.findings.is_empty()) {
        parts.push(format!(
            "{} drift found by the audit ({} records listed)",
            a.findings.len(),
            a.listed
        ));
    }
    if r.audit_error.is_some() {
        parts.push("audit failed".into());
    }
    if let Some(g) = &r.refused {
        parts.push(format!(
            "refused to retire {} of {} (delete guard: see --allow-deletes)",
            g.retiring, g.tracked
        ));
    }
    parts.push(format!("{} requests", r.requests));
    parts.push(format!("{:.2}s", r.elapsed.as_secs_f64()));
    let verdict = if r.converged() {
        "converged"
    } else {
        "NOT converged"
    };
    format!("{}: {verdict}: {}", r.job, parts.join(", "))
}

/// The per-job summary, then every problem with its reason.
pub fn print_summary(out: &mut impl Write, reports: &[JobReport]) -> std::io::Result<()> {
    for r in reports {
        writeln!(out, "{}", summary_line(r))?;
        if let Some(e) = &r.error {
            writeln!(out, "  error: {e}")?;
        }
        if let Some(e) = &r.audit_error {
            writeln!(out, "  error: {e}")?;
        }
        for f in r.audit.iter().flat_map(|a| &a.findings) {
            writeln!(out, "  audit: {} {}: {}", f.drift.as_str(), f.key, f.detail)?;
        }
        if let Some(refusal) = &r.refused {
            writeln!(out, "  guard: {refusal}")?;
        }
        for s in &r.skipped {
            writeln!(out, "  skipped {}: {}", s.path, s.reason)?;
        }
        if let Some(o) = &r.outcome {
            for f in &o.failures {
                writeln!(out, "  failed {} {}: {}", f.op, f.key, f.error)?;
            }
        }
        for h in &r.held {
            let when = match h.until {
                Some(at) => format!("next attempt at {}", crate::metadata::format_rfc3339(at)),
                None => "retried when the file changes, or `kbsync retry`".into(),
            };
            let code = match h.error.status {
                Some(s) => format!("HTTP {s} {}", h.error.code),
                None => h.error.code.clone(),
            };
            writeln!(
                out,
                "  held {} {}: {code}: {} ({when})",
                h.op, h.key, h.error.message
            )?;
        }
    }
    Ok(())
}

/// Whether a dry run with an audit found the upstream exactly as the source
/// says: no drift, nothing to do, nothing skipped, no error. A source that
/// could not be looked at is an error: nothing vouches that it matches.
pub fn in_step(r: &JobReport) -> bool {
    r.error.is_none()
        && r.audit_error.is_none()
        && r.refused.is_none()
        && r.plan.ops.is_empty()
        && r.skipped.is_empty()
        && r.held.is_empty()
        && r.audit.as_ref().is_none_or(|a| a.findings.is_empty())
}

/// `kbsync check`: every difference, one a line; true when there is none.
pub fn print_check(out: &mut impl Write, reports: &[JobReport]) -> std::io::Result<bool> {
    let mut clean = true;
    for r in reports {
        let listed = match (&r.audit, &r.audit_error) {
            (Some(a), _) => format!("{} upstream records", a.listed),
            (None, Some(_)) => "upstream not listed".to_owned(),
            (None, None) => "upstream not listed (this target cannot list)".to_owned(),
        };
        let n = r.audit.as_ref().map_or(0, |a| a.findings.len())
            + r.plan.ops.len()
            + r.skipped.len()
            + r.held.len();
        let scanned = if r.unscanned {
            "source not looked at".to_owned()
        } else {
            format!("{} files", r.scanned)
        };
        writeln!(out, "{}: {n} differences ({scanned}, {listed})", r.job)?;
        for e in r.error.iter().chain(&r.audit_error) {
            writeln!(out, "  error: {e}")?;
        }
        if let Some(g) = &r.refused {
            writeln!(out, "  guard: {g}")?;
        }
        for f in r.audit.iter().flat_map(|a| &a.findings) {
            let detail = crate::audit::would_do(&f.detail);
            writeln!(out, "  {} {}: {detail}", f.drift.as_str(), f.key)?;
        }
        for op in &r.plan.ops {
            writeln!(out, "  {} {}: {}", would(op), op.key(), detail(op, &[]))?;
        }
        for s in &r.skipped {
            writeln!(out, "  skipped {}: {}", s.path, s.reason)?;
        }
        for h in &r.held {
            writeln!(out, "  held {} {}: {}", h.op, h.key, h.error.message)?;
        }
        clean &= in_step(r);
    }
    Ok(clean)
}

/// What a pass would do with `op`, as `check` says it.
fn would(op: &Op) -> String {
    match op {
        Op::Create { .. } => "would upload".into(),
        Op::UpdateContent { .. } => "would upload again".into(),
        Op::SetMetadata { .. } => "would set the metadata of".into(),
        Op::SetStatus { action, .. } => format!("would {}", action.as_str().replace('_', "-")),
        Op::Delete { .. } => "would delete".into(),
        Op::Forget { .. } => "would forget".into(),
    }
}

/// The exit code for these reports (README, "Exit status"): 4 when an
/// upstream refused a credential or target, else 3 when the delete guard
/// refused, else 1 when a job is not `ok`, else 0.
pub fn exit_code(reports: &[JobReport], ok: impl Fn(&JobReport) -> bool) -> u8 {
    if reports.iter().any(|r| r.config_error) {
        crate::exit::UPSTREAM_REFUSED
    } else if reports.iter().any(|r| r.refused.is_some()) {
        crate::exit::GUARD_REFUSED
    } else if reports.iter().all(ok) {
        crate::exit::CONVERGED
    } else {
        crate::exit::NOT_CONVERGED
    }
}

pub fn check_json(reports: &[JobReport]) -> serde_json::Value {
    json!(reports
        .iter()
        .map(|r| json!({
            "job": r.job,
            "in_step": in_step(r),
            "source_scanned": !r.unscanned,
            "scanned": r.scanned,
            "listed": r.audit.as_ref().map(|a| a.listed),
            "drift": r.audit.as_ref().map(|a| a.findings.clone()).unwrap_or_default(),
            "pending": r.plan.ops,
            "skipped": r.skipped.iter().map(|s| json!({"path": s.path, "reason": s.reason})).collect::<Vec<_>>(),
            "held": r.held.iter().map(|h| json!({"item": h.key, "op": h.op, "message": h.error.message})).collect::<Vec<_>>(),
            "error": r.error.as_ref().or(r.audit_error.as_ref()),
            "audit_error": r.audit_error,
            "refused": r.refused.as_ref().map(|g| g.to_string()),
        }))
        .collect::<Vec<_>>())
}

/// `--reconcile --json`: per job, its counts and verdict, and each item's
/// result: `ok` (the step went through), `failed` (with the upstream's
/// answer), `skipped` (a file not read, or a step held back: the reason).
/// Items done beyond `KEPT_DONE` are only counted (`items_untold`).
pub fn reconcile_json(reports: &[JobReport]) -> serde_json::Value {
    json!(reports.iter().map(job_json).collect::<Vec<_>>())
}

fn job_json(r: &JobReport) -> serde_json::Value {
    let none = Outcome::default();
    let o = r.outcome.as_ref().unwrap_or(&none);
    let done = o
        .done
        .iter()
        .map(|(key, step)| json!({"path": key, "action": step, "result": "ok"}));
    let failed = o.failures.iter().map(|f| {
        json!({"path": f.key, "action": f.op, "result": "failed", "reason": f.error.to_string()})
    });
    let skipped = r
        .skipped
        .iter()
        .map(|s| json!({"path": s.path, "action": null, "result": "skipped", "reason": s.reason}));
    let held = r.held.iter().map(|h| {
        let reason = format!(
            "held: refused before with {}: {}",
            h.error.code, h.error.message
        );
        json!({"path": h.key, "action": h.op, "result": "skipped", "reason": reason})
    });
    let items: Vec<serde_json::Value> = done.chain(failed).chain(skipped).chain(held).collect();
    json!({
        "job": r.job,
        "converged": r.converged(),
        "settled": r.settled(),
        "interrupted": o.interrupted,
        "counts": {
            "scanned": r.scanned,
            "unchanged": r.unchanged,
            "hashed": r.hashed_files,
            "created": o.created,
            "adopted": o.adopted,
            "updated": o.updated,
            "metadata": o.metadata,
            "status": o.status,
            "deleted": o.deleted,
            "forgotten": o.forgotten,
            "failed": o.failures.len(),
            "skipped": r.skipped.len(),
            "held": r.held.len(),
            "requests": r.requests,
        },
        "elapsed_secs": r.elapsed.as_secs_f64(),
        "error": r.error,
        "audit_error": r.audit_error,
        "upstream_refused": r.config_error,
        "guard": r.refused.as_ref().map(|g| json!({
            "retiring": g.retiring,
            "tracked": g.tracked,
            "message": g.to_string(),
        })),
        "audit": r.audit.as_ref().map(|a| json!({"listed": a.listed, "findings": a.findings})),
        "items": items,
        "items_untold": o.done_untold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    fn report(config_error: bool, guard: bool, error: bool) -> JobReport {
        let mut r = JobReport::new("docs");
        r.config_error = config_error;
        r.error = (config_error || error).then(|| "refused".to_owned());
        r.refused = guard.then_some(Refusal {
            retiring: 4,
            tracked: 4,
            limit: crate::model::MaxDelete::Percent(50),
            earlier: 0,
        });
        r
    }

    #[test]
    fn a_refused_upstream_comes_before_the_guard_before_items() {
        let code = |rs: &[JobReport]| exit_code(rs, JobReport::converged);
        assert_eq!(code(&[report(false, false, false)]), exit::CONVERGED);
        assert_eq!(code(&[]), exit::CONVERGED);
        assert_eq!(code(&[report(false, false, true)]), exit::NOT_CONVERGED);
        let guard = [report(false, false, true), report(false, true, false)];
        assert_eq!(code(&guard), exit::GUARD_REFUSED);
        let all = [
            report(false, true, false),
            report(true, false, false),
            report(false, false, true),
        ];
        assert_eq!(code(&all), exit::UPSTREAM_REFUSED);
    }
}
