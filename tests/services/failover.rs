//! A replica dies mid-load: calls to an idempotent endpoint all succeed, retried on the others.
//! Once in-process (the node shuts down under load, its registration left behind as after a
//! crash) and once across OS processes (the replica's process is killed).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro::registry::{Registry, RegistryMsg};
use micro::{CallOptions, Client, Selector};
use micro_testkit::{eventually, within_for};

use crate::common::{Cluster, Greeting, Hello, greeter};

const PARENT: &str = "MICRO_TEST_SERVICE_PARENT";

/// Runs `callers` loops of `calls` each; returns (successes, failures as text).
async fn load(
    client: &Client,
    callers: usize,
    calls: usize,
    done: Arc<AtomicUsize>,
) -> (usize, Vec<String>) {
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let client = client.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut failed = Vec::new();
            for _ in 0..calls {
                match client
                    .call_with::<_, Greeting>(
                        "greeter",
                        "Greeter.Hello",
                        &Hello { name: "x".into() },
                        CallOptions::new().timeout(Duration::from_secs(8)),
                    )
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(err) => failed.push(err.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failed)
        }));
    }
    let mut ok = 0;
    let mut failed = Vec::new();
    for task in tasks {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_load_loses_no_idempotent_call() {
    let cluster = Cluster::start(3, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster
        .client()
        .strategy(Selector::RoundRobin)
        .build()
        .await
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));

    let running = tokio::spawn({
        let client = client.clone();
        let done = done.clone();
        async move { load(&client, 8, 250, done).await }
    });
    eventually("the load is under way", || {
        let done = done.load(Ordering::Relaxed);
        async move { done >= 300 }
    })
    .await;
    // replica-2 goes away without deregistering (its service is never stopped).
    cluster.replica(2).shutdown().await.unwrap();
    let (ok, failed) = within_for(Duration::from_secs(60), "the load", running)
        .await
        .unwrap();
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(ok, 2000);
    cluster.shutdown().await;
}

/// In a child process: a greeter on a node of its own, registered in the registry the parent
/// (at `parent`) exposes; says so on stdout.
async fn start_child_replica(name: &str, parent: &str) -> (micro::Node, micro::RunningService) {
    // The credentials its parent passed (`TestCluster::child`): a node of the parent's cluster.
    let node = micro_testkit::test_node(name).start().await.unwrap();
    let parent_id = node.connect(parent.parse().unwrap()).await.unwrap();
    let registry = Registry::new(
        node.lookup_remote::<RegistryMsg>(parent_id, "registry")
            .await
            .unwrap(),
    );
    let service = greeter(name).registry(registry).start(&node).await.unwrap();
    println!("MICRO_CHILD_READY");
    std::io::stdout().flush().unwrap();
    (node, service)
}

/// In the parent: exposes the cluster's registry and starts the child test `entry`, telling it
/// where (in the environment variable `var`); returns once the child's replica is registered.
async fn spawn_child_replica(
    cluster: &Cluster,
    entry: &str,
    var: &str,
) -> micro_testkit::ChildGuard {
    cluster
        .client_node()
        .expose::<RegistryMsg>("registry")
        .unwrap();
    let parent = cluster.client_node().local_addr().unwrap();
    let mut child =
        micro_testkit::ChildGuard::spawn(cluster.nodes.child(entry).env(var, parent.to_string()));
    micro_testkit::wait_for_line(&mut child, "MICRO_CHILD_READY").await;
    child
}

/// The child: a replica in its own process, registered in the parent's registry.
#[tokio::test]
#[ignore = "entry point of the child process in a_killed_replica_process_loses_no_idempotent_call"]
async fn child_replica() {
    let Ok(parent) = std::env::var(PARENT) else {
        return;
    };
    let (_node, _service) = start_child_replica("replica-child", &parent).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_process_loses_no_idempotent_call() {
    let cluster = Cluster::start(2, |i| greeter(&format!("replica-{i}"))).await;
    let mut child = spawn_child_replica(&cluster, "failover::child_replica", PARENT).await;
    let client = cluster
        .client()
        .strategy(Selector::RoundRobin)
        .build()
        .await
        .unwrap();
    eventually("the client sees three replicas", || {
        let registry = cluster.registry.clone();
        async move {
            registry
                .get_service("greeter")
                .await
                .map(|s| s.iter().map(|v| v.nodes.len()).sum::<usize>())
                .unwrap_or(0)
                == 3
        }
    })
    .await;

    let done = Arc::new(AtomicUsize::new(0));
    let running = tokio::spawn({
        let client = client.clone();
        let done = done.clone();
        async move { load(&client, 8, 150, done).await }
    });
    eventually("the load is under way", || {
        let done = done.load(Ordering::Relaxed);
        async move { done >= 200 }
    })
    .await;
    child.kill_and_wait();
    let (ok, failed) = within_for(Duration::from_secs(60), "the load", running)
        .await
        .unwrap();
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(ok, 1200);
    cluster.shutdown().await;
}

const SIGNALLED: &str = "MICRO_TEST_SERVICE_SIGNALLED";

/// The child: a replica that runs until SIGTERM, then stops gracefully.
#[tokio::test]
#[ignore = "entry point of the child process in sigterm_deregisters_drains_and_exits"]
async fn child_until_signal() {
    let Ok(parent) = std::env::var(SIGNALLED) else {
        return;
    };
    let (_node, service) = start_child_replica("replica-signalled", &parent).await;
    service.stop_on_signal().await.unwrap();
    println!("MICRO_CHILD_STOPPED");
    std::io::stdout().flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deregisters_drains_and_exits() {
    let cluster = Cluster::start(0, |i| greeter(&format!("replica-{i}"))).await;
    let mut child = spawn_child_replica(&cluster, "failover::child_until_signal", SIGNALLED).await;
    let client = cluster.client().build().await.unwrap();

    // A call in flight when the signal arrives still gets its answer.
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call::<_, u64>("greeter", "Greeter.Slow", &500u64)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        within_for(Duration::from_secs(10), "the call in flight", in_flight)
            .await
            .unwrap()
            .unwrap(),
        500
    );
    // Deregistered at once, not when the 30 s TTL runs out.
    eventually("the registration is withdrawn", || {
        let registry = cluster.registry.clone();
        async move { registry.get_service("greeter").await.is_err() }
    })
    .await;
    let status = within_for(Duration::from_secs(10), "the child exits", async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status}");
    cluster.shutdown().await;
}

const LOST: &str = "MICRO_TEST_SERVICE_LOST";

/// The child: the only replica of the greeter, in its own process, until it is killed.
#[tokio::test]
#[ignore = "entry point of the child process in a_call_whose_only_replica_died_fails_at_once"]
async fn child_only_replica() {
    let Ok(parent) = std::env::var(LOST) else {
        return;
    };
    let (_node, _service) = start_child_replica("replica-lost", &parent).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// An idempotent call to `Greeter.Hello` with the default 5 s deadline (and `options`), timed.
async fn hello(
    client: &Client,
    options: CallOptions,
) -> (Result<Greeting, micro::ServiceError>, Duration) {
    let started = std::time::Instant::now();
    let answer = client
        .call_with::<_, Greeting>(
            "greeter",
            "Greeter.Hello",
            &Hello { name: "x".into() },
            options,
        )
        .await
        .map(|answer| answer.message);
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_only_replica_died_fails_at_once() {
    let mut cluster = Cluster::start(0, |i| greeter(&format!("replica-{i}"))).await;
    let mut child = spawn_child_replica(&cluster, "failover::child_only_replica", LOST).await;
    let client = cluster.client().build().await.unwrap();
    // The client has seen the service: a call reached its only replica.
    let (answer, _) = hello(&client, CallOptions::new()).await;
    assert_eq!(answer.unwrap().node, "replica-lost");
    let registered = cluster.registry.get_service("greeter").await.unwrap();
    let hex = registered[0].nodes[0].id.clone();
    // How the runtime names a node in its errors (the first 48 bits of its id).
    let lost = &hex[..12];

    // The replica's process is killed: no goodbye, its registration stays behind.
    child.kill_and_wait();

    // A call made at once: the link is known lost after about a second, and the call ends
    // then with a 503 that says so, not with a 408 when its 5 s deadline passes.
    let (answer, took) = hello(&client, CallOptions::new()).await;
    let err = answer.unwrap_err();
    assert_eq!(err.code, 503, "{err}");
    assert!(err.detail.contains(lost), "{err} names node {lost}");
    assert!(took < Duration::from_secs(4), "{err} after {took:?}");

    // The registry still lists the dead replica: a call now fails at once, the same way.
    let (answer, took) = hello(&client, CallOptions::new()).await;
    let err = answer.unwrap_err();
    assert_eq!(err.code, 503, "{err}");
    assert!(err.detail.contains(lost), "{err} names node {lost}");
    assert!(took < Duration::from_secs(4), "{err} after {took:?}");

    // The registry drops it (as a registry that follows link loss does): the client remembers
    // which node it lost, rather than answering as if it had never heard of the service.
    for version in &registered {
        cluster.registry.deregister(version).await.unwrap();
    }
    eventually("the registry no longer lists the replica", || {
        let registry = cluster.registry.clone();
        async move { registry.get_service("greeter").await.is_err() }
    })
    .await;
    let (answer, took) = hello(&client, CallOptions::new()).await;
    let err = answer.unwrap_err();
    assert_eq!(err.code, 503, "{err}");
    assert!(err.detail.contains(lost), "{err} names node {lost}");
    assert!(took < Duration::from_secs(4), "{err} after {took:?}");

    // A caller that asks to wait for a replica waits (within its deadline) for a new one.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            let options = CallOptions::new()
                .timeout(Duration::from_secs(20))
                .wait_for_replica();
            hello(&client, options).await.0
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the call waits for a replica");
    let replica = cluster.nodes.add_node().await;
    let _service = greeter("replica-new")
        .registry(cluster.registry.clone())
        .start(replica)
        .await
        .unwrap();
    let greeting = within_for(Duration::from_secs(20), "the waiting call", waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(greeting.node, "replica-new");
    cluster.shutdown().await;
}
