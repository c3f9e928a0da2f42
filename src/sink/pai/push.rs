//! Pushing to PAI: metadata records of dataset files, in batches. Items
//! without a known record are looked up in one listing of the dataset (by
//! URI) and, when absent, created with their metadata; known records are
//! updated. Per-record refusals inside a 200 answer (`FailedDetails`) are
//! failures of those files only; a whole batch refused (400) is bisected.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use futures::FutureExt;
use serde_json::{json, Value as Json};

use super::client::{BatchAnswer, PaiClient, DELETE_BATCH};
use super::PaiSink;
use crate::metadata::Metadata;
use crate::plan::{Op, Plan};
use crate::sink::bisect::send_in_batches;
use crate::sink::{
    metadata_ops, record_failure, ErrorClass, Outcome, PushContext, PushError, SinkError,
};
use crate::source::KnownFacts;
use crate::state::State;

struct Item<'p> {
    key: &'p str,
    id: Option<String>,
    metadata: &'p Metadata,
    /// The file as this pass recorded it (size, mtime, content hash).
    facts: Option<KnownFacts>,
}

pub async fn push(ctx: PushContext<'_>, sink: &PaiSink, plan: &Plan) -> Result<Outcome, PushError> {
    let (job, state, stop) = (ctx.job.name.as_str(), ctx.state, ctx.stop);
    let (client, batch_size) = (&sink.client, sink.batch_size);
    let mut out = Outcome::default();
    let mut items = items(job, state, plan)?;
    // Records kbsync does not know yet: one listing maps URIs to ids.
    if items.iter().any(|i| i.id.is_none()) && !stop.load(Ordering::SeqCst) {
        bind_by_listing(job, client, state, &mut out, &mut items).await?;
        if out.fatal.is_some() {
            return Ok(out);
        }
    }

    let (known, new): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|i| i.id.is_some());
    for (create, batch) in [(false, known), (true, new)] {
        if batch.is_empty() || out.fatal.is_some() {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            out.interrupted = true;
            break;
        }
        send(job, client, batch_size, state, &mut out, create, &batch).await?;
    }

    let deletes = plan.deletes();
    if !deletes.is_empty() && out.fatal.is_none() && !stop.load(Ordering::SeqCst) {
        delete(job, client, state, &mut out, &deletes).await?;
    }

    if out.fatal.is_none() && !out.interrupted {
        for op in &plan.ops {
            if let Op::Forget { key } = op {
                state.forget(job, key)?;
                out.forgotten += 1;
            }
        }
    }
    Ok(out)
}

/// The plan's metadata steps, with the facts this pass recorded (the
/// scan's rows were read before it).
fn items<'p>(job: &str, state: &mut State, plan: &'p Plan) -> Result<Vec<Item<'p>>, PushError> {
    let mut items: Vec<Item> = metadata_ops(plan)
        .map(|(key, id, metadata)| Item {
            key,
            id: id.cloned(),
            metadata,
            facts: None,
        })
        .collect();
    let mut rows = state.load_keys(job, items.iter().map(|i| i.key))?;
    for item in &mut items {
        item.facts = rows.remove(item.key).and_then(|c| c.facts);
    }
    Ok(items)
}

/// Binds the items without an id to the records a listing of the dataset
/// shows under their URIs. Without a listing, they are failures of this
/// pass and leave `items`: creating blind could duplicate records.
async fn bind_by_listing(
    job: &str,
    client: &PaiClient,
    state: &mut State,
    out: &mut Outcome,
    items: &mut Vec<Item<'_>>,
) -> Result<(), PushError> {
    let e = match client.list().await {
        Ok(records) => {
            let by_uri: HashMap<String, String> = records.into_iter().collect();
            for item in items.iter_mut().filter(|i| i.id.is_none()) {
                if let Some(id) = by_uri.get(&client.uri_of(item.key)) {
                    state.record_doc_id(job, item.key, id, item.key)?;
                    item.id = Some(id.clone());
                }
            }
            return Ok(());
        }
        Err(e) => e,
    };
    for item in items.iter().filter(|i| i.id.is_none()) {
        record_failure(state, out, job, item.key, "metadata", e.clone())?;
    }
    if e.class == ErrorClass::Fatal {
        out.fatal = Some(e);
    } else {
        items.retain(|i| i.id.is_some());
    }
    Ok(())
}

async fn send(
    job: &str,
    client: &PaiClient,
    batch_size: usize,
    state: &mut State,
    out: &mut Outcome,
    create: bool,
    items: &[Item<'_>],
) -> Result<(), PushError> {
    // Per-record answers inside successful batches, by record id or URI.
    let answers: Mutex<Vec<BatchAnswer>> = Mutex::new(Vec::new());
    let answers_ref = &answers;
    let r = send_in_batches(items, batch_size, |chunk| {
        async move {
            let records: Vec<Json> = chunk.iter().map(|i| record(client, i, create)).collect();
            let answer = client.batch(create, records).await?;
            answers_ref.lock().expect("not poisoned").push(answer);
            Ok(())
        }
        .boxed()
    })
    .await;
    let answers = Answers::of(&answers.into_inner().expect("not poisoned"), create);
    for &i in &r.applied {
        let item = &items[i];
        // Per-record answers are by URI for creates, by record id else.
        let handle = if create {
            client.uri_of(item.key)
        } else {
            item.id.clone().unwrap_or_default()
        };
        match answers.outcome(handle, create) {
            Ok(id) => {
                state.record_doc_id(job, item.key, &id, item.key)?;
                state.record_metadata(job, &[(item.key, item.metadata)])?;
                out.metadata += 1;
                out.created += usize::from(create);
            }
            Err((gone, e)) => {
                if gone {
                    state.clear_doc_id(job, item.key)?;
                }
                record_failure(state, out, job, item.key, "metadata", e)?;
            }
        }
    }
    for (i, e) in r.failed {
        record_failure(state, out, job, items[i].key, "metadata", e)?;
    }
    if let Some(e) = r.fatal {
        out.fatal = Some(e);
    }
    Ok(())
}

/// What the answers of a create or update's batches said per record.
struct Answers {
    /// Refused records (by URI or id) and why.
    refused: HashMap<String, String>,
    /// URI → id of the records created.
    created: HashMap<String, String>,
}

impl Answers {
    fn of(answers: &[BatchAnswer], create: bool) -> Answers {
        let refused = answers
            .iter()
            .flat_map(|a| a.failed.iter())
            .filter_map(|d| {
                let result = d.result.clone().unwrap_or_else(|| "refused".into());
                if create {
                    d.uri.clone().map(|u| (u, result))
                } else {
                    d.id.clone().map(|i| (i, result))
                }
            })
            .collect();
        let created = answers
            .iter()
            .flat_map(|a| a.succeeded.iter())
            .filter_map(|d| Some((d.uri.clone()?, d.id.clone()?)))
            .collect();
        Answers { refused, created }
    }

    /// The record id of an applied item (`handle`: its URI or id), or its
    /// failure, with whether the record is gone from the dataset.
    fn outcome(&self, handle: String, create: bool) -> Result<String, (bool, SinkError)> {
        if let Some(result) = self.refused.get(&handle) {
            let gone = result.eq_ignore_ascii_case("not found");
            return Err((
                gone,
                if gone {
                    SinkError::local(
                        ErrorClass::Transient,
                        "record_refused",
                        format!("record {handle} is gone from the dataset (Not Found); the next pass looks it up or creates it again"),
                    )
                } else {
                    SinkError::local(
                        ErrorClass::Permanent,
                        "record_refused",
                        format!("PAI refused the record for {handle}: {result}"),
                    )
                },
            ));
        }
        if !create {
            return Ok(handle);
        }
        // Applied without an id in the answer: the next pass's listing
        // binds it.
        self.created.get(&handle).cloned().ok_or_else(|| {
            (
                false,
                SinkError::local(
                    ErrorClass::Transient,
                    "no_record_id",
                    format!("PAI created {handle} without returning its record id; the next pass finds it by URI"),
                ),
            )
        })
    }
}

/// Records of vanished files, under `delete_policy = "delete"`.
async fn delete(
    job: &str,
    client: &PaiClient,
    state: &mut State,
    out: &mut Outcome,
    items: &[(&str, &str)],
) -> Result<(), PushError> {
    let ids: Vec<&str> = items.iter().map(|(_, id)| *id).collect();
    let deleted = delete_records(client, &ids).await;
    for ((key, _), result) in items.iter().zip(deleted.results) {
        match result {
            Some(Ok(())) => {
                state.forget(job, key)?;
                out.deleted += 1;
            }
            Some(Err(e)) => record_failure(state, out, job, key, "delete", e)?,
            None => {}
        }
    }
    if let Some(e) = deleted.fatal {
        out.fatal = Some(e);
    }
    Ok(())
}

/// What became of each record a delete was asked for.
pub(super) struct Deleted {
    /// Per id, in order: deleted (or already gone), refused, or `None`:
    /// not sent, a fatal error stopped the work first.
    pub results: Vec<Option<Result<(), SinkError>>>,
    pub fatal: Option<SinkError>,
}

/// Deletes records in batches of `DELETE_BATCH`. A batch refused as a
/// whole (among them an answer about ids not asked for) is halved until
/// the refused record stands alone; a record already gone ("Not Found")
/// is what was wanted.
pub(super) async fn delete_records(client: &PaiClient, ids: &[&str]) -> Deleted {
    let answers: Mutex<Vec<BatchAnswer>> = Mutex::new(Vec::new());
    let answers_ref = &answers;
    let r = send_in_batches(ids, DELETE_BATCH, |chunk| {
        async move {
            let answer = client.delete(chunk).await?;
            answers_ref.lock().expect("not poisoned").push(answer);
            Ok(())
        }
        .boxed()
    })
    .await;
    let refused: HashMap<String, String> = answers
        .into_inner()
        .expect("not poisoned")
        .into_iter()
        .flat_map(BatchAnswer::refused_deletes)
        .collect();
    let mut results: Vec<Option<Result<(), SinkError>>> = vec![None; ids.len()];
    for i in r.applied {
        let id = ids[i];
        results[i] = Some(match refused.get(id) {
            Some(result) => Err(SinkError::local(
                ErrorClass::Permanent,
                "record_refused",
                format!("PAI refused to delete record {id}: {result}"),
            )),
            None => Ok(()),
        });
    }
    for (i, e) in r.failed {
        results[i] = Some(Err(e));
    }
    Deleted {
        results,
        fatal: r.fatal,
    }
}

/// One record of a batch: `MetaAttributes` is a JSON *string* (as the API
/// defines it), holding exactly the mapped metadata.
/// A record as Create/UpdateDatasetFileMetas take it. The SDK's model
/// marks ContentType, FileFingerPrint, FileType and FileUpdateTime required
/// on create; the fingerprint (here the content's BLAKE3: kbsync does not
/// know the OSS ETag) and the update time go with updates too.
fn record(client: &PaiClient, item: &Item<'_>, create: bool) -> Json {
    let attributes = serde_json::to_string(item.metadata).unwrap_or_else(|_| "{}".into());
    let file_name = item.key.rsplit('/').next().unwrap_or(item.key);
    let mut r = if create {
        let mime = crate::sink::mime_for(file_name);
        json!({
            "Uri": client.uri_of(item.key),
            "FileName": file_name,
            "ContentType": mime,
            "FileType": mime,
            "MetaAttributes": attributes,
        })
    } else {
        json!({
            "DatasetFileMetaId": item.id,
            "FileName": file_name,
            "MetaAttributes": attributes,
        })
    };
    if let Some(f) = &item.facts {
        r["FileFingerPrint"] = json!(format!("blake3:{}", f.hash));
        r["FileUpdateTime"] = json!(iso_minute(f.mtime_ns.div_euclid(1_000_000_000)));
        r["DataSize"] = json!(f.size);
    }
    r
}

/// `yyyy-MM-ddTHH:mmZ`, the time format the API asks for.
fn iso_minute(secs: i64) -> String {
    let full = crate::metadata::format_rfc3339(secs);
    // "2026-11-24T14:05:09Z" → "2026-11-24T14:05Z"
    match full.rfind(':') {
        Some(i) => format!("{}Z", &full[..i]),
        None => full,
    }
}
