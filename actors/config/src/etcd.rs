//! The etcd source: keys under a prefix, read at start and watched from the revision read.

use std::collections::BTreeMap;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use futures::StreamExt;
use serde_json::Value;

use crate::source::{Changes, keys_tree};

/// An etcd source's client, held while its watch stream is forwarded into the config actor's
/// mailbox.
pub(crate) struct EtcdClient {
    _client: Client,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient").finish_non_exhaustive()
    }
}

/// Reads the keys under `prefix` and watches them from the next revision.
pub(crate) async fn start(
    endpoints: &[String],
    prefix: &str,
) -> Result<(Value, EtcdClient, Changes), String> {
    let mut client = Client::connect(endpoints, None)
        .await
        .map_err(|e| e.to_string())?;
    let read = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    let revision = read.header().map_or(0, |h| h.revision());
    let mut keys = BTreeMap::new();
    for kv in read.kvs() {
        if let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) {
            keys.insert(key.to_owned(), value.to_owned());
        }
    }
    let first = tree(prefix, &keys);
    let stream = client
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    let prefix = prefix.to_owned();
    // Each response (then `None` for the end of the stream) becomes the new tree, or the
    // error that ends the watch.
    let changes = stream
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .scan((keys, false), move |(keys, done), response| {
            let item = match response {
                _ if *done => None,
                None => Some(Err(format!("etcd watch of {prefix:?} ended"))),
                Some(Err(err)) => Some(Err(err.to_string())),
                Some(Ok(response)) if response.canceled() => Some(Err(format!(
                    "etcd watch of {prefix:?} cancelled: {}",
                    response.cancel_reason()
                ))),
                Some(Ok(response)) => {
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        match event.event_type() {
                            EventType::Put => {
                                if let Ok(value) = kv.value_str() {
                                    keys.insert(key.to_owned(), value.to_owned());
                                }
                            }
                            EventType::Delete => {
                                keys.remove(key);
                            }
                        }
                    }
                    Some(Ok(tree(&prefix, keys)))
                }
            };
            *done = *done || matches!(item, Some(Err(_)));
            futures::future::ready(item)
        })
        .boxed();
    Ok((first, EtcdClient { _client: client }, changes))
}

fn tree(prefix: &str, keys: &BTreeMap<String, String>) -> Value {
    keys_tree(prefix, keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
