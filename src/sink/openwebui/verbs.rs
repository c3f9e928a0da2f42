//! Open WebUI's verbs. An upload carries the file's path and metadata and
//! names the knowledge base, so the server links the file once it has
//! processed it; kbsync waits for that, and removes what failed. A change
//! uploads the new file first and removes the old one once the new one is
//! linked, so the knowledge base never lacks the document. The server
//! refuses a second file with the same text in one knowledge base: when
//! only the metadata changed (or the bytes but not their text), the new
//! file is processed unlinked, then swapped in for the old one, the only
//! moment without either being one call long. Deletes go in batches
//! through `sync/cleanup`, which keeps a file another knowledge base
//! links.

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde_json::{json, Map, Value as Json};
use sha2::Digest;

use super::client::{Processed, DUPLICATE_CONTENT, GONE};
use super::{OpenWebUiSink, PATH_FIELD};
use crate::execute::replaced_but_kept;
use crate::metadata::Metadata;
use crate::plan::StatusAction;
use crate::sink::verbs::{
    Answers, Call, Content, ContentHooks, Delete, Found, MetaSet, New, NoStatus, Prepare, Refusal,
    Refused, Replace, SetMetadata, StatusPhase, StatusRefused, Stored, Taken,
};
use crate::sink::{ErrorClass, Listed, SinkError};

/// File ids one `sync/cleanup` call removes.
const CLEANUP_BATCH: usize = 100;

/// Words of a processing failure that came from the server's own
/// trouble (its embedding backend unreachable or overloaded): worth
/// another try later, unlike a file it cannot read.
const PASSING: &[&str] = &[
    "errno",
    "connect",
    "connection",
    "timed out",
    "timeout",
    "too many open files",
    "rate limit",
    "temporarily",
];

impl SetMetadata for OpenWebUiSink {
    fn batches(&self) -> bool {
        false
    }

    fn batch_size(&self) -> usize {
        1
    }

    fn concurrency(&self) -> usize {
        1
    }

    fn prepare<'a>(&'a self, _: Prepare<'a>) -> Call<'a, ()> {
        futures::future::ready(Ok(())).boxed_local()
    }

    /// Never asked: the executor sends metadata with the content
    /// (`Content::metadata_with_content`).
    fn set<'a>(&'a self, batch: &'a [MetaSet<'a>]) -> Call<'a, Answers<()>> {
        let refused = || {
            Err(Refused {
                error: SinkError::unsupported(
                    "Open WebUI keeps the metadata a file was uploaded with and has no call to change it; kbsync uploads the file again instead",
                ),
                gone: false,
            })
        };
        futures::future::ready(Ok(batch.iter().map(|_| refused()).collect())).boxed_local()
    }
}

impl OpenWebUiSink {
    /// The upload's metadata: the mapped values, the path, the raw bytes'
    /// SHA-256 (as the server's own `file_hash`), and the knowledge base
    /// to link the file to once processed (`linked`).
    fn upload_metadata(&self, n: &New<'_>, linked: bool) -> Json {
        let mut m = Map::new();
        for (name, value) in n.values.into_iter().flat_map(Metadata::iter) {
            m.insert(name.clone(), value.clone());
        }
        m.insert(PATH_FIELD.to_owned(), json!(n.key));
        let hash = hex(&sha2::Sha256::digest(n.bytes));
        m.insert("file_hash".to_owned(), json!(hash));
        if linked {
            m.insert("knowledge_id".to_owned(), json!(self.cfg.knowledge_id));
        }
        Json::Object(m)
    }

    /// Uploads `n` and waits until the server has processed it: linked to
    /// the knowledge base (`linked`), or not. A file that failed is
    /// deleted, with the server's reason in the error.
    async fn upload(&self, n: &New<'_>, linked: bool) -> Result<Stored, SinkError> {
        let name = n.key.rsplit('/').next().unwrap_or(n.key);
        let file = self
            .client
            .upload(name, n.bytes, &self.upload_metadata(n, linked))
            .await?;
        let id = file.id;
        let refused = match self.client.processed(&id).await? {
            Processed::Failed(why) => Some(failed_processing(&why)),
            Processed::Completed => match self.inspect(&id).await? {
                Kept::Emptied => Some(emptied()),
                Kept::Unlinked if linked => Some(SinkError::local(
                    ErrorClass::Fatal,
                    "not_linked",
                    format!(
                        "Open WebUI processed the upload but did not add it to knowledge base {}: the API key's user may not write to it",
                        self.cfg.knowledge_id
                    ),
                )),
                Kept::Linked | Kept::Unlinked => None,
            },
        };
        if let Some(e) = refused {
            self.discard(&id).await;
            return Err(e);
        }
        Ok(Stored {
            id,
            name: n.key.to_owned(),
            batch: None,
        })
    }

    /// Whether a file found under a path is in the knowledge base, once
    /// the server is done with it: one still processing (an upload whose
    /// answer was lost) is waited for, and deleted if it fails or is not
    /// linked.
    async fn settled(&self, found: &Listed) -> Result<bool, SinkError> {
        if found.state.as_deref() != Some(super::PROCESSING) {
            return Ok(true);
        }
        let linked = match self.client.processed(&found.id).await? {
            Processed::Completed => self.inspect(&found.id).await? == Kept::Linked,
            Processed::Failed(why) => {
                tracing::info!(file = %found.id, %why, "an earlier upload failed processing: uploading again");
                false
            }
        };
        if !linked {
            self.discard(&found.id).await;
        }
        Ok(linked)
    }

    /// What became of processed file `id`: the server ignores a knowledge
    /// base the user cannot write to, silently; and under load (its
    /// SQLite database locked) it may keep a file's text empty, silently
    /// too.
    async fn inspect(&self, id: &str) -> Result<Kept, SinkError> {
        let Some(file) = self.client.file(id).await? else {
            return Ok(Kept::Unlinked);
        };
        if file.hash.as_deref() == Some(EMPTY_TEXT) {
            return Ok(Kept::Emptied);
        }
        let collection = file.meta.and_then(|m| m.collection_name);
        Ok(
            if collection.as_deref() == Some(self.cfg.knowledge_id.as_str()) {
                Kept::Linked
            } else {
                Kept::Unlinked
            },
        )
    }

    /// Deletes a file kbsync made and will not use; a failure only logs
    /// (the file is in no knowledge base).
    async fn discard(&self, id: &str) {
        if let Err(e) = self.client.delete_file(id).await {
            tracing::warn!(file = %id, error = %e, "could not delete a file Open WebUI failed to process");
        }
    }

    /// The new file processed unlinked, then swapped in for `r.id`: for
    /// content whose text the knowledge base holds already (the old file's
    /// own, when only the metadata changed), which the server refuses as
    /// a second link.
    async fn swap(&self, r: &Replace<'_>) -> Result<Stored, SinkError> {
        let stored = self.upload(&r.as_new(), false).await?;
        let swapped = async {
            match self.client.unlink(r.id).await {
                Err(e) if e.code != GONE => return Err(e),
                _ => {}
            }
            if let Err(e) = self.client.add(&stored.id).await {
                // The old file goes back: better stale than absent.
                if let Err(back) = self.client.add(r.id).await {
                    tracing::warn!(file = %r.id, error = %back, "could not link the old file again after its replacement was refused");
                }
                return Err(e);
            }
            Ok(())
        };
        if let Err(e) = swapped.await {
            self.discard(&stored.id).await;
            return Err(e);
        }
        self.client
            .delete_file(r.id)
            .await
            .map_err(|e| replaced_but_kept(&stored.id, r.id, e))?;
        Ok(stored)
    }
}

/// The SHA-256 of no text: the hash of a file whose extracted text the
/// server lost (text that is really empty fails processing instead).
const EMPTY_TEXT: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What a processed file turned out to be.
#[derive(PartialEq, Eq)]
enum Kept {
    Linked,
    Unlinked,
    /// Completed with no text: of no use to a search.
    Emptied,
}

fn emptied() -> SinkError {
    SinkError::local(
        ErrorClass::Transient,
        "processing_failed",
        "Open WebUI reported the file processed but kept no text of it (a server under load does that); it is uploaded again",
    )
}

/// A processing failure in kbsync's words: one the server may get past
/// later is transient, one the file itself causes is refused for good.
fn failed_processing(why: &str) -> SinkError {
    if why.contains("Duplicate content") {
        return SinkError::local(
            ErrorClass::Permanent,
            DUPLICATE_CONTENT,
            format!("Open WebUI refused the file: another file in the knowledge base has the same text ({why})"),
        );
    }
    let lower = why.to_lowercase();
    let class = if PASSING.iter().any(|w| lower.contains(w)) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    SinkError::local(
        class,
        "processing_failed",
        format!("Open WebUI could not process the file: {why}"),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Content for OpenWebUiSink {
    fn concurrency(&self) -> usize {
        self.cfg.concurrency
    }

    /// Upload metadata is all the server keeps, and it cannot be changed.
    fn metadata_with_content(&self) -> bool {
        true
    }

    fn create<'a>(&'a self, n: New<'a>) -> Call<'a, Stored> {
        async move { self.upload(&n, true).await }.boxed_local()
    }

    /// The new file first, linked; then the old one removed. The same
    /// text again is refused as a duplicate: then swapped in.
    fn replace<'a>(&'a self, r: Replace<'a>) -> Call<'a, Stored> {
        async move {
            if !r.unchanged {
                match self.upload(&r.as_new(), true).await {
                    Ok(stored) => {
                        self.client
                            .cleanup(&[r.id])
                            .await
                            .map_err(|e| replaced_but_kept(&stored.id, r.id, e))?;
                        return Ok(stored);
                    }
                    Err(e) if e.code == DUPLICATE_CONTENT => {}
                    Err(e) => return Err(e),
                }
            }
            self.swap(&r).await
        }
        .boxed_local()
    }
}

/// Files are named by the path they carry and every upload makes one:
/// the files under a path are all kbsync's, and all but one go.
impl ContentHooks for OpenWebUiSink {
    /// Finding one file costs a listing by its name: always one listing.
    fn lookups(&self) -> usize {
        0
    }

    fn uploads_create(&self) -> bool {
        true
    }

    /// The known file is replaced; an unconfirmed upload's own file is
    /// taken as it is; else the first found is replaced. The others under
    /// the path go once the content is up.
    fn take_found<'a>(&'a self, found: Found<'a>) -> LocalBoxFuture<'a, Taken> {
        async move {
            let mut ids = Vec::new();
            for record in &found.records {
                match self.settled(record).await {
                    Ok(true) => ids.push(record.id.clone()),
                    Ok(false) => {}
                    Err(e) => return Taken::Failed(e),
                }
            }
            take(&found, ids)
        }
        .boxed_local()
    }
    fn gone(&self, e: &SinkError) -> bool {
        e.code == GONE
    }

    /// A failed file is deleted when its upload fails: none is kept.
    fn errored(&self, _: &SinkError) -> bool {
        false
    }

    fn status_phase(&self, _: StatusAction) -> Box<dyn StatusPhase + '_> {
        Box::new(NoStatus("Open WebUI files"))
    }

    fn status_refused<'a>(&'a self, r: Refusal<'a>) -> LocalBoxFuture<'a, StatusRefused> {
        futures::future::ready(StatusRefused::Failed(r.error)).boxed_local()
    }
}

/// What becomes of the processed files `ids` found under a key's path:
/// the known file is replaced; an unconfirmed upload's own file is taken
/// as it is; else the first found is replaced, or a new one made. The
/// others under the path go once the content is up.
fn take(found: &Found<'_>, mut ids: Vec<String>) -> Taken {
    if let Some(known) = found.known {
        ids.retain(|id| id != known);
        return Taken::Update {
            id: known.to_owned(),
            adopted: false,
            stale: ids,
        };
    }
    if ids.is_empty() {
        return Taken::Create;
    }
    if found.sent == Some(found.hash) {
        // Listed oldest first: the last is the latest upload. Others
        // under the path are the audit's to retire.
        let id = ids.pop().expect("not empty");
        return Taken::Holds(Stored {
            id,
            name: found.key.to_owned(),
            batch: None,
        });
    }
    Taken::Update {
        id: ids.remove(0),
        adopted: true,
        stale: ids,
    }
}

impl Delete for OpenWebUiSink {
    fn batch_size(&self) -> usize {
        CLEANUP_BATCH
    }

    fn concurrency(&self) -> usize {
        1
    }

    /// Ids the knowledge base no longer holds are skipped by the server:
    /// gone is what was wanted.
    fn delete<'a>(&'a self, ids: &'a [&'a str]) -> Call<'a, Answers<()>> {
        async move {
            self.client.cleanup(ids).await?;
            Ok(vec![Ok(()); ids.len()])
        }
        .boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_in_trouble_is_waited_for_and_a_file_it_cannot_read_is_refused() {
        let down = failed_processing("[Errno 104] Connection reset by peer");
        assert!(down.is_transient(), "{down}");
        let empty = failed_processing(
            "The content provided is empty. Please ensure that there is text or data present before proceeding.",
        );
        assert_eq!(empty.class, ErrorClass::Permanent);
        let dup = failed_processing(
            "Duplicate content detected. Please provide unique content to proceed.",
        );
        assert_eq!(dup.code, DUPLICATE_CONTENT);
    }
}
