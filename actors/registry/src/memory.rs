//! The memory backend: the registry kept in one actor's state. One node uses it alone, or several
//! nodes of one process share it through its address (tests, examples).

use std::collections::BTreeMap;
use std::time::Duration;

use micro_runtime::{Actor, ActorError, ChildSpec, Context, StreamSender};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::internal::{Internal, Kind, sweep};
use crate::protocol::RegistryMsg;
use crate::{Event, EventKind, NodeRecord, RegistryError, ServiceRecord};

/// Events queued for one watcher before it counts as stuck and is dropped.
const WATCHER_QUEUE: usize = 4096;

/// The in-memory registry actor.
#[derive(Debug)]
pub struct MemoryRegistry {
    /// name → version → entry.
    services: BTreeMap<String, BTreeMap<String, Entry>>,
    watchers: Vec<Watcher>,
    sweep_every: Duration,
}

#[derive(Debug)]
struct Entry {
    /// The version's description; its `nodes` are kept in `nodes`.
    service: ServiceRecord,
    nodes: BTreeMap<String, (NodeRecord, Option<Instant>)>,
}

#[derive(Debug)]
struct Watcher {
    service: Option<String>,
    queue: mpsc::Sender<Event>,
}

impl MemoryRegistry {
    /// An empty registry that checks for expired nodes four times a second.
    pub fn new() -> Self {
        MemoryRegistry {
            services: BTreeMap::new(),
            watchers: Vec::new(),
            sweep_every: Duration::from_millis(250),
        }
    }

    /// How often expired registrations are dropped.
    #[must_use]
    pub fn sweep_every(mut self, period: Duration) -> Self {
        self.sweep_every = period;
        self
    }

    /// A child spec for a fresh memory registry named `"registry"` (restarted empty after a
    /// crash: services register again with their next heartbeat).
    pub fn spec() -> ChildSpec<MemoryRegistry> {
        ChildSpec::new(MemoryRegistry::new).named("registry")
    }

    pub(crate) fn register(
        &mut self,
        mut service: ServiceRecord,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        if service.name.is_empty() {
            return Err(RegistryError::Invalid("the service has no name".to_owned()));
        }
        if service.nodes.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "service {:?} registers no node",
                service.name
            )));
        }
        let expires = ttl.map(|ttl| Instant::now() + ttl);
        let nodes = std::mem::take(&mut service.nodes);
        let versions = self.services.entry(service.name.clone()).or_default();
        let (kind, entry) = match versions.get_mut(&service.version) {
            Some(entry) => {
                let mut changed = entry.service != service;
                entry.service = service;
                for node in nodes {
                    match entry.nodes.get_mut(&node.id) {
                        Some((known, expiry)) => {
                            changed |= *known != node;
                            *known = node;
                            *expiry = expires;
                        }
                        None => {
                            changed = true;
                            entry.nodes.insert(node.id.clone(), (node, expires));
                        }
                    }
                }
                if !changed {
                    // A heartbeat: nothing to tell.
                    return Ok(());
                }
                (EventKind::Update, entry)
            }
            None => {
                let version = service.version.clone();
                let entry = Entry {
                    service,
                    nodes: nodes
                        .into_iter()
                        .map(|n| (n.id.clone(), (n, expires)))
                        .collect(),
                };
                (EventKind::Create, versions.entry(version).or_insert(entry))
            }
        };
        let event = Event {
            kind,
            service: entry.snapshot(),
        };
        self.publish(event);
        Ok(())
    }

    pub(crate) fn deregister(&mut self, service: &ServiceRecord) -> Result<(), RegistryError> {
        let Some(versions) = self.services.get_mut(&service.name) else {
            return Err(RegistryError::NotFound(service.name.clone()));
        };
        let Some(entry) = versions.get_mut(&service.version) else {
            return Err(RegistryError::NotFound(format!(
                "{} {}",
                service.name, service.version
            )));
        };
        let before = entry.snapshot();
        for node in &service.nodes {
            entry.nodes.remove(&node.id);
        }
        let event = if entry.nodes.is_empty() {
            versions.remove(&service.version);
            if versions.is_empty() {
                self.services.remove(&service.name);
            }
            Event {
                kind: EventKind::Delete,
                service: before,
            }
        } else {
            Event {
                kind: EventKind::Update,
                service: entry.snapshot(),
            }
        };
        self.publish(event);
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Result<Vec<ServiceRecord>, RegistryError> {
        self.services
            .get(name)
            .map(|versions| versions.values().map(Entry::snapshot).collect())
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    pub(crate) fn list(&self) -> Vec<ServiceRecord> {
        self.services
            .values()
            .flat_map(|versions| versions.values().map(Entry::snapshot))
            .collect()
    }

    /// Drops the nodes whose TTL passed, telling watchers.
    pub(crate) fn expire(&mut self) {
        let now = Instant::now();
        let mut events = Vec::new();
        self.services.retain(|_, versions| {
            versions.retain(|_, entry| {
                let before = entry.snapshot();
                let count = entry.nodes.len();
                entry
                    .nodes
                    .retain(|_, (_, expiry)| expiry.is_none_or(|at| at > now));
                if entry.nodes.len() == count {
                    return true;
                }
                if entry.nodes.is_empty() {
                    events.push(Event {
                        kind: EventKind::Delete,
                        service: before,
                    });
                    false
                } else {
                    events.push(Event {
                        kind: EventKind::Update,
                        service: entry.snapshot(),
                    });
                    true
                }
            });
            !versions.is_empty()
        });
        for event in events {
            tracing::debug!(service = %event.service.name, kind = ?event.kind, "registration expired");
            self.publish(event);
        }
    }

    pub(crate) fn watch(&mut self, service: Option<String>, mut events: StreamSender<Event>) {
        let (queue, mut rx) = mpsc::channel::<Event>(WATCHER_QUEUE);
        // One task per watcher, so a slow one never holds the registry up.
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if events.send(event).await.is_err() {
                    return;
                }
            }
            let _ = events.finish().await;
        });
        self.watchers.push(Watcher { service, queue });
    }

    fn publish(&mut self, event: Event) {
        self.watchers.retain(|watcher| {
            if watcher
                .service
                .as_ref()
                .is_some_and(|name| *name != event.service.name)
            {
                return !watcher.queue.is_closed();
            }
            match watcher.queue.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("dropping a registry watcher that fell behind");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

impl Entry {
    fn snapshot(&self) -> ServiceRecord {
        let mut service = self.service.clone();
        service.nodes = self.nodes.values().map(|(node, _)| node.clone()).collect();
        service
    }
}

impl Actor for MemoryRegistry {
    type Msg = RegistryMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // The expiry ticker ends with this incarnation, even after a panic.
        ctx.tick(self.sweep_every, sweep);
        Ok(())
    }

    async fn handle(
        &mut self,
        _ctx: &mut Context<Self>,
        msg: RegistryMsg,
    ) -> Result<(), ActorError> {
        match msg {
            RegistryMsg::Register {
                service,
                ttl_ms,
                reply,
            } => {
                let ttl = ttl_ms.map(Duration::from_millis);
                let _ = reply.send(self.register(service, ttl));
            }
            RegistryMsg::Deregister { service, reply } => {
                let _ = reply.send(self.deregister(&service));
            }
            RegistryMsg::Get { name, reply } => {
                self.expire();
                let _ = reply.send(self.get(&name));
            }
            RegistryMsg::List { reply } => {
                self.expire();
                let _ = reply.send(self.list());
            }
            RegistryMsg::Watch { service, events } => self.watch(service, events),
            RegistryMsg::Local { reply } => {
                self.expire();
                let _ = reply.send(self.list());
            }
            RegistryMsg::LocalAt { reply } => {
                self.expire();
                let _ = reply.send(crate::LocalState {
                    rev: 0,
                    services: self.list(),
                });
            }
            // Nothing to learn from other nodes: the memory registry is shared, not replicated.
            RegistryMsg::Stats { reply } => {
                let _ = reply.send(crate::RegistryStats::default());
            }
            RegistryMsg::Internal(Internal(Kind::Sweep)) => self.expire(),
            RegistryMsg::Changed { .. } | RegistryMsg::Internal(_) => {}
        }
        Ok(())
    }
}
