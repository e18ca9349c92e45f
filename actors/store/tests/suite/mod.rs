//! The behaviour suite every backend passes: one async body per behaviour, run against a
//! `Store` handle by each backend's test target (memory and file in `store.rs`, PostgreSQL in
//! `engines.rs`), locally and from another node.

#![allow(dead_code)]

use std::time::Duration;

use micro_store::{EventKind, Order, Query, Record, Store, StoreError, StoreEvent, WriteOptions};
use micro_testkit::within;
use serde::{Deserialize, Serialize};

/// Every behaviour, in turn, each in a table of its own.
pub(crate) async fn all(store: &Store) {
    crud(&store.table("crud")).await;
    queries(&store.table("queries")).await;
    scopes(store).await;
    bad_input(&store.table("bad")).await;
    compare_and_set(&store.table("cas")).await;
    typed(&store.table("typed")).await;
    watch(&store.table("watch")).await;
    ttl(&store.table("ttl")).await;
}

/// Write, read back (value, metadata, version), overwrite, delete.
pub(crate) async fn crud(store: &Store) {
    assert_eq!(store.read("a").await.unwrap(), None, "nothing yet");
    let v1 = store
        .write(Record::new("a", "one").with_metadata("kind", "test"))
        .await
        .unwrap();
    let read = store.read("a").await.unwrap().expect("written");
    assert_eq!(read.value, b"one");
    assert_eq!(read.metadata.get("kind").map(String::as_str), Some("test"));
    assert_eq!(read.version, v1);
    assert_eq!(read.expiry, None);

    let v2 = store.write(Record::new("a", "two")).await.unwrap();
    assert!(v2 > v1, "versions grow");
    let read = store.read("a").await.unwrap().expect("overwritten");
    assert_eq!(read.value, b"two");
    assert!(read.metadata.is_empty(), "a write replaces the metadata");

    assert!(store.delete("a").await.unwrap());
    assert!(!store.delete("a").await.unwrap(), "already gone");
    assert_eq!(store.read("a").await.unwrap(), None);
    let v3 = store.write(Record::new("a", "three")).await.unwrap();
    assert!(
        v3 > v2,
        "a key written again after a delete gets a higher version"
    );
}

/// Prefix (a range), suffix, offset, limit, order; records and keys alike.
pub(crate) async fn queries(store: &Store) {
    for key in [
        "user/1/name",
        "user/1/mail",
        "user/2/name",
        "user/10/name",
        "users",
        "zz",
    ] {
        store.write(Record::new(key, key)).await.unwrap();
    }
    let keys = |q: Query| async move { store.list(&q).await.unwrap() };
    assert_eq!(
        keys(Query::prefix("user/")).await,
        ["user/1/mail", "user/1/name", "user/10/name", "user/2/name"]
    );
    assert_eq!(
        keys(
            Query::prefix("user/")
                .suffix("/name")
                .order(Order::Descending)
        )
        .await,
        ["user/2/name", "user/10/name", "user/1/name"]
    );
    assert_eq!(
        keys(Query::all().offset(1).limit(2)).await,
        ["user/1/name", "user/10/name"]
    );
    assert_eq!(
        keys(Query::all().order(Order::Descending).limit(2)).await,
        ["zz", "users"]
    );
    assert_eq!(keys(Query::all().suffix("s")).await, ["users"]);
    assert!(keys(Query::prefix("nobody")).await.is_empty());
    assert!(keys(Query::all().limit(0)).await.is_empty());

    let records = store.scan(&Query::prefix("user/2")).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, b"user/2/name");
    assert!(records[0].version > 0);
}

/// Tables and databases are separate; a table nobody wrote reads as empty.
pub(crate) async fn scopes(store: &Store) {
    let orders = store.table("orders");
    let invoices = store.table("invoices");
    let other_db = store
        .database(&format!("{}_other", store.scope().database))
        .table("orders");
    orders.write(Record::new("k", "order")).await.unwrap();
    invoices.write(Record::new("k", "invoice")).await.unwrap();
    assert_eq!(orders.read("k").await.unwrap().unwrap().value, b"order");
    assert_eq!(invoices.read("k").await.unwrap().unwrap().value, b"invoice");
    assert_eq!(other_db.read("k").await.unwrap(), None);
    assert!(
        store
            .table("never_written")
            .list(&Query::all())
            .await
            .unwrap()
            .is_empty()
    );
    other_db.write(Record::new("k", "elsewhere")).await.unwrap();
    assert_eq!(orders.read("k").await.unwrap().unwrap().value, b"order");
    assert!(other_db.revision().await.unwrap() >= 1);
}

/// Names that cannot be tables, empty or long keys, large values: typed errors, nothing written.
pub(crate) async fn bad_input(store: &Store) {
    for name in ["", "1st", "drop table x;--", "a-b", "ünï"] {
        let bad = store.table(name);
        assert!(
            matches!(
                bad.write(Record::new("k", "v")).await,
                Err(StoreError::InvalidName { .. })
            ),
            "table {name:?}"
        );
        assert!(matches!(
            bad.read("k").await,
            Err(StoreError::InvalidName { .. })
        ));
    }
    assert!(matches!(
        store.database("no/such").write(Record::new("k", "v")).await,
        Err(StoreError::InvalidName { .. })
    ));
    assert!(matches!(
        store.write(Record::new("", "v")).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.write(Record::new("k".repeat(5000), "v")).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store
            .write(Record::new("big", vec![0u8; (1 << 20) + 1]))
            .await,
        Err(StoreError::ValueTooLarge { .. })
    ));
    assert_eq!(store.read("big").await.unwrap(), None);
    // The store still works.
    store.write(Record::new("fine", "v")).await.unwrap();
}

/// `write_if` and `delete_if` check the stored version (0: absent).
pub(crate) async fn compare_and_set(store: &Store) {
    let v1 = store.write_if(Record::new("c", "1"), 0).await.unwrap();
    assert!(matches!(
        store.write_if(Record::new("c", "x"), 0).await,
        Err(StoreError::Conflict { expected: 0, found, .. }) if found == v1
    ));
    let v2 = store.write_if(Record::new("c", "2"), v1).await.unwrap();
    assert!(matches!(
        store.write_if(Record::new("c", "x"), v1).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.delete_if("c", v1).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(store.delete_if("c", v2).await.unwrap());
    assert_eq!(store.read("c").await.unwrap(), None);
    assert!(matches!(
        store.write_if(Record::new("c", "x"), v2).await,
        Err(StoreError::Conflict { found: 0, .. })
    ));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order1 {
    id: u64,
    item: String,
}

/// `put` / `get::<T>` through serde, with the content type kept in the metadata.
pub(crate) async fn typed(store: &Store) {
    let order = Order1 {
        id: 7,
        item: "tea".into(),
    };
    let version = store.put("o-7", &order).await.unwrap();
    assert_eq!(
        store.get::<Order1>("o-7").await.unwrap(),
        Some(order.clone())
    );
    let (read, v) = store.get_versioned::<Order1>("o-7").await.unwrap().unwrap();
    assert_eq!((read, v), (order.clone(), version));
    let record = store.read("o-7").await.unwrap().unwrap();
    assert_eq!(
        record
            .metadata
            .get(micro_store::CONTENT_TYPE)
            .map(String::as_str),
        Some("application/json")
    );
    let bincode = store
        .clone()
        .with_content_type(micro_runtime::ContentType::Bincode);
    bincode.put("o-8", &order).await.unwrap();
    assert_eq!(
        store.get::<Order1>("o-8").await.unwrap(),
        Some(order),
        "decoded by its own type"
    );
    assert!(matches!(
        store.get::<Vec<u64>>("o-7").await,
        Err(StoreError::Codec { .. })
    ));
    assert_eq!(store.get::<Order1>("none").await.unwrap(), None);
}

async fn next(events: &mut micro_runtime::StreamReceiver<StoreEvent>) -> StoreEvent {
    within("the next store event", events.recv())
        .await
        .expect("the watch goes on")
        .expect("an event")
}

/// Live changes in order, prefix filtering, and a watcher resuming from a revision misses
/// nothing.
pub(crate) async fn watch(store: &Store) {
    let mut live = store.watch("w/", None).unwrap();
    // The watch is registered once the actor handled it: a write after the first ask is seen.
    let start = store.revision().await.unwrap();
    store.write(Record::new("w/1", "a")).await.unwrap();
    store.write(Record::new("other", "x")).await.unwrap();
    store.write(Record::new("w/2", "b")).await.unwrap();
    store.delete("w/1").await.unwrap();

    let first = next(&mut live).await;
    assert_eq!((first.key.as_str(), first.kind), ("w/1", EventKind::Put));
    assert_eq!(first.record.value, b"a");
    assert_eq!(first.revision, first.record.version);
    assert!(first.revision > start);
    let second = next(&mut live).await;
    assert_eq!((second.key.as_str(), second.kind), ("w/2", EventKind::Put));
    let third = next(&mut live).await;
    assert_eq!((third.key.as_str(), third.kind), ("w/1", EventKind::Delete));
    assert!(first.revision < second.revision && second.revision < third.revision);

    // A watcher that saw `first` and lost its link resumes from the next revision: it gets
    // what it missed, then what comes next, in order.
    let mut resumed = store.watch("w/", Some(first.revision + 1)).unwrap();
    store.write(Record::new("w/3", "c")).await.unwrap();
    let replayed: Vec<(String, EventKind)> = vec![
        next(&mut resumed).await,
        next(&mut resumed).await,
        next(&mut resumed).await,
    ]
    .into_iter()
    .map(|e| (e.key, e.kind))
    .collect();
    assert_eq!(
        replayed,
        [
            ("w/2".to_owned(), EventKind::Put),
            ("w/1".to_owned(), EventKind::Delete),
            ("w/3".to_owned(), EventKind::Put)
        ]
    );
    assert_eq!(next(&mut live).await.key, "w/3");

    // Many changes, one watcher: every one of them, in order, no gaps among this prefix.
    let mut many = store.watch("n/", None).unwrap();
    store.revision().await.unwrap();
    for i in 0..200u32 {
        store
            .write(Record::new(format!("n/{i:03}"), i.to_string()))
            .await
            .unwrap();
    }
    let mut last = 0;
    for i in 0..200u32 {
        let event = next(&mut many).await;
        assert_eq!(event.key, format!("n/{i:03}"));
        assert!(event.revision > last);
        last = event.revision;
    }
}

/// A TTL hides the record once passed, the sweep removes it and tells watchers; an absolute
/// expiry works the same. (Under a paused tokio clock the sleeps are instant.)
pub(crate) async fn ttl(store: &Store) {
    let mut events = store.watch("t/", None).unwrap();
    store.revision().await.unwrap();
    store
        .write_with(
            Record::new("t/short", "x"),
            WriteOptions::new().ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    store.write(Record::new("t/forever", "y")).await.unwrap();
    let written = store
        .read("t/short")
        .await
        .unwrap()
        .expect("not expired yet");
    assert!(written.expiry.is_some());
    assert_eq!(next(&mut events).await.kind, EventKind::Put);
    assert_eq!(next(&mut events).await.kind, EventKind::Put);

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        store.read("t/short").await.unwrap(),
        None,
        "expired: never returned"
    );
    assert_eq!(
        store.list(&Query::prefix("t/")).await.unwrap(),
        ["t/forever"]
    );
    let expired = next(&mut events).await;
    assert_eq!(
        (expired.key.as_str(), expired.kind),
        ("t/short", EventKind::Expired)
    );

    // An absolute expiry already passed: written, never returned, swept.
    store
        .write(Record::new("t/past", "z").with_expiry(1))
        .await
        .unwrap();
    assert_eq!(store.read("t/past").await.unwrap(), None);
    assert_eq!(next(&mut events).await.kind, EventKind::Put);
    let swept = next(&mut events).await;
    assert_eq!(
        (swept.key.as_str(), swept.kind),
        ("t/past", EventKind::Expired)
    );
}
