//! The store on embedded defaults: a redb file store in a temporary directory, used by a local
//! handle and by a second node over QUIC.
//!
//! It writes typed orders into a table, lists them by prefix, counts with compare-and-set from
//! both nodes, lets a session expire, and follows the changes with a watch that resumes from a
//! revision without missing one. Run it with `cargo run --example store` (it listens on
//! 127.0.0.1 only, with a CA generated on the spot); it removes its directory and exits.

use std::net::SocketAddr;
use std::time::Duration;

use micro::store::{
    EventKind, FileConfig, FileStore, Query, Record, Store, StoreError, WriteOptions,
};
use micro::{ClusterCa, Node, NodeId};
use serde::{Deserialize, Serialize};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    item: String,
    cents: u64,
}

/// Adds one to the counter at `key`: read the version, write only if it is still that one.
async fn increment(store: &Store, key: &str) -> Result<u64> {
    loop {
        let (count, version) = store.get_versioned::<u64>(key).await?.unwrap_or((0, 0));
        match store.put_if(key, &(count + 1), version).await {
            Ok(_) => return Ok(count + 1),
            Err(StoreError::Conflict { .. }) => continue, // someone else went first: again
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    micro::logging::init();
    let dir = std::env::temp_dir().join(format!("micro-store-example-{}", std::process::id()));
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let ca = ClusterCa::generate("store-example")?;
    let shop = Node::builder()
        .name("shop")
        .listen(loopback)
        .credentials(ca.issue(NodeId::random())?)
        .start()
        .await?;
    let office = Node::builder()
        .name("office")
        .listen(loopback)
        .credentials(ca.issue(NodeId::random())?)
        .start()
        .await?;
    office
        .connect(shop.local_addr().ok_or("no address")?)
        .await?;

    // The shop runs the store (one redb file per database, durable commits); the office uses it
    // over QUIC with the same handle type.
    let store = FileStore::start(&shop, FileConfig::new(&dir)).await?;
    let remote = Store::remote(&office, shop.id()).await?;
    let orders = store.table("orders");
    let mut changes = orders.watch("order/", None)?;
    let start = orders.revision().await?;

    for (n, (item, cents)) in [("tea", 450), ("cake", 1250), ("scone", 300)]
        .into_iter()
        .enumerate()
    {
        let version = orders
            .put(
                &format!("order/{n}"),
                &Order {
                    item: item.into(),
                    cents,
                },
            )
            .await?;
        println!("order/{n}: {item} at version {version}");
    }
    let keys = remote
        .table("orders")
        .list(&Query::prefix("order/"))
        .await?;
    println!("the office lists {keys:?}");
    let cake: Option<Order> = remote.table("orders").get("order/1").await?;
    println!("the office reads order/1: {cake:?}");

    // Compare-and-set from both nodes: no lock, no lost update.
    let counters = store.table("counters");
    let remote_counters = remote.table("counters");
    let (a, b) = tokio::join!(
        async {
            for _ in 0..10 {
                increment(&counters, "visits").await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        },
        async {
            for _ in 0..10 {
                increment(&remote_counters, "visits").await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        },
    );
    a?;
    b?;
    println!(
        "visits: {:?} (20 increments from two nodes)",
        counters.get::<u64>("visits").await?
    );

    // A session with a TTL: gone after it, and swept in the background.
    let sessions = store.table("sessions");
    sessions
        .write_with(
            Record::new("s-1", "ada"),
            WriteOptions::new().ttl(Duration::from_millis(300)),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    println!(
        "session s-1 after its TTL: {:?}",
        sessions.read("s-1").await?
    );

    // The watch saw the three orders; a watcher that saw only the first resumes after it.
    let first = changes.recv().await.ok_or("watch ended")??;
    println!(
        "watched: {:?} {} at revision {}",
        first.kind, first.key, first.revision
    );
    let mut resumed = orders.watch("order/", Some(first.revision + 1))?;
    for _ in 0..2 {
        let event = resumed.recv().await.ok_or("watch ended")??;
        assert_eq!(event.kind, EventKind::Put);
        println!(
            "resumed: {:?} {} at revision {}",
            event.kind, event.key, event.revision
        );
    }
    println!("revisions {start} → {}", orders.revision().await?);

    office.shutdown().await?;
    shop.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
