//! The memory backend: the registry kept in one actor's state. One node uses it alone, or several
//! nodes of one process share it through its address (tests, examples).

use std::collections::BTreeMap;
use std::time::Duration;

use micro_runtime::{Actor, ActorError, ChildSpec, Context, StreamSender};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backend::{BackendMsg, Kind, sweep};
use crate::protocol::RegistryMsg;
use crate::{Event, EventKind, NodeRecord, RegistryError, ServiceRecord};

/// Events queued for one watcher before it counts as stuck and is dropped.
const WATCHER_QUEUE: usize = 4096;

/// The in-memory registry actor: glue around a [`Store`] (the registrations and their expiry,
/// with time passed in) and [`Watchers`] (who is told what).
#[derive(Debug)]
pub struct MemoryRegistry {
    store: Store,
    watchers: Watchers,
    sweep_every: Duration,
}

impl MemoryRegistry {
    /// An empty registry that checks for expired nodes four times a second.
    pub fn new() -> Self {
        MemoryRegistry {
            store: Store::default(),
            watchers: Watchers::default(),
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
        service: ServiceRecord,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        if let Some(event) = self.store.register(service, ttl, Instant::now())? {
            self.watchers.publish(&event);
        }
        Ok(())
    }

    pub(crate) fn deregister(&mut self, service: &ServiceRecord) -> Result<(), RegistryError> {
        let event = self.store.deregister(service)?;
        self.watchers.publish(&event);
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Result<Vec<ServiceRecord>, RegistryError> {
        self.store.get(name)
    }

    pub(crate) fn list(&self) -> Vec<ServiceRecord> {
        self.store.list()
    }

    /// Drops the nodes whose TTL passed, telling watchers.
    pub(crate) fn expire(&mut self) {
        for event in self.store.expire(Instant::now()) {
            tracing::debug!(service = %event.service.name, kind = ?event.kind, "registration expired");
            self.watchers.publish(&event);
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
        self.watchers.add(service, queue);
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

/// The registrations, with their expiry: a state machine free of I/O. Each change returns the
/// [`Event`] it makes (none for a heartbeat); time is passed in.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// name → version → entry.
    services: BTreeMap<String, BTreeMap<String, Entry>>,
}

/// One service version: its description and its nodes with their expiry.
#[derive(Debug)]
struct Entry {
    /// The version's description; its `nodes` are kept in `nodes`.
    service: ServiceRecord,
    nodes: BTreeMap<String, (NodeRecord, Option<Instant>)>,
}

impl Store {
    /// Adds or refreshes the service's nodes, to expire `ttl` after `now`. `None` when nothing
    /// changed (a heartbeat).
    pub(crate) fn register(
        &mut self,
        mut service: ServiceRecord,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<Option<Event>, RegistryError> {
        if service.name.is_empty() {
            return Err(RegistryError::Invalid("the service has no name".to_owned()));
        }
        if service.nodes.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "service {:?} registers no node",
                service.name
            )));
        }
        let expires = ttl.map(|ttl| now + ttl);
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
                    return Ok(None);
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
        Ok(Some(Event {
            kind,
            service: entry.snapshot(),
        }))
    }

    /// Removes the service's listed nodes (the version goes with its last node).
    pub(crate) fn deregister(&mut self, service: &ServiceRecord) -> Result<Event, RegistryError> {
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
        Ok(if entry.nodes.is_empty() {
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
        })
    }

    /// Every version of `name`, or `NotFound`.
    pub(crate) fn get(&self, name: &str) -> Result<Vec<ServiceRecord>, RegistryError> {
        self.services
            .get(name)
            .map(|versions| versions.values().map(Entry::snapshot).collect())
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    /// Every service version.
    pub(crate) fn list(&self) -> Vec<ServiceRecord> {
        self.services
            .values()
            .flat_map(|versions| versions.values().map(Entry::snapshot))
            .collect()
    }

    /// Drops the nodes whose expiry is not after `now`; the events to tell, in order.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Event> {
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
        events
    }
}

impl Entry {
    fn snapshot(&self) -> ServiceRecord {
        let mut service = self.service.clone();
        service.nodes = self.nodes.values().map(|(node, _)| node.clone()).collect();
        service
    }
}

/// The watchers and what each wants: an event goes to the queue of every watcher of its
/// service (or of all); one whose queue is full (it fell behind) or closed is dropped. Never
/// waits.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    list: Vec<Watcher>,
}

#[derive(Debug)]
struct Watcher {
    service: Option<String>,
    queue: mpsc::Sender<Event>,
}

impl Watchers {
    /// A new watcher of `service` (or of all), fed through `queue`.
    pub(crate) fn add(&mut self, service: Option<String>, queue: mpsc::Sender<Event>) {
        self.list.push(Watcher { service, queue });
    }

    /// How many watchers there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Queues `event` for each watcher it concerns, dropping the stuck and the gone.
    pub(crate) fn publish(&mut self, event: &Event) {
        self.list.retain(|watcher| {
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
            // Nothing to learn from other nodes: the memory registry is shared, not replicated.
            RegistryMsg::Stats { reply } => {
                let _ = reply.send(crate::RegistryStats::default());
            }
            RegistryMsg::Backend(BackendMsg(Kind::Sweep)) => self.expire(),
            // No peers: the mDNS protocol is not spoken here (an ask gets `ReplyDropped`).
            RegistryMsg::Peer(_) | RegistryMsg::Backend(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeter(node: &str) -> ServiceRecord {
        ServiceRecord::new("greeter", "1.0").node(NodeRecord::new(node, "10.0.0.1:4000"))
    }

    #[test]
    fn a_registration_with_a_ttl_expires_unless_refreshed() {
        let mut store = Store::default();
        let t0 = Instant::now();
        let ttl = Some(Duration::from_secs(10));
        let created = store.register(greeter("a"), ttl, t0).unwrap();
        assert_eq!(created.map(|e| e.kind), Some(EventKind::Create));
        store.register(greeter("b"), None, t0).unwrap();

        // A heartbeat at 8 s tells nothing and pushes the expiry to 18 s.
        let t8 = t0 + Duration::from_secs(8);
        assert_eq!(store.register(greeter("a"), ttl, t8).unwrap(), None);
        assert!(store.expire(t0 + Duration::from_secs(12)).is_empty());

        // At 18 s node "a" goes; "b" has no TTL and stays: one update.
        let events = store.expire(t0 + Duration::from_secs(18));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Update);
        assert_eq!(events[0].service, greeter("b"));
        assert_eq!(store.get("greeter").unwrap(), vec![greeter("b")]);
    }

    #[test]
    fn the_last_node_expiring_deletes_the_version() {
        let mut store = Store::default();
        let t0 = Instant::now();
        store
            .register(greeter("a"), Some(Duration::from_secs(1)), t0)
            .unwrap();
        assert!(
            store.expire(t0).is_empty(),
            "not yet: expiry is strictly after"
        );
        let events = store.expire(t0 + Duration::from_secs(1));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Delete);
        assert_eq!(events[0].service, greeter("a"), "as it was");
        assert!(store.list().is_empty());
        assert!(matches!(
            store.get("greeter"),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn registrations_without_name_or_node_are_refused() {
        let mut store = Store::default();
        let now = Instant::now();
        let nameless = ServiceRecord::new("", "1").node(NodeRecord::new("a", "x"));
        assert!(store.register(nameless, None, now).is_err());
        assert!(
            store
                .register(ServiceRecord::new("greeter", "1"), None, now)
                .is_err()
        );
    }

    #[test]
    fn watchers_get_their_service_and_one_that_falls_behind_is_dropped() {
        let mut watchers = Watchers::default();
        let (all, mut all_rx) = mpsc::channel(8);
        let (greeter_only, mut greeter_rx) = mpsc::channel(8);
        let (slow, _slow_rx) = mpsc::channel(1);
        watchers.add(None, all);
        watchers.add(Some("greeter".to_owned()), greeter_only);
        watchers.add(None, slow);

        let event = |name: &str| Event {
            kind: EventKind::Create,
            service: ServiceRecord::new(name, "1"),
        };
        watchers.publish(&event("greeter"));
        assert_eq!(watchers.len(), 3);
        // The slow one's queue (one place) is full now: the next event drops it.
        watchers.publish(&event("pricer"));
        assert_eq!(watchers.len(), 2);

        assert_eq!(all_rx.try_recv().unwrap().service.name, "greeter");
        assert_eq!(all_rx.try_recv().unwrap().service.name, "pricer");
        assert_eq!(greeter_rx.try_recv().unwrap().service.name, "greeter");
        assert!(
            greeter_rx.try_recv().is_err(),
            "not told of another service"
        );

        // A watcher whose stream went away is dropped at the next event.
        drop(all_rx);
        watchers.publish(&event("greeter"));
        assert_eq!(watchers.len(), 1);
    }
}
