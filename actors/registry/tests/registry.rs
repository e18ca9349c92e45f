//! The registry protocol on the memory backend: register, get, list, deregister, TTLs, watches,
//! the watch-fed cache, sharing across nodes, and a restart.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use micro_registry::{
    EndpointRecord, Event, EventKind, MemoryRegistry, NodeRecord, Registry, RegistryCache,
    RegistryError, ServiceRecord,
};
use micro_runtime::Node;
use micro_testkit::{TestCluster, eventually, next_event, within};

fn greeter(version: &str, node: &str) -> ServiceRecord {
    ServiceRecord::new("greeter", version)
        .meta("team", "core")
        .endpoint(EndpointRecord::new(
            "Greeter.Hello",
            "HelloRequest",
            "HelloResponse",
        ))
        .node(NodeRecord::new(node, format!("{node}.local:4000")))
}

async fn registry() -> (Node, Registry) {
    micro_testkit::init_tracing();
    let node = Node::builder().start().await.unwrap();
    let registry = Registry::new(node.spawn(MemoryRegistry::spec()).await.unwrap());
    (node, registry)
}

#[tokio::test]
async fn services_are_registered_found_listed_and_deregistered() {
    let (node, registry) = registry().await;
    registry.register(&greeter("1.0", "a"), None).await.unwrap();
    registry.register(&greeter("1.0", "b"), None).await.unwrap();
    registry.register(&greeter("2.0", "c"), None).await.unwrap();
    registry
        .register(
            &ServiceRecord::new("billing", "1").node(NodeRecord::new("x", "x:1")),
            None,
        )
        .await
        .unwrap();

    let versions = registry.get_service("greeter").await.unwrap();
    assert_eq!(versions.len(), 2, "all versions");
    let v1 = versions.iter().find(|s| s.version == "1.0").unwrap();
    assert_eq!(
        v1.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(v1.endpoints[0].name, "Greeter.Hello");
    assert_eq!(v1.metadata["team"], "core");
    assert_eq!(registry.list_services().await.unwrap().len(), 3);

    registry.deregister(&greeter("1.0", "a")).await.unwrap();
    registry.deregister(&greeter("1.0", "b")).await.unwrap();
    let versions = registry.get_service("greeter").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|s| s.version.as_str())
            .collect::<Vec<_>>(),
        ["2.0"]
    );
    registry.deregister(&greeter("2.0", "c")).await.unwrap();
    assert_eq!(
        registry.get_service("greeter").await,
        Err(RegistryError::NotFound("greeter".into()))
    );
    assert!(matches!(
        registry
            .register(&ServiceRecord::new("empty", "1"), None)
            .await,
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        registry.deregister(&greeter("9", "z")).await,
        Err(RegistryError::NotFound(_))
    ));
    node.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn registrations_expire_unless_refreshed() {
    let (node, registry) = registry().await;
    let ttl = Some(Duration::from_secs(1));
    registry
        .register(&greeter("1.0", "kept"), ttl)
        .await
        .unwrap();
    registry
        .register(&greeter("1.0", "dropped"), ttl)
        .await
        .unwrap();

    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        registry
            .register(&greeter("1.0", "kept"), ttl)
            .await
            .unwrap();
    }
    let nodes = registry.get_service("greeter").await.unwrap()[0]
        .nodes
        .clone();
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(matches!(
        registry.get_service("greeter").await,
        Err(RegistryError::NotFound(_))
    ));
    node.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn watchers_see_changes_in_order_including_expiry() {
    let (node, registry) = registry().await;
    let mut all = registry.watch(None).unwrap();
    let mut billing_only = registry.watch(Some("billing")).unwrap();

    registry.register(&greeter("1.0", "a"), None).await.unwrap();
    registry.register(&greeter("1.0", "a"), None).await.unwrap(); // a heartbeat: no event
    registry
        .register(&greeter("1.0", "b"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    registry.deregister(&greeter("1.0", "a")).await.unwrap();
    let billing = ServiceRecord::new("billing", "1").node(NodeRecord::new("x", "x:1"));
    registry.register(&billing, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // b expires

    let mut seen = Vec::new();
    for _ in 0..5 {
        let Event { kind, service } = within("an event", all.recv()).await.unwrap().unwrap();
        let ids: Vec<String> = service.nodes.iter().map(|n| n.id.clone()).collect();
        seen.push((kind, service.name, ids));
    }
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            (EventKind::Create, "greeter".to_owned(), ids(&["a"])),
            (EventKind::Update, "greeter".to_owned(), ids(&["a", "b"])),
            (EventKind::Update, "greeter".to_owned(), ids(&["b"])),
            (EventKind::Create, "billing".to_owned(), ids(&["x"])),
            (EventKind::Delete, "greeter".to_owned(), ids(&["b"])),
        ]
    );
    let only = within("a billing event", billing_only.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (only.kind, only.service.name.as_str()),
        (EventKind::Create, "billing")
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_cache_answers_from_memory_and_follows_changes() {
    let (node, registry) = registry().await;
    registry.register(&greeter("1.0", "a"), None).await.unwrap();
    let cache = RegistryCache::start(registry.clone()).await.unwrap();
    assert_eq!(
        cache.cached("greeter").unwrap()[0].nodes.len(),
        1,
        "loaded at start"
    );

    registry.register(&greeter("1.0", "b"), None).await.unwrap();
    eventually("the cache sees b", || async {
        cache
            .cached("greeter")
            .is_some_and(|v| v[0].nodes.len() == 2)
    })
    .await;
    registry.deregister(&greeter("1.0", "a")).await.unwrap();
    registry.deregister(&greeter("1.0", "b")).await.unwrap();
    eventually("the cache forgets greeter", || async {
        cache.cached("greeter").is_none()
    })
    .await;

    // Warm answers need no registry at all: stop it and still resolve.
    registry.register(&greeter("3.0", "c"), None).await.unwrap();
    eventually("the cache sees 3.0", || async {
        cache.cached("greeter").is_some()
    })
    .await;
    node.root()
        .unwrap()
        .stop_child(registry.addr().id().unwrap())
        .await
        .unwrap();
    assert_eq!(cache.resolve("greeter").await.unwrap()[0].version, "3.0");
    assert!(
        cache.resolve("billing").await.is_err(),
        "a cold miss asks the (gone) registry"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn nodes_of_one_process_share_a_memory_registry() {
    micro_testkit::init_tracing();
    let cluster = TestCluster::in_process(3).await;
    let registry = Registry::new(cluster.node(0).spawn(MemoryRegistry::spec()).await.unwrap());
    for (i, _) in cluster.nodes().iter().enumerate() {
        registry
            .register(&greeter("1.0", &format!("n{i}")), None)
            .await
            .unwrap();
    }
    assert_eq!(
        registry.get_service("greeter").await.unwrap()[0]
            .nodes
            .len(),
        3
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_replaced_registry_is_empty_and_the_cache_resubscribes() {
    let (node, _) = registry().await;
    let registry = Registry::new(node.lookup("registry").unwrap());
    let service = greeter("1.0", "a").endpoint(EndpointRecord::new("Greeter.Bye", "Bye", "Bye"));
    registry.register(&service, None).await.unwrap();
    let cache = RegistryCache::start(registry.clone()).await.unwrap();

    // The registry goes away and a new, empty one takes its name, as after a crash and restart.
    let mut events = node.supervision_events();
    node.root()
        .unwrap()
        .stop_child_named("registry")
        .await
        .unwrap();
    let restarted = Registry::new(node.spawn(MemoryRegistry::spec()).await.unwrap());
    next_event(&mut events, "the registry runs again", |e| {
        e.is_start_of("registry")
    })
    .await;
    assert!(
        restarted.get_service("greeter").await.is_err(),
        "memory is not kept"
    );

    // Services register again with their next heartbeat, and the cache follows.
    registry.register(&service, None).await.unwrap();
    eventually("the cache follows the new registry", || async {
        cache
            .cached("greeter")
            .is_some_and(|v| v[0].endpoints.len() == 2)
    })
    .await;
    node.shutdown().await.unwrap();
}
