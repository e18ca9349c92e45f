//! A client-side cache fed by a watch: resolving a name never waits on the registry once the cache
//! is warm.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use micro_runtime::AbortOnDrop;

use crate::{Event, EventKind, Registry, RegistryError, ServiceRecord};

/// How long the cache waits before watching again after its watch ended.
const RESUBSCRIBE: Duration = Duration::from_millis(100);

type Services = Arc<Known>;

/// What the cache knows, and a count of the changes applied to it.
#[derive(Debug, Default)]
struct Known {
    services: RwLock<HashMap<String, Vec<ServiceRecord>>>,
    generation: AtomicU64,
}

impl Known {
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Services by name, kept current by a watch on the registry.
///
/// It watches every service, then loads the full list, then applies each change as it comes
/// (events carry the whole version, so applying one twice is harmless). If the watch ends — the
/// registry restarted — it forgets what it knew and starts again.
#[derive(Debug)]
pub struct RegistryCache {
    registry: Registry,
    services: Services,
    /// Aborted when the cache is dropped.
    _follower: AbortOnDrop,
}

impl RegistryCache {
    /// Starts following `registry`; returns once the first full list is loaded.
    pub async fn start(registry: Registry) -> Result<Self, RegistryError> {
        let services: Services = Arc::default();
        let first = sync(&registry, &services).await?;
        let follower = AbortOnDrop::spawn(follow(registry.clone(), services.clone(), first));
        Ok(RegistryCache {
            registry,
            services,
            _follower: follower,
        })
    }

    /// The versions of `name`: from the cache when it knows them, else from the registry (and
    /// then cached).
    pub async fn resolve(&self, name: &str) -> Result<Vec<ServiceRecord>, RegistryError> {
        if let Some(found) = self.cached(name) {
            return Ok(found);
        }
        let found = self.registry.get_service(name).await?;
        if let Ok(mut services) = self.services.services.write() {
            services.insert(name.to_owned(), found.clone());
        }
        self.services.changed();
        Ok(found)
    }

    /// What the cache holds for `name`, without asking anyone.
    pub fn cached(&self, name: &str) -> Option<Vec<ServiceRecord>> {
        self.services.services.read().ok()?.get(name).cloned()
    }

    /// A number that changes whenever what the cache holds changes: callers that derive state
    /// from it (a client's view of a service's nodes) rebuild only when it moved.
    pub fn generation(&self) -> u64 {
        self.services.generation.load(Ordering::Acquire)
    }

    /// Every service name the cache knows.
    pub fn names(&self) -> Vec<String> {
        self.services
            .services
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Watches first, then lists, so no change falls between the two.
async fn sync(
    registry: &Registry,
    services: &Services,
) -> Result<micro_runtime::StreamReceiver<Event>, RegistryError> {
    let events = registry.watch(None)?;
    let all = registry.list_services().await?;
    let mut fresh: HashMap<String, Vec<ServiceRecord>> = HashMap::new();
    for service in all {
        fresh.entry(service.name.clone()).or_default().push(service);
    }
    if let Ok(mut known) = services.services.write() {
        *known = fresh;
    }
    services.changed();
    Ok(events)
}

async fn follow(
    registry: Registry,
    services: Services,
    mut events: micro_runtime::StreamReceiver<Event>,
) {
    loop {
        while let Some(Ok(event)) = events.recv().await {
            apply(&services, event);
        }
        // The watch ended: the registry restarted or went away. Start over.
        loop {
            tokio::time::sleep(RESUBSCRIBE).await;
            match sync(&registry, &services).await {
                Ok(fresh) => {
                    events = fresh;
                    break;
                }
                Err(err) => tracing::debug!(error = %err, "registry cache: resubscribing failed"),
            }
        }
    }
}

fn apply(services: &Services, event: Event) {
    apply_to(&services.services, event);
    services.changed();
}

fn apply_to(services: &RwLock<HashMap<String, Vec<ServiceRecord>>>, event: Event) {
    let Ok(mut services) = services.write() else {
        return;
    };
    let name = event.service.name.clone();
    let versions = services.entry(name.clone()).or_default();
    versions.retain(|v| v.version != event.service.version);
    if event.kind != EventKind::Delete {
        versions.push(event.service);
    }
    if versions.is_empty() {
        services.remove(&name);
    }
}
