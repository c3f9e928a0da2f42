//! Sharely's verbs: metadata one item per call; with `upload`, content
//! (a new FILE item titled by the path; a replace uploads anew, then
//! deletes the old item) and deletes one item per call.

use bytes::Bytes;
use futures::FutureExt;

use super::client::check_values;
use super::SharelySink;
use crate::sink::verbs::{
    Answers, Call, Content, Delete, MetaSet, Prepare, Refused, SetMetadata, Stored,
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

    fn create<'a>(&'a self, key: &'a str, bytes: &'a Bytes) -> Call<'a, Stored> {
        async move {
            let file_name = key.rsplit('/').next().unwrap_or(key);
            let item = self.client.upload(key, file_name, bytes).await?;
            Ok(Stored {
                id: item.id,
                name: key.to_owned(),
                batch: None,
            })
        }
        .boxed_local()
    }

    /// The API cannot replace an item's file: the new item goes up first,
    /// then the old one is deleted, so the knowledge base never lacks the
    /// document.
    fn replace<'a>(&'a self, key: &'a str, id: &'a str, bytes: &'a Bytes) -> Call<'a, Stored> {
        async move {
            let stored = self.create(key, bytes).await?;
            self.client
                .delete(id)
                .await
                .map_err(|e| replaced_but_kept(&stored.id, id, e))?;
            Ok(stored)
        }
        .boxed_local()
    }
}

/// An upload that went up as item `new`, while the item it replaces
/// (`old`) could not be deleted: the new item stays, and the step stays
/// started, so the next pass finds both under the title.
pub(super) fn replaced_but_kept(new: &str, old: &str, e: SinkError) -> SinkError {
    SinkError {
        message: format!(
            "uploaded as item {new}, but the item it replaces ({old}) could not be deleted: {}",
            e.message
        ),
        ..e
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
