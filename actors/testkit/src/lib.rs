//! Test helpers for micro and its primitive actors: a cluster of nodes over QUIC on loopback
//! (or linked in-process) with a CA generated for the test, and waits with generous bounds that
//! fail with a message saying what did not happen.
//!
//! This crate depends on the runtime only, so any crate under `actors/` can dev-depend on it
//! without building `micro` a second time.
//!
//! No test needs the machine user's development CA ([`ClusterCa::dev`]): a [`TestCluster`]
//! generates a CA of its own and issues every node its credentials; a node built by hand gets
//! them from [`test_node`] (or [`test_ca`]); a node in a child process gets them from its parent
//! through [`TestCluster::child`] / [`pass_credentials`] and [`inherited_credentials`].
//!
//! ```no_run
//! use std::time::Duration;
//! use micro_testkit::{TestCluster, eventually};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Three nodes on 127.0.0.1, each with credentials from the cluster's own CA, linked pairwise;
//! // the hook customises each node's builder.
//! let mut cluster = TestCluster::builder(3)
//!     .configure(|i, node| node.name(format!("replica-{i}")).peer_timeout(Duration::from_secs(2)))
//!     .start()
//!     .await;
//! eventually("every node sees the two others", || async {
//!     cluster.nodes().iter().all(|n| n.peers().len() == 2)
//! })
//! .await;
//! let late = cluster.add_node().await.id(); // linked to all the others
//! let again = cluster.restart(0).await; // same certificate, same address, new incarnation
//! # let _ = (late, again);
//! cluster.shutdown().await;
//! # }
//! ```
//!
//! The same type links nodes in one process without sockets ([`TestCluster::in_process`]):
//!
//! ```
//! use micro_testkit::{TestCluster, eventually};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cluster = TestCluster::in_process(2).await;
//! assert_ne!(cluster.node(0).id(), cluster.node(1).id());
//! eventually("both nodes run", || async { cluster.nodes().iter().all(|n| n.status() == micro_runtime::NodeStatus::Running) }).await;
//! cluster.shutdown().await;
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use micro_runtime::{ClusterCa, Node, NodeBuilder, NodeCredentials, NodeId, SupervisionEvent};
use tokio::sync::broadcast;

/// The bound every wait uses unless told otherwise: generous, because a loaded CI machine is slow
/// and a test is about the outcome, not the timing.
pub const BOUND: Duration = Duration::from_secs(10);

/// How often [`eventually`] checks its condition.
const POLL: Duration = Duration::from_millis(5);

/// The cluster name of the CAs this crate generates.
pub const TEST_CLUSTER: &str = "micro-test";

/// 127.0.0.1 on a port the system picks.
pub const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The environment variables through which a parent test hands a child process its credentials
/// (cluster name, CA certificate, node certificate and key, all PEM). The CA's key stays with the
/// parent.
const CREDENTIAL_VARS: [&str; 4] = [
    "MICRO_TEST_CLUSTER",
    "MICRO_TEST_CA_PEM",
    "MICRO_TEST_CERT_PEM",
    "MICRO_TEST_KEY_PEM",
];

/// A CA generated once per test process (cluster [`TEST_CLUSTER`]), for nodes built by hand (see
/// [`test_node`]). A [`TestCluster`] has a CA of its own.
///
/// # Panics
/// When the CA cannot be generated (this is a test helper).
pub fn test_ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(new_ca)
}

fn new_ca() -> ClusterCa {
    ClusterCa::generate(TEST_CLUSTER).unwrap_or_else(|e| panic!("cannot generate a test CA: {e}"))
}

/// Fresh credentials (a new node id) issued by `ca`.
///
/// # Panics
/// When issuing fails (this is a test helper).
pub fn issue(ca: &ClusterCa) -> NodeCredentials {
    ca.issue(NodeId::random())
        .unwrap_or_else(|e| panic!("cannot issue test credentials: {e}"))
}

/// A builder for a node named `name` that listens on [`LOOPBACK`] with fresh credentials from
/// [`test_ca`] — or, in a child process started with [`pass_credentials`], with the credentials
/// its parent passed — so it never joins the machine user's development cluster.
pub fn test_node(name: &str) -> NodeBuilder {
    let credentials = inherited_credentials().unwrap_or_else(|| issue(test_ca()));
    Node::builder()
        .name(name)
        .listen(LOOPBACK)
        .credentials(credentials)
}

/// Hands `credentials` to a child process through its environment (see [`inherited_credentials`]).
pub fn pass_credentials<'c>(
    command: &'c mut std::process::Command,
    credentials: &NodeCredentials,
) -> &'c mut std::process::Command {
    let values = [
        credentials.cluster().to_owned(),
        credentials.ca_pem(),
        credentials.cert_pem(),
        credentials.key_pem(),
    ];
    for (var, value) in CREDENTIAL_VARS.iter().zip(values) {
        command.env(var, value);
    }
    command
}

/// In a child process: the credentials its parent passed with [`pass_credentials`], if any.
///
/// # Panics
/// When they were passed but do not load.
pub fn inherited_credentials() -> Option<NodeCredentials> {
    let [cluster, ca, cert, key] = CREDENTIAL_VARS.map(|var| std::env::var(var).ok());
    let (cluster, ca, cert, key) = (cluster?, ca?, cert?, key?);
    Some(
        NodeCredentials::from_pem(&cluster, &ca, &cert, &key)
            .unwrap_or_else(|e| panic!("the credentials passed by the parent do not load: {e}")),
    )
}

/// How a [`TestCluster`]'s nodes are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Over QUIC on 127.0.0.1 (port 0), with mutual TLS from the cluster's CA.
    Quic,
    /// In one process without sockets ([`Node::connect_in_process`]).
    InProcess,
}

/// Customises each node's builder: called with the node's index and a builder that already has
/// its name (`node-{index}`) and, over QUIC, its address and credentials.
type Configure = Arc<dyn Fn(usize, NodeBuilder) -> NodeBuilder + Send + Sync>;

/// How to start a [`TestCluster`] (see [`TestCluster::builder`]).
#[must_use = "a builder does nothing until started"]
pub struct TestClusterBuilder {
    size: usize,
    transport: Transport,
    link: bool,
    ca: Option<ClusterCa>,
    configure: Option<Configure>,
}

impl std::fmt::Debug for TestClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClusterBuilder")
            .field("size", &self.size)
            .field("transport", &self.transport)
            .field("link", &self.link)
            .field("ca", &self.ca)
            .field("configure", &self.configure.is_some())
            .finish()
    }
}

impl TestClusterBuilder {
    /// Links the nodes in-process instead of over QUIC.
    pub fn in_process(mut self) -> Self {
        self.transport = Transport::InProcess;
        self
    }

    /// Whether to link every pair of nodes when they start (default true). Unlinked nodes still
    /// listen and can dial each other (`Node::connect`, or handles that travel).
    pub fn link(mut self, link: bool) -> Self {
        self.link = link;
        self
    }

    /// Issues credentials from `ca` instead of a CA generated for this cluster.
    pub fn ca(mut self, ca: ClusterCa) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Customises each node's builder (name, peer timeout, max frame, inbound capacity, root
    /// supervisor…); called with the node's index, also for nodes added or restarted later.
    /// A network setting (peer timeout, max frame, credentials) makes a node listen, so set those
    /// over QUIC only: an in-process node given one would listen with the development CA.
    pub fn configure(
        mut self,
        configure: impl Fn(usize, NodeBuilder) -> NodeBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// Starts the nodes in order, linking each to those before it (when linking).
    ///
    /// # Panics
    /// When a node fails to start or to link (this is a test helper).
    pub async fn start(self) -> TestCluster {
        init_tracing();
        let ca = match self.transport {
            Transport::Quic => Some(self.ca.unwrap_or_else(new_ca)),
            Transport::InProcess => self.ca,
        };
        let mut cluster = TestCluster {
            transport: self.transport,
            link: self.link,
            ca,
            configure: self.configure,
            nodes: Vec::with_capacity(self.size),
            credentials: Vec::with_capacity(self.size),
        };
        for _ in 0..self.size {
            cluster.add_node().await;
        }
        cluster
    }
}

/// `n` nodes of one test cluster: over QUIC on 127.0.0.1 with a CA generated for the test and
/// credentials of its own for each node ([`TestCluster::start`]), or linked in-process
/// ([`TestCluster::in_process`]).
pub struct TestCluster {
    transport: Transport,
    link: bool,
    /// The cluster's CA (always over QUIC; in-process only when given).
    ca: Option<ClusterCa>,
    configure: Option<Configure>,
    nodes: Vec<Node>,
    /// Each node's credentials (over QUIC), kept for restarts.
    credentials: Vec<Option<NodeCredentials>>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("transport", &self.transport)
            .field("link", &self.link)
            .field("ca", &self.ca)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// How to start `size` nodes: over QUIC, linked pairwise, named `node-0`, `node-1`, …
    pub fn builder(size: usize) -> TestClusterBuilder {
        TestClusterBuilder {
            size,
            transport: Transport::Quic,
            link: true,
            ca: None,
            configure: None,
        }
    }

    /// Starts `size` nodes over QUIC on 127.0.0.1 with a CA generated for this cluster, and links
    /// every pair.
    ///
    /// # Panics
    /// When a node fails to start or to link (this is a test helper).
    pub async fn start(size: usize) -> TestCluster {
        TestCluster::builder(size).start().await
    }

    /// Starts `size` nodes in this process, linked pairwise without sockets.
    ///
    /// # Panics
    /// When a node fails to start (this is a test helper).
    pub async fn in_process(size: usize) -> TestCluster {
        TestCluster::builder(size).in_process().start().await
    }

    /// How the nodes are linked.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Node `index` (0-based, in start order).
    ///
    /// # Panics
    /// When there is no such node.
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// All nodes, in start order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The cluster's CA: over QUIC always, in-process when one was given.
    pub fn ca(&self) -> Option<&ClusterCa> {
        self.ca.as_ref()
    }

    /// Fresh credentials (a new node id) of this cluster, for a node built by hand or in a child
    /// process.
    ///
    /// # Panics
    /// When the cluster has no CA (in-process without one).
    pub fn credentials(&self) -> NodeCredentials {
        issue(
            self.ca
                .as_ref()
                .unwrap_or_else(|| panic!("an in-process test cluster has no CA")),
        )
    }

    /// A command that runs this test binary again as a child process running only the (ignored)
    /// test `entry` (see [`test_child`]), with fresh credentials of this cluster in its
    /// environment: the child's [`test_node`] (or [`inherited_credentials`]) uses them.
    pub fn child(&self, entry: &str) -> std::process::Command {
        let mut command = test_child(entry);
        pass_credentials(&mut command, &self.credentials());
        command
    }

    /// Starts one more node (index [`nodes`](Self::nodes)`().len()`), linked to all the others
    /// when the cluster links, and returns it.
    ///
    /// # Panics
    /// When it fails to start or to link.
    pub async fn add_node(&mut self) -> &Node {
        let index = self.nodes.len();
        let credentials = self.ca.as_ref().map(issue);
        let node = self.start_node(index, credentials.clone(), LOOPBACK).await;
        self.nodes.push(node);
        self.credentials.push(credentials);
        &self.nodes[index]
    }

    /// Shuts node `index` down and starts it again: over QUIC with the same credentials (so the
    /// same node id, in a new incarnation) on the same address; in-process as a new node. It is
    /// linked to the others again when the cluster links.
    ///
    /// # Panics
    /// When there is no such node, or it fails to start or to link.
    pub async fn restart(&mut self, index: usize) -> &Node {
        let old = &self.nodes[index];
        let addr = old.local_addr().unwrap_or(LOOPBACK);
        let _ = old.shutdown().await;
        let credentials = self.credentials[index].clone();
        self.nodes[index] = self.start_node(index, credentials, addr).await;
        &self.nodes[index]
    }

    async fn start_node(
        &self,
        index: usize,
        credentials: Option<NodeCredentials>,
        addr: SocketAddr,
    ) -> Node {
        let mut builder = Node::builder().name(format!("node-{index}"));
        if let (Transport::Quic, Some(credentials)) = (self.transport, credentials) {
            builder = builder.listen(addr).credentials(credentials);
        }
        if let Some(configure) = &self.configure {
            builder = configure(index, builder);
        }
        let node = builder
            .start()
            .await
            .unwrap_or_else(|e| panic!("node {index} of the test cluster failed to start: {e}"));
        if self.link {
            for (other_index, other) in self.nodes.iter().enumerate() {
                if other_index != index {
                    link(&node, other, self.transport).await;
                }
            }
        }
        node
    }

    /// Links every pair of nodes (again): for a cluster started unlinked, or after a link was
    /// lost.
    ///
    /// # Panics
    /// When a dial fails.
    pub async fn connect_all(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            for other in &self.nodes[..i] {
                link(node, other, self.transport).await;
            }
        }
    }

    /// Shuts every node down, last started first.
    pub async fn shutdown(self) {
        for node in self.nodes.iter().rev() {
            let _ = node.shutdown().await;
        }
    }
}

/// Links `node` with `other`: dials it over QUIC, or links them in-process.
async fn link(node: &Node, other: &Node, transport: Transport) {
    match transport {
        Transport::InProcess => node.connect_in_process(other),
        Transport::Quic => {
            let addr = other
                .local_addr()
                .unwrap_or_else(|| panic!("{} does not listen", other.name()));
            node.connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{} cannot link to {}: {e}", node.name(), other.name()));
        }
    }
}

/// Nodes in one process, linked to each other in-process: the test kit's first cluster, now
/// [`TestCluster::in_process`].
#[deprecated(note = "use TestCluster::in_process (or TestCluster::start for QUIC)")]
#[derive(Debug)]
pub struct Cluster(TestCluster);

#[allow(deprecated)]
impl Cluster {
    /// Starts `size` nodes and links every pair in-process.
    ///
    /// # Panics
    /// When a node fails to start (this is a test helper).
    pub async fn start(size: usize) -> Cluster {
        Cluster(TestCluster::in_process(size).await)
    }

    /// Node `index` (0-based).
    pub fn node(&self, index: usize) -> &Node {
        self.0.node(index)
    }

    /// All nodes, in start order.
    pub fn nodes(&self) -> &[Node] {
        self.0.nodes()
    }

    /// Shuts every node down, last started first.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
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
/// Add environment with `.env(..)` and spawn it under a [`ChildGuard`] (killed and reaped on
/// drop).
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

/// A child process that is killed and reaped when dropped: on every path out of a test,
/// a panic included, so no child outlives its test (or spins on after it). Derefs to the
/// [`Child`](std::process::Child), so [`wait_for_line`] and the rest take `&mut guard`.
///
/// ```no_run
/// let mut child = micro_testkit::ChildGuard::spawn(&mut micro_testkit::test_child("child"));
/// let _pid = child.id();
/// // Killed and reaped here, or wherever the test ends.
/// ```
#[derive(Debug)]
pub struct ChildGuard(std::process::Child);

impl ChildGuard {
    /// Spawns `command` under a guard.
    ///
    /// # Panics
    /// When the command cannot be spawned.
    pub fn spawn(command: &mut std::process::Command) -> ChildGuard {
        ChildGuard(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {command:?}: {e}")),
        )
    }

    /// Kills the child (if it still runs) and reaps it; harmless to call again.
    pub fn kill_and_wait(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl From<std::process::Child> for ChildGuard {
    fn from(child: std::process::Child) -> Self {
        ChildGuard(child)
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Already reaped (exited and waited for) is fine: kill then fails and wait returns
        // the status it has.
        self.kill_and_wait();
    }
}

/// In a child process: prints `line` on stdout (for [`wait_for_line`]), then waits until the
/// parent closes the child's stdin (drops it, or ends), for at most a minute.
pub async fn announce_and_wait_for_stdin(line: &str) {
    use std::io::Write;
    println!("{line}");
    let _ = std::io::stdout().flush();
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }),
    )
    .await;
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
