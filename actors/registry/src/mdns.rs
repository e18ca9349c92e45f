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
use micro_runtime::{Actor, ActorError, Addr, ChildSpec, Context, Node, NodeId, PeerEvent};
use tokio::time::Instant;

use crate::backend::{BackendMsg, Kind, sweep};
use crate::memory::MemoryRegistry;
use crate::protocol::{LocalState, MdnsStats, PeerMsg, Registry, RegistryMsg};
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
#[derive(Debug)]
struct Peer<R> {
    /// The revision it reported (`None`: a registry that does not report one; every hint about
    /// it is fetched).
    rev: Option<u64>,
    services: Vec<ServiceRecord>,
    /// Its registry, to tell it when ours changes.
    registry: R,
    /// Where it was fetched from.
    addr: SocketAddr,
}

/// A fetch in flight (one per node at a time).
#[derive(Debug)]
struct InFlight {
    /// Tells its outcome from that of a fetch abandoned earlier.
    token: u64,
    /// A hint seen meanwhile (address, announced revision): fetch again afterwards unless the
    /// node reports that revision.
    rerun: Option<(SocketAddr, u64)>,
    /// A goodbye was seen meanwhile: drop the node if the fetch fails.
    goodbye: bool,
}

/// What a node's registry said of itself: its revision (`None` from a registry that predates
/// [`PeerMsg::Snapshot`]) and its registrations; its registry's handle (`R`: an
/// `Addr<RegistryMsg>` in the actor, anything in tests), and where the node listens (as its
/// link knows it).
#[derive(Debug)]
pub(crate) struct Fetched<R = Addr<RegistryMsg>> {
    pub(crate) rev: Option<u64>,
    pub(crate) services: Vec<ServiceRecord>,
    pub(crate) registry: R,
    pub(crate) addr: SocketAddr,
}

/// What the [`PeerView`] asks its glue to do.
#[derive(Debug, PartialEq)]
pub(crate) enum PeerAction<R> {
    /// Fetch node `id`'s registrations (over its link, or from `addr` if there is none) and
    /// report the outcome with `token`.
    Fetch {
        id: NodeId,
        addr: SocketAddr,
        token: u64,
    },
    /// Tell this registry (of a node fetched for the first time) about this one at once.
    Introduce(R),
    /// Remove these nodes of a peer from the store.
    Withdraw(ServiceRecord),
    /// Put this service version of a peer in the store.
    Publish(ServiceRecord),
}

/// The mDNS backend's view of the other nodes, free of I/O: what each node reported of itself,
/// the one fetch in flight per node (with its token), hints seen meanwhile, goodbyes to check.
/// Hints, fetch outcomes, goodbyes and lost links go in; [`PeerAction`]s come out.
#[derive(Debug)]
pub(crate) struct PeerView<R> {
    /// This node, whose own announcements are ignored.
    me: NodeId,
    peers: HashMap<NodeId, Peer<R>>,
    /// Fetches in flight, one per node.
    fetching: HashMap<NodeId, InFlight>,
    /// The token of the next fetch.
    next_token: u64,
    /// Failed fetches, for diagnostics.
    failures: u64,
    /// Announcements that could not be read.
    malformed: u64,
}

impl<R: Clone> PeerView<R> {
    pub(crate) fn new(me: NodeId) -> Self {
        PeerView {
            me,
            peers: HashMap::new(),
            fetching: HashMap::new(),
            next_token: 0,
            failures: 0,
            malformed: 0,
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> MdnsStats {
        MdnsStats {
            peers: self.peers.len() as u64,
            malformed: self.malformed,
            failed_fetches: self.failures,
        }
    }

    /// The registries of the nodes known, to tell of a local change.
    pub(crate) fn registries(&self) -> impl Iterator<Item = &R> {
        self.peers.values().map(|p| &p.registry)
    }

    /// An announcement could not be read.
    pub(crate) fn malformed(&mut self) {
        self.malformed += 1;
    }

    fn fetch(&mut self, id: NodeId, addr: SocketAddr, goodbye: bool) -> PeerAction<R> {
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
        PeerAction::Fetch { id, addr, token }
    }

    /// A hint (an announcement, or a node's `Changed`) that node `id` at `addr` is at `rev`:
    /// its revision only decides whether to ask. One fetch per node at a time; a hint seen
    /// meanwhile makes one more at most.
    pub(crate) fn hint(&mut self, id: NodeId, addr: SocketAddr, rev: u64) -> Vec<PeerAction<R>> {
        if id == self.me {
            return Vec::new();
        }
        if let Some(in_flight) = self.fetching.get_mut(&id) {
            in_flight.rerun = Some((addr, rev));
            return Vec::new();
        }
        if self.peers.get(&id).is_some_and(|p| p.rev == Some(rev)) {
            return Vec::new();
        }
        tracing::debug!(%id, %addr, rev, "mDNS: fetching a node's services");
        vec![self.fetch(id, addr, false)]
    }

    /// A fetch ended. Only the answer of the fetch in flight counts (an abandoned one's is
    /// ignored); it replaces what is known of the node, node by node, and records the revision
    /// the node reported.
    pub(crate) fn fetched(
        &mut self,
        id: NodeId,
        token: u64,
        fetched: Result<Fetched<R>, RegistryError>,
    ) -> Vec<PeerAction<R>> {
        if self.fetching.get(&id).is_none_or(|f| f.token != token) {
            return Vec::new(); // abandoned: the node was dropped meanwhile
        }
        let Some(done) = self.fetching.remove(&id) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        match fetched {
            Ok(fetched) => {
                // A node seen for the first time learns of this one at once too, rather than
                // when mDNS next tells it: discovery in one direction is enough.
                if !self.peers.contains_key(&id) {
                    actions.push(PeerAction::Introduce(fetched.registry.clone()));
                }
                let rev = fetched.rev;
                self.apply(id, fetched, &mut actions);
                if let Some((addr, hinted)) = done.rerun
                    && rev != Some(hinted)
                {
                    actions.push(self.fetch(id, addr, false));
                }
            }
            Err(err) => {
                self.failures += 1;
                tracing::warn!(%id, error = %err, "mDNS: could not fetch a node's services");
                if done.goodbye {
                    // The goodbye is confirmed: the node does not answer.
                    self.forget(id, &mut actions);
                }
                if let Some((addr, _)) = done.rerun {
                    actions.push(self.fetch(id, addr, false));
                }
            }
        }
        actions
    }

    /// A goodbye for `id` (anyone can send one): believed at once only if the runtime has no
    /// link to the node either (`linked`); otherwise the node is asked, and dropped only if
    /// the fetch fails.
    pub(crate) fn goodbye(&mut self, id: NodeId, linked: bool) -> Vec<PeerAction<R>> {
        let Some(addr) = self.peers.get(&id).map(|p| p.addr) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if !linked {
            self.fetching.remove(&id);
            self.forget(id, &mut actions);
        } else if let Some(in_flight) = self.fetching.get_mut(&id) {
            in_flight.goodbye = true;
        } else {
            tracing::debug!(%id, "mDNS: a goodbye for a linked node; asking it");
            actions.push(self.fetch(id, addr, true));
        }
        actions
    }

    /// The runtime lost its link to `id`: the node is gone (a fetch in flight is abandoned).
    pub(crate) fn lost(&mut self, id: NodeId) -> Vec<PeerAction<R>> {
        let mut actions = Vec::new();
        self.fetching.remove(&id);
        self.forget(id, &mut actions);
        actions
    }

    /// Replaces what is known of `id` with what it reported, node by node, so the store's
    /// events say exactly what changed.
    fn apply(&mut self, id: NodeId, fetched: Fetched<R>, actions: &mut Vec<PeerAction<R>>) {
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
                actions.push(PeerAction::Withdraw(removal));
            }
        }
        actions.extend(services.iter().cloned().map(PeerAction::Publish));
        self.peers.insert(
            id,
            Peer {
                rev,
                services,
                registry,
                addr,
            },
        );
    }

    fn forget(&mut self, id: NodeId, actions: &mut Vec<PeerAction<R>>) {
        if let Some(peer) = self.peers.remove(&id) {
            tracing::info!(%id, services = peer.services.len(), "mDNS: node gone");
            actions.extend(peer.services.into_iter().map(PeerAction::Withdraw));
        }
    }
}

/// A local registration's key: service name, version, node id.
type LocalKey = (String, String, String);
/// A local registration: the service (without nodes), the node, and when it expires.
type LocalNode = (ServiceRecord, NodeRecord, Option<Instant>);

/// The registrations made on this node and the revision they are at, free of I/O: each
/// change says whether the revision moved (then the glue tells the others); time is passed in.
#[derive(Debug, Default)]
pub(crate) struct LocalRegistrations {
    /// (name, version, node id) → (service without nodes, node, expiry).
    entries: BTreeMap<LocalKey, LocalNode>,
    rev: u64,
}

impl LocalRegistrations {
    /// The revision: bumped at every change.
    pub(crate) fn rev(&self) -> u64 {
        self.rev
    }

    /// Adds or refreshes the service's nodes, to expire `ttl` after `now`; `true` if that
    /// changed anything (a refresh of the same registration does not).
    pub(crate) fn register(
        &mut self,
        service: &ServiceRecord,
        ttl: Option<Duration>,
        now: Instant,
    ) -> bool {
        let expiry = ttl.map(|t| now + t);
        let mut bare = service.clone();
        bare.nodes.clear();
        let mut changed = false;
        for node in &service.nodes {
            let key = (bare.name.clone(), bare.version.clone(), node.id.clone());
            let fresh = (bare.clone(), node.clone(), expiry);
            match self.entries.insert(key, fresh.clone()) {
                Some(old) => changed |= old.0 != fresh.0 || old.1 != fresh.1,
                None => changed = true,
            }
        }
        if changed {
            self.rev += 1;
        }
        changed
    }

    /// Removes the service's listed nodes; always a new revision (as before the split).
    pub(crate) fn deregister(&mut self, service: &ServiceRecord) {
        for node in &service.nodes {
            self.entries.remove(&(
                service.name.clone(),
                service.version.clone(),
                node.id.clone(),
            ));
        }
        self.rev += 1;
    }

    /// Drops the registrations whose expiry is not after `now`; `true` if any went.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|_, (_, _, expiry)| expiry.is_none_or(|at| at > now));
        let changed = self.entries.len() != before;
        if changed {
            self.rev += 1;
        }
        changed
    }

    /// The registrations, grouped by service version.
    pub(crate) fn services(&self) -> Vec<ServiceRecord> {
        let mut grouped: BTreeMap<(String, String), ServiceRecord> = BTreeMap::new();
        for ((name, version, _), (service, node, _)) in &self.entries {
            grouped
                .entry((name.clone(), version.clone()))
                .or_insert_with(|| service.clone())
                .nodes
                .push(node.clone());
        }
        grouped.into_values().collect()
    }
}

/// The mDNS registry actor: thin glue around the store (with its watchers), the
/// [`LocalRegistrations`] and the [`PeerView`]. It needs a node that listens
/// (`NodeBuilder::listen`): others fetch from it, and it fetches from them, over the runtime.
/// It exposes itself as `"registry"`.
pub struct MdnsRegistry {
    config: MdnsConfig,
    /// Everything known, local and learned, merged by service version (the store and its
    /// watchers).
    store: MemoryRegistry,
    local: LocalRegistrations,
    /// The other nodes (made when started: it needs this node's id).
    view: Option<PeerView<Addr<RegistryMsg>>>,
    fingerprint: String,
    announce: Option<Announcement>,
    daemon: Option<DaemonGuard>,
    /// This node's id and listen address, once started.
    own: Option<(NodeId, SocketAddr)>,
}

impl std::fmt::Debug for MdnsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsRegistry")
            .field("config", &self.config)
            .field("local", &self.local)
            .field("view", &self.view)
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
            local: LocalRegistrations::default(),
            view: None,
            fingerprint: String::new(),
            announce: None,
            daemon: None,
            own: None,
        }
    }

    /// A child spec named `"registry"`; after a crash it restarts empty, announces itself again
    /// and rebuilds what it knows by browsing.
    pub fn spec(config: MdnsConfig) -> ChildSpec<MdnsRegistry> {
        ChildSpec::new(move || MdnsRegistry::new(config.clone())).named("registry")
    }

    fn expire(&mut self) {
        self.store.expire();
        if self.local.expire(Instant::now()) {
            self.changed();
        }
    }

    /// A local change: the new revision, told to the registries this one knows (at once) and
    /// announced over mDNS (for the others; mDNS re-announces at most once a second).
    fn changed(&mut self) {
        let rev = self.local.rev();
        if let (Some((node, addr)), Some(view)) = (self.own, &self.view) {
            for registry in view.registries() {
                let _ = registry.send(
                    PeerMsg::Changed {
                        node: node.as_u128(),
                        addr,
                        rev,
                    }
                    .into(),
                );
            }
        }
        if let (Some(daemon), Some(announcement)) = (&self.daemon, &self.announce) {
            let announced = announcement
                .info(rev)
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
        if self.local.register(&service, ttl, Instant::now()) {
            self.changed();
        }
        Ok(())
    }

    fn deregister_local(&mut self, service: &ServiceRecord) -> Result<(), RegistryError> {
        self.store.deregister(service)?;
        self.local.deregister(service);
        self.changed();
        Ok(())
    }

    /// Does what the view asks.
    fn act(&mut self, ctx: &Context<Self>, actions: Vec<PeerAction<Addr<RegistryMsg>>>) {
        for action in actions {
            match action {
                PeerAction::Fetch { id, addr, token } => {
                    let node = ctx.node().clone();
                    let me = ctx.addr();
                    let timeout = self.config.fetch_timeout;
                    tokio::spawn(async move {
                        let fetched =
                            tokio::time::timeout(timeout, fetch_from(&node, id, addr, timeout))
                                .await
                                .unwrap_or(Err(RegistryError::Runtime(
                                    micro_runtime::Error::Timeout(timeout),
                                )));
                        let _ = me.send(RegistryMsg::Backend(BackendMsg(Kind::Fetched {
                            id,
                            token,
                            fetched,
                        })));
                    });
                }
                PeerAction::Introduce(registry) => {
                    if let Some((node, addr)) = self.own {
                        let _ = registry.send(
                            PeerMsg::Changed {
                                node: node.as_u128(),
                                addr,
                                rev: self.local.rev(),
                            }
                            .into(),
                        );
                    }
                }
                PeerAction::Withdraw(service) => {
                    let _ = self.store.deregister(&service);
                }
                PeerAction::Publish(service) => {
                    if let Err(err) = self.store.register(service, None) {
                        tracing::debug!(error = %err, "mDNS: skipped a service of a peer");
                    }
                }
            }
        }
    }

    fn on_backend(&mut self, ctx: &Context<Self>, BackendMsg(kind): BackendMsg) {
        if let Kind::Sweep = kind {
            self.expire();
            return;
        }
        let Some(view) = self.view.as_mut() else {
            return;
        };
        let actions = match kind {
            Kind::Sweep => Vec::new(),
            Kind::Resolved { id, addr, rev } => view.hint(id, addr, rev),
            Kind::Fetched { id, token, fetched } => view.fetched(id, token, fetched),
            Kind::Malformed => {
                view.malformed();
                Vec::new()
            }
            Kind::Removed { id } => {
                let linked = ctx
                    .node()
                    .peers()
                    .iter()
                    .any(|p| p.node == id && p.connected);
                view.goodbye(id, linked)
            }
            Kind::Lost { id } => view.lost(id),
        };
        self.act(ctx, actions);
    }

    fn on_peer(&mut self, ctx: &Context<Self>, msg: PeerMsg) {
        match msg {
            PeerMsg::Registrations { reply } => {
                self.expire();
                let _ = reply.send(self.local.services());
            }
            PeerMsg::Snapshot { reply } => {
                self.expire();
                let _ = reply.send(LocalState {
                    rev: self.local.rev(),
                    services: self.local.services(),
                });
            }
            PeerMsg::Stats { reply } => {
                let stats = self.view.as_ref().map(PeerView::stats).unwrap_or_default();
                let _ = reply.send(stats);
            }
            PeerMsg::Changed { node, addr, rev } => {
                let kind = Kind::Resolved {
                    id: NodeId::from_u128(node),
                    addr,
                    rev,
                };
                self.on_backend(ctx, BackendMsg(kind));
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
        .ask(|reply| PeerMsg::Snapshot { reply }.into(), timeout)
        .await
    {
        Ok(LocalState { rev, services }) => (Some(rev), services),
        // A registry from before `Snapshot` (`LocalAt` on the wire) cannot decode it: ask the old way. Its revision stays
        // unknown, so every hint about it is fetched.
        Err(micro_runtime::Error::Codec { .. }) => (
            None,
            registry
                .ask(|reply| PeerMsg::Registrations { reply }.into(), timeout)
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

/// The peers of other clusters already logged, so each is warned about once (not at every
/// announcement). Bounded: past [`ForeignPeers::LIMIT`] peers, new ones are not logged.
#[derive(Debug, Default)]
struct ForeignPeers(std::collections::HashSet<String>);

impl ForeignPeers {
    /// How many foreign peers are remembered at most.
    const LIMIT: usize = 1024;

    /// Whether this is the first announcement of `peer` seen (and there is room to remember it).
    fn first_sight(&mut self, peer: &str) -> bool {
        if self.0.len() >= Self::LIMIT || self.0.contains(peer) {
            return false;
        }
        self.0.insert(peer.to_owned())
    }
}

/// The daemon's browse for the service type, read as what the registry should hear of it.
struct Browsing {
    browse: mdns_sd::Receiver<ServiceEvent>,
    requery: std::pin::Pin<Box<tokio::time::Sleep>>,
    requeried: bool,
    daemon: ServiceDaemon,
    service_type: String,
    fingerprint: String,
    foreign: ForeignPeers,
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
                        Ok(None) => {
                            if b.foreign.first_sight(info.get_fullname()) {
                                tracing::warn!(
                                    peer = info.get_fullname(),
                                    their_cluster = info.get_property_val_str("cl").unwrap_or("none"),
                                    our_cluster = %b.fingerprint,
                                    "mDNS: ignored a node of another cluster (its CA differs); \
                                     give both nodes credentials of one cluster to link them"
                                );
                            }
                            continue;
                        }
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
        self.view = Some(PeerView::new(node.id()));
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
        guard.0.register(announcement.info(self.local.rev())?)?;
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
            foreign: ForeignPeers::default(),
        };
        ctx.forward(browsing.discoveries(), |kind| {
            RegistryMsg::Backend(BackendMsg(kind))
        });
        ctx.forward_broadcast(node.peer_events()?, |event| match event {
            Ok(PeerEvent::Down { node, .. }) => {
                Some(RegistryMsg::Backend(BackendMsg(Kind::Lost { id: node })))
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
                self.expire();
                let _ = reply.send(self.store.get(&name));
            }
            RegistryMsg::List { reply } => {
                self.expire();
                let _ = reply.send(self.store.list());
            }
            RegistryMsg::Watch { service, events } => self.store.watch(service, events),
            RegistryMsg::Stats { reply } => {
                let stats = self.view.as_ref().map(PeerView::stats).unwrap_or_default();
                #[allow(deprecated)] // filled for callers of before `mdns_stats`
                let stats = crate::RegistryStats {
                    peers: stats.peers,
                    malformed: stats.malformed,
                    failed_fetches: stats.failed_fetches,
                };
                let _ = reply.send(stats);
            }
            RegistryMsg::Peer(msg) => self.on_peer(ctx, msg),
            RegistryMsg::Backend(msg) => self.on_backend(ctx, msg),
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

    /// Another node.
    fn peer_a() -> NodeId {
        NodeId::from_u128(0xa)
    }

    /// This node.
    fn me() -> NodeId {
        NodeId::from_u128(0x1)
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    fn greeter(node: &str) -> ServiceRecord {
        ServiceRecord::new("greeter", "1.0").node(NodeRecord::new(node, "127.0.0.1:4000"))
    }

    /// What node A's registry answers: revision `rev`, these services; its handle is a name.
    fn answer(
        rev: u64,
        services: Vec<ServiceRecord>,
    ) -> Result<Fetched<&'static str>, RegistryError> {
        Ok(Fetched {
            rev: Some(rev),
            services,
            registry: "a's registry",
            addr: addr(),
        })
    }

    /// The token of the one fetch in `actions`.
    fn fetch_token(actions: &[PeerAction<&'static str>]) -> u64 {
        let fetches: Vec<u64> = actions
            .iter()
            .filter_map(|a| match a {
                PeerAction::Fetch { token, .. } => Some(*token),
                _ => None,
            })
            .collect();
        assert_eq!(fetches.len(), 1, "one fetch in {actions:?}");
        fetches[0]
    }

    #[test]
    fn a_hint_costs_one_fetch_and_hints_meanwhile_one_more_at_most() {
        let mut view = PeerView::new(me());
        assert!(
            view.hint(me(), addr(), 1).is_empty(),
            "our own announcement"
        );
        let token = fetch_token(&view.hint(peer_a(), addr(), 1));
        // Three more hints while the fetch runs: nothing now...
        for rev in 2..5 {
            assert!(view.hint(peer_a(), addr(), rev).is_empty());
        }
        // ...and one fetch after it, since A reported 1, not the 4 last hinted.
        let actions = view.fetched(peer_a(), token, answer(1, vec![greeter("a1")]));
        assert_eq!(
            actions[0],
            PeerAction::Introduce("a's registry"),
            "first seen"
        );
        assert!(actions.contains(&PeerAction::Publish(greeter("a1"))));
        let again = fetch_token(&actions);
        let actions = view.fetched(peer_a(), again, answer(4, vec![greeter("a1")]));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, PeerAction::Fetch { .. } | PeerAction::Introduce(_)))
        );
        // A hint of the revision A reported costs nothing.
        assert!(view.hint(peer_a(), addr(), 4).is_empty());
        assert_eq!(view.stats().peers, 1);
    }

    #[test]
    fn a_stolen_revision_is_never_recorded() {
        let mut view = PeerView::new(me());
        // Someone announces A at revision 99; A itself says 3.
        let token = fetch_token(&view.hint(peer_a(), addr(), 99));
        view.fetched(peer_a(), token, answer(3, vec![greeter("a1")]));
        // So 99 is not what A is at: the same bogus hint costs a fetch again (and only that),
        // while A's own revision costs nothing.
        assert!(view.hint(peer_a(), addr(), 3).is_empty());
        let token = fetch_token(&view.hint(peer_a(), addr(), 99));
        // An outcome with another token (a fetch abandoned earlier) is ignored.
        assert!(
            view.fetched(peer_a(), token + 1, answer(99, vec![greeter("evil")]))
                .is_empty()
        );
        let actions = view.fetched(peer_a(), token, answer(3, vec![greeter("a1")]));
        assert!(!actions.contains(&PeerAction::Publish(greeter("evil"))));
    }

    #[test]
    fn a_fetch_replaces_a_nodes_services_node_by_node() {
        let mut view = PeerView::new(me());
        let token = fetch_token(&view.hint(peer_a(), addr(), 1));
        let both = ServiceRecord::new("greeter", "1.0")
            .node(NodeRecord::new("a1", "x"))
            .node(NodeRecord::new("a2", "x"));
        view.fetched(peer_a(), token, answer(1, vec![both.clone()]));
        let token = fetch_token(&view.hint(peer_a(), addr(), 2));
        let one = ServiceRecord::new("greeter", "1.0").node(NodeRecord::new("a1", "x"));
        let actions = view.fetched(peer_a(), token, answer(2, vec![one.clone()]));
        let gone = ServiceRecord::new("greeter", "1.0").node(NodeRecord::new("a2", "x"));
        assert_eq!(
            actions,
            vec![PeerAction::Withdraw(gone), PeerAction::Publish(one)]
        );
    }

    #[test]
    fn a_goodbye_is_checked_while_the_node_is_linked() {
        let mut view = PeerView::new(me());
        assert!(view.goodbye(peer_a(), false).is_empty(), "an unknown node");
        let token = fetch_token(&view.hint(peer_a(), addr(), 1));
        view.fetched(peer_a(), token, answer(1, vec![greeter("a1")]));

        // Linked: A is asked, and answers: still there.
        let token = fetch_token(&view.goodbye(peer_a(), true));
        view.fetched(peer_a(), token, answer(1, vec![greeter("a1")]));
        assert_eq!(view.stats().peers, 1);

        // Linked, and the fetch fails: the goodbye is confirmed.
        let token = fetch_token(&view.goodbye(peer_a(), true));
        let failed = Err(RegistryError::Runtime(micro_runtime::Error::Timeout(
            Duration::from_secs(3),
        )));
        let actions = view.fetched(peer_a(), token, failed);
        assert_eq!(actions, vec![PeerAction::Withdraw(greeter("a1"))]);
        assert_eq!((view.stats().peers, view.stats().failed_fetches), (0, 1));

        // Not linked: believed at once, and a fetch in flight is abandoned.
        let token = fetch_token(&view.hint(peer_a(), addr(), 2));
        view.fetched(peer_a(), token, answer(2, vec![greeter("a1")]));
        let late = fetch_token(&view.hint(peer_a(), addr(), 3));
        assert_eq!(
            view.goodbye(peer_a(), false),
            vec![PeerAction::Withdraw(greeter("a1"))]
        );
        assert!(
            view.fetched(peer_a(), late, answer(3, vec![greeter("a1")]))
                .is_empty()
        );
    }

    #[test]
    fn a_lost_link_drops_the_node() {
        let mut view = PeerView::new(me());
        let token = fetch_token(&view.hint(peer_a(), addr(), 1));
        view.fetched(peer_a(), token, answer(1, vec![greeter("a1")]));
        assert_eq!(
            view.lost(peer_a()),
            vec![PeerAction::Withdraw(greeter("a1"))]
        );
        assert!(view.lost(peer_a()).is_empty());
        assert_eq!(view.stats().peers, 0);
    }

    #[test]
    fn local_registrations_bump_the_revision_only_when_they_change() {
        let mut local = LocalRegistrations::default();
        let t0 = Instant::now();
        let ttl = Some(Duration::from_secs(10));
        assert!(local.register(&greeter("n1"), ttl, t0));
        assert_eq!(local.rev(), 1);
        // A refresh changes nothing but the expiry (now 15 s).
        assert!(!local.register(&greeter("n1"), ttl, t0 + Duration::from_secs(5)));
        assert_eq!(local.rev(), 1);
        assert!(!local.expire(t0 + Duration::from_secs(12)));
        assert!(local.expire(t0 + Duration::from_secs(15)));
        assert_eq!(local.rev(), 2);
        assert!(local.services().is_empty());

        assert!(local.register(&greeter("n1"), None, t0));
        assert!(local.register(&greeter("n2"), None, t0));
        assert_eq!(local.services().len(), 1, "grouped by version");
        assert_eq!(local.services()[0].nodes.len(), 2);
        local.deregister(&greeter("n1"));
        assert_eq!(local.rev(), 5);
        assert_eq!(local.services(), vec![greeter("n2")]);
    }

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

    /// A node of another cluster is warned about once, however often it announces itself; each
    /// new such peer is warned about in turn, up to a bound.
    #[test]
    fn a_foreign_peer_is_logged_once() {
        let mut foreign = ForeignPeers::default();
        assert!(
            foreign.first_sight("a._micro._udp.local."),
            "first announcement"
        );
        assert!(!foreign.first_sight("a._micro._udp.local."), "said once");
        assert!(!foreign.first_sight("a._micro._udp.local."), "still once");
        assert!(foreign.first_sight("b._micro._udp.local."), "another peer");
        for i in 0..2 * ForeignPeers::LIMIT {
            let _ = foreign.first_sight(&format!("{i}._micro._udp.local."));
        }
        assert_eq!(
            foreign.0.len(),
            ForeignPeers::LIMIT,
            "the set stays bounded"
        );
        assert!(!foreign.first_sight("late._micro._udp.local."));
    }
}
