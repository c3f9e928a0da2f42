//! `[daemon.notify]`: a JSON event POSTed when a job changes state
//! (failing, recovered, guard_refused, parked). Events go through a
//! bounded queue to a task of their own, so a slow or dead receiver never
//! holds up a pass; each is tried a few times, then dropped with a warning.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;

use crate::config::{Event, NotifyConfig};
use crate::report::JobReport;
use crate::secret::Secret;

/// Events waiting to be sent; beyond this, new ones are dropped.
const QUEUE: usize = 256;
/// Attempts per event, and the wait before the first retry (it doubles).
const ATTEMPTS: usize = 4;
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// One attempt's limit.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One event as posted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Note {
    pub event: Event,
    pub job: String,
    /// Unix seconds.
    pub at: i64,
    pub message: String,
}

/// The sending end; posting never waits.
pub struct Notifier {
    queue: mpsc::Sender<Note>,
    on: BTreeSet<Event>,
}

impl Notifier {
    /// Starts the sending task. Fails when the header's secret cannot be
    /// read.
    pub fn start(config: &NotifyConfig) -> anyhow::Result<Notifier> {
        let header = config
            .header
            .as_ref()
            .map(|(name, source)| {
                source
                    .load()
                    .map(|secret| (name.clone(), secret))
                    .map_err(|e| anyhow::anyhow!("`daemon.notify.header_value_*`: {e}"))
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // Events go where the config points, and nowhere a reply
            // redirects them.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(rx, client, config.url.clone(), header));
        Ok(Notifier {
            queue,
            on: config.on.clone(),
        })
    }

    /// Queues `note` when its event was asked for.
    pub fn post(&self, note: Note) {
        if !self.on.contains(&note.event) {
            return;
        }
        if let Err(e) = self.queue.try_send(note) {
            tracing::warn!("notify: an event was dropped, the queue of {QUEUE} is full: {e}");
        }
    }
}

async fn send_all(
    mut rx: mpsc::Receiver<Note>,
    client: reqwest::Client,
    url: reqwest::Url,
    header: Option<(String, Secret)>,
) {
    while let Some(note) = rx.recv().await {
        let attempt = || async {
            let mut req = client.post(url.clone()).json(&body(&note));
            if let Some((name, value)) = &header {
                req = req.header(name.as_str(), value.expose());
            }
            // Without the URL: it may hold a token in its query.
            let resp = req
                .send()
                .await
                .map_err(|e| Failed::Network(e.without_url()))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(Failed::Status(status.as_u16()))
            }
        };
        let sent = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(FIRST_RETRY)
                    .with_max_times(ATTEMPTS - 1),
            )
            .when(Failed::transient)
            .await;
        match sent {
            Ok(()) => {
                tracing::debug!(event = note.event.as_str(), job = %note.job, "notify: event sent")
            }
            Err(e) => tracing::warn!(
                event = note.event.as_str(),
                job = %note.job,
                "notify: event not delivered to {}: {e}",
                url.host_str().unwrap_or("the receiver")
            ),
        }
    }
}

#[derive(Debug)]
enum Failed {
    Network(reqwest::Error),
    Status(u16),
}

impl Failed {
    /// The receiver is down or busy; a 4xx says it will never take it.
    fn transient(&self) -> bool {
        match self {
            Failed::Network(_) => true,
            Failed::Status(s) => *s >= 500 || *s == 408 || *s == 429,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Network(e) => write!(f, "no answer ({e})"),
            Failed::Status(s) => write!(f, "answered HTTP {s}"),
        }
    }
}

fn body(note: &Note) -> serde_json::Value {
    serde_json::json!({
        "event": note.event,
        "job": note.job,
        "at": crate::metadata::format_rfc3339(note.at),
        "message": note.message,
        "service": "kbsync",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// What each job's passes said last, to tell when one changes state.
#[derive(Default)]
pub struct Transitions {
    failing: HashSet<String>,
    refused: HashSet<String>,
}

/// How a pass ended, as events see it.
pub struct Ended<'a> {
    pub job: &'a str,
    /// The job could not run (credential, source, fatal answer).
    pub error: Option<String>,
    /// The delete guard kept the pass from retiring anything.
    pub refused: Option<String>,
    /// Steps the upstream refused for good in this pass: (key, why).
    pub parked: Vec<(String, String)>,
}

impl<'a> Ended<'a> {
    pub fn of(report: &'a JobReport) -> Ended<'a> {
        Ended {
            job: &report.job,
            error: report.error.clone(),
            refused: report.refused.as_ref().map(|r| r.to_string()),
            parked: report
                .outcome
                .iter()
                .flat_map(|o| &o.failures)
                .filter(|f| !f.error.is_transient())
                .map(|f| (f.key.clone(), f.error.to_string()))
                .collect(),
        }
    }
}

impl Transitions {
    /// The events a pass's end makes, at `at` (Unix seconds).
    pub fn after(&mut self, ended: Ended, at: i64) -> Vec<Note> {
        let job = ended.job.to_owned();
        let note = |event, message: String| Note {
            event,
            job: job.clone(),
            at,
            message,
        };
        let mut notes = Vec::new();
        let was_bad = self.failing.contains(&job) || self.refused.contains(&job);
        match &ended.error {
            Some(e) if self.failing.insert(job.clone()) => {
                notes.push(note(Event::Failing, e.clone()))
            }
            Some(_) => {}
            None => {
                self.failing.remove(&job);
            }
        }
        match &ended.refused {
            Some(r) if self.refused.insert(job.clone()) => {
                notes.push(note(Event::GuardRefused, r.clone()))
            }
            Some(_) => {}
            None => {
                self.refused.remove(&job);
            }
        }
        if was_bad && ended.error.is_none() && ended.refused.is_none() {
            notes.push(note(
                Event::Recovered,
                "the last pass ran without a job-level failure".into(),
            ));
        }
        // A job that failed as a whole parks the steps it was refused; the
        // `failing` event tells of it already.
        let parked = ended.parked.first().filter(|_| ended.error.is_none());
        if let Some((key, why)) = parked {
            notes.push(note(
                Event::Parked,
                format!(
                    "{} step(s) refused for good, waiting for the file to change or `kbsync retry`; the first: {key}: {why}",
                    ended.parked.len()
                ),
            ));
        }
        notes
    }

    /// Forgets jobs no longer configured.
    pub fn retain(&mut self, jobs: &[String]) {
        self.failing.retain(|j| jobs.contains(j));
        self.refused.retain(|j| jobs.contains(j));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(error: Option<&str>, refused: Option<&str>, parked: usize) -> Ended<'static> {
        Ended {
            job: "docs",
            error: error.map(str::to_owned),
            refused: refused.map(str::to_owned),
            parked: (0..parked)
                .map(|i| (format!("f{i}.md"), "HTTP 400".to_owned()))
                .collect(),
        }
    }

    fn events(notes: &[Note]) -> Vec<Event> {
        notes.iter().map(|n| n.event).collect()
    }

    #[test]
    fn events_come_on_changes_of_state_not_on_every_pass() {
        let mut t = Transitions::default();
        assert!(t.after(ended(None, None, 0), 1).is_empty());
        assert_eq!(
            events(&t.after(ended(Some("key refused"), None, 0), 2)),
            [Event::Failing]
        );
        assert!(
            t.after(ended(Some("key refused"), None, 0), 3).is_empty(),
            "still failing: no second event"
        );
        assert_eq!(
            events(&t.after(ended(None, None, 0), 4)),
            [Event::Recovered]
        );
        assert_eq!(
            events(&t.after(ended(None, Some("refused to retire 9 of 10"), 0), 5)),
            [Event::GuardRefused]
        );
        assert!(t
            .after(ended(None, Some("refused to retire 9 of 10"), 0), 6)
            .is_empty());
        assert_eq!(
            events(&t.after(ended(None, None, 2), 7)),
            [Event::Recovered, Event::Parked]
        );
        let notes = t.after(ended(None, None, 1), 8);
        assert_eq!(events(&notes), [Event::Parked]);
        assert!(
            notes[0].message.starts_with("1 step(s) refused for good"),
            "{}",
            notes[0].message
        );
        // Failing as a whole: the refused steps are part of that news.
        assert_eq!(
            events(&t.after(ended(Some("key refused"), None, 3), 9)),
            [Event::Failing]
        );
    }
}
