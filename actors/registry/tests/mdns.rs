//! The mDNS registry: nodes in one process, each with its own mDNS daemon, on loopback only and
//! with a service type of the test's own, so parallel tests do not see each other. Run inside
//! `netns-run` (CI does), where multicast is routed to loopback.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use micro_registry::{
    Endpoint, EventKind, Interfaces, MdnsConfig, Registry, RegistryError, Service, ServiceNode,
};
use micro_runtime::{ClusterCa, Node, NodeId};
use micro_testkit::{eventually, within};

/// A service type no other test uses: `_m` and 8 random hex digits.
fn config() -> MdnsConfig {
    let name = format!("_m{:08x}._udp", rand_u32());
    MdnsConfig::default()
        .service_type(&name)
        .unwrap()
        .interfaces(Interfaces::Loopback)
}

fn rand_u32() -> u32 {
    NodeId::random().as_u128() as u32
}

async fn node(name: &str, ca: &ClusterCa, config: &MdnsConfig) -> (Node, Registry) {
    micro_testkit::init_tracing();
    let node = Node::builder()
        .name(name)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .credentials(ca.issue(NodeId::random()).unwrap())
        .start()
        .await
        .unwrap();
    let registry = Registry::mdns(&node, config.clone()).await.unwrap();
    (node, registry)
}

fn greeter(node: &str) -> Service {
    Service::new("greeter", "1.0")
        .endpoint(Endpoint::new("Greeter.Hello", "Req", "Rsp"))
        .node(ServiceNode::new(node, format!("{node}:1")))
}

async fn nodes_of(registry: &Registry, name: &str) -> Vec<String> {
    match registry.get_service(name).await {
        Ok(versions) => {
            let mut ids: Vec<String> = versions
                .into_iter()
                .flat_map(|v| v.nodes.into_iter().map(|n| n.id))
                .collect();
            ids.sort();
            ids
        }
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn two_nodes_find_each_others_services_and_see_them_go() {
    if micro_testkit::skip_without_loopback_multicast(
        "two_nodes_find_each_others_services_and_see_them_go",
    ) {
        return;
    }
    let ca = ClusterCa::generate("mdns").unwrap();
    let config = config();
    let (a, on_a) = node("a", &ca, &config).await;
    let (b, on_b) = node("b", &ca, &config).await;

    let registered = Instant::now();
    on_a.register(&greeter("a1"), None).await.unwrap();
    eventually("b sees a's service", || async {
        nodes_of(&on_b, "greeter").await == ["a1"]
    })
    .await;
    eprintln!(
        "register on a → resolvable on b: {:?}",
        registered.elapsed()
    );

    // Both run the service: b sees both nodes, a too.
    on_b.register(&greeter("b1"), None).await.unwrap();
    eventually("a sees both", || async {
        nodes_of(&on_a, "greeter").await == ["a1", "b1"]
    })
    .await;

    // A deregistration shows promptly.
    on_a.deregister(&greeter("a1")).await.unwrap();
    eventually("b sees a1 go", || async {
        nodes_of(&on_b, "greeter").await == ["b1"]
    })
    .await;

    // A graceful stop says goodbye.
    on_a.register(&greeter("a2"), None).await.unwrap();
    eventually("b sees a2", || async {
        nodes_of(&on_b, "greeter").await == ["a2", "b1"]
    })
    .await;
    let stopped = Instant::now();
    a.shutdown().await.unwrap();
    eventually("b drops a's nodes", || async {
        nodes_of(&on_b, "greeter").await == ["b1"]
    })
    .await;
    eprintln!("a stops → gone from b: {:?}", stopped.elapsed());
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn three_nodes_and_a_service_with_fifty_endpoints() {
    if micro_testkit::skip_without_loopback_multicast(
        "three_nodes_and_a_service_with_fifty_endpoints",
    ) {
        return;
    }
    let ca = ClusterCa::generate("mdns").unwrap();
    let config = config();
    let (a, on_a) = node("a", &ca, &config).await;
    let (b, on_b) = node("b", &ca, &config).await;
    let (c, on_c) = node("c", &ca, &config).await;

    let mut big = Service::new("big", "2.0").node(ServiceNode::new("c1", "c1:1"));
    for i in 0..50 {
        big = big.endpoint(Endpoint::new(
            format!("Big.Method{i:02}"),
            format!("Request{i}"),
            format!("Response{i}"),
        ));
    }
    let mut watch = on_a.watch(Some("big")).unwrap();
    on_c.register(&big, None).await.unwrap();
    for registry in [&on_a, &on_b] {
        eventually("the big service resolves", || async {
            registry.get_service("big").await.is_ok()
        })
        .await;
        assert_eq!(
            registry.get_service("big").await.unwrap(),
            vec![big.clone()],
            "whole, not truncated"
        );
    }
    let created = within("a create event", watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.kind, EventKind::Create);
    on_c.deregister(&big).await.unwrap();
    let deleted = within("a delete event", watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.kind, EventKind::Delete, "events in order");
    for node in [c, b, a] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn another_clusters_announcements_are_ignored() {
    if micro_testkit::skip_without_loopback_multicast("another_clusters_announcements_are_ignored")
    {
        return;
    }
    let config = config();
    let (ours, on_ours) = node("ours", &ClusterCa::generate("mdns").unwrap(), &config).await;
    let (theirs, on_theirs) = node("theirs", &ClusterCa::generate("mdns").unwrap(), &config).await;
    on_theirs.register(&greeter("t1"), None).await.unwrap();
    on_ours
        .register(
            &Service::new("marker", "1").node(ServiceNode::new("m", "m:1")),
            None,
        )
        .await
        .unwrap();
    // Give discovery ample time; nothing of theirs may show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        on_ours.get_service("greeter").await,
        Err(RegistryError::NotFound("greeter".into()))
    );
    assert!(on_theirs.get_service("marker").await.is_err());
    theirs.shutdown().await.unwrap();
    ours.shutdown().await.unwrap();
}

/// Not a timing assertion (the bound is generous): prints the figures for the notes.
#[tokio::test]
async fn registrations_show_on_other_nodes_quickly() {
    if micro_testkit::skip_without_loopback_multicast("registrations_show_on_other_nodes_quickly") {
        return;
    }
    let ca = ClusterCa::generate("mdns").unwrap();
    let config = config();
    let cold = Instant::now();
    let (a, on_a) = node("a", &ca, &config).await;
    let (b, on_b) = node("b", &ca, &config).await;
    on_a.register(&greeter("first"), None).await.unwrap();
    eventually("the first service shows", || async {
        !nodes_of(&on_b, "greeter").await.is_empty()
    })
    .await;
    let cold = cold.elapsed();

    let mut warm = Vec::new();
    for i in 0..10 {
        let name = format!("svc{i}");
        let started = Instant::now();
        on_a.register(
            &Service::new(&name, "1").node(ServiceNode::new("a", "a:1")),
            None,
        )
        .await
        .unwrap();
        eventually("the service shows on b", || async {
            on_b.get_service(&name).await.is_ok()
        })
        .await;
        warm.push(started.elapsed());
    }
    warm.sort();
    eprintln!(
        "two nodes started → first service resolvable on the other: {cold:?}; then register → resolvable, median of ten: {:?} (min {:?}, max {:?})",
        warm[5], warm[0], warm[9]
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_registry_rebuilds_what_it_knows_by_browsing() {
    if micro_testkit::skip_without_loopback_multicast(
        "a_new_registry_rebuilds_what_it_knows_by_browsing",
    ) {
        return;
    }
    let ca = ClusterCa::generate("mdns").unwrap();
    let config = config();
    let (a, on_a) = node("a", &ca, &config).await;
    let (b, on_b) = node("b", &ca, &config).await;
    on_a.register(&greeter("a1"), None).await.unwrap();
    eventually("b sees a1", || async {
        nodes_of(&on_b, "greeter").await == ["a1"]
    })
    .await;

    // b's registry goes away (its daemon is shut down) and a fresh, empty one takes its place,
    // as after a crash and restart; it learns a's services again by browsing.
    let old = b.root().unwrap().children().await.unwrap();
    let registry_id = old
        .iter()
        .find(|c| c.name.as_deref() == Some("registry"))
        .unwrap()
        .id
        .unwrap();
    b.root().unwrap().stop_child(registry_id).await.unwrap();
    let fresh = Registry::mdns(&b, config.clone()).await.unwrap();
    eventually("the new registry sees a1", || async {
        nodes_of(&fresh, "greeter").await == ["a1"]
    })
    .await;
    // And a's registry keeps reaching b's (by name) with its changes.
    on_a.register(&greeter("a2"), None).await.unwrap();
    eventually("the new registry sees a2", || async {
        nodes_of(&fresh, "greeter").await == ["a1", "a2"]
    })
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn counters_show_peers_and_failures() {
    if micro_testkit::skip_without_loopback_multicast("counters_show_peers_and_failures") {
        return;
    }
    let ca = ClusterCa::generate("mdns").unwrap();
    let config = config();
    let (a, on_a) = node("a", &ca, &config).await;
    let (b, on_b) = node("b", &ca, &config).await;
    on_b.register(&greeter("b1"), None).await.unwrap();
    eventually("a holds b", || async {
        on_a.stats().await.map(|s| s.peers) == Ok(1)
    })
    .await;
    let stats = on_a.stats().await.unwrap();
    assert_eq!((stats.malformed, stats.failed_fetches), (0, 0));
    b.shutdown().await.unwrap();
    eventually("a forgets b", || async {
        on_a.stats().await.map(|s| s.peers) == Ok(0)
    })
    .await;
    a.shutdown().await.unwrap();
}
