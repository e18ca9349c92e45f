//! Nodes in separate OS processes, with no configuration: both join this machine user's
//! development cluster (the dev CA at the well-known per-user path) and link over QUIC.
//!
//! The test re-runs its own binary as the child process, selecting the ignored `child_node`
//! entry point with an environment variable set.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_runtime::{Actor, ActorError, ChildSpec, Context, Down, Node, RemoteMessage, Reply};
use micro_testkit::within;
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "MICRO_TEST_CHILD_NODE";

#[derive(Serialize, Deserialize)]
enum Greet {
    Hello(String, Reply<String>),
}

impl RemoteMessage for Greet {
    const TYPE_NAME: &'static str = "test.process.Greet";
}

struct Greeter;

impl Actor for Greeter {
    type Msg = Greet;
    async fn handle(
        &mut self,
        _: &mut Context<Self>,
        Greet::Hello(name, reply): Greet,
    ) -> Result<(), ActorError> {
        let _ = reply.send(format!("hello {name} from pid {}", std::process::id()));
        Ok(())
    }
}

/// The child process's node: listens, exposes "greeter", prints where it is, and runs until its
/// stdin closes (at most a minute).
#[tokio::test]
#[ignore = "entry point of the child process in a_node_in_another_process_is_reached_and_its_loss_noticed"]
async fn child_node() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let node = Node::builder()
        .name("child")
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .start()
        .await
        .unwrap();
    node.spawn(ChildSpec::new(|| Greeter).named("greeter"))
        .await
        .unwrap();
    node.expose::<Greet>("greeter").unwrap();
    println!(
        "MICRO_NODE {} {}",
        node.local_addr().unwrap(),
        node.id().as_u128()
    );
    std::io::stdout().flush().unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }),
    )
    .await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_in_another_process_is_reached_and_its_loss_noticed() {
    micro_testkit::init_tracing();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process::child_node",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (addr, id) = within(
        "the child node starts",
        tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                // libtest may print "test … ... " on the same line first.
                if let Some((_, rest)) = line.split_once("MICRO_NODE ") {
                    let (addr, id) = rest.split_once(' ').unwrap();
                    return (
                        addr.parse::<SocketAddr>().unwrap(),
                        id.parse::<u128>().unwrap(),
                    );
                }
            }
            panic!("the child exited without starting its node");
        }),
    )
    .await
    .unwrap();

    // No credentials anywhere: both processes use the development cluster.
    let node = Node::builder()
        .name("parent")
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .start()
        .await
        .unwrap();
    let peer = node.connect(addr).await.unwrap();
    assert_eq!(peer.as_u128(), id);
    let greeter = node.lookup_remote::<Greet>(peer, "greeter").await.unwrap();
    let hello = greeter
        .ask(|r| Greet::Hello("parent".into(), r), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(hello, format!("hello parent from pid {}", child.id()));

    // Kill the process outright: no goodbye. The watch and the peer events notice the silence.
    let watch = greeter.watch();
    let mut events = node.peer_events().unwrap();
    let killed = Instant::now();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(within("the watch notices", watch).await, Down::NodeLost);
    eprintln!("killed process noticed after {:?}", killed.elapsed());
    let after = greeter
        .ask(|r| Greet::Hello("again".into(), r), Duration::from_secs(2))
        .await;
    assert!(after.is_err(), "{after:?}");
    let down = within("peer down", async {
        loop {
            if let Ok(micro_runtime::PeerEvent::Down { node, .. }) = events.recv().await {
                return node;
            }
        }
    })
    .await;
    assert_eq!(down, peer);
    node.shutdown().await.unwrap();
}
