//! Leader election across three nodes: one runs the lock service (the memory sync backend),
//! two workers campaign to lead; the leader does the work. Its node is then killed, and the
//! other worker takes over within the election's TTL, with a higher term. It exits by itself.
//!
//! Run it with `cargo run --example leader` (it listens on 127.0.0.1 only).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use micro::prelude::*;
use micro::runtime::NodeId;
use micro::sync::{MemorySync, Sync as Locks};

/// How long a dead leader keeps the leadership at most.
const TTL: Duration = Duration::from_secs(2);

/// A worker: campaigns, then works while it leads (each job fenced by its term).
async fn worker(
    node: Node,
    server: NodeId,
    name: &'static str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let sync = Locks::remote(&node, server).await?.with_election_ttl(TTL);
    let leadership = sync.campaign("jobs", name).await?;
    println!("{name} leads (term {})", leadership.term());
    let lost = leadership.lost();
    tokio::pin!(lost);
    for job in 1.. {
        tokio::select! {
            () = &mut lost => {
                println!("{name} lost the leadership");
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                println!("{name} (term {}) did job {job}", leadership.term());
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    micro::logging::init();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = Node::builder()
        .name("lock-service")
        .listen(loopback)
        .start()
        .await?;
    let _sync = MemorySync::start(&server).await?;
    let address = server.local_addr().ok_or("the server does not listen")?;

    let mut workers = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let node = Node::builder().name(name).listen(loopback).start().await?;
        node.connect(address).await?;
        let task = tokio::spawn(worker(node.clone(), server.id(), name));
        workers.push((name, node, task));
    }

    // Who leads? Kill its node once it did some work.
    let observer = Locks::lookup(&server)?;
    let mut leaders = observer.observe("jobs")?;
    let first = loop {
        if let Some(Some(leader)) = leaders.next().await {
            break leader;
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let index = workers
        .iter()
        .position(|(name, ..)| *name == first.candidate)
        .ok_or("unknown leader")?;
    let (name, node, task) = workers.remove(index);
    println!("killing {name}'s node");
    let killed = Instant::now();
    // Its node goes first, so the leadership is not handed over (as when a process dies): the
    // lease expires by its TTL.
    node.shutdown().await?;
    task.abort();

    let next = loop {
        match leaders.next().await {
            Some(Some(leader)) if leader.term > first.term => break leader,
            Some(_) => continue,
            None => return Err("the lock service went away".into()),
        }
    };
    println!(
        "{} took over after {:?} (term {} > {})",
        next.candidate,
        killed.elapsed(),
        next.term,
        first.term
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (_, node, task) in workers {
        task.abort();
        node.shutdown().await?;
    }
    server.shutdown().await?;
    Ok(())
}
