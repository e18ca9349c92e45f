//! The mDNS backend: each node announces itself on the local network with mdns-sd and browses for
//! the others; the full service descriptions are fetched from each node's registry over the
//! runtime, so nothing is ever truncated to fit a TXT record.
//!
//! What a node announces (one instance of the service type, default `_micro._udp.local.`):
//! instance name = its node id (unique, so no probing is needed and discovery is fast), address
//! and port = where its QUIC endpoint listens, and TXT `id` (node id), `cl` (its cluster CA's
//! fingerprint: announcements of other clusters are ignored), `rev` (bumped at every local
//! change: a new revision makes the others fetch again) and `v` (format version).
//!
//! Freshness does not rest on mDNS TTLs (fixed at 120 s by mdns-sd): a graceful stop sends a
//! goodbye, and the runtime's link loss (idle timeout, about a second) drops a crashed node.
//!
//! mDNS is unauthenticated, so announcements and goodbyes are hints, never facts: a hint makes
//! the registry fetch (one fetch per node at a time; a hint that arrives meanwhile makes one
//! more, at most), and only what the node's own registry answers over the runtime (mutual TLS)
//! changes the view, with the revision the node reports. A goodbye drops a node at once only
//! when the runtime has no link to it; otherwise the node is asked first, and dropped only if it
//! does not answer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node, NodeId, PeerEvent};
use tokio::time::Instant;

use crate::internal::{Fetched, Internal, Kind, sweep};
use crate::memory::MemoryRegistry;
use crate::protocol::{LocalState, Registry, RegistryMsg};
use crate::{NodeRecord, RegistryError, ServiceRecord};

/// Which interfaces mDNS uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface the machine has.
    All,
    /// Loopback only (127.0.0.1): nodes of one machine, and tests.
    Loopback,
    /// These interfaces, by name (e.g. `eth0`).
    Named(Vec<String>),
}

/// Settings of the mDNS registry.
#[derive(Debug, Clone)]
pub struct MdnsConfig {
    service_type: String,
    interfaces: Interfaces,
    fetch_timeout: Duration,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            service_type: "_micro._udp.local.".to_owned(),
            interfaces: Interfaces::All,
            fetch_timeout: Duration::from_secs(3),
        }
    }
}

impl MdnsConfig {
    /// The service type nodes announce and browse, e.g. `_micro._udp` (at most 15 bytes before
    /// `._udp`, as mdns-sd requires). Nodes see only nodes of the same type, so parallel tests
    /// use one each.
    pub fn service_type(mut self, name: &str) -> Result<Self, RegistryError> {
        let label = name
            .strip_prefix('_')
            .and_then(|n| n.split("._").next())
            .unwrap_or("");
        if label.is_empty()
            || label.len() > 15
            || !name.ends_with("._udp") && !name.ends_with("._tcp")
        {
            return Err(RegistryError::Invalid(format!(
                "mDNS service type {name:?}: expected `_name._udp` with a name of 1 to 15 bytes"
            )));
        }
        self.service_type = format!("{name}.local.");
        Ok(self)
    }

    /// The interfaces mDNS uses.
    #[must_use = "a builder method returns the changed settings"]
    pub fn interfaces(mut self, interfaces: Interfaces) -> Self {
        self.interfaces = interfaces;
        self
    }

    /// How long fetching a node's services may take before the attempt counts as failed.
    #[must_use = "a builder method returns the changed settings"]
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }
}

/// When the browser asks a second time after starting.
const REQUERY_AFTER: Duration = Duration::from_millis(50);

/// Shuts the mDNS daemon's thread down when dropped, even after a panic or a kill, so a dead
/// registry never keeps announcing.
struct DaemonGuard(ServiceDaemon);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// What the registry knows of another node: only what the node itself said over the runtime.
struct Peer {
    /// The revision it reported (`None`: a registry that does not report one; every hint about
    /// it is fetched).
    rev: Option<u64>,
    services: Vec<ServiceRecord>,
    /// Its registry, to tell it when ours changes.
    registry: Option<micro_runtime::Addr<RegistryMsg>>,
    /// Where it was fetched from.
    addr: SocketAddr,
}

/// A fetch in flight (one per node at a time).
struct InFlight {
    /// Tells its outcome from that of a fetch abandoned earlier.
    token: u64,
    /// A hint seen meanwhile (address, announced revision): fetch again afterwards unless the
    /// node reports that revision.
    rerun: Option<(SocketAddr, u64)>,
    /// A goodbye was seen meanwhile: drop the node if the fetch fails.
    goodbye: bool,
}

/// A local registration's key: service name, version, node id.
type LocalKey = (String, String, String);
/// A local registration: the service (without nodes), the node, and when it expires.
type LocalNode = (ServiceRecord, NodeRecord, Option<Instant>);

/// The mDNS registry actor. It needs a node that listens (`NodeBuilder::listen`): others fetch
/// from it, and it fetches from them, over the runtime. It exposes itself as `"registry"`.
pub struct MdnsRegistry {
    config: MdnsConfig,
    /// Everything known, local and learned, merged by service version (the store and its
    /// watchers).
    store: MemoryRegistry,
    /// Registrations made here: (name, version, node id) → (service without nodes, node, expiry).
    local: BTreeMap<LocalKey, LocalNode>,
    rev: u64,
    peers: HashMap<NodeId, Peer>,
    fingerprint: String,
    announce: Option<Announcement>,
    daemon: Option<DaemonGuard>,
    /// Failed fetches, for diagnostics.
    failures: u64,
    /// Announcements that could not be read.
    malformed: u64,
    /// This node's id and listen address, once started.
    own: Option<(NodeId, SocketAddr)>,
    /// Fetches in flight, one per node.
    fetching: HashMap<NodeId, InFlight>,
    /// The token of the next fetch.
    next_token: u64,
}

impl std::fmt::Debug for MdnsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsRegistry")
            .field("config", &self.config)
            .field("rev", &self.rev)
            .field("peers", &self.peers.len())
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl MdnsRegistry {
    /// A registry with these settings.
    pub fn new(config: MdnsConfig) -> Self {
        MdnsRegistry {
            config,
            store: MemoryRegistry::new(),
            local: BTreeMap::new(),
            rev: 0,
            peers: HashMap::new(),
            fingerprint: String::new(),
            announce: None,
            daemon: None,
            failures: 0,
            malformed: 0,
            own: None,
            fetching: HashMap::new(),
            next_token: 0,
        }
    }

    /// A child spec named `"registry"`; after a crash it restarts empty, announces itself again
    /// and rebuilds what it knows by browsing.
    pub fn spec(config: MdnsConfig) -> ChildSpec<MdnsRegistry> {
        ChildSpec::new(move || MdnsRegistry::new(config.clone())).named("registry")
    }

    fn local_services(&self) -> Vec<ServiceRecord> {
        let mut grouped: BTreeMap<(String, String), ServiceRecord> = BTreeMap::new();
        for ((name, version, _), (service, node, _)) in &self.local {
            grouped
                .entry((name.clone(), version.clone()))
                .or_insert_with(|| service.clone())
                .nodes
                .push(node.clone());
        }
        grouped.into_values().collect()
    }

    fn expire_local(&mut self) {
        let now = Instant::now();
        let before = self.local.len();
        self.local
            .retain(|_, (_, _, expiry)| expiry.is_none_or(|at| at > now));
        if self.local.len() != before {
            self.bump();
        }
    }

    /// A local change: a new revision, told to the registries this one knows (at once) and
    /// announced over mDNS (for the others; mDNS re-announces at most once a second).
    fn bump(&mut self) {
        self.rev += 1;
        if let Some((node, addr)) = self.own {
            for peer in self.peers.values() {
                if let Some(registry) = &peer.registry {
                    let _ = registry.send(RegistryMsg::Changed {
                        node: node.as_u128(),
                        addr,
                        rev: self.rev,
                    });
                }
            }
        }
        if let (Some(daemon), Some(announcement)) = (&self.daemon, &self.announce) {
            let announced = announcement
                .info(self.rev)
                .and_then(|info| daemon.0.register(info));
            if let Err(err) = announced {
                tracing::warn!(error = %err, "mDNS: could not announce a new revision");
            }
        }
    }

    fn register_local(
        &mut self,
        service: ServiceRecord,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        self.store.register(service.clone(), ttl)?;
        let expiry = ttl.map(|t| Instant::now() + t);
        let mut bare = service.clone();
        bare.nodes.clear();
        let mut changed = false;
        for node in service.nodes {
            let key = (bare.name.clone(), bare.version.clone(), node.id.clone());
            let fresh = (bare.clone(), node, expiry);
            match self.local.insert(key, fresh.clone()) {
                Some(old) => changed |= old.0 != fresh.0 || old.1 != fresh.1,
                None => changed = true,
            }
        }
        if changed {
            self.bump();
        }
        Ok(())
    }

    fn deregister_local(&mut self, service: &ServiceRecord) -> Result<(), RegistryError> {
        self.store.deregister(service)?;
        for node in &service.nodes {
            self.local.remove(&(
                service.name.clone(),
                service.version.clone(),
                node.id.clone(),
            ));
        }
        self.bump();
        Ok(())
    }

    /// Replaces what is known of `id` with `services`, node by node, so the store's events say
    /// exactly what changed.
    fn apply_peer(&mut self, id: NodeId, fetched: Fetched) {
        let Fetched {
            rev,
            services,
            registry,
            addr,
        } = fetched;
        let old = self
            .peers
            .remove(&id)
            .map(|p| p.services)
            .unwrap_or_default();
        for service in &old {
            let gone: Vec<NodeRecord> = service
                .nodes
                .iter()
                .filter(|n| !contains_node(&services, service, &n.id))
                .cloned()
                .collect();
            if !gone.is_empty() {
                let mut removal = service.clone();
                removal.nodes = gone;
                let _ = self.store.deregister(&removal);
            }
        }
        for service in &services {
            if let Err(err) = self.store.register(service.clone(), None) {
                tracing::debug!(%id, error = %err, "mDNS: skipped a service of a peer");
            }
        }
        self.peers.insert(
            id,
            Peer {
                rev,
                services,
                registry: Some(registry),
                addr,
            },
        );
    }

    fn forget_peer(&mut self, id: NodeId) {
        if let Some(peer) = self.peers.remove(&id) {
            tracing::info!(%id, services = peer.services.len(), "mDNS: node gone");
            for service in &peer.services {
                let _ = self.store.deregister(service);
            }
        }
    }

    /// Starts the one fetch of `id`'s services (from `addr` if there is no link to it yet).
    fn fetch(&mut self, ctx: &Context<Self>, id: NodeId, addr: SocketAddr, goodbye: bool) {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        self.fetching.insert(
            id,
            InFlight {
                token,
                rerun: None,
                goodbye,
            },
        );
        let node = ctx.node().clone();
        let me = ctx.addr();
        let timeout = self.config.fetch_timeout;
        tokio::spawn(async move {
            let fetched = tokio::time::timeout(timeout, fetch_from(&node, id, addr, timeout))
                .await
                .unwrap_or(Err(RegistryError::Runtime(micro_runtime::Error::Timeout(
                    timeout,
                ))));
            let _ = me.send(RegistryMsg::Internal(Internal(Kind::Fetched {
                id,
                token,
                fetched,
            })));
        });
    }

    fn on_internal(&mut self, ctx: &Context<Self>, Internal(kind): Internal) {
        match kind {
            // A hint (mDNS, or a `Changed` message): its revision only decides whether to ask.
            Kind::Resolved { id, addr, rev } => {
                if id == ctx.node().id() {
                    return;
                }
                if let Some(in_flight) = self.fetching.get_mut(&id) {
                    in_flight.rerun = Some((addr, rev));
                    return;
                }
                if self.peers.get(&id).is_some_and(|p| p.rev == Some(rev)) {
                    return;
                }
                tracing::debug!(%id, %addr, rev, "mDNS: fetching a node's services");
                self.fetch(ctx, id, addr, false);
            }
            Kind::Fetched { id, token, fetched } => {
                if self.fetching.get(&id).is_none_or(|f| f.token != token) {
                    return; // abandoned: the node was dropped meanwhile
                }
                let Some(done) = self.fetching.remove(&id) else {
                    return;
                };
                match fetched {
                    Ok(fetched) => {
                        // A node seen for the first time learns of this one at once too, rather
                        // than when mDNS next tells it: discovery in one direction is enough.
                        if !self.peers.contains_key(&id)
                            && let Some((node, addr)) = self.own
                        {
                            let _ = fetched.registry.send(RegistryMsg::Changed {
                                node: node.as_u128(),
                                addr,
                                rev: self.rev,
                            });
                        }
                        let rev = fetched.rev;
                        self.apply_peer(id, fetched);
                        if let Some((addr, hinted)) = done.rerun
                            && rev != Some(hinted)
                        {
                            self.fetch(ctx, id, addr, false);
                        }
                    }
                    Err(err) => {
                        self.failures += 1;
                        tracing::warn!(%id, error = %err, "mDNS: could not fetch a node's services");
                        if done.goodbye {
                            // The goodbye is confirmed: the node does not answer.
                            self.forget_peer(id);
                        }
                        if let Some((addr, _)) = done.rerun {
                            self.fetch(ctx, id, addr, false);
                        }
                    }
                }
            }
            Kind::Malformed => self.malformed += 1,
            Kind::Sweep => {
                self.store.expire();
                self.expire_local();
            }
            // Anyone can send a goodbye: believe it at once only if the runtime has no link to
            // the node either; otherwise ask the node (the fetch's failure confirms it).
            Kind::Removed { id } => {
                let Some(addr) = self.peers.get(&id).map(|p| p.addr) else {
                    return;
                };
                let linked = ctx
                    .node()
                    .peers()
                    .iter()
                    .any(|p| p.node == id && p.connected);
                if !linked {
                    self.fetching.remove(&id);
                    self.forget_peer(id);
                } else if let Some(in_flight) = self.fetching.get_mut(&id) {
                    in_flight.goodbye = true;
                } else {
                    tracing::debug!(%id, "mDNS: a goodbye for a linked node; asking it");
                    self.fetch(ctx, id, addr, true);
                }
            }
            Kind::Lost { id } => {
                self.fetching.remove(&id);
                self.forget_peer(id);
            }
        }
    }
}

fn contains_node(services: &[ServiceRecord], like: &ServiceRecord, node: &str) -> bool {
    services.iter().any(|s| {
        s.name == like.name && s.version == like.version && s.nodes.iter().any(|n| n.id == node)
    })
}

/// Asks node `id`'s registry, over the runtime, for its own registrations and revision; links
/// to `addr` first if there is no link to `id` yet (and checks the node found there is `id`).
async fn fetch_from(
    node: &Node,
    id: NodeId,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Fetched, RegistryError> {
    let linked = node
        .peers()
        .into_iter()
        .find(|p| p.node == id && p.connected)
        .map(|p| p.addr);
    let addr = match linked {
        Some(known) => known,
        None => {
            let found = node.connect(addr).await?;
            if found != id {
                return Err(RegistryError::Invalid(format!(
                    "{addr} is node {found}, not the announced {id}"
                )));
            }
            addr
        }
    };
    let registry = node.lookup_remote::<RegistryMsg>(id, "registry").await?;
    let (rev, services) = match registry
        .ask(|reply| RegistryMsg::LocalAt { reply }, timeout)
        .await
    {
        Ok(LocalState { rev, services }) => (Some(rev), services),
        // A registry from before `LocalAt` cannot decode it: ask the old way. Its revision stays
        // unknown, so every hint about it is fetched.
        Err(micro_runtime::Error::Codec { .. }) => (
            None,
            registry
                .ask(|reply| RegistryMsg::Local { reply }, timeout)
                .await?,
        ),
        Err(err) => return Err(err.into()),
    };
    Ok(Fetched {
        rev,
        services,
        registry,
        addr,
    })
}

/// What this node announces; rebuilt with each new revision.
#[derive(Debug, Clone)]
struct Announcement {
    service_type: String,
    instance: String,
    host: String,
    listen: SocketAddr,
    fingerprint: String,
}

impl Announcement {
    fn info(&self, rev: u64) -> Result<ServiceInfo, mdns_sd::Error> {
        let props: HashMap<String, String> = [
            ("id".to_owned(), self.instance.clone()),
            ("cl".to_owned(), self.fingerprint.clone()),
            ("rev".to_owned(), rev.to_string()),
            ("v".to_owned(), "1".to_owned()),
        ]
        .into();
        let mut info = if self.listen.ip().is_unspecified() {
            ServiceInfo::new(
                &self.service_type,
                &self.instance,
                &self.host,
                "",
                self.listen.port(),
                props,
            )?
            .enable_addr_auto()
        } else {
            ServiceInfo::new(
                &self.service_type,
                &self.instance,
                &self.host,
                self.listen.ip(),
                self.listen.port(),
                props,
            )?
        };
        // Instance names are node ids, unique by construction: no need to probe (~750 ms).
        info.set_requires_probe(false);
        Ok(info)
    }

    fn fullname(&self) -> String {
        format!("{}.{}", self.instance, self.service_type)
    }
}

/// Reads an announcement: `None` for one that is not a micro node of this cluster.
fn parse(
    info: &mdns_sd::ResolvedService,
    fingerprint: &str,
) -> Result<Option<(NodeId, SocketAddr, u64)>, String> {
    let prop = |key: &str| info.get_property_val_str(key);
    if prop("cl") != Some(fingerprint) {
        return Ok(None);
    }
    let id = prop("id")
        .and_then(|hex| u128::from_str_radix(hex, 16).ok())
        .map(NodeId::from_u128)
        .ok_or_else(|| format!("announcement {} has no valid id", info.get_fullname()))?;
    let rev = prop("rev")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("announcement {} has no valid rev", info.get_fullname()))?;
    let ip = info
        .get_addresses()
        .iter()
        .map(|a| a.to_ip_addr())
        .min_by_key(|ip| !ip.is_ipv4())
        .ok_or_else(|| format!("announcement {} has no address", info.get_fullname()))?;
    Ok(Some((id, SocketAddr::new(ip, info.get_port()), rev)))
}

/// The daemon's browse for the service type, read as what the registry should hear of it.
struct Browsing {
    browse: mdns_sd::Receiver<ServiceEvent>,
    requery: std::pin::Pin<Box<tokio::time::Sleep>>,
    requeried: bool,
    daemon: ServiceDaemon,
    service_type: String,
    fingerprint: String,
}

impl Browsing {
    /// Resolved announcements, goodbyes and malformed announcements, in the order mDNS saw them;
    /// it ends when the daemon's browse does.
    fn discoveries(self) -> impl futures::Stream<Item = Kind> + Send + 'static {
        futures::stream::unfold(self, |mut b| async move {
            loop {
                let event = tokio::select! {
                    // mdns-sd queries again only after a second; a query sent while this daemon
                    // was still joining the group can go unanswered, so ask once more right away.
                    () = &mut b.requery, if !b.requeried => {
                        b.requeried = true;
                        if let Ok(fresh) = b.daemon.browse(&b.service_type) {
                            b.browse = fresh;
                        }
                        continue;
                    }
                    event = b.browse.recv_async() => match event {
                        Ok(event) => event,
                        Err(_) if !b.requeried => continue,
                        Err(_) => return None,
                    },
                };
                let kind = match event {
                    ServiceEvent::ServiceResolved(info) => match parse(&info, &b.fingerprint) {
                        Ok(Some((id, addr, rev))) => Kind::Resolved { id, addr, rev },
                        Ok(None) => continue,
                        Err(err) => {
                            tracing::debug!(error = %err, "mDNS: ignored a malformed announcement");
                            Kind::Malformed
                        }
                    },
                    ServiceEvent::ServiceRemoved(_, fullname) => {
                        let Some(id) = fullname
                            .split('.')
                            .next()
                            .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                        else {
                            continue;
                        };
                        Kind::Removed {
                            id: NodeId::from_u128(id),
                        }
                    }
                    _ => continue,
                };
                return Some((kind, b));
            }
        })
    }
}

impl Actor for MdnsRegistry {
    type Msg = RegistryMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let node = ctx.node().clone();
        let listen = node
            .local_addr()
            .ok_or("the mDNS registry needs a node that listens (NodeBuilder::listen)")?;
        self.own = Some((node.id(), listen));
        self.fingerprint = node.cluster_fingerprint().unwrap_or_default();
        self.fingerprint.truncate(16);

        let daemon = ServiceDaemon::new()?;
        match &self.config.interfaces {
            Interfaces::All => {}
            Interfaces::Loopback => {
                daemon.disable_interface(IfKind::All)?;
                daemon.enable_interface(IfKind::LoopbackV4)?;
            }
            Interfaces::Named(names) => {
                daemon.disable_interface(IfKind::All)?;
                for name in names {
                    daemon.enable_interface(IfKind::Name(name.clone()))?;
                }
            }
        }
        let guard = DaemonGuard(daemon);

        let instance = format!("{:032x}", node.id().as_u128());
        let announcement = Announcement {
            service_type: self.config.service_type.clone(),
            host: format!("{}.micro.local.", &instance[..12]),
            instance,
            listen,
            fingerprint: self.fingerprint.clone(),
        };
        guard.0.register(announcement.info(self.rev)?)?;
        self.announce = Some(announcement);

        // Discoveries, then lost links (a node whose link dies is gone, whatever mDNS caches
        // say), then expiry of TTL registrations (local ones bump the revision): messages to
        // itself, ended with this incarnation.
        let browsing = Browsing {
            browse: guard.0.browse(&self.config.service_type)?,
            requery: Box::pin(tokio::time::sleep(REQUERY_AFTER)),
            requeried: false,
            daemon: guard.0.clone(),
            service_type: self.config.service_type.clone(),
            fingerprint: self.fingerprint.clone(),
        };
        ctx.forward(browsing.discoveries(), |kind| {
            RegistryMsg::Internal(Internal(kind))
        });
        ctx.forward_broadcast(node.peer_events()?, |event| match event {
            Ok(PeerEvent::Down { node, .. }) => {
                Some(RegistryMsg::Internal(Internal(Kind::Lost { id: node })))
            }
            _ => None,
        });
        ctx.tick(Duration::from_millis(250), sweep);

        self.daemon = Some(guard);
        node.expose::<RegistryMsg>("registry")?;
        tracing::info!(service_type = %self.config.service_type, "mDNS registry announcing and browsing");
        Ok(())
    }

    async fn handle(
        &mut self,
        ctx: &mut Context<Self>,
        msg: RegistryMsg,
    ) -> Result<(), ActorError> {
        match msg {
            RegistryMsg::Register {
                service,
                ttl_ms,
                reply,
            } => {
                let _ = reply.send(self.register_local(service, ttl_ms.map(Duration::from_millis)));
            }
            RegistryMsg::Deregister { service, reply } => {
                let _ = reply.send(self.deregister_local(&service));
            }
            RegistryMsg::Get { name, reply } => {
                self.store.expire();
                self.expire_local();
                let _ = reply.send(self.store.get(&name));
            }
            RegistryMsg::List { reply } => {
                self.store.expire();
                self.expire_local();
                let _ = reply.send(self.store.list());
            }
            RegistryMsg::Watch { service, events } => self.store.watch(service, events),
            RegistryMsg::Local { reply } => {
                self.expire_local();
                let _ = reply.send(self.local_services());
            }
            RegistryMsg::LocalAt { reply } => {
                self.expire_local();
                let _ = reply.send(LocalState {
                    rev: self.rev,
                    services: self.local_services(),
                });
            }
            RegistryMsg::Stats { reply } => {
                let _ = reply.send(crate::RegistryStats {
                    peers: self.peers.len() as u64,
                    malformed: self.malformed,
                    failed_fetches: self.failures,
                });
            }
            RegistryMsg::Changed { node, addr, rev } => {
                let kind = Kind::Resolved {
                    id: NodeId::from_u128(node),
                    addr,
                    rev,
                };
                self.on_internal(ctx, Internal(kind));
            }
            RegistryMsg::Internal(internal) => self.on_internal(ctx, internal),
        }
        Ok(())
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // A goodbye, so the others drop this node at once.
        if let (Some(daemon), Some(announcement)) = (&self.daemon, &self.announce)
            && let Ok(done) = daemon.0.unregister(&announcement.fullname())
        {
            let _ = tokio::time::timeout(Duration::from_millis(500), done.recv_async()).await;
        }
    }
}

impl Registry {
    /// Starts the mDNS registry on `node` (which must listen) and returns its handle.
    pub async fn mdns(node: &Node, config: MdnsConfig) -> Result<Registry, RegistryError> {
        Ok(Registry::new(node.spawn(MdnsRegistry::spec(config)).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_types_are_checked() {
        assert!(MdnsConfig::default().service_type("_micro._udp").is_ok());
        assert!(
            MdnsConfig::default()
                .service_type("_averyveryverylongname._udp")
                .is_err()
        );
        assert!(MdnsConfig::default().service_type("micro").is_err());
    }

    #[test]
    fn announcements_of_other_clusters_or_broken_ones_are_told_apart() {
        let info = |props: &[(&str, &str)]| {
            let props: HashMap<String, String> = props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            ServiceInfo::new("_t._udp.local.", "x", "x.local.", "127.0.0.1", 9, props)
                .unwrap()
                .as_resolved_service()
        };
        let id = format!("{:032x}", 42u128);
        let ours = info(&[("id", &id), ("cl", "abc"), ("rev", "3")]);
        assert_eq!(
            parse(&ours, "abc").unwrap(),
            Some((NodeId::from_u128(42), "127.0.0.1:9".parse().unwrap(), 3))
        );
        assert_eq!(parse(&ours, "other").unwrap(), None, "another cluster");
        assert!(
            parse(&info(&[("cl", "abc"), ("rev", "3")]), "abc").is_err(),
            "no id"
        );
        assert!(parse(&info(&[("id", "zz"), ("cl", "abc"), ("rev", "3")]), "abc").is_err());
        assert!(
            parse(&info(&[("id", &id), ("cl", "abc")]), "abc").is_err(),
            "no rev"
        );
    }
}
