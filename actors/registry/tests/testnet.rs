//! Across real network hosts: `../shared/tools/testnet` makes two hosts (network namespaces on a
//! bridge, 10.77.0.1 and 10.77.0.2). A node on host 2 registers a service and exposes an actor; a
//! node on host 1 discovers it over mDNS on the bridge, reaches the actor, and when host 2 is cut
//! off the network, sees it disappear. Skipped, saying so, where the machine lacks root or
//! iproute2; the hosts are torn down even when the test fails.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_registry::{Interfaces, MdnsConfig, NodeRecord, Registry, ServiceRecord};
use micro_runtime::{
    Actor, ActorError, ChildSpec, ClusterCa, Context, Node, NodeCredentials, NodeId, RemoteMessage,
    Reply,
};
use serde::{Deserialize, Serialize};

const ROLE: &str = "MICRO_TEST_TESTNET_ROLE";
const SETUP: &str = "MICRO_TEST_TESTNET_SETUP";
const SEPARATOR: &str = "\n--8<--\n";
const PORT: u16 = 7400;

#[derive(Serialize, Deserialize)]
struct Where(Reply<String>);

impl RemoteMessage for Where {
    const TYPE_NAME: &'static str = "test.testnet.Where";
}

struct Host;

impl Actor for Host {
    type Msg = Where;
    async fn handle(
        &mut self,
        _: &mut Context<Self>,
        Where(reply): Where,
    ) -> Result<(), ActorError> {
        let _ = reply.send("host 2".to_owned());
        Ok(())
    }
}

fn testnet() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/testnet")
}

/// Removes the hosts whatever happens.
struct Teardown(String);

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(testnet())
            .arg("down")
            .env("TESTNET_PREFIX", &self.0)
            .status();
    }
}

fn can_make_hosts() -> Result<(), String> {
    if !testnet().exists() {
        return Err(format!("{} not found", testnet().display()));
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return Err("not root".to_owned());
    }
    Command::new("ip")
        .arg("-V")
        .output()
        .map_err(|_| "iproute2 (ip) not installed".to_owned())?;
    Ok(())
}

/// One side, run inside a host's namespace by `testnet exec`.
#[tokio::test]
#[ignore = "entry point of the host processes in a_node_on_another_host_is_found_reached_and_lost"]
async fn testnet_host() {
    let (Ok(role), Ok(setup)) = (std::env::var(ROLE), std::env::var(SETUP)) else {
        return;
    };
    let parts: Vec<&str> = setup.split(SEPARATOR).collect();
    let (service_type, ca, cert, key) = (parts[0], parts[1], parts[2], parts[3]);
    let ip = if role == "server" {
        [10, 77, 0, 2]
    } else {
        [10, 77, 0, 1]
    };
    let node = Node::builder()
        .name(&role)
        .listen(SocketAddr::from((ip, PORT)))
        .credentials(NodeCredentials::from_pem("testnet", ca, cert, key).unwrap())
        .peer_timeout(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let config = MdnsConfig::default()
        .service_type(service_type)
        .unwrap()
        .interfaces(Interfaces::Named(vec!["eth0".to_owned()]));
    let registry = Registry::mdns(&node, config).await.unwrap();
    let say = |line: &str| {
        println!("TESTNET {line}");
        std::io::stdout().flush().unwrap();
    };
    if role == "server" {
        node.spawn(ChildSpec::new(|| Host).named("host"))
            .await
            .unwrap();
        node.expose::<Where>("host").unwrap();
        registry
            .register(
                &ServiceRecord::new("remote-worker", "1")
                    .node(NodeRecord::new(node.id().to_string(), "10.77.0.2")),
                None,
            )
            .await
            .unwrap();
        say("READY");
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    let started = Instant::now();
    let found = loop {
        if let Ok(found) = registry.get_service("remote-worker").await {
            break found;
        }
        if started.elapsed() > Duration::from_secs(20) {
            say("NOT-FOUND");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    say(&format!("FOUND {:?}", started.elapsed()));
    let peer = found[0].nodes[0].id.clone();
    let peer = node
        .peers()
        .into_iter()
        .find(|p| p.node.to_string() == peer)
        .unwrap()
        .node;
    let host = node.lookup_remote::<Where>(peer, "host").await.unwrap();
    let answer = host.ask(Where, Duration::from_secs(5)).await.unwrap();
    say(&format!("REACHED {answer}"));
    // The parent cuts host 2 now; wait for the service to go.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let cut = Instant::now();
    while registry.get_service("remote-worker").await.is_ok() {
        if cut.elapsed() > Duration::from_secs(20) {
            say("STILL-THERE");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    say(&format!("GONE {:?}", cut.elapsed()));
}

/// A host's process, killed and reaped when the test ends, however it ends.
fn host(index: u8, prefix: &str, role: &str, setup: &str) -> micro_testkit::ChildGuard {
    micro_testkit::ChildGuard::spawn(
        Command::new("bash")
            .arg(testnet())
            .args(["exec", &index.to_string()])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "testnet_host",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESTNET_PREFIX", prefix)
            .env(ROLE, role)
            .env(SETUP, setup)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
}

/// The next `TESTNET …` line of a host, within a bound.
fn next_line(lines: &mut impl Iterator<Item = String>, what: &str) -> String {
    lines
        .find_map(|line| line.split_once("TESTNET ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("the host ended before: {what}"))
}

#[test]
fn a_node_on_another_host_is_found_reached_and_lost() {
    if let Err(why) = can_make_hosts() {
        eprintln!("skipped: cannot make test hosts here ({why})");
        return;
    }
    let prefix = format!("mt{:06x}", NodeId::random().as_u128() as u32 & 0xff_ffff);
    let _teardown = Teardown(prefix.clone());
    let up = Command::new("bash")
        .arg(testnet())
        .args(["up", "2"])
        .env("TESTNET_PREFIX", &prefix)
        .status()
        .unwrap();
    assert!(up.success(), "testnet up");

    let ca = ClusterCa::generate("testnet").unwrap();
    let setup = |identity: NodeCredentials| {
        [
            format!("_m{:08x}._udp", NodeId::random().as_u128() as u32),
            ca.cert_pem(),
            identity.cert_pem(),
            identity.key_pem(),
        ]
    };
    let mut server_setup = setup(ca.issue(NodeId::random()).unwrap());
    let mut client_setup = setup(ca.issue(NodeId::random()).unwrap());
    client_setup[0] = server_setup[0].clone();
    server_setup[0] = client_setup[0].clone();

    let mut server = host(2, &prefix, "server", &server_setup.join(SEPARATOR));
    let mut server_lines = BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    assert_eq!(next_line(&mut server_lines, "the server is ready"), "READY");

    let mut client = host(1, &prefix, "client", &client_setup.join(SEPARATOR));
    let mut client_lines = BufReader::new(client.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let found = next_line(&mut client_lines, "discovery");
    assert!(found.starts_with("FOUND"), "{found}");
    let reached = next_line(&mut client_lines, "the remote actor answers");
    assert_eq!(reached, "REACHED host 2");

    let cut = Command::new("bash")
        .arg(testnet())
        .args(["cut", "2"])
        .env("TESTNET_PREFIX", &prefix)
        .status()
        .unwrap();
    assert!(cut.success(), "testnet cut 2");
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    let gone = next_line(&mut client_lines, "host 2 disappears");
    assert!(gone.starts_with("GONE"), "{gone}");
    eprintln!("host 2: {found}; after the cut: {gone}");

    server.kill_and_wait();
    client.kill_and_wait();
}
