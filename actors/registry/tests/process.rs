//! The mDNS registry across OS processes: a node in a child process announces a service, this
//! process finds it, and when the child is killed (no goodbye) its nodes disappear, because the
//! runtime notices the link is dead within about a second.
//!
//! The child is this test binary again, running the ignored `child_registry` entry point.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use micro_registry::{Interfaces, MdnsConfig, NodeRecord, Registry, ServiceRecord};
use micro_runtime::NodeId;
use micro_testkit::{TestCluster, eventually};

/// Set in the child: the service type its registry announces.
const CHILD: &str = "MICRO_TEST_REGISTRY_CHILD";

fn config(service_type: &str) -> MdnsConfig {
    MdnsConfig::default()
        .service_type(service_type)
        .unwrap()
        .interfaces(Interfaces::Loopback)
}

/// The child: a node with an mDNS registry that registers "worker", then waits for stdin to close.
#[tokio::test]
#[ignore = "entry point of the child process in a_killed_process_disappears_from_the_registry"]
async fn child_registry() {
    let Ok(service_type) = std::env::var(CHILD) else {
        return;
    };
    // With the credentials its parent passed.
    let node = micro_testkit::test_node("child").start().await.unwrap();
    let registry = Registry::mdns(&node, config(&service_type)).await.unwrap();
    let worker = format!("worker-{}", std::process::id());
    registry
        .register(
            &ServiceRecord::new("worker", "1").node(NodeRecord::new(worker, "child:1")),
            None,
        )
        .await
        .unwrap();
    micro_testkit::announce_and_wait_for_stdin("MICRO_CHILD_READY").await;
}

fn spawn_child(cluster: &TestCluster, service_type: &str) -> micro_testkit::ChildGuard {
    micro_testkit::ChildGuard::spawn(cluster.child("child_registry").env(CHILD, service_type))
}

async fn wait_ready(child: &mut std::process::Child) {
    micro_testkit::wait_for_line(child, "MICRO_CHILD_READY").await;
}

async fn workers(registry: &Registry) -> usize {
    registry
        .get_service("worker")
        .await
        .map(|v| v.iter().map(|s| s.nodes.len()).sum())
        .unwrap_or(0)
}

/// Three processes (this one and two children) find each other; killing one (no goodbye) drops
/// its node from the others' view within about a second, and leaves the other.
#[tokio::test]
async fn a_killed_process_disappears_from_the_registry() {
    if micro_testkit::skip_without_loopback_multicast(
        "a_killed_process_disappears_from_the_registry",
    ) {
        return;
    }
    micro_testkit::init_tracing();
    let service_type = format!("_m{:08x}._udp", NodeId::random().as_u128() as u32);
    // This process's node; the children get credentials of the same cluster from it.
    let cluster = TestCluster::builder(1)
        .configure(|_, node| node.name("parent"))
        .start()
        .await;
    let node = cluster.node(0);
    let registry = Registry::mdns(node, config(&service_type)).await.unwrap();

    let mut first = spawn_child(&cluster, &service_type);
    let mut second = spawn_child(&cluster, &service_type);
    wait_ready(&mut first).await;
    wait_ready(&mut second).await;
    eventually("both children's services are found", || async {
        workers(&registry).await == 2
    })
    .await;

    let killed = Instant::now();
    first.kill_and_wait();
    eventually("the killed process's node disappears", || async {
        workers(&registry).await == 1
    })
    .await;
    eprintln!(
        "killed process → gone from the registry: {:?}",
        killed.elapsed()
    );
    let left = registry.get_service("worker").await.unwrap();
    assert_eq!(
        left[0].nodes[0].id,
        format!("worker-{}", second.id()),
        "the other stays"
    );

    // The survivor exits gracefully (stdin closes): its goodbye removes it at once.
    drop(second.stdin.take());
    let _ = second.wait();
    eventually("the survivor's goodbye is seen", || async {
        workers(&registry).await == 0
    })
    .await;
    node.shutdown().await.unwrap();
}
