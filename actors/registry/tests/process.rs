//! The mDNS registry across OS processes: a node in a child process announces a service, this
//! process finds it, and when the child is killed (no goodbye) its nodes disappear, because the
//! runtime notices the link is dead within about a second.
//!
//! The child is this test binary again, running the ignored `child_registry` entry point.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_registry::{Interfaces, MdnsConfig, Registry, Service, ServiceNode};
use micro_runtime::{ClusterCa, Node, NodeCredentials, NodeId};
use micro_testkit::{eventually, within};

const CHILD: &str = "MICRO_TEST_REGISTRY_CHILD";
const SEPARATOR: &str = "\n--8<--\n";

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
    let Ok(setup) = std::env::var(CHILD) else {
        return;
    };
    let parts: Vec<&str> = setup.split(SEPARATOR).collect();
    let credentials = NodeCredentials::from_pem("procs", parts[1], parts[2], parts[3]).unwrap();
    let node = Node::builder()
        .name("child")
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .credentials(credentials)
        .start()
        .await
        .unwrap();
    let registry = Registry::mdns(&node, config(parts[0])).await.unwrap();
    registry
        .register(
            &Service::new("worker", "1").node(ServiceNode::new("child-1", "child:1")),
            None,
        )
        .await
        .unwrap();
    println!("MICRO_CHILD_READY");
    std::io::stdout().flush().unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }),
    )
    .await;
}

#[tokio::test]
async fn a_killed_process_disappears_from_the_registry() {
    micro_testkit::init_tracing();
    let ca = ClusterCa::generate("procs").unwrap();
    let child_identity = ca.issue(NodeId::random()).unwrap();
    let service_type = format!("_m{:08x}._udp", NodeId::random().as_u128() as u32);
    let setup = [
        service_type.clone(),
        ca.cert_pem(),
        child_identity.cert_pem(),
        child_identity.key_pem(),
    ]
    .join(SEPARATOR);

    let node = Node::builder()
        .name("parent")
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .credentials(ca.issue(NodeId::random()).unwrap())
        .start()
        .await
        .unwrap();
    let registry = Registry::mdns(&node, config(&service_type)).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_registry",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, setup)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    within(
        "the child is ready",
        tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains("MICRO_CHILD_READY"))
        }),
    )
    .await
    .unwrap();

    eventually("the child's service is found", || async {
        registry.get_service("worker").await.is_ok()
    })
    .await;

    let killed = Instant::now();
    child.kill().unwrap();
    let _ = child.wait();
    eventually("the killed process's nodes disappear", || async {
        registry.get_service("worker").await.is_err()
    })
    .await;
    eprintln!(
        "killed process → gone from the registry: {:?}",
        killed.elapsed()
    );
    node.shutdown().await.unwrap();
}
