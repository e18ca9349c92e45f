//! The test cluster itself: nodes over QUIC on loopback with a CA of the cluster's own, linked
//! pairwise, customised per node, grown and restarted; the same in-process; and a child process
//! that joins with credentials its parent passed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use micro_testkit::{TestCluster, Transport, eventually, test_ca, test_node, wait_for_line};

const CHILD: &str = "MICRO_TEST_TESTKIT_CHILD";

/// Waits until every node of `cluster` has a link to every other.
async fn fully_linked(cluster: &TestCluster) {
    let others = cluster.nodes().len() - 1;
    eventually("every node is linked to every other", || async {
        cluster.nodes().iter().all(|n| n.peers().len() == others)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_cluster_links_every_pair_with_a_ca_of_its_own() {
    let cluster = TestCluster::start(3).await;
    assert_eq!(cluster.transport(), Transport::Quic);
    fully_linked(&cluster).await;
    let fingerprint = cluster.ca().unwrap().fingerprint();
    for node in cluster.nodes() {
        assert!(node.local_addr().unwrap().ip().is_loopback());
        assert_eq!(node.cluster_fingerprint(), Some(fingerprint.clone()));
    }
    // Another cluster has another CA: its nodes are strangers to these.
    let other = TestCluster::start(1).await;
    assert_ne!(other.ca().unwrap().fingerprint(), fingerprint);
    assert!(
        other
            .node(0)
            .connect(cluster.node(0).local_addr().unwrap())
            .await
            .is_err()
    );
    other.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_shapes_each_node_and_later_nodes_too() {
    let mut cluster = TestCluster::builder(2)
        .configure(|i, node| {
            node.name(format!("replica-{i}"))
                .peer_timeout(Duration::from_secs(3))
        })
        .start()
        .await;
    let names: Vec<&str> = cluster.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(names, ["replica-0", "replica-1"]);

    // A node added later is shaped the same way and linked to the others.
    let late = cluster.add_node().await;
    assert_eq!(late.name(), "replica-2");
    fully_linked(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_id_and_address_in_a_new_incarnation() {
    let mut cluster = TestCluster::start(2).await;
    fully_linked(&cluster).await;
    let (id, addr, incarnation) = {
        let node = cluster.node(1);
        (node.id(), node.local_addr(), node.incarnation())
    };
    let restarted = cluster.restart(1).await;
    assert_eq!(restarted.id(), id);
    assert_eq!(restarted.local_addr(), addr);
    assert_ne!(restarted.incarnation(), incarnation);
    eventually("node 0 is linked to the new incarnation", || async {
        cluster
            .node(0)
            .peers()
            .iter()
            .any(|p| p.node == id && p.connected && p.incarnation == cluster.node(1).incarnation())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_in_process_cluster_opens_no_socket() {
    let mut cluster = TestCluster::in_process(2).await;
    assert_eq!(cluster.transport(), Transport::InProcess);
    assert!(cluster.ca().is_none());
    cluster.add_node().await;
    for node in cluster.nodes() {
        assert_eq!(node.local_addr(), None);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_built_by_hand_uses_the_test_ca() {
    let node = test_node("solo").start().await.unwrap();
    assert_eq!(node.cluster_fingerprint(), Some(test_ca().fingerprint()));
    node.shutdown().await.unwrap();
}

/// The child: a node with the credentials its parent passed; prints its CA's fingerprint.
#[tokio::test]
#[ignore = "entry point of the child process in a_child_process_joins_with_the_credentials_it_was_passed"]
async fn child_node() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let node = test_node("child").start().await.unwrap();
    micro_testkit::announce_and_wait_for_stdin(&format!(
        "MICRO_CHILD {} {}",
        node.local_addr().unwrap(),
        node.cluster_fingerprint().unwrap()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_process_joins_with_the_credentials_it_was_passed() {
    let cluster = TestCluster::start(1).await;
    let mut child = cluster.child("child_node").env(CHILD, "1").spawn().unwrap();
    let line = wait_for_line(&mut child, "MICRO_CHILD ").await;
    let (addr, fingerprint) = line.trim().split_once(' ').unwrap();
    assert_eq!(fingerprint, cluster.ca().unwrap().fingerprint());
    cluster
        .node(0)
        .connect(addr.parse().unwrap())
        .await
        .unwrap();
    drop(child.stdin.take());
    let _ = child.wait();
    cluster.shutdown().await;
}
