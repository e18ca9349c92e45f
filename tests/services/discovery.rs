//! Discovery by default: two OS processes that configure no registry at all — a service in one,
//! a client in the other — find each other (the default registry of a node that listens is mDNS)
//! and call. Runs under netns-run: the multicast stays on loopback. The children announce a
//! service type of this test's own (`MICRO_MDNS_SERVICE_TYPE`), so parallel tests do not meet.

use std::io::Write;
use std::time::Duration;

use micro::{CallOptions, Client, MDNS_SERVICE_TYPE_ENV, REGISTRY_ENV};
use micro_testkit::TestCluster;

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
        command.spawn().unwrap()
    };
    let mut server = child("server");
    micro_testkit::wait_for_line(&mut server, "MICRO_CHILD_READY").await;
    let mut client = child("client");
    let called = micro_testkit::wait_for_line(&mut client, "MICRO_CHILD_CALLED").await;
    assert_eq!(called.trim(), "Hello Ada from server");
    let _ = server.kill();
    let _ = server.wait();
    let _ = client.wait();
    cluster.shutdown().await;
}
