//! Sharely's verbs: metadata one item per call; with `upload`, content
//! (a new FILE item titled by the path; a replace uploads anew, then
//! deletes the old item) and deletes one item per call.

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::client::check_values;
use super::SharelySink;
use crate::execute::replaced_but_kept;
use crate::plan::StatusAction;
use crate::sink::verbs::{
    Answers, Call, Content, ContentHooks, Delete, Found, MetaSet, New, NoStatus, Prepare, Refusal,
    Refused, Replace, SetMetadata, StatusPhase, StatusRefused, Stored, Taken,
};
use crate::sink::{ErrorClass, SinkError};

impl SetMetadata for SharelySink {
    fn batches(&self) -> bool {
        false
    }

    fn batch_size(&self) -> usize {
        1
    }

    fn concurrency(&self) -> usize {
        self.cfg.concurrency
    }

    /// Each call names the item's type: learnt by one listing when any
    /// item's is unknown, rather than read item by item.
    fn prepare<'a>(&'a self, p: Prepare<'a>) -> Call<'a, ()> {
        async move {
            let ids: Vec<&str> = p.wanted.iter().filter_map(|(id, _)| *id).collect();
            self.client.learn_kinds(&ids).await;
            Ok(())
        }
        .boxed_local()
    }

    /// One item per call. Sharely merges: the keys set before on this
    /// item and no longer mapped are removed explicitly (keys kbsync never
    /// set are not its business).
    fn set<'a>(&'a self, batch: &'a [MetaSet<'a>]) -> Call<'a, Answers<()>> {
        async move {
            let mut answers = Vec::with_capacity(batch.len());
            for m in batch {
                answers.push(match self.set_one(m).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.class == ErrorClass::Fatal => return Err(e),
                    Err(e) => Err(self.refusal(m.key, e)),
                });
            }
            Ok(answers)
        }
        .boxed_local()
    }
}

impl SharelySink {
    async fn set_one(&self, m: &MetaSet<'_>) -> Result<(), SinkError> {
        check_values(m.values)?;
        let remove: Vec<String> = m
            .before
            .map(|b| {
                b.keys()
                    .filter(|k| !m.values.contains_key(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        self.client.update_metadata(m.id, m.values, &remove).await
    }

    /// An item kbsync uploaded and that is gone (404) is uploaded again by
    /// the next pass rather than reported; the items the config maps are
    /// the user's, and stay refused.
    fn refusal(&self, key: &str, mut error: SinkError) -> Refused {
        let gone =
            self.cfg.upload && !self.cfg.knowledge.contains_key(key) && error.status == Some(404);
        if gone {
            error.class = ErrorClass::Transient;
            error.message = format!(
                "{}; the item is gone from Sharely, and the next pass uploads the file again",
                error.message
            );
        }
        Refused { error, gone }
    }
}

impl Content for SharelySink {
    fn concurrency(&self) -> usize {
        self.cfg.concurrency
    }

    /// Metadata is set by its own call, one item at a time.
    fn metadata_with_content(&self) -> bool {
        false
    }

    fn create<'a>(&'a self, n: New<'a>) -> Call<'a, Stored> {
        async move {
            let file_name = n.key.rsplit('/').next().unwrap_or(n.key);
            let item = self.client.upload(n.key, file_name, n.bytes).await?;
            Ok(Stored {
                id: item.id,
                name: n.key.to_owned(),
                batch: None,
            })
        }
        .boxed_local()
    }

    /// The API cannot replace an item's file: the new item goes up first,
    /// then the old one is deleted, so the knowledge base never lacks the
    /// document.
    fn replace<'a>(&'a self, r: Replace<'a>) -> Call<'a, Stored> {
        async move {
            let stored = self.create(r.as_new()).await?;
            self.client
                .delete(r.id)
                .await
                .map_err(|e| replaced_but_kept(&stored.id, r.id, e))?;
            Ok(stored)
        }
        .boxed_local()
    }
}

/// Items are titled by their path and every upload makes one: the items
/// under a file's title are all kbsync's, and all but the new one go.
impl ContentHooks for SharelySink {
    /// The API's title search matches parts of titles: always a listing.
    fn lookups(&self) -> usize {
        0
    }

    fn uploads_create(&self) -> bool {
        true
    }

    /// The known item (else the first found) is replaced, and every other
    /// item under the title deleted once the new one is up.
    fn take_found<'a>(&'a self, found: Found<'a>) -> LocalBoxFuture<'a, Taken> {
        let mut ids: Vec<String> = found.records.into_iter().map(|l| l.id).collect();
        let taken = match found.known {
            Some(known) => {
                ids.retain(|id| id != known);
                Taken::Update {
                    id: known.to_owned(),
                    adopted: false,
                    stale: ids,
                }
            }
            None => Taken::Update {
                id: ids.remove(0),
                adopted: true,
                stale: ids,
            },
        };
        futures::future::ready(taken).boxed_local()
    }

    /// A gone item is found by its metadata call (`refusal`); an upload
    /// makes a new one anyway.
    fn gone(&self, _: &SinkError) -> bool {
        false
    }

    /// Sharely processes items without refusing an upload meanwhile.
    fn errored(&self, _: &SinkError) -> bool {
        false
    }

    fn status_phase(&self, _: StatusAction) -> Box<dyn StatusPhase + '_> {
        Box::new(NoStatus("Sharely items"))
    }

    fn status_refused<'a>(&'a self, r: Refusal<'a>) -> LocalBoxFuture<'a, StatusRefused> {
        futures::future::ready(StatusRefused::Failed(r.error)).boxed_local()
    }
}

impl Delete for SharelySink {
    /// One item per call.
    fn batch_size(&self) -> usize {
        1
    }

    /// One at a time.
    fn concurrency(&self) -> usize {
        1
    }

    /// An item already gone counts as deleted (the client says so).
    fn delete<'a>(&'a self, ids: &'a [&'a str]) -> Call<'a, Answers<()>> {
        async move {
            for id in ids {
                self.client.delete(id).await?;
            }
            Ok(vec![Ok(()); ids.len()])
        }
        .boxed_local()
    }
}
