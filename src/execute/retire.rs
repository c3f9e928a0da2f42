//! Retiring records that are no item's (the audit's duplicates) as the
//! delete policy retires a vanished file's: through the sink's Delete or
//! Status verb. A sink without that verb cannot: `SinkError::unsupported`,
//! and nothing is sent.

use futures::FutureExt;

use super::batches::send_answered;
use crate::model::DeletePolicy;
use crate::plan::StatusAction;
use crate::sink::verbs::Verbs;
use crate::sink::SinkError;

/// Retires `ids` under `policy` (`kind`: the sink's section name, for a
/// refusal). `Ok` only once the upstream confirmed every one (a record
/// already gone counts); else the first refusal.
pub async fn retire(
    verbs: Verbs<'_>,
    kind: &str,
    ids: &[String],
    policy: DeletePolicy,
) -> Result<(), SinkError> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let action = match policy {
        DeletePolicy::Keep => return Ok(()),
        DeletePolicy::Delete => return delete(verbs, &ids).await,
        DeletePolicy::Disable => StatusAction::Disable,
        DeletePolicy::Archive => StatusAction::Archive,
    };
    let Some(status) = verbs.status else {
        return Err(SinkError::unsupported(format!(
            "{kind} records have no status: they cannot be disabled or archived (delete_policy = \"delete\" or \"keep\")"
        )));
    };
    for chunk in ids.chunks(status.batch_size().max(1)) {
        status.set(action, chunk).await?;
    }
    Ok(())
}

/// Deletes in the verb's batches; a batch refused as a whole is halved
/// until the refused record stands alone.
async fn delete(verbs: Verbs<'_>, ids: &[&str]) -> Result<(), SinkError> {
    let Some(verb) = verbs.delete else {
        return Err(SinkError::unsupported("this API cannot delete records"));
    };
    let mut first = None;
    for chunk in ids.chunks(verb.batch_size().max(1)) {
        let (r, answers) =
            send_answered(chunk, |id| *id, |part| verb.delete(part).boxed_local()).await;
        if let Some(e) = r.fatal {
            return Err(e);
        }
        let refused = answers
            .into_values()
            .filter_map(Result::err)
            .map(|r| r.error);
        let failed = r.failed.into_iter().map(|(_, e)| e);
        first = first.or(failed.chain(refused).next());
    }
    first.map_or(Ok(()), Err)
}
