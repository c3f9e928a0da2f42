//! What the service tells its monitoring: Prometheus metrics and health
//! answers on an opt-in listener (`[daemon] metrics_listen`).
//!
//! Metrics are recorded through the `metrics` facade wherever the thing
//! happens (a request in the transport, a pass in the service loop) and
//! cost next to nothing when no listener was asked for: without an
//! installed recorder the macros do nothing. `metrics-exporter-prometheus`
//! keeps them and writes the exposition format. Item counts are read from
//! the state file when scraped, so they are never staler than the scrape.

mod health;
mod listener;

pub use health::{Health, BEAT, STALL};
pub use listener::{serve, Listener};

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Pass durations run from milliseconds (a one-file change) to hours (a
/// first sync into a server that parses every upload).
const PASS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

pub const PASS_DURATION: &str = "kbsync_pass_duration_seconds";

/// Installs the process-wide recorder; the handle renders what it holds.
/// Called once, by the service, and only when a listener was asked for.
/// `jobs` are the configured jobs and their upstreams (`dify`, …).
pub fn install(
    jobs: &[(String, &'static str)],
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PASS_DURATION.into()), PASS_BUCKETS)?
        .install_recorder()?;
    describe();
    gauge!("kbsync_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    zeros(jobs);
    Ok(handle)
}

/// Counters shown from the start, so that `rate()` and `increase()` see
/// the first event as one, and an alert on them works before it.
fn zeros(jobs: &[(String, &'static str)]) {
    counter!("kbsync_inotify_overflows_total").absolute(0);
    for result in ["applied", "rejected"] {
        counter!("kbsync_reloads_total", "result" => result).absolute(0);
    }
    for (job, upstream) in jobs {
        for result in ["converged", "not_converged", "failed"] {
            counter!("kbsync_passes_total", "job" => job.clone(), "result" => result).absolute(0);
        }
        let labels = [("upstream", (*upstream).to_owned()), ("job", job.clone())];
        counter!("kbsync_retries_total", &labels).absolute(0);
        counter!("kbsync_rate_limit_pauses_total", &labels).absolute(0);
        gauge!("kbsync_job_paused", "job" => job.clone()).set(0.0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "kbsync_items_tracked",
        "Source items the state file tracks, per job."
    );
    describe_gauge!(
        "kbsync_items_in_sync",
        "Tracked items whose upstream copy is current."
    );
    describe_gauge!(
        "kbsync_items_pending",
        "Items waiting to be uploaded or retired upstream."
    );
    describe_gauge!(
        "kbsync_items_parked",
        "Items whose step failed for good; they wait for a change or `kbsync retry`."
    );
    describe_gauge!(
        "kbsync_items_skipped",
        "Files the passes skipped (unreadable, too large, a type the upstream does not take)."
    );
    describe_gauge!("kbsync_outbox_depth", "Steps queued in the outbox.");
    describe_gauge!(
        "kbsync_last_success_timestamp_seconds",
        Unit::Seconds,
        "When the job's last pass ended converged (Unix time)."
    );
    describe_gauge!(
        "kbsync_last_settled_timestamp_seconds",
        Unit::Seconds,
        "When the job's last pass ended that left nothing to retry: only refusals for good and skipped files remained (Unix time)."
    );
    describe_counter!(
        "kbsync_requests_total",
        "Upstream HTTP requests by job, operation and status class (error: no answer)."
    );
    describe_counter!(
        "kbsync_retries_total",
        "Upstream calls retried after a transient failure, by job."
    );
    describe_counter!(
        "kbsync_rate_limit_pauses_total",
        "Times an upstream said slow down and every call of the job to it paused."
    );
    describe_counter!(
        "kbsync_reloads_total",
        "Configuration reloads (SIGHUP) by result: applied, or rejected (the previous configuration kept running)."
    );
    describe_gauge!(
        "kbsync_job_paused",
        "1 while the job is paused through the control API; its passes do not run."
    );
    describe_counter!(
        "kbsync_uploaded_bytes_total",
        Unit::Bytes,
        "File content uploaded and accepted."
    );
    describe_histogram!(PASS_DURATION, Unit::Seconds, "How long passes took.");
    describe_counter!(
        "kbsync_passes_total",
        "Passes by result: converged, not_converged (steps failed or held) or failed (the job could not run)."
    );
    describe_gauge!("kbsync_inotify_watches", "Folders watched with inotify.");
    describe_gauge!(
        "kbsync_build_info",
        "The running kbsync's version, as a label; always 1."
    );
    describe_counter!(
        "kbsync_inotify_overflows_total",
        "Times the kernel dropped file events; each one costs a full pass."
    );
    describe_gauge!(
        "kbsync_audit_differences",
        "Differences the last upstream audit found between the state file and the upstream."
    );
}

/// The status class of an answer, or `error` when none came.
fn class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None => "error",
    }
}

/// One HTTP request sent to `upstream` for `job`'s `op`, and how it was
/// answered.
pub fn request((upstream, job): (&'static str, &str), op: &'static str, status: Option<u16>) {
    counter!(
        "kbsync_requests_total",
        "upstream" => upstream,
        "job" => job.to_owned(),
        "op" => op,
        "class" => class(status)
    )
    .increment(1);
}

pub fn retry(upstream: &'static str, job: &str) {
    counter!("kbsync_retries_total", "upstream" => upstream, "job" => job.to_owned()).increment(1);
}

pub fn rate_limit_pause(upstream: &'static str, job: &str) {
    counter!("kbsync_rate_limit_pauses_total", "upstream" => upstream, "job" => job.to_owned())
        .increment(1);
}

/// A configuration reload was `applied` or `rejected`.
pub fn reload(result: &'static str) {
    counter!("kbsync_reloads_total", "result" => result).increment(1);
}

pub fn paused(job: &str, paused: bool) {
    gauge!("kbsync_job_paused", "job" => job.to_owned()).set(if paused { 1.0 } else { 0.0 });
}

pub fn uploaded(upstream: &'static str, bytes: usize) {
    counter!("kbsync_uploaded_bytes_total", "upstream" => upstream).increment(bytes as u64);
}

/// A pass of `job` ended: `result` is converged, not_converged or failed.
pub fn pass(job: &str, result: &'static str, took: Duration) {
    histogram!(PASS_DURATION, "job" => job.to_owned()).record(took.as_secs_f64());
    counter!("kbsync_passes_total", "job" => job.to_owned(), "result" => result).increment(1);
}

pub fn watches(n: usize) {
    gauge!("kbsync_inotify_watches").set(n as f64);
}

pub fn inotify_overflow() {
    counter!("kbsync_inotify_overflows_total").increment(1);
}

pub fn audit_differences(job: &str, n: usize) {
    gauge!("kbsync_audit_differences", "job" => job.to_owned()).set(n as f64);
}

/// Sets the per-job gauges from the state file's summaries.
fn items(summaries: &[crate::state::JobSummary]) {
    for s in summaries {
        let job = s.job.clone();
        let set = |name: &'static str, v: u64| gauge!(name, "job" => job.clone()).set(v as f64);
        set("kbsync_items_tracked", s.tracked);
        set("kbsync_items_in_sync", s.in_sync);
        set(
            "kbsync_items_pending",
            s.pending_upload + s.pending_restore + s.pending_removal,
        );
        set("kbsync_items_parked", s.failed.len() as u64);
        set("kbsync_items_skipped", s.skipped.len() as u64);
        set("kbsync_outbox_depth", s.queued);
        if let Some(at) = s.last_success {
            gauge!("kbsync_last_success_timestamp_seconds", "job" => job.clone()).set(at as f64);
        }
        if let Some(at) = s.last_settled {
            gauge!("kbsync_last_settled_timestamp_seconds", "job" => job.clone()).set(at as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_their_class() {
        assert_eq!(class(Some(204)), "2xx");
        assert_eq!(class(Some(404)), "4xx");
        assert_eq!(class(Some(503)), "5xx");
        assert_eq!(class(None), "error");
    }
}
