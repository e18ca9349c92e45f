//! The [`Node`]: one per process in production, several per process in tests. It owns the root
//! supervisor, the name directory, the links to other nodes and what it exports to them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, oneshot, watch};

use crate::FastMap;
use crate::directory::Directory;
use crate::net::{Net, NetConfig, accept_loop};
use crate::stream::StreamInbound;
use crate::supervisor::start_root;
use crate::watch::{Watch, Watcher, Watches};
use crate::wire::context;
use crate::wire::exports::{Inbound, PendingReplies};
use crate::wire::frame::{Control, Down, Envelope, Frame, FrameView, PeerLink, Target, TargetRef};
use crate::wire::loopback;
use crate::{
    Actor, ActorId, Addr, ChildSpec, ClusterCa, ContentType, Error, ExitReason, Intensity,
    NodeCredentials, NodeId, PeerEvent, PeerInfo, RemoteMessage, Strategy, SupervisionEvent,
    SupervisorRef, SupervisorSpec,
};

/// A node: the root of a supervision tree and the unit other nodes talk to.
///
/// ```
/// use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node, Reply};
/// use std::time::Duration;
///
/// #[derive(Default)]
/// struct Echo;
/// impl Actor for Echo {
///     type Msg = (String, Reply<String>);
///     async fn handle(&mut self, _: &mut Context<Self>, (text, reply): Self::Msg) -> Result<(), ActorError> {
///         let _ = reply.send(text);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro_runtime::Error> {
/// let node = Node::builder().name("demo").start().await?;
/// node.spawn(ChildSpec::new(|| Echo).named("echo")).await?;
///
/// let echo = node.lookup::<(String, Reply<String>)>("echo")?;
/// let answer = echo.ask(|reply| ("hi".to_owned(), reply), Duration::from_secs(1)).await?;
/// assert_eq!(answer, "hi");
///
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    shared: Arc<NodeShared>,
}

/// A weak handle, so background tasks do not keep a node alive.
#[derive(Clone)]
pub(crate) struct WeakNode(Weak<NodeShared>);

impl WeakNode {
    pub(crate) fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|shared| Node { shared })
    }
}

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// Running: actors can be spawned.
    Running,
    /// Shutting down its tree.
    Stopping,
    /// Stopped; `Some` when its root supervisor failed.
    Stopped(Option<Error>),
}

pub(crate) struct NodeShared {
    id: NodeId,
    name: String,
    shutdown_timeout: Duration,
    directory: Directory,
    events: broadcast::Sender<SupervisionEvent>,
    root: OnceLock<SupervisorRef>,
    status: watch::Sender<NodeStatus>,
    failure: Mutex<Option<Error>>,
    peers: FastMap<NodeId, Box<dyn PeerLink>>,
    exports: FastMap<ActorId, Arc<dyn Inbound>>,
    named_exports: FastMap<Arc<str>, Arc<dyn Inbound>>,
    pending: PendingReplies,
    refused: std::sync::atomic::AtomicU64,
    /// Frame and stream-item reads that waited for room in their connection's budget.
    throttled: std::sync::atomic::AtomicU64,
    /// Remote messages handled inline, in the reading task (see `Node::inline_messages`).
    inline: std::sync::atomic::AtomicU64,
    watches: Watches,
    /// Watches this node set on other nodes' actors: watch id → (peer, who to tell).
    remote_watches: FastMap<u64, (NodeId, oneshot::Sender<Down>)>,
    /// Remote lookups waiting for an answer: id → (peer, who to tell).
    lookups: FastMap<u64, LookupWaiter>,
    /// Locates waiting for an answer: id → (peer asked, who to tell).
    locates: FastMap<u64, (NodeId, oneshot::Sender<Option<SocketAddr>>)>,
    next_id: std::sync::atomic::AtomicU64,
    /// What an exposed or exported actor may have queued (see `NodeBuilder::inbound_capacity`).
    inbound_capacity: usize,
    /// The QUIC endpoint and links, while the node listens (taken at shutdown so the socket
    /// is released).
    net: std::sync::RwLock<Option<Arc<Net>>>,
    /// The supervisor of the link actors.
    links: OnceLock<SupervisorRef>,
    /// Typed streams whose sender travelled, waiting for it to open: id → (peer, receiver side).
    streams: FastMap<u64, (Option<NodeId>, Box<dyn StreamInbound>)>,
}

type LookupWaiter = (NodeId, oneshot::Sender<Result<(), Error>>);

/// Configures and starts a [`Node`].
#[derive(Clone)]
pub struct NodeBuilder {
    name: String,
    root: SupervisorSpec,
    shutdown_timeout: Duration,
    event_capacity: usize,
    inbound_capacity: usize,
    net: Option<NetConfig>,
    /// A listen address given by name ([`NodeBuilder::listen_on`]), resolved at start.
    listen_name: Option<String>,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field("listen", &self.net.as_ref().map(|n| n.listen))
            .field("listen_on", &self.listen_name)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Names the node (in logs and events).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the root supervisor's spec (strategy, intensity, backoff, and children started with
    /// the node). The default is one-for-one with default intensity and backoff, and no children.
    #[must_use]
    pub fn root(mut self, spec: SupervisorSpec) -> Self {
        self.root = spec;
        self
    }

    /// How long [`Node::shutdown`] waits for the tree to stop gracefully before killing it.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many supervision events a slow subscriber may fall behind by before it misses some.
    #[must_use]
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Listens for other nodes on `addr` (QUIC over UDP; `127.0.0.1:0` picks a free port, see
    /// [`Node::local_addr`]). Without it the node is purely local.
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        let credentials = self.net.take().and_then(|n| n.credentials);
        let mut net = NetConfig::new(addr);
        net.credentials = credentials;
        self.net = Some(net);
        self.listen_name = None;
        self
    }

    /// Listens for other nodes on an address given as text, a host name allowed:
    /// `"localhost:7000"`, `"127.0.0.1:0"`, `"[::1]:7000"` (anything
    /// [`ToSocketAddrs`](std::net::ToSocketAddrs) takes as a string). The name is resolved by
    /// [`start`](NodeBuilder::start), which listens on its first address, or fails with
    /// [`Error::Io`] naming the input when it does not resolve. [`listen`](NodeBuilder::listen)
    /// takes a parsed [`SocketAddr`]; the last of the two called wins.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), micro_runtime::Error> {
    /// # let credentials = micro_runtime::ClusterCa::generate("doc")?.issue(micro_runtime::NodeId::random())?;
    /// let node = micro_runtime::Node::builder()
    ///     .listen_on("localhost:0")
    ///     .credentials(credentials)
    ///     .start()
    ///     .await?;
    /// assert!(node.local_addr().is_some_and(|addr| addr.ip().is_loopback()));
    /// # node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn listen_on(mut self, addr: impl Into<String>) -> Self {
        self.net_config();
        self.listen_name = Some(addr.into());
        self
    }

    /// The node's certificate, key and cluster CA. Without them a listening node joins the
    /// development cluster of this machine user ([`ClusterCa::dev`](crate::ClusterCa::dev)) with a
    /// fresh node id.
    #[must_use]
    pub fn credentials(mut self, credentials: NodeCredentials) -> Self {
        self.net_config().credentials = Some(credentials);
        self
    }

    /// The largest frame this node sends or accepts (default 16 MiB). Larger messages fail with
    /// [`Error::FrameTooLarge`] at the sender; larger frames arriving are skipped and counted.
    /// Memory for a frame arriving is taken as its bytes arrive; a connection may hold up to twice
    /// this in frames not yet complete, past which its reads wait ([`Node::throttled_reads`]).
    #[must_use]
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.net_config().max_frame = bytes.max(1024);
        self
    }

    /// How long a silent peer is given before its link counts as lost (default 1 s; keep-alives
    /// go out at a quarter of it).
    #[must_use]
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        let net = self.net_config();
        net.idle_timeout = timeout;
        net.keep_alive = timeout / 4;
        self
    }

    /// How many messages an actor reachable from other nodes may have queued before more from the
    /// network are refused with [`Error::Unavailable`] (default 65,536; an actor whose child spec
    /// sets a mailbox bound keeps its own).
    #[must_use]
    pub fn inbound_capacity(mut self, messages: usize) -> Self {
        self.inbound_capacity = messages.max(1);
        if let Some(net) = &mut self.net {
            net.inbound_capacity = messages.max(1);
        }
        self
    }

    fn net_config(&mut self) -> &mut NetConfig {
        self.net
            .get_or_insert_with(|| NetConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    /// Starts the node and its root supervisor (with the root's children, in order), and, when
    /// it listens, its QUIC endpoint.
    pub async fn start(mut self) -> Result<Node, Error> {
        if let (Some(name), Some(net)) = (self.listen_name.take(), self.net.as_mut()) {
            net.listen = resolve_listen(name).await?;
        }
        let (events, _) = broadcast::channel(self.event_capacity);
        let (status, _) = watch::channel(NodeStatus::Running);
        let credentials = match &self.net {
            Some(net) => Some(match &net.credentials {
                Some(credentials) => credentials.clone(),
                None => ClusterCa::dev()?.issue(NodeId::random())?,
            }),
            None => None,
        };
        let id = credentials
            .as_ref()
            .map_or_else(NodeId::random, NodeCredentials::node_id);
        let node = Node {
            shared: Arc::new(NodeShared {
                id,
                name: self.name,
                shutdown_timeout: self.shutdown_timeout,
                directory: Directory::default(),
                events,
                root: OnceLock::new(),
                status,
                failure: Mutex::new(None),
                peers: FastMap::default(),
                exports: FastMap::default(),
                named_exports: FastMap::default(),
                pending: PendingReplies::new(),
                refused: std::sync::atomic::AtomicU64::new(0),
                throttled: std::sync::atomic::AtomicU64::new(0),
                inline: std::sync::atomic::AtomicU64::new(0),
                watches: Watches::default(),
                remote_watches: FastMap::default(),
                lookups: FastMap::default(),
                locates: FastMap::default(),
                next_id: std::sync::atomic::AtomicU64::new(1),
                inbound_capacity: self.inbound_capacity,
                net: std::sync::RwLock::new(None),
                links: OnceLock::new(),
                streams: FastMap::default(),
            }),
        };
        let span = tracing::info_span!("node", node = %node.shared.name, id = %node.shared.id);
        let _enter = span.enter();
        let (root, join) = start_root(&node, self.root).await?;
        let _ = node.shared.root.set(root);
        // The root has no parent to tell when it ends: watch its task instead.
        let weak = node.downgrade();
        tokio::spawn(async move {
            let _ = join.await;
            if let Some(node) = weak.upgrade() {
                node.mark_stopped();
            }
        });
        if let (Some(config), Some(credentials)) = (self.net, credentials) {
            let links = node
                .root()?
                .start_supervisor(
                    SupervisorSpec::new(Strategy::OneForOne)
                        .named("links")
                        .intensity(Intensity::new(100, Duration::from_secs(10))),
                )
                .await?;
            let _ = node.shared.links.set(links);
            let net = Arc::new(Net::bind(config, credentials)?);
            tokio::spawn(accept_loop(net.endpoint.clone(), node.downgrade()));
            tracing::info!(addr = %net.local_addr, "listening");
            if let Ok(mut slot) = node.shared.net.write() {
                *slot = Some(net);
            }
        }
        tracing::info!("node started");
        Ok(node)
    }
}

/// Resolves a listen address given as text ([`NodeBuilder::listen_on`]) to its first address.
async fn resolve_listen(name: String) -> Result<SocketAddr, Error> {
    use std::net::ToSocketAddrs;
    let failed = |detail: String| Error::Io {
        context: format!("resolving the listen address {name:?}"),
        detail,
    };
    // A literal address needs no resolver.
    if let Ok(addr) = name.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let lookup = name.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        lookup
            .to_socket_addrs()
            .map(|mut addrs| addrs.next())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| failed(e.to_string()))?;
    match resolved {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(failed("the name has no address".to_owned())),
        Err(detail) => Err(failed(detail)),
    }
}

impl Node {
    /// A builder with defaults: name "node", one-for-one root, 30 s shutdown.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            name: "node".to_owned(),
            root: SupervisorSpec::new(Strategy::OneForOne).named("root"),
            shutdown_timeout: Duration::from_secs(30),
            event_capacity: 1024,
            inbound_capacity: 65_536,
            net: None,
            listen_name: None,
        }
    }

    /// This node's id (new at every start).
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where the node is in its life.
    pub fn status(&self) -> NodeStatus {
        self.shared.status.borrow().clone()
    }

    /// The root supervisor.
    pub fn root(&self) -> Result<&SupervisorRef, Error> {
        self.shared
            .root
            .get()
            .ok_or_else(|| Error::NodeStopped(self.shared.name.clone()))
    }

    /// Spawns an actor under the root supervisor and returns its (id-based) address.
    pub async fn spawn<A: Actor>(&self, spec: ChildSpec<A>) -> Result<Addr<A::Msg>, Error> {
        self.ensure_running()?;
        self.root()?.start_child(spec).await
    }

    /// Starts a supervisor (and its children) under the root supervisor.
    pub async fn spawn_supervisor(&self, spec: SupervisorSpec) -> Result<SupervisorRef, Error> {
        self.ensure_running()?;
        self.root()?.start_supervisor(spec).await
    }

    /// A named address for the actor registered as `name`: it follows the name to whichever
    /// incarnation holds it, so it keeps working across restarts.
    pub fn lookup<M: Send + 'static>(&self, name: &str) -> Result<Addr<M>, Error> {
        let entry = self
            .shared
            .directory
            .get(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        if entry.cell.is_message_type_of::<M>() == Some(false) {
            return Err(Error::WrongMessageType {
                actor: name.to_owned(),
                expected: std::any::type_name::<M>().to_owned(),
            });
        }
        Ok(Addr::named(self.clone(), name.into()))
    }

    /// The current incarnation of the actor registered as `name` ([`ChildSpec::named`]), OTP's
    /// `whereis`: `None` while no incarnation runs (between a crash and its restart, or after it
    /// stopped for good). The id changes at every restart; [`Node::lookup`] gives an address that
    /// follows the name instead. Supervisors are not in the name directory: see
    /// [`Node::supervisor`].
    ///
    /// ```
    /// # use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node};
    /// # use std::time::Duration;
    /// # #[derive(Default)] struct Worker;
    /// # impl Actor for Worker {
    /// #     type Msg = bool;
    /// #     async fn handle(&mut self, _: &mut Context<Self>, crash: bool) -> Result<(), ActorError> {
    /// #         if crash { Err("told to crash".into()) } else { Ok(()) }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), micro_runtime::Error> {
    /// let node = Node::builder().start().await?;
    /// let worker = node.spawn(ChildSpec::new(Worker::default).named("worker")).await?;
    /// assert_eq!(node.whereis("worker"), worker.id());
    ///
    /// // Wait for the next start of "worker": the future listens from here on, so a start that
    /// // happens before it is first polled is not missed. The caller bounds the wait.
    /// let restarted = node.next_start("worker");
    /// worker.send(true)?;
    /// let new = tokio::time::timeout(Duration::from_secs(5), restarted).await.expect("restarted")?;
    /// assert_eq!(node.whereis("worker"), Some(new));
    /// assert_ne!(worker.id(), Some(new), "the old incarnation is gone");
    ///
    /// // Stop it by name, whichever incarnation runs: it is not restarted.
    /// node.root()?.stop_child_named("worker").await?;
    /// assert_eq!(node.whereis("worker"), None);
    /// # node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn whereis(&self, name: &str) -> Option<ActorId> {
        self.shared
            .directory
            .get(name)
            .map(|entry| ActorId::of(&entry.cell))
    }

    /// The supervisor called `name` ([`SupervisorSpec::named`]) anywhere in this node's tree,
    /// the root included: searched breadth-first from the root (asking each supervisor for its
    /// children), so the shallowest wins when names repeat. `None` when no running supervisor has
    /// that name (a supervisor waiting to restart has no handle yet).
    ///
    /// Each supervisor on the way answers in turn, so do not call this from an actor's
    /// `started` hook: its own supervisor is busy starting it.
    pub async fn supervisor(&self, name: &str) -> Option<SupervisorRef> {
        let mut queue = std::collections::VecDeque::from([self.root().ok()?.clone()]);
        while let Some(supervisor) = queue.pop_front() {
            if supervisor.name() == name {
                return Some(supervisor);
            }
            // One that stopped meanwhile has no subtree left to search.
            if let Ok(children) = supervisor.children().await {
                queue.extend(children.into_iter().filter_map(|child| child.supervisor));
            }
        }
        None
    }

    /// Resolves with the id of the next incarnation of the child called `child` to start, under
    /// any supervisor of this node (a restart, or a first start). It listens from the moment it
    /// is called, before it is first polled, so a start in between is not missed (unlike
    /// subscribing to [`Node::supervision_events`] after the fact). It does not time out: bound
    /// it with `tokio::time::timeout`. Fails with [`Error::NodeStopped`] when the node stops
    /// first. See [`SupervisorRef::next_start`] for the children of one supervisor.
    pub fn next_start(
        &self,
        child: &str,
    ) -> impl Future<Output = Result<ActorId, Error>> + Send + 'static {
        self.wait_start(None, child)
    }

    /// [`Node::next_start`], for the children of the supervisor labelled `supervisor` only when
    /// it is `Some`.
    pub(crate) fn wait_start(
        &self,
        supervisor: Option<Arc<str>>,
        child: &str,
    ) -> impl Future<Output = Result<ActorId, Error>> + Send + 'static {
        // Subscribed now, not at the first poll.
        let mut events = self.shared.events.subscribe();
        let mut status = self.shared.status.subscribe();
        let child = child.to_owned();
        let before = self.whereis(&child);
        let node = self.downgrade();
        let node_name = self.shared.name.clone();
        async move {
            let stopped = || Error::NodeStopped(node_name.clone());
            if matches!(*status.borrow_and_update(), NodeStatus::Stopped(_)) {
                return Err(stopped());
            }
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => {
                            if event.is_start_of(&child)
                                && supervisor.as_deref().is_none_or(|s| event.supervisor() == s)
                                && let Some(id) = event.id()
                            {
                                return Ok(id);
                            }
                        }
                        // Fell behind and may have missed it: a named actor's directory entry
                        // tells whether another incarnation runs now.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let now = node.upgrade().and_then(|node| node.whereis(&child));
                            if let Some(id) = now.filter(|id| Some(*id) != before) {
                                return Ok(id);
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return Err(stopped()),
                    },
                    changed = status.changed() => {
                        if changed.is_err()
                            || matches!(*status.borrow_and_update(), NodeStatus::Stopped(_))
                        {
                            return Err(stopped());
                        }
                    }
                }
            }
        }
    }

    /// Where this node listens for other nodes, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.net_opt().map(|net| net.local_addr)
    }

    /// The fingerprint (hex SHA-256) of the cluster CA this node trusts, if it listens: nodes
    /// that announce another fingerprint belong to another cluster.
    pub fn cluster_fingerprint(&self) -> Option<String> {
        self.net_opt().map(|net| net.credentials.ca_fingerprint())
    }

    /// This node's incarnation: new at every start, so peers can tell a restarted node (same id
    /// from the same certificate) from the one they knew. 0 for a node that does not listen.
    pub fn incarnation(&self) -> u64 {
        self.net_opt().map_or(0, |net| net.incarnation)
    }

    /// Links to the node listening at `addr` (dialling it now) and returns its id. The peer is
    /// checked against this node's cluster CA; a peer of another cluster is refused with
    /// [`Error::Untrusted`].
    pub async fn connect(&self, addr: SocketAddr) -> Result<NodeId, Error> {
        let net = self.net()?;
        // Already linked to whoever listens there: one connection per peer.
        if let Some(peer) = net
            .known
            .iter()
            .find(|info| info.addr == addr && info.connected)
            .map(|info| info.node)
        {
            return Ok(peer);
        }
        let (conn, hello) = net.dial(self, addr).await?;
        let peer = hello.node;
        crate::net::attach(self, &net, conn, hello, self.id()).await?;
        Ok(peer)
    }

    /// A remote address for the actor `name` exposed on node `peer` (see [`Node::expose`]).
    /// The peer is asked first, so an unknown name ([`Error::NotFound`]), an unexposed one
    /// ([`Error::NotExposed`]) or another message type ([`Error::WrongMessageType`]) is an error
    /// here rather than at the first send.
    pub async fn lookup_remote<M: RemoteMessage>(
        &self,
        peer: NodeId,
        name: &str,
    ) -> Result<Addr<M>, Error> {
        let timeout = self
            .net_opt()
            .map_or(Duration::from_secs(5), |net| net.config.connect_timeout);
        self.remote_lookup(peer, name, timeout).await
    }

    /// QUIC connections open on this node's endpoint (a diagnostic: one per linked peer once
    /// links settle, even when two nodes dialled each other at once).
    pub fn open_connections(&self) -> usize {
        self.net_opt()
            .map_or(0, |net| net.endpoint.open_connections())
    }

    /// Changes in this node's links: peers up and down.
    pub fn peer_events(&self) -> Result<broadcast::Receiver<PeerEvent>, Error> {
        Ok(self.net()?.events.subscribe())
    }

    /// The nodes this node knows: id → address, name, incarnation, and whether linked now.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.net_opt().map_or_else(Vec::new, |net| {
            net.known.iter().map(|e| e.value().clone()).collect()
        })
    }

    /// Lets other nodes reach the actor registered as `name` with messages of type `M` (by name,
    /// so it keeps working across restarts). Nothing else on a node is reachable from outside,
    /// supervisors included, except actors whose [`Addr`] was sent out inside a message.
    pub fn expose<M: RemoteMessage>(&self, name: &str) -> Result<(), Error> {
        let addr = self.lookup::<M>(name)?;
        addr.bound_for_network(self.shared.inbound_capacity);
        let name: Arc<str> = name.into();
        self.shared.named_exports.insert(
            name,
            Arc::new(crate::wire::exports::Export { addr }) as Arc<dyn Inbound>,
        );
        Ok(())
    }

    /// Withdraws an exposure; later frames for `name` are refused with [`Error::NotExposed`].
    pub fn unexpose(&self, name: &str) {
        self.shared.named_exports.remove(name);
    }

    /// How many replies this node is waiting for from other nodes (a diagnostic: it returns to
    /// zero once every remote ask is answered, dropped or expired).
    pub fn waiting_replies(&self) -> usize {
        self.shared.pending.len()
    }

    /// Supervision events from every supervisor on this node, from now on. To wait for one
    /// child's next start, [`Node::next_start`] is simpler.
    pub fn supervision_events(&self) -> broadcast::Receiver<SupervisionEvent> {
        self.shared.events.subscribe()
    }

    /// Encodes a value in this node's wire context, so [`Addr`]s and [`Reply`](crate::Reply)s
    /// inside it become handles other nodes can use.
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        content_type: ContentType,
        value: &T,
    ) -> Result<Vec<u8>, Error> {
        let _guard = context::enter(self, content_type, None);
        content_type.encode(value)
    }

    /// Encodes a message for `peer`, returning with it its frame's envelope: the request id of
    /// the reply port inside, if any, and its [`CallData`](crate::CallData).
    pub(crate) fn encode_for<T: Serialize + ?Sized>(
        &self,
        peer: NodeId,
        content_type: ContentType,
        value: &T,
    ) -> Result<(Vec<u8>, Envelope), Error> {
        let _guard = context::enter(self, content_type, Some(peer));
        context::take_envelope();
        let bytes = content_type.encode(value)?;
        Ok((bytes, context::take_envelope()))
    }

    /// Decodes a value in this node's wire context: handles inside it become working handles here
    /// (local ones for this node's actors, remote ones routed through this node's links).
    pub fn decode<T: DeserializeOwned>(
        &self,
        content_type: ContentType,
        bytes: &[u8],
    ) -> Result<T, Error> {
        let _guard = context::enter(self, content_type, None);
        content_type.decode(bytes)
    }

    /// [`Node::decode`] for bytes that `from` sent: handles inside that name a third node
    /// remember `from` as the peer that knows the way to it.
    pub(crate) fn decode_from<T: DeserializeOwned>(
        &self,
        from: NodeId,
        content_type: ContentType,
        bytes: &[u8],
    ) -> Result<T, Error> {
        let _guard = context::enter_from(self, content_type, from);
        content_type.decode(bytes)
    }

    /// Links this node with another node of the same process, both ways, so handles that travel
    /// between them work. (Nodes in other processes are linked over the network.)
    pub fn connect_in_process(&self, other: &Node) {
        loopback::connect(self, other);
    }

    /// Stops the whole tree gracefully (children in reverse start order, each within its shutdown
    /// timeout, then killed) and then the node. Returns the root's failure, if it failed.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let _ = self.shared.status.send_replace(NodeStatus::Stopping);
        tracing::info!(node = %self.shared.name, "node shutting down");
        if let Some(root) = self.shared.root.get() {
            let cell = root.actor.get_cell();
            if cell
                .stop_and_wait(
                    Some("node shutdown".to_owned()),
                    Some(self.shared.shutdown_timeout),
                )
                .await
                .is_err()
            {
                tracing::warn!(node = %self.shared.name, "tree did not stop in time; killing it");
                let _ = cell.kill_and_wait(Some(Duration::from_secs(5))).await;
            }
        }
        let net = self
            .shared
            .net
            .write()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(net) = net {
            net.endpoint
                .close(crate::net::CLOSE_SHUTDOWN.into(), b"node shutdown");
            let _ = tokio::time::timeout(crate::net::CLOSE_GRACE, net.endpoint.wait_idle()).await;
            net.links.clear();
        }
        self.mark_stopped();
        self.stopped().await
    }

    /// Waits until the node has stopped; `Err` with the reason when its root supervisor failed.
    pub async fn stopped(&self) -> Result<(), Error> {
        let mut status = self.shared.status.subscribe();
        loop {
            if let NodeStatus::Stopped(failure) = &*status.borrow_and_update() {
                return match failure {
                    Some(err) => Err(err.clone()),
                    None => Ok(()),
                };
            }
            if status.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    fn ensure_running(&self) -> Result<(), Error> {
        match *self.shared.status.borrow() {
            NodeStatus::Running => Ok(()),
            _ => Err(Error::NodeStopped(self.shared.name.clone())),
        }
    }

    fn mark_stopped(&self) {
        let failure = self.shared.failure.lock().ok().and_then(|f| f.clone());
        self.shared.status.send_if_modified(|status| {
            if matches!(status, NodeStatus::Stopped(_)) {
                return false;
            }
            if let Some(err) = &failure {
                tracing::error!(node = %self.shared.name, error = %err, "node stopped: its root supervisor failed");
            } else {
                tracing::info!(node = %self.shared.name, "node stopped");
            }
            *status = NodeStatus::Stopped(failure.clone());
            true
        });
        // Exports hold addresses, and addresses hold the node: drop them so the node can go.
        self.shared.peers.clear();
        self.shared.exports.clear();
        self.shared.named_exports.clear();
        self.shared.watches.clear();
        self.shared.remote_watches.clear();
    }

    // ---- crate-internal plumbing ----

    fn net_opt(&self) -> Option<Arc<Net>> {
        self.shared.net.read().ok().and_then(|slot| slot.clone())
    }

    pub(crate) fn net(&self) -> Result<Arc<Net>, Error> {
        self.net_opt().ok_or_else(|| {
            Error::NoRoute(format!(
                "node {} does not listen (NodeBuilder::listen)",
                self.shared.name
            ))
        })
    }

    pub(crate) fn links_supervisor(&self) -> Result<&SupervisorRef, Error> {
        self.shared
            .links
            .get()
            .ok_or_else(|| Error::NodeStopped(self.shared.name.clone()))
    }

    pub(crate) fn streams(&self) -> &FastMap<u64, (Option<NodeId>, Box<dyn StreamInbound>)> {
        &self.shared.streams
    }

    pub(crate) fn inbound_capacity(&self) -> usize {
        self.shared.inbound_capacity
    }

    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.shared))
    }

    pub(crate) fn directory(&self) -> &Directory {
        &self.shared.directory
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> SupervisionEvent) {
        if self.shared.events.receiver_count() > 0 {
            let _ = self.shared.events.send(event());
        }
    }

    pub(crate) fn root_failed(&self, err: Error) {
        if let Ok(mut failure) = self.shared.failure.lock() {
            failure.get_or_insert(err);
        }
        let _ = self.shared.status.send_replace(NodeStatus::Stopping);
    }

    /// An incarnation ended: drop its name binding and export.
    pub(crate) fn forget(&self, id: ActorId, name: Option<&str>, reason: &ExitReason) {
        if let Some(name) = name {
            self.shared.directory.remove_if(name, id);
        }
        self.shared.exports.remove(&id);
        self.shared.watches.fire(self, id, reason);
    }

    /// Watches a local incarnation.
    pub(crate) fn watch_local(&self, cell: ractor::ActorCell) -> Watch {
        let id = ActorId::of(&cell);
        let (tx, rx) = oneshot::channel();
        self.shared.watches.add(id, Watcher::Local(tx));
        if cell.get_status() > ractor::ActorStatus::Upgrading {
            self.shared.watches.fire_if(self, id, Down::NotRunning);
        }
        Watch::new(rx)
    }

    /// Watches an actor on `peer`: the peer reports its end, and losing the link reports
    /// [`Down::NodeLost`].
    pub(crate) fn watch_remote(&self, peer: NodeId, target: Target) -> Watch {
        let watch = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.shared.remote_watches.insert(watch, (peer, tx));
        let sent = self.send_frame(peer, Frame::Control(Control::Watch { watch, target }));
        if sent.is_err()
            && let Some((_, (_, tx))) = self.shared.remote_watches.remove(&watch)
        {
            let _ = tx.send(Down::NodeLost);
        }
        Watch::new(rx)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.shared
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Fails the asks waiting on `peer` with `err`.
    pub(crate) fn fail_waiting(&self, peer: NodeId, err: &Error) {
        self.shared.pending.fail_peer(self, peer, err);
    }

    /// A peer's link is gone: end the waits that depended on it.
    pub(crate) fn peer_lost(&self, peer: NodeId) {
        let err = Error::NodeLost(peer.to_string());
        self.shared.pending.fail_peer(self, peer, &err);
        for (_, tx) in take_for_peer(&self.shared.remote_watches, |(p, _)| *p == peer) {
            let _ = tx.send(Down::NodeLost);
        }
        for (_, tx) in take_for_peer(&self.shared.lookups, |(p, _)| *p == peer) {
            let _ = tx.send(Err(err.clone()));
        }
        for (_, tx) in take_for_peer(&self.shared.locates, |(p, _)| *p == peer) {
            let _ = tx.send(None);
        }
        for (_, inbound) in take_for_peer(&self.shared.streams, |(p, _)| *p == Some(peer)) {
            inbound.lost(err.clone());
        }
        self.shared.watches.drop_peer(peer);
    }

    /// Asks `peer` whether `name` is exposed for messages of type `M`, then returns a remote
    /// address for it.
    pub(crate) async fn remote_lookup<M: RemoteMessage>(
        &self,
        peer: NodeId,
        name: &str,
        timeout: Duration,
    ) -> Result<Addr<M>, Error> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.shared.lookups.insert(id, (peer, tx));
        let asked = self.send_frame(
            peer,
            Frame::Control(Control::Lookup {
                id,
                name: name.to_owned(),
                type_name: M::TYPE_NAME.to_owned(),
            }),
        );
        if let Err(err) = asked {
            self.shared.lookups.remove(&id);
            return Err(err);
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        self.shared.lookups.remove(&id);
        match answer {
            Ok(Ok(Ok(()))) => Ok(Addr::remote_named(self.clone(), peer, name.into())),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(Error::NodeLost(peer.to_string())),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// `via` passed on a handle naming `node`: if this node has no address for `node`, `via` is
    /// the one to ask (see [`Node::locate`]).
    pub(crate) fn note_route(&self, node: NodeId, via: NodeId) {
        if node != self.shared.id
            && let Some(net) = self.net_opt()
        {
            net.note_route(node, via);
        }
    }

    /// Asks `via` where `node` listens.
    ///
    /// Errors: [`Error::NoRoute`] when `via` does not know (or cannot be reached),
    /// [`Error::Timeout`] when it does not answer in time.
    pub(crate) async fn locate(
        &self,
        via: NodeId,
        node: NodeId,
        timeout: Duration,
    ) -> Result<SocketAddr, Error> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.shared.locates.insert(id, (via, tx));
        let asked = self.send_frame(via, Frame::Control(Control::Locate { id, node }));
        if let Err(err) = asked {
            self.shared.locates.remove(&id);
            return Err(err);
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        self.shared.locates.remove(&id);
        match answer {
            Ok(Ok(Some(addr))) => Ok(addr),
            Ok(_) => Err(Error::NoRoute(format!("{node} (unknown to {via})"))),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    pub(crate) fn pending(&self) -> &PendingReplies {
        &self.shared.pending
    }

    pub(crate) fn export_id(&self, id: ActorId, inbound: impl FnOnce() -> Arc<dyn Inbound>) {
        self.shared.exports.entry(id).or_insert_with(inbound);
    }

    pub(crate) fn export_name(&self, name: &Arc<str>, inbound: impl FnOnce() -> Arc<dyn Inbound>) {
        self.shared
            .named_exports
            .entry(name.clone())
            .or_insert_with(inbound);
    }

    pub(crate) fn exported(&self, id: ActorId) -> Option<Arc<dyn Inbound>> {
        self.shared.exports.get(&id).map(|e| e.value().clone())
    }

    pub(crate) fn add_peer(&self, peer: NodeId, link: Box<dyn PeerLink>) {
        self.shared.peers.insert(peer, link);
    }

    /// Sends a frame to `peer` (to this node itself when it is ours).
    pub(crate) fn send_frame(&self, peer: NodeId, frame: Frame) -> Result<(), Error> {
        if peer == self.shared.id {
            self.deliver(peer, frame);
            return Ok(());
        }
        if let Some(link) = self.shared.peers.get(&peer) {
            return link.send(frame);
        }
        match self.net_opt() {
            Some(net) => crate::net::link_for(self, &net, peer)?.send(frame),
            None => Err(Error::NoRoute(peer.to_string())),
        }
    }

    /// Handles a frame that arrived from `from`. A refused message is logged and, when it carried
    /// a reply port, answered with the error, so the asker learns why at once.
    pub(crate) fn deliver(&self, from: NodeId, frame: Frame) {
        self.deliver_view(from, frame.view());
    }

    /// [`Node::deliver`] for a frame borrowed from a read buffer.
    pub(crate) fn deliver_view(&self, from: NodeId, frame: FrameView<'_>) {
        match frame {
            FrameView::Deliver {
                to,
                type_name,
                content_type,
                envelope,
                body,
            } => {
                let request = envelope.request;
                if let Err(err) =
                    self.deliver_message(from, to, type_name, content_type, envelope, body)
                {
                    tracing::debug!(node = %self.shared.name, target = %to, error = %err, "refused an inbound message");
                    self.count_refusal();
                    if let Some(request) = request {
                        let _ = self.send_frame(
                            from,
                            Frame::Reply {
                                request,
                                outcome: Err(err),
                            },
                        );
                    }
                }
            }
            FrameView::Reply { request, outcome } => match self.shared.pending.take(request) {
                Some(complete) => complete(self, Some(from), outcome),
                None => {
                    tracing::debug!(node = %self.shared.name, request, "late or unknown reply dropped")
                }
            },
            FrameView::Control(control) => self.on_control(from, control),
        }
    }

    fn deliver_message(
        &self,
        from: NodeId,
        to: TargetRef<'_>,
        type_name: &str,
        content_type: ContentType,
        envelope: Envelope,
        body: &[u8],
    ) -> Result<(), Error> {
        let inbound = match to {
            TargetRef::Id(id, incarnation) if incarnation == self.incarnation() => {
                self.shared.exports.get(&id).map(|e| e.value().clone())
            }
            // An address from an earlier incarnation of this node: that actor is gone.
            TargetRef::Id(..) => None,
            TargetRef::Name(name) => self
                .shared
                .named_exports
                .get(name)
                .map(|e| e.value().clone()),
        };
        match inbound {
            Some(inbound) => inbound.deliver(self, from, type_name, content_type, envelope, body),
            None => Err(match to {
                TargetRef::Name(name) if self.shared.directory.get(name).is_some() => {
                    Error::NotExposed(name.to_owned())
                }
                TargetRef::Name(name) => Error::NotFound(name.to_owned()),
                TargetRef::Id(id, _) => Error::ActorStopped(id.to_string()),
            }),
        }
    }

    /// Messages from other nodes that were refused (unknown or unexposed target, wrong type,
    /// undecodable, overloaded), since the node started.
    pub fn refused_messages(&self) -> u64 {
        self.shared
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_refusal(&self) {
        self.shared
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Frames and typed-stream items from other nodes whose reading had to wait, since the node
    /// started, because their connection already held its limit of bytes in frames not yet
    /// complete (twice the largest frame). While a read waits, the node reads nothing more from
    /// that stream, so QUIC flow control holds the sender back; other peers are not affected.
    pub fn throttled_reads(&self) -> u64 {
        self.shared
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Messages from other nodes that were handled inline since the node started: in the task
    /// that read them off the link, because their actor was idle and its mailbox empty, rather
    /// than through the actor's mailbox (a diagnostic; only named actors are handled inline).
    pub fn inline_messages(&self) -> u64 {
        self.shared
            .inline
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_inline(&self) {
        self.shared
            .inline
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn count_throttled_read(&self) {
        self.shared
            .throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn on_control(&self, from: NodeId, control: Control) {
        match control {
            Control::Lookup {
                id,
                name,
                type_name,
            } => {
                let result = match self.shared.named_exports.get(name.as_str()) {
                    Some(export) if export.type_name() == type_name => Ok(()),
                    Some(_) => Err(Error::WrongMessageType {
                        actor: name,
                        expected: type_name,
                    }),
                    None if self.shared.directory.get(&name).is_some() => {
                        Err(Error::NotExposed(name))
                    }
                    None => Err(Error::NotFound(name)),
                };
                let _ = self.send_frame(from, Frame::Control(Control::LookupResult { id, result }));
            }
            Control::LookupResult { id, result } => {
                if let Some((_, (_, tx))) = self.shared.lookups.remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Control::Watch { watch, target } => {
                let export = match &target {
                    Target::Id(id, incarnation) if *incarnation == self.incarnation() => {
                        self.shared.exports.get(id).map(|e| e.value().clone())
                    }
                    Target::Id(..) => None,
                    Target::Name(name) => self
                        .shared
                        .named_exports
                        .get(name)
                        .map(|e| e.value().clone()),
                };
                match export.and_then(|e| e.current(self)) {
                    Some(cell) => {
                        let id = ActorId::of(&cell);
                        self.shared
                            .watches
                            .add(id, Watcher::Remote { peer: from, watch });
                        if cell.get_status() > ractor::ActorStatus::Upgrading {
                            self.shared.watches.fire_if(self, id, Down::NotRunning);
                        }
                    }
                    None => {
                        let down = Down::NotRunning;
                        let _ =
                            self.send_frame(from, Frame::Control(Control::Down { watch, down }));
                    }
                }
            }
            Control::Unwatch { watch } => self.shared.watches.unwatch(from, watch),
            Control::Down { watch, down } => {
                if let Some((_, (_, tx))) = self.shared.remote_watches.remove(&watch) {
                    let _ = tx.send(down);
                }
            }
            Control::Locate { id, node } => {
                let addr = self.net_opt().and_then(|net| {
                    if node == self.shared.id {
                        Some(net.local_addr)
                    } else {
                        net.known.get(&node).map(|info| info.addr)
                    }
                });
                let _ = self.send_frame(from, Frame::Control(Control::Located { id, addr }));
            }
            Control::Located { id, addr } => {
                if let Some((_, (_, tx))) = self.shared.locates.remove(&id) {
                    let _ = tx.send(addr);
                }
            }
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.shared.name)
            .field("id", &self.shared.id)
            .finish()
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Node {}

/// Removes and returns the entries of `map` that belong to a peer.
fn take_for_peer<V>(map: &FastMap<u64, V>, of_peer: impl Fn(&V) -> bool) -> Vec<V> {
    let keys: Vec<u64> = map
        .iter()
        .filter(|e| of_peer(e.value()))
        .map(|e| *e.key())
        .collect();
    keys.into_iter()
        .filter_map(|key| map.remove(&key).map(|(_, v)| v))
        .collect()
}
