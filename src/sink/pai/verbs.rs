//! PAI's verbs: metadata onto known records and records created by URI,
//! in batches whose answers name each refused record (`FailedDetails`),
//! and deletes of up to `DELETE_BATCH` records per call. PAI records have
//! no content and no status.

use std::collections::HashMap;

use futures::FutureExt;
use serde_json::{json, Value as Json};

use super::client::{BatchAnswer, DELETE_BATCH};
use super::PaiSink;
use crate::metadata::Metadata as Values;
use crate::sink::verbs::{
    Answers, Call, Delete, MetaSet, NewRecord, Prepare, Records, Refused, SetMetadata,
};
use crate::sink::{ErrorClass, SinkError};
use crate::source::KnownFacts;

impl SetMetadata for PaiSink {
    fn batches(&self) -> bool {
        true
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn concurrency(&self) -> usize {
        1
    }

    /// Records take their metadata as they are: nothing to ready.
    fn prepare<'a>(&'a self, _: Prepare<'a>) -> Call<'a, ()> {
        futures::future::ready(Ok(())).boxed_local()
    }

    /// UpdateDatasetFileMetas; its answer names refused records by id.
    fn set<'a>(&'a self, batch: &'a [MetaSet<'a>]) -> Call<'a, Answers<()>> {
        async move {
            let records = batch
                .iter()
                .map(|m| self.record(m.key, Some(m.id), m.values, m.facts))
                .collect();
            let answer = self.client.batch(false, records).await?;
            let refused = refused(&answer, false);
            Ok(batch
                .iter()
                .map(|m| match refused.get(m.id) {
                    Some(result) => Err(refusal(m.id, result)),
                    None => Ok(()),
                })
                .collect())
        }
        .boxed_local()
    }
}

impl Records for PaiSink {
    fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// CreateDatasetFileMetas; its answer names each record by URI.
    fn create<'a>(&'a self, batch: &'a [NewRecord<'a>]) -> Call<'a, Answers<String>> {
        async move {
            let records = batch
                .iter()
                .map(|r| self.record(r.key, None, r.values, r.facts))
                .collect();
            let answer = self.client.batch(true, records).await?;
            let refused = refused(&answer, true);
            let created: HashMap<&str, &str> = answer
                .succeeded
                .iter()
                .filter_map(|d| Some((d.uri.as_deref()?, d.id.as_deref()?)))
                .collect();
            Ok(batch
                .iter()
                .map(|r| {
                    let uri = self.client.uri_of(r.key);
                    if let Some(result) = refused.get(uri.as_str()) {
                        return Err(refusal(&uri, result));
                    }
                    // Applied without an id in the answer: the next pass's
                    // listing binds it.
                    created.get(uri.as_str()).map(|id| (*id).to_owned()).ok_or_else(|| Refused {
                        gone: false,
                        error: SinkError::local(
                            ErrorClass::Transient,
                            "no_record_id",
                            format!("PAI created {uri} without returning its record id; the next pass finds it by URI"),
                        ),
                    })
                })
                .collect())
        }
        .boxed_local()
    }
}

impl Delete for PaiSink {
    fn batch_size(&self) -> usize {
        DELETE_BATCH
    }

    fn concurrency(&self) -> usize {
        1
    }

    /// DeleteDatasetFileMetas. A record already gone ("Not Found") is
    /// what was wanted; an answer about an id not asked for refuses the
    /// call (the client says so), which is then halved.
    fn delete<'a>(&'a self, ids: &'a [&'a str]) -> Call<'a, Answers<()>> {
        async move {
            let refused: HashMap<String, String> =
                self.client.delete(ids).await?.refused_deletes().collect();
            Ok(ids
                .iter()
                .map(|id| match refused.get(*id) {
                    Some(result) => Err(Refused {
                        gone: false,
                        error: SinkError::local(
                            ErrorClass::Permanent,
                            "record_refused",
                            format!("PAI refused to delete record {id}: {result}"),
                        ),
                    }),
                    None => Ok(()),
                })
                .collect())
        }
        .boxed_local()
    }
}

/// The records a create or update refused (by URI or id), and why.
fn refused(answer: &BatchAnswer, create: bool) -> HashMap<&str, &str> {
    answer
        .failed
        .iter()
        .filter_map(|d| {
            let result = d.result.as_deref().unwrap_or("refused");
            let handle = if create { &d.uri } else { &d.id };
            Some((handle.as_deref()?, result))
        })
        .collect()
}

/// A record refused inside an answer: one gone from the dataset ("Not
/// Found") is looked up or created again by the next pass.
fn refusal(handle: &str, result: &str) -> Refused {
    let gone = result.eq_ignore_ascii_case("not found");
    let error = if gone {
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
    };
    Refused { error, gone }
}

impl PaiSink {
    /// A record as Create/UpdateDatasetFileMetas take it (`id`: the
    /// record to update; none to create). `MetaAttributes` is a JSON
    /// *string* (as the API defines it), holding exactly the mapped
    /// metadata. The SDK's model marks ContentType, FileFingerPrint,
    /// FileType and FileUpdateTime required on create; the fingerprint
    /// (here the content's BLAKE3: kbsync does not know the OSS ETag) and
    /// the update time go with updates too.
    fn record(
        &self,
        key: &str,
        id: Option<&str>,
        values: &Values,
        facts: Option<&KnownFacts>,
    ) -> Json {
        let attributes = serde_json::to_string(values).unwrap_or_else(|_| "{}".into());
        let file_name = key.rsplit('/').next().unwrap_or(key);
        let mut r = match id {
            None => {
                let mime = crate::sink::mime_for(file_name);
                json!({
                    "Uri": self.client.uri_of(key),
                    "FileName": file_name,
                    "ContentType": mime,
                    "FileType": mime,
                    "MetaAttributes": attributes,
                })
            }
            Some(id) => json!({
                "DatasetFileMetaId": id,
                "FileName": file_name,
                "MetaAttributes": attributes,
            }),
        };
        if let Some(f) = facts {
            r["FileFingerPrint"] = json!(format!("blake3:{}", f.hash));
            r["FileUpdateTime"] = json!(iso_minute(f.mtime_ns.div_euclid(1_000_000_000)));
            r["DataSize"] = json!(f.size);
        }
        r
    }
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
