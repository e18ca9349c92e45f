//! The mDNS registry: nodes in one process, each with its own mDNS daemon, on loopback only and
//! with a service type of the test's own, so parallel tests do not see each other. Run inside
//! `netns-run` (CI does), where multicast is routed to loopback.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo, TxtProperty};
use micro_registry::{
    EndpointRecord, EventKind, Interfaces, MdnsConfig, NodeRecord, Registry, RegistryError,
    ServiceRecord,
};
use micro_runtime::{ClusterCa, Node, NodeId};
use micro_testkit::{eventually, within, within_for};

/// A service type no other test uses: `_m` and 8 random hex digits.
fn config() -> MdnsConfig {
    config_named().1
}

/// [`config`], with its service type as announced (`_m…._udp.local.`).
fn config_named() -> (String, MdnsConfig) {
    let name = format!("_m{:08x}._udp", rand_u32());
    let config = MdnsConfig::default()
        .service_type(&name)
        .unwrap()
        .interfaces(Interfaces::Loopback);
    (format!("{name}.local."), config)
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

fn greeter(node: &str) -> ServiceRecord {
    ServiceRecord::new("greeter", "1.0")
        .endpoint(EndpointRecord::new("Greeter.Hello", "Req", "Rsp"))
        .node(NodeRecord::new(node, format!("{node}:1")))
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

    let mut big = ServiceRecord::new("big", "2.0").node(NodeRecord::new("c1", "c1:1"));
    for i in 0..50 {
        big = big.endpoint(EndpointRecord::new(
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
            &ServiceRecord::new("marker", "1").node(NodeRecord::new("m", "m:1")),
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
            &ServiceRecord::new(&name, "1").node(NodeRecord::new("a", "a:1")),
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
    b.root()
        .unwrap()
        .stop_child_named("registry")
        .await
        .unwrap();
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
        on_a.mdns_stats().await.map(|s| s.peers) == Ok(1)
    })
    .await;
    let stats = on_a.mdns_stats().await.unwrap();
    assert_eq!((stats.malformed, stats.failed_fetches), (0, 0));
    b.shutdown().await.unwrap();
    eventually("a forgets b", || async {
        on_a.stats().await.map(|s| s.peers) == Ok(0)
    })
    .await;
    a.shutdown().await.unwrap();
}

/// Someone else on the LAN: a bare mDNS responder (loopback only) that announces whatever it
/// likes under the test's service type. mDNS is unauthenticated, so it may claim a real node's id.
struct Hostile {
    daemon: ServiceDaemon,
    service_type: String,
}

impl Hostile {
    fn new(service_type: &str) -> Self {
        let daemon = ServiceDaemon::new().unwrap();
        daemon.disable_interface(IfKind::All).unwrap();
        daemon.enable_interface(IfKind::LoopbackV4).unwrap();
        Hostile {
            daemon,
            service_type: service_type.to_owned(),
        }
    }

    /// Announces `instance` at `addr` with these TXT properties (any bytes); returns its full
    /// name.
    fn announce(&self, instance: &str, addr: SocketAddr, txt: Vec<TxtProperty>) -> String {
        let mut info = ServiceInfo::new(
            &self.service_type,
            instance,
            &format!("evil-{:08x}.local.", rand_u32()),
            addr.ip(),
            addr.port(),
            txt,
        )
        .unwrap();
        info.set_requires_probe(false);
        let fullname = info.get_fullname().to_owned();
        self.daemon.register(info).unwrap();
        fullname
    }

    /// Says goodbye for `fullname` (which it announced), as a node that stops does.
    async fn goodbye(&self, fullname: &str) {
        let done = self.daemon.unregister(fullname).unwrap();
        within("the goodbye is sent", done.recv_async())
            .await
            .unwrap();
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

/// What a node's announcement carries, for a hostile copy: its id (as mDNS names it) and its
/// cluster's fingerprint (public: every announcement of the cluster shows it).
fn identity(node: &Node) -> (String, String) {
    let mut fingerprint = node.cluster_fingerprint().unwrap();
    fingerprint.truncate(16);
    (format!("{:032x}", node.id().as_u128()), fingerprint)
}

fn txt(props: &[(&str, &[u8])]) -> Vec<TxtProperty> {
    props
        .iter()
        .map(|&(k, v)| TxtProperty::from((k, v)))
        .collect()
}

/// Announcements are hints: a stranger claiming a real node's id with the largest revision (and
/// others sending junk) costs a fetch at most; what the node itself reports over the runtime
/// decides, so its later changes still arrive, promptly.
#[tokio::test]
async fn a_stolen_id_with_a_huge_rev_does_not_hold_back_the_real_nodes_changes() {
    if micro_testkit::skip_without_loopback_multicast(
        "a_stolen_id_with_a_huge_rev_does_not_hold_back_the_real_nodes_changes",
    ) {
        return;
    }
    let ca = ClusterCa::generate("mdns").unwrap();
    let (service_type, config) = config_named();
    let (a, on_a) = node("a", &ca, &config).await;
    let (b, on_b) = node("b", &ca, &config).await;
    on_a.register(&greeter("a1"), None).await.unwrap();
    eventually("b sees a1", || async {
        nodes_of(&on_b, "greeter").await == ["a1"]
    })
    .await;

    let hostile = Hostile::new(&service_type);
    let (a_id, cl) = identity(&a);
    let a_addr = a.local_addr().unwrap();
    let max = u64::MAX.to_string();
    // a's id, at a's own address, with a revision no real change can ever pass.
    hostile.announce(
        &a_id,
        a_addr,
        txt(&[
            ("id", a_id.as_bytes()),
            ("cl", cl.as_bytes()),
            ("rev", max.as_bytes()),
            ("v", b"1"),
        ]),
    );
    // An id nobody has, at a's address: the node found there is not the one announced.
    let stranger = format!("{:032x}", NodeId::random().as_u128());
    hostile.announce(
        &stranger,
        a_addr,
        txt(&[
            ("id", stranger.as_bytes()),
            ("cl", cl.as_bytes()),
            ("rev", max.as_bytes()),
        ]),
    );
    // Junk: huge values (a revision past u64), and bytes that are not text at all.
    let huge_id = "f".repeat(200);
    let huge_rev = "9".repeat(200);
    hostile.announce(
        "junk-huge",
        a_addr,
        txt(&[
            ("id", huge_id.as_bytes()),
            ("cl", cl.as_bytes()),
            ("rev", huge_rev.as_bytes()),
        ]),
    );
    hostile.announce(
        "junk-binary",
        a_addr,
        txt(&[
            ("id", &[0xff, 0x00, 0xfe, 0x80]),
            ("cl", cl.as_bytes()),
            ("rev", &[0xff; 40]),
        ]),
    );
    eventually("b has read the junk and tried the stranger", || async {
        on_b.mdns_stats()
            .await
            .is_ok_and(|s| s.malformed >= 2 && s.failed_fetches >= 1)
    })
    .await;
    // The stolen announcement went out first; give it a moment more to land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        nodes_of(&on_b, "greeter").await,
        ["a1"],
        "the real service stays"
    );

    // a's next change still reaches b (normally within about 100 ms; the bound is generous).
    on_a.register(&greeter("a2"), None).await.unwrap();
    within_for(
        Duration::from_secs(2),
        "b sees a2 despite the stolen rev",
        async {
            while nodes_of(&on_b, "greeter").await != ["a1", "a2"] {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    on_a.deregister(&greeter("a1")).await.unwrap();
    within_for(Duration::from_secs(2), "b sees a1 go", async {
        while nodes_of(&on_b, "greeter").await != ["a2"] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        on_b.mdns_stats().await.unwrap().peers,
        1,
        "the stranger was never taken in"
    );
    drop(hostile);
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// A goodbye is a hint too: one for a node whose link is up is checked with the node over the
/// runtime before anything is dropped, so a spoofed one changes nothing; a real stop still does.
#[tokio::test]
async fn a_spoofed_goodbye_does_not_drop_a_live_node() {
    if micro_testkit::skip_without_loopback_multicast("a_spoofed_goodbye_does_not_drop_a_live_node")
    {
        return;
    }
    let ca = ClusterCa::generate("mdns").unwrap();
    let (service_type, config) = config_named();
    let (a, on_a) = node("a", &ca, &config).await;
    let (b, on_b) = node("b", &ca, &config).await;
    on_a.register(&greeter("a1"), None).await.unwrap();
    eventually("b sees a1", || async {
        nodes_of(&on_b, "greeter").await == ["a1"]
    })
    .await;

    // The stranger claims a's instance (same TXT keys, a's current-looking values) and then says
    // goodbye for it, as a's own stop would. (It writes the name in capitals: the same node id to
    // a reader of hex, a record of its own to mDNS caches, so a's answers cannot refresh it.)
    let hostile = Hostile::new(&service_type);
    let (a_id, cl) = identity(&a);
    let fullname = hostile.announce(
        &a_id.to_uppercase(),
        a.local_addr().unwrap(),
        txt(&[
            ("id", a_id.as_bytes()),
            ("cl", cl.as_bytes()),
            ("rev", b"1"),
            ("v", b"1"),
        ]),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    hostile.goodbye(&fullname).await;
    // mDNS removes a record one second after its goodbye: give that time, and some.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        nodes_of(&on_b, "greeter").await,
        ["a1"],
        "a is alive: its service stays resolvable"
    );

    // And its changes still arrive.
    on_a.register(&greeter("a2"), None).await.unwrap();
    within_for(Duration::from_secs(2), "b sees a2", async {
        while nodes_of(&on_b, "greeter").await != ["a1", "a2"] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // a's own goodbye (a graceful stop) still drops it.
    drop(hostile);
    a.shutdown().await.unwrap();
    eventually("b drops a's nodes", || async {
        nodes_of(&on_b, "greeter").await.is_empty()
    })
    .await;
    b.shutdown().await.unwrap();
}
