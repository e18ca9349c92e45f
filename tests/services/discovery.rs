//! Discovery by default: two OS processes that configure no registry at all — a service in one,
//! a client in the other — find each other (the default registry of a node that listens is mDNS)
//! and call. Runs under netns-run: the multicast stays on loopback. The children announce a
//! service type of this test's own (`MICRO_MDNS_SERVICE_TYPE`), so parallel tests do not meet.

use std::io::Write;
use std::time::Duration;

use micro::registry::{MemoryRegistry, Registry, RegistryMsg};
use micro::{CallOptions, Client, MDNS_INTERFACES_ENV, MDNS_SERVICE_TYPE_ENV, Node, REGISTRY_ENV};
use micro_testkit::{TestCluster, within};

use crate::common::{Greeting, Hello, greeter};

/// Set for the children of `two_processes_with_no_registry_configuration_find_each_other`.
const ROLE: &str = "MICRO_TEST_DISCOVERY_ROLE";

/// The child: a greeter (`server`) or a client calling it (`client`), each on a node of its own
/// with the parent's credentials, and no registry anywhere in the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the children in two_processes_with_no_registry_configuration_find_each_other"]
async fn child_of_discovery() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let node = micro_testkit::test_node(&role).start().await.unwrap();
    match role.as_str() {
        "kind" => {
            let _service = greeter("kind").start(&node).await.unwrap();
            println!("MICRO_CHILD_KIND {}", kind_of_registry(&node).await);
            std::io::stdout().flush().unwrap();
            // Killed by the parent once it read the line.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        "server" => {
            let _service = greeter("server").start(&node).await.unwrap();
            println!("MICRO_CHILD_READY");
            std::io::stdout().flush().unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        _ => {
            let client = Client::new(&node).await.unwrap();
            // Discovery may still be settling: the call to a service never seen waits for it.
            let greeting = client
                .call_with::<_, Greeting>(
                    "greeter",
                    "Greeter.Hello",
                    &Hello { name: "Ada".into() },
                    CallOptions::new().timeout(Duration::from_secs(8)),
                )
                .await
                .unwrap()
                .message;
            println!(
                "MICRO_CHILD_CALLED {} from {}",
                greeting.text, greeting.node
            );
            std::io::stdout().flush().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_no_registry_configuration_find_each_other() {
    // Only for the credentials (one cluster CA for both children).
    let cluster = TestCluster::builder(1).link(false).start().await;
    let service_type = format!("_d{}._udp", std::process::id() % 1_000_000);
    let child = |role: &str| {
        let mut command = cluster.child("discovery::child_of_discovery");
        command
            .env(ROLE, role)
            .env(MDNS_SERVICE_TYPE_ENV, &service_type)
            .env_remove(REGISTRY_ENV);
        micro_testkit::ChildGuard::spawn(&mut command)
    };
    let mut server = child("server");
    micro_testkit::wait_for_line(&mut server, "MICRO_CHILD_READY").await;
    let mut client = child("client");
    let called = micro_testkit::wait_for_line(&mut client, "MICRO_CHILD_CALLED").await;
    assert_eq!(called.trim(), "Hello Ada from server");
    for child in [&mut server, &mut client] {
        child.kill_and_wait();
    }
    cluster.shutdown().await;
}

/// `mdns` or `memory`: the kind of the node's `"registry"` actor (only the mDNS backend answers
/// its counters).
async fn kind_of_registry(node: &Node) -> &'static str {
    let registry = Registry::new(node.lookup::<RegistryMsg>("registry").unwrap())
        .with_timeout(Duration::from_secs(2));
    match registry.mdns_stats().await {
        Ok(_) => "mdns",
        Err(_) => "memory",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_registry_is_mdns_when_listening_memory_otherwise_and_an_explicit_one_wins() {
    micro_testkit::init_tracing();
    // A node that does not listen: a memory registry of its own.
    let local = Node::builder().name("local").start().await.unwrap();
    let _service = within("a service on a local node", greeter("local").start(&local))
        .await
        .unwrap();
    assert_eq!(kind_of_registry(&local).await, "memory");
    local.shutdown().await.unwrap();

    // A registry started before the service wins over the default.
    let explicit = micro_testkit::test_node("explicit").start().await.unwrap();
    explicit.spawn(MemoryRegistry::spec()).await.unwrap();
    let _service = greeter("explicit").start(&explicit).await.unwrap();
    assert_eq!(kind_of_registry(&explicit).await, "memory");
    explicit.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_chooses_the_default_registry() {
    let cluster = TestCluster::builder(1).link(false).start().await;
    let service_type = format!("_k{}._udp", std::process::id() % 1_000_000);
    let kind = |registry: Option<&str>, interfaces: Option<&str>| {
        let mut command = cluster.child("discovery::child_of_discovery");
        command
            .env(ROLE, "kind")
            .env(MDNS_SERVICE_TYPE_ENV, &service_type)
            .env_remove(REGISTRY_ENV)
            .env_remove(MDNS_INTERFACES_ENV);
        if let Some(registry) = registry {
            command.env(REGISTRY_ENV, registry);
        }
        if let Some(interfaces) = interfaces {
            command.env(MDNS_INTERFACES_ENV, interfaces);
        }
        let mut child = micro_testkit::ChildGuard::spawn(&mut command);
        async move {
            let kind = micro_testkit::wait_for_line(&mut child, "MICRO_CHILD_KIND").await;
            child.kill_and_wait();
            kind.trim().to_owned()
        }
    };
    assert_eq!(kind(None, None).await, "mdns", "a listening node's default");
    assert_eq!(
        kind(Some("memory"), None).await,
        "memory",
        "MICRO_REGISTRY=memory"
    );
    assert_eq!(kind(None, Some("loopback")).await, "mdns", "loopback only");
    // Settings that make no sense fall back to memory, with a warning.
    assert_eq!(kind(Some("zookeeper"), None).await, "memory");
    cluster.shutdown().await;
}
