//! The store on engines that run as servers: PostgreSQL when `MICRO_TEST_POSTGRES_URL` is set
//! (run outside the network namespace: `cargo test -p micro-store --all-features --test
//! engines`). Each test works in schemas of its own (`micro_test_<random>`), dropped after.

#![allow(clippy::unwrap_used)]

mod suite;

use std::time::Duration;

use micro_runtime::Node;
use micro_store::{EventKind, PostgresConfig, PostgresStore, Record, Store, StoreError};
use micro_testkit::{eventually, within};

/// The server's URL, or `None` (and a line saying the test is skipped).
fn url(test: &str) -> Option<String> {
    match std::env::var("MICRO_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped {test}: MICRO_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A schema name of this test's own, and the other ones the suite derives from it; dropped
/// (with everything in them) when the guard goes.
struct Schemas {
    url: String,
    base: String,
}

impl Schemas {
    fn new(url: &str) -> Self {
        Schemas {
            url: url.to_owned(),
            base: format!("micro_test_{:016x}", rand::random::<u64>()),
        }
    }

    async fn drop_all(self) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        for schema in [self.base.clone(), format!("{}_other", self.base)] {
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .unwrap();
        }
    }
}

async fn start(url: &str) -> (Node, Store) {
    let node = Node::builder().start().await.unwrap();
    let store = PostgresStore::start(&node, PostgresConfig::new(url))
        .await
        .unwrap();
    (node, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_suite() {
    let Some(url) = url("postgres_passes_the_suite") else {
        return;
    };
    let schemas = Schemas::new(&url);
    let (node, store) = start(&url).await;
    assert!(store.reads_directly());
    suite::all(&store.database(&schemas.base)).await;
    node.shutdown().await.unwrap();
    schemas.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_suite_through_the_actor() {
    let Some(url) = url("postgres_passes_the_suite_through_the_actor") else {
        return;
    };
    let schemas = Schemas::new(&url);
    let (node, store) = start(&url).await;
    suite::all(&Store::new(store.addr().clone()).database(&schemas.base)).await;
    node.shutdown().await.unwrap();
    schemas.drop_all().await;
}

/// Two stores on one server (two nodes, say two services): a watcher on one sees the other's
/// writes, told by NOTIFY, in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_another_stores_writes() {
    let Some(url) = url("a_watcher_sees_another_stores_writes") else {
        return;
    };
    let schemas = Schemas::new(&url);
    let (a, first) = start(&url).await;
    let (b, second) = start(&url).await;
    let first = first.database(&schemas.base);
    let second = second.database(&schemas.base);
    first.write(Record::new("seed", "0")).await.unwrap();
    let mut events = first.watch("", None).unwrap();
    first.revision().await.unwrap();
    for i in 0..20 {
        second
            .write(Record::new(format!("k{i:02}"), "v"))
            .await
            .unwrap();
    }
    let mut last = 0;
    for i in 0..20 {
        let event = within("an event written by the other store", events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.key, format!("k{i:02}"));
        assert!(event.revision > last);
        last = event.revision;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    schemas.drop_all().await;
}

/// Every connection killed by the server (`pg_terminate_backend`): requests fail with a typed
/// error at worst, then the store recovers by itself, and a watcher misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_from_killed_connections() {
    let Some(url) = url("the_store_recovers_from_killed_connections") else {
        return;
    };
    let schemas = Schemas::new(&url);
    // Its connections carry a name of their own, so only they are killed (tests run in
    // parallel on one server).
    let app = schemas.base.clone();
    let separator = if url.contains('?') { '&' } else { '?' };
    let (node, store) = start(&format!("{url}{separator}application_name={app}")).await;
    let store = store.database(&schemas.base);
    store.write(Record::new("before", "1")).await.unwrap();
    let mut events = store.watch("", None).unwrap();
    store.revision().await.unwrap();

    let (killer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed = killer
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert!(!killed.is_empty(), "the store's connections were killed");

    let failures = std::sync::atomic::AtomicU32::new(0);
    eventually("a write succeeds again", || async {
        match store.write(Record::new("after", "2")).await {
            Ok(_) => true,
            Err(StoreError::Unavailable(_) | StoreError::Engine { .. }) => {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
            Err(e) => panic!("an unexpected error: {e}"),
        }
    })
    .await;
    eprintln!(
        "{} requests failed while the pool recovered",
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(store.read("before").await.unwrap().unwrap().value, b"1");
    let event = within("the write after the kill, watched", events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((event.key.as_str(), event.kind), ("after", EventKind::Put));
    node.shutdown().await.unwrap();
    schemas.drop_all().await;
}

/// A server that is not there: a typed `Unavailable`, no panic, within the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_unavailable() {
    if url("a_server_that_is_down_is_unavailable").is_none() {
        return;
    }
    let node = Node::builder().start().await.unwrap();
    let mut config = PostgresConfig::new("postgres://postgres@127.0.0.1:1/none");
    config.connect_timeout = Duration::from_secs(1);
    let store = PostgresStore::start(&node, config).await.unwrap();
    let write = store.write(Record::new("k", "v")).await;
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );
    let read = store.read("k").await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    node.shutdown().await.unwrap();
}
