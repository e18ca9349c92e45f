//! The store on its embedded backends: the behaviour suite on memory and on redb files, locally
//! (under tokio's paused clock, so TTLs take no time) and from another node over QUIC;
//! compare-and-set under contention from several nodes; restarts.

#![allow(clippy::unwrap_used)]

mod suite;

use std::sync::Arc;

use micro_runtime::Node;
use micro_store::{MemoryStore, Record, Store, StoreConfig, StoreError};
use micro_testkit::{TestCluster, eventually, within};

#[tokio::test(start_paused = true)]
async fn memory_passes_the_suite() {
    let node = Node::builder().start().await.unwrap();
    let store = MemoryStore::start(&node, StoreConfig::default())
        .await
        .unwrap();
    assert!(store.reads_directly());
    suite::all(&store).await;
    // Through the actor as well (what a handle made from an address does).
    suite::all(&Store::new(store.addr().clone()).database("through_actor")).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_the_suite_from_another_node() {
    let cluster = TestCluster::start(2).await;
    MemoryStore::start(cluster.node(0), StoreConfig::default())
        .await
        .unwrap();
    let remote = Store::remote(cluster.node(1), cluster.node(0).id())
        .await
        .unwrap();
    assert!(!remote.reads_directly());
    suite::all(&remote).await;
    cluster.shutdown().await;
}

/// Several nodes increment one counter with read + `write_if`, retrying on conflict: the final
/// value is exactly the number of increments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_under_contention_counts_exactly() {
    const NODES: usize = 3;
    const TASKS: usize = 4;
    const INCREMENTS: u64 = 25;
    let cluster = TestCluster::start(NODES).await;
    let local = MemoryStore::start(cluster.node(0), StoreConfig::default())
        .await
        .unwrap();
    let mut stores = vec![local];
    for i in 1..NODES {
        stores.push(
            Store::remote(cluster.node(i), cluster.node(0).id())
                .await
                .unwrap(),
        );
    }
    let conflicts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..TASKS {
            let store = store.table("counters");
            let conflicts = conflicts.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    loop {
                        let (count, version) = store
                            .get_versioned::<u64>("hits")
                            .await
                            .unwrap()
                            .unwrap_or((0, 0));
                        match store.put_if("hits", &(count + 1), version).await {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => {
                                conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => panic!("increment failed: {e}"),
                        }
                    }
                }
            }));
        }
    }
    within("every increment", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    let total = stores[1]
        .table("counters")
        .get::<u64>("hits")
        .await
        .unwrap();
    assert_eq!(total, Some(NODES as u64 * TASKS as u64 * INCREMENTS));
    eprintln!(
        "{} conflicts retried",
        conflicts.load(std::sync::atomic::Ordering::Relaxed)
    );
    cluster.shutdown().await;
}

/// The store actor is supervised: killed by a panic-free crash (a forced restart), it comes
/// back under its name with the memory data intact, and handles keep working.
#[tokio::test]
async fn a_restarted_memory_store_keeps_its_records() {
    let node = Node::builder().start().await.unwrap();
    let store = MemoryStore::start(&node, StoreConfig::default())
        .await
        .unwrap();
    store.write(Record::new("kept", "yes")).await.unwrap();
    let before = node.whereis("store").unwrap();
    node.root().unwrap().restart_child("store").await.unwrap();
    let after = node.whereis("store").unwrap();
    assert_ne!(before, after);
    eventually("the store answers again", || async {
        store.revision().await.is_ok()
    })
    .await;
    assert_eq!(store.read("kept").await.unwrap().unwrap().value, b"yes");
    store.write(Record::new("more", "yes")).await.unwrap();
    node.shutdown().await.unwrap();
}
