//! Dify's verbs: batch metadata (onto the dataset's fields, created where
//! missing), content by file, batch status, and deletes one document per
//! call.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::FutureExt;

use super::client::{gone, MetadataUpdate};
use super::DifySink;
use crate::config::JobConfig;
use crate::metadata::{FieldType, Metadata as Values};
use crate::plan::StatusAction;
use crate::sink::verbs::{
    Answers, Call, Content, Delete, MetaSet, New, Prepare, Replace, SetMetadata, Status, Stored,
};
use crate::sink::{ErrorClass, SinkError};
use crate::state::{State, StateError};

impl DifySink {
    /// Field name → upstream field id, creating missing fields with the
    /// type the mapping declares.
    async fn ensure_fields(
        &self,
        job: &JobConfig,
        state: &State,
        wanted: &[(Option<&str>, &Values)],
    ) -> Result<HashMap<String, String>, SinkError> {
        let wanted: BTreeMap<&str, FieldType> = wanted
            .iter()
            .flat_map(|(_, m)| m.keys())
            .map(|name| {
                let kind = job
                    .metadata
                    .iter()
                    .find(|f| &f.name == name)
                    .map_or(FieldType::String, |f| f.kind);
                (name.as_str(), kind)
            })
            .collect();
        let state_err = |e: StateError| SinkError::local(ErrorClass::Fatal, "state", e.to_string());
        let cached = state.fields(&job.name).map_err(state_err)?;
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut missing = Vec::new();
        for (name, kind) in &wanted {
            match cached.get(*name) {
                Some((id, k)) if k == kind => {
                    ids.insert((*name).to_owned(), id.clone());
                }
                _ => missing.push((*name, *kind)),
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        let remote = self.client.list_fields().await?;
        for (name, kind) in missing {
            let id = match remote.iter().find(|f| f.name == name) {
                Some(f) if f.kind == kind.to_string() => f.id.clone(),
                Some(f) => {
                    return Err(SinkError::local(
                        ErrorClass::Permanent,
                        "field_type_mismatch",
                        format!("metadata field {name:?} exists in the dataset with type {} but the config maps it as {kind}; change `type` in the config or rename the field", f.kind),
                    ))
                }
                None => self.client.create_field(name, kind).await?.id,
            };
            state
                .save_field(&job.name, name, &id, kind)
                .map_err(state_err)?;
            ids.insert(name.to_owned(), id);
        }
        Ok(ids)
    }
}

impl SetMetadata for DifySink {
    fn batches(&self) -> bool {
        true
    }

    fn batch_size(&self) -> usize {
        self.cfg.batch_size
    }

    /// One batch in flight: the uploads keep the other slots.
    fn concurrency(&self) -> usize {
        1
    }

    /// The fields the values need, created where missing: a document's
    /// metadata names each field by its id.
    fn prepare<'a>(&'a self, p: Prepare<'a>) -> Call<'a, ()> {
        async move {
            let ids = if p.wanted.is_empty() {
                HashMap::new()
            } else {
                self.ensure_fields(p.job, p.state, p.wanted).await?
            };
            *self.fields.lock().expect("not poisoned") = ids;
            Ok(())
        }
        .boxed_local()
    }

    /// Dify takes or refuses a batch whole.
    fn set<'a>(&'a self, batch: &'a [MetaSet<'a>]) -> Call<'a, Answers<()>> {
        async move {
            let updates = {
                let fields = self.fields.lock().expect("not poisoned");
                let mut updates = Vec::with_capacity(batch.len());
                for m in batch {
                    let mut values = Vec::with_capacity(m.values.len());
                    for (name, value) in m.values.iter() {
                        let Some(id) = fields.get(name) else {
                            return Err(SinkError::local(
                                ErrorClass::Permanent,
                                "unknown_field",
                                format!("metadata field {name:?} was not prepared in the dataset"),
                            ));
                        };
                        values.push((id.clone(), name.as_str(), value));
                    }
                    updates.push((m.id, values));
                }
                updates
            };
            let updates: Vec<MetadataUpdate> = updates
                .iter()
                .map(|(doc_id, values)| MetadataUpdate {
                    doc_id,
                    values: values
                        .iter()
                        .map(|(id, name, value)| (id.as_str(), *name, *value))
                        .collect(),
                })
                .collect();
            self.client.update_metadata(&updates).await?;
            Ok(vec![Ok(()); batch.len()])
        }
        .boxed_local()
    }
}

impl Content for DifySink {
    fn concurrency(&self) -> usize {
        self.cfg.upload_concurrency
    }

    /// Metadata goes onto the dataset's fields by its own batch call.
    fn metadata_with_content(&self) -> bool {
        false
    }

    fn create<'a>(&'a self, n: New<'a>) -> Call<'a, Stored> {
        async move {
            let name = self.cfg.document_name(n.key);
            let (doc, batch) = self
                .client
                .create_by_file(&name, n.bytes, &self.cfg.create_data)
                .await?;
            Ok(Stored {
                id: doc.id,
                name,
                batch,
            })
        }
        .boxed_local()
    }

    /// Waits for indexing, or makes the document available, where Dify
    /// refuses the update until then (`replace_when_ready`).
    fn replace<'a>(&'a self, r: Replace<'a>) -> Call<'a, Stored> {
        self.replace_when_ready(r).boxed_local()
    }
}

impl DifySink {
    /// One update of document `id`'s file.
    pub(super) async fn update_by_file(
        &self,
        key: &str,
        id: &str,
        bytes: &Bytes,
    ) -> Result<Stored, SinkError> {
        let name = self.cfg.document_name(key);
        let (doc, batch) = self.client.update_by_file(id, &name, bytes).await?;
        Ok(Stored {
            id: doc.id,
            name,
            batch,
        })
    }
}

impl Status for DifySink {
    fn batch_size(&self) -> usize {
        self.cfg.batch_size
    }

    fn set<'a>(&'a self, action: StatusAction, ids: &'a [&'a str]) -> Call<'a, ()> {
        self.client.set_status(action, ids).boxed_local()
    }
}

impl Delete for DifySink {
    /// Dify deletes one document per call.
    fn batch_size(&self) -> usize {
        1
    }

    fn concurrency(&self) -> usize {
        self.cfg.upload_concurrency
    }

    /// One id per call, so a refusal is the call's.
    fn delete<'a>(&'a self, ids: &'a [&'a str]) -> Call<'a, Answers<()>> {
        async move {
            for id in ids {
                match self.client.delete_document(id).await {
                    // Already gone is what was wanted.
                    Err(e) if gone(&e) => {}
                    // Archived (by hand, or by a change whose answer was
                    // lost): Dify deletes only what is not archived.
                    Err(e) if e.code == "archived_document_immutable" => {
                        self.client
                            .set_status(StatusAction::UnArchive, &[id])
                            .await?;
                        self.client.delete_document(id).await?;
                    }
                    other => other?,
                }
            }
            Ok(vec![Ok(()); ids.len()])
        }
        .boxed_local()
    }
}
