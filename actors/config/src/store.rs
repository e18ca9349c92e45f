//! The store source: keys under a prefix in a `micro-store` table, read at a revision and
//! watched from the next one, so every node reading the same store shares the config.

use std::collections::BTreeMap;

use futures::StreamExt;
use micro_store::{EventKind, Query, Store};
use serde_json::Value;

use crate::source::{Changes, keys_tree};

/// Attempts at reading the prefix while no write lands between the revisions around the read.
const CONSISTENT_READS: usize = 5;

/// Reads the keys under `prefix` at one revision, and the changes after it: the whole tree
/// after each change, or an error (the last item) when the watch ends.
pub(crate) async fn start(store: &Store, prefix: &str) -> Result<(Value, Changes), String> {
    let (keys, revision) = read(store, prefix).await?;
    let first = tree(prefix, &keys);
    let events = store
        .watch(prefix, Some(revision + 1))
        .map_err(|e| e.to_string())?;
    let prefix = prefix.to_owned();
    let changes = events
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .scan((keys, false), move |(keys, done), event| {
            let item = match event {
                _ if *done => None,
                None => Some(Err(format!("store watch of {prefix:?} ended"))),
                Some(Err(err)) => Some(Err(format!("store watch of {prefix:?}: {err}"))),
                Some(Ok(event)) => {
                    match event.kind {
                        EventKind::Put => {
                            keys.insert(event.key, text(&event.record.value));
                        }
                        EventKind::Delete | EventKind::Expired => {
                            keys.remove(&event.key);
                        }
                    }
                    Some(Ok(tree(&prefix, keys)))
                }
            };
            *done = *done || matches!(item, Some(Err(_)));
            futures::future::ready(item)
        })
        .boxed();
    Ok((first, changes))
}

/// The keys under `prefix` and the revision they were read at (the revision did not move
/// during the read).
async fn read(store: &Store, prefix: &str) -> Result<(BTreeMap<String, String>, u64), String> {
    let mut last = String::new();
    for _ in 0..CONSISTENT_READS {
        let before = store.revision().await.map_err(|e| e.to_string())?;
        let records = store
            .scan(&Query::prefix(prefix))
            .await
            .map_err(|e| e.to_string())?;
        let after = store.revision().await.map_err(|e| e.to_string())?;
        if before == after {
            let keys = records
                .into_iter()
                .map(|r| (r.key, text(&r.value)))
                .collect();
            return Ok((keys, after));
        }
        last = format!("the store kept changing while {prefix:?} was read");
    }
    Err(last)
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

fn tree(prefix: &str, keys: &BTreeMap<String, String>) -> Value {
    keys_tree(prefix, keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
