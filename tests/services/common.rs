//! A cluster for service tests: a client node that hosts the registry, and replica nodes that
//! run a service registered in it. The nodes are a test kit `TestCluster`: each listens on
//! 127.0.0.1 and talks over QUIC, with credentials from the cluster's own CA.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use micro::registry::{MemoryRegistry, Registry};
use micro::{
    CallContext, Client, ClientBuilder, Endpoint, Node, RunningService, Service, ServiceError,
};
use micro_testkit::TestCluster;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Greeting {
    pub(crate) text: String,
    pub(crate) node: String,
}

/// The client node (node 0, with the registry) and the replica nodes (the others), not linked
/// in advance: the client dials the replicas the registry names.
pub(crate) struct Cluster {
    pub(crate) nodes: TestCluster,
    pub(crate) registry: Registry,
    pub(crate) services: Vec<RunningService>,
}

impl Cluster {
    /// `replicas` nodes named `replica-0…`, each running `service(index)`.
    pub(crate) async fn start(replicas: usize, service: impl Fn(usize) -> Service) -> Cluster {
        let nodes = TestCluster::builder(1 + replicas)
            .link(false)
            .configure(|i, node| match i {
                0 => node.name("client"),
                _ => node.name(format!("replica-{}", i - 1)),
            })
            .start()
            .await;
        let registry = Registry::new(nodes.node(0).spawn(MemoryRegistry::spec()).await.unwrap());
        let mut services = Vec::new();
        for (i, replica) in nodes.nodes()[1..].iter().enumerate() {
            let running = service(i)
                .registry(registry.clone())
                .start(replica)
                .await
                .unwrap();
            services.push(running);
        }
        Cluster {
            nodes,
            registry,
            services,
        }
    }

    /// The node the client and the registry run on.
    pub(crate) fn client_node(&self) -> &Node {
        self.nodes.node(0)
    }

    /// Replica `index`'s node.
    pub(crate) fn replica(&self, index: usize) -> &Node {
        self.nodes.node(1 + index)
    }

    pub(crate) fn client(&self) -> ClientBuilder {
        Client::builder(self.client_node()).registry(self.registry.clone())
    }

    pub(crate) async fn shutdown(self) {
        self.nodes.shutdown().await;
    }
}

/// Sets a flag when dropped: tells whether a handler's future was dropped (cancelled).
pub(crate) struct DropFlag(pub(crate) Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The greeter the tests run: `Greeter.Hello` (idempotent; answers with its node's name),
/// `Greeter.Fail` (a 409), `Greeter.Panic`, `Greeter.Slow` (sleeps the given milliseconds),
/// `Greeter.Headers` (echoes the request headers back).
pub(crate) fn greeter(node_name: &str) -> Service {
    let me = node_name.to_owned();
    Service::new("greeter")
        .version("1.0.0")
        .endpoint(
            Endpoint::unary("Greeter.Hello", move |_: CallContext, hello: Hello| {
                let node = me.clone();
                async move {
                    Ok::<_, ServiceError>(Greeting {
                        text: format!("Hello {}", hello.name),
                        node,
                    })
                }
            })
            .idempotent(),
        )
        .endpoint(Endpoint::unary(
            "Greeter.Fail",
            |_: CallContext, (): ()| async {
                Err::<(), _>(ServiceError::conflict("greeter", "ada already exists"))
            },
        ))
        .endpoint(Endpoint::unary(
            "Greeter.Panic",
            |_: CallContext, boom: bool| async move {
                assert!(!boom, "the handler was told to panic");
                Ok::<_, ServiceError>("fine".to_owned())
            },
        ))
        .endpoint(
            Endpoint::unary("Greeter.Slow", |_: CallContext, millis: u64| async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok::<_, ServiceError>(millis)
            })
            .idempotent(),
        )
        .endpoint(Endpoint::unary(
            "Greeter.Headers",
            |ctx: CallContext, (): ()| async move {
                for (key, value) in ctx.metadata() {
                    ctx.set_header(format!("echo-{key}"), value.clone());
                }
                Ok::<_, ServiceError>(())
            },
        ))
}
