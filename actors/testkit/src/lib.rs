//! Test helpers for micro and its primitive actors: an in-process cluster of nodes, and waits with
//! generous bounds that fail with a message saying what did not happen.
//!
//! This crate depends on the runtime only, so any crate under `actors/` can dev-depend on it
//! without building `micro` a second time.
//!
//! ```
//! use micro_testkit::{Cluster, eventually};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cluster = Cluster::start(2).await;
//! assert_ne!(cluster.node(0).id(), cluster.node(1).id());
//! eventually("both nodes run", || async { cluster.nodes().iter().all(|n| n.status() == micro_runtime::NodeStatus::Running) }).await;
//! cluster.shutdown().await;
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use micro_runtime::{Node, SupervisionEvent};
use tokio::sync::broadcast;

/// The bound every wait uses unless told otherwise: generous, because a loaded CI machine is slow
/// and a test is about the outcome, not the timing.
pub const BOUND: Duration = Duration::from_secs(10);

/// How often [`eventually`] checks its condition.
const POLL: Duration = Duration::from_millis(5);

/// Nodes in one process, linked to each other in-process.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `size` nodes named `node-1`, `node-2`, … and links every pair.
    ///
    /// # Panics
    /// When a node fails to start (this is a test helper).
    pub async fn start(size: usize) -> Cluster {
        let mut nodes: Vec<Node> = Vec::with_capacity(size);
        for i in 1..=size {
            let node = Node::builder()
                .name(format!("node-{i}"))
                .start()
                .await
                .unwrap_or_else(|e| panic!("node-{i} failed to start: {e}"));
            for other in &nodes {
                node.connect_in_process(other);
            }
            nodes.push(node);
        }
        Cluster { nodes }
    }

    /// Node `index` (0-based).
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// All nodes, in start order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Shuts every node down, last started first.
    pub async fn shutdown(self) {
        for node in self.nodes.iter().rev() {
            let _ = node.shutdown().await;
        }
    }
}

/// Awaits `future` for at most [`BOUND`].
///
/// # Panics
/// When the bound passes first, naming `what` was awaited.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(BOUND, what, future).await
}

/// Awaits `future` for at most `bound`.
///
/// # Panics
/// When the bound passes first.
pub async fn within_for<T>(bound: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(bound, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {bound:?} waiting for: {what}"),
    }
}

/// Checks `condition` until it holds, for at most [`BOUND`].
///
/// # Panics
/// When it still does not hold at the bound.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Waits for the first supervision event that `matches`, skipping others, for at most [`BOUND`].
///
/// # Panics
/// When none arrives in time or the node's event channel closes.
pub async fn next_event(
    events: &mut broadcast::Receiver<SupervisionEvent>,
    what: &str,
    mut matches: impl FnMut(&SupervisionEvent) -> bool,
) -> SupervisionEvent {
    within(what, async {
        loop {
            match events.recv().await {
                Ok(event) if matches(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("event channel closed while waiting for: {what}")
                }
            }
        }
    })
    .await
}

/// Installs a `tracing` subscriber that writes to the test's captured output (honours
/// `RUST_LOG`); calling it again is harmless.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Whether multicast works on the loopback interface here: true inside `netns-run` (which turns
/// it on), usually false in a machine's own namespace. mDNS tests use loopback only, so they skip
/// (saying so, see [`skip_without_loopback_multicast`]) where it is off rather than fail.
pub fn loopback_multicast() -> bool {
    // Asked through netlink (`ip`), which sees this process's network namespace; /sys/class/net
    // shows the namespace that mounted /sys.
    std::process::Command::new("ip")
        .args(["-o", "link", "show", "lo"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .and_then(|line| line.split_once('<').map(|(_, flags)| flags.to_owned()))
        .and_then(|flags| flags.split_once('>').map(|(flags, _)| flags.to_owned()))
        .is_some_and(|flags| flags.split(',').any(|flag| flag == "MULTICAST"))
}

/// For a test that needs multicast on loopback: prints why it skips and returns true when there is
/// none (run the suite under `../shared/tools/netns-run` to include it).
pub fn skip_without_loopback_multicast(test: &str) -> bool {
    if loopback_multicast() {
        return false;
    }
    eprintln!(
        "skipped {test}: loopback has no multicast here; run the tests under netns-run to include it"
    );
    true
}

/// A command that runs this test binary again as a child process, running only the (ignored)
/// test `entry`, with stdin and stdout piped: for tests that need a node in another OS process.
/// Add environment with `.env(..)` and `.spawn()` it.
pub fn test_child(entry: &str) -> std::process::Command {
    let mut command = std::process::Command::new(
        std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test binary: {e}")),
    );
    command
        .args([
            "--exact",
            entry,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    command
}

/// Waits (within [`BOUND`]) for the child's first output line containing `marker` and returns
/// what follows the marker on it. The rest of its output keeps being read, so the child never
/// writes into a closed pipe.
///
/// # Panics
/// When the child's stdout was not piped, it ends first, or the bound passes.
pub async fn wait_for_line(child: &mut std::process::Child, marker: &str) -> String {
    use std::io::BufRead;
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("the child's stdout is not piped"));
    let (found, is_found) = tokio::sync::oneshot::channel();
    let wanted = marker.to_owned();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // libtest may print "test … ... " on the same line first.
            if let Some((_, rest)) = line.split_once(wanted.as_str())
                && let Some(found) = found.take()
            {
                let _ = found.send(rest.to_owned());
            }
        }
    });
    within(&format!("the child prints {marker:?}"), is_found)
        .await
        .unwrap_or_else(|_| panic!("the child ended before printing {marker:?}"))
}
