//! Choosing a node for a call: the client's view of a service (rebuilt only when the registry
//! cache changes), filters, strategies and the ejection of failing nodes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use micro_runtime::{Addr, NodeId};
use rustc_hash::FxBuildHasher;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::Metadata;
use crate::service::{IDEMPOTENT_KEY, SHAPE_KEY};
use crate::wire::{EndpointMsg, actor_name};

/// How a client picks among the nodes that serve an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selector {
    /// Uniformly at random (Go Micro's default).
    #[default]
    Random,
    /// Each node in turn, per endpoint: with N nodes, N calls reach N different nodes.
    RoundRobin,
    /// The node with the fewest calls outstanding from this client (ties broken at random);
    /// the calls counted are those that select this way.
    LeastOutstanding,
}

/// Which nodes may serve a call: a version, and metadata entries that must match (on the node,
/// or on its service version).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    version: Option<String>,
    metadata: Vec<(String, String)>,
}

impl Filter {
    /// Accepts every node.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only nodes of this service version.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Only nodes whose metadata (or their service version's) has `key = value`.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    pub(crate) fn accepts(&self, node: &NodeView) -> bool {
        if let Some(version) = &self.version
            && &node.version != version
        {
            return false;
        }
        self.metadata
            .iter()
            .all(|(k, v)| node.metadata.get(k).is_some_and(|have| have == v))
    }

    pub(crate) fn is_any(&self) -> bool {
        self.version.is_none() && self.metadata.is_empty()
    }
}

/// One node serving a service, as the registry described it.
#[derive(Debug)]
pub(crate) struct NodeView {
    pub(crate) id: NodeId,
    pub(crate) address: Option<SocketAddr>,
    pub(crate) version: String,
    /// The service version's metadata, overlaid by the node's.
    pub(crate) metadata: Metadata,
    pub(crate) health: Arc<NodeHealth>,
}

/// One endpoint of a service: who serves it, and the addresses of its actors (looked up once).
#[derive(Debug)]
pub(crate) struct EndpointView {
    pub(crate) name: Arc<str>,
    /// The response's type name, as the service registered it (named when a response does not
    /// decode).
    pub(crate) response: Arc<str>,
    pub(crate) idempotent: bool,
    pub(crate) stream: bool,
    /// Indexes into the view's nodes.
    pub(crate) nodes: Vec<usize>,
    /// The endpoint actor's address on each of those nodes, in the same order.
    pub(crate) addrs: Vec<Arc<OnceCell<Addr<EndpointMsg>>>>,
    pub(crate) actor: String,
    next: AtomicUsize,
}

/// A view's generation once it must be rebuilt before its next use whatever the cache's
/// generation is: one of its nodes was lost, or every one of them is.
pub(crate) const STALE: u64 = u64::MAX;

/// A service as the client sees it, derived from one generation of the registry cache.
#[derive(Debug)]
pub(crate) struct ServiceView {
    /// The cache generation it was built from, or [`STALE`]. (An atomic read relaxed costs what
    /// a plain one does: the call's path reads it as before.)
    pub(crate) generation: AtomicU64,
    pub(crate) name: Arc<str>,
    pub(crate) nodes: Vec<NodeView>,
    pub(crate) endpoints: HashMap<String, EndpointView, FxBuildHasher>,
}

impl ServiceView {
    /// Builds the view; addresses already looked up by `previous` are kept.
    pub(crate) fn build(
        name: &str,
        generation: u64,
        versions: &[micro_registry::ServiceRecord],
        previous: Option<&ServiceView>,
        health: &dyn Fn(NodeId) -> Arc<NodeHealth>,
    ) -> Self {
        let mut nodes: Vec<NodeView> = Vec::new();
        let mut endpoints: HashMap<String, EndpointView, FxBuildHasher> = HashMap::default();
        for version in versions {
            for node in &version.nodes {
                let Some(id) = u128::from_str_radix(&node.id, 16)
                    .ok()
                    .map(NodeId::from_u128)
                else {
                    tracing::debug!(service = name, node = %node.id, "skipping a node with a foreign id");
                    continue;
                };
                if nodes.iter().any(|n| n.id == id) {
                    continue;
                }
                let mut metadata = version.metadata.clone();
                metadata.extend(node.metadata.clone());
                let index = nodes.len();
                nodes.push(NodeView {
                    id,
                    address: node.address.parse().ok(),
                    version: version.version.clone(),
                    metadata,
                    health: health(id),
                });
                for endpoint in &version.endpoints {
                    let view =
                        endpoints
                            .entry(endpoint.name.clone())
                            .or_insert_with(|| EndpointView {
                                name: endpoint.name.as_str().into(),
                                response: endpoint.response.as_str().into(),
                                idempotent: endpoint
                                    .metadata
                                    .get(IDEMPOTENT_KEY)
                                    .is_some_and(|v| v == "true"),
                                stream: endpoint
                                    .metadata
                                    .get(SHAPE_KEY)
                                    .is_some_and(|v| v != "unary"),
                                nodes: Vec::new(),
                                addrs: Vec::new(),
                                actor: actor_name(name, &endpoint.name),
                                next: AtomicUsize::new(0),
                            });
                    let kept = previous.and_then(|p| p.addr_slot(&endpoint.name, id));
                    view.nodes.push(index);
                    view.addrs.push(kept.unwrap_or_default());
                }
            }
        }
        // A stable order, so that round-robin is fair across rebuilds.
        for view in endpoints.values_mut() {
            let mut pairs: Vec<_> = view
                .nodes
                .iter()
                .copied()
                .zip(view.addrs.drain(..))
                .collect();
            pairs.sort_by_key(|(i, _)| nodes[*i].id);
            let (order, addrs): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            view.nodes = order;
            view.addrs = addrs;
        }
        ServiceView {
            generation: AtomicU64::new(generation),
            name: name.into(),
            nodes,
            endpoints,
        }
    }

    /// Whether `node` serves this service.
    pub(crate) fn has_node(&self, node: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == node)
    }

    /// When the service has nodes and the links to all of them are known lost: their names.
    pub(crate) fn lost_nodes(&self) -> Option<String> {
        let all_lost = !self.nodes.is_empty() && self.nodes.iter().all(|n| n.health.is_lost());
        all_lost.then(|| lost_names(self.nodes.iter().map(|n| n.id)))
    }

    fn addr_slot(&self, endpoint: &str, node: NodeId) -> Option<Arc<OnceCell<Addr<EndpointMsg>>>> {
        let view = self.endpoints.get(endpoint)?;
        view.nodes
            .iter()
            .position(|&i| self.nodes[i].id == node)
            .map(|slot| view.addrs[slot].clone())
    }

    /// Picks a slot of `endpoint`'s nodes: accepted by `filter`, not ejected (unless all are),
    /// not in `tried` (unless all are). `None` when the filter leaves nothing. (No allocation:
    /// it runs on every call.)
    pub(crate) fn pick(
        &self,
        endpoint: &EndpointView,
        strategy: Selector,
        filter: &Filter,
        tried: &[usize],
        now_ms: &dyn Fn() -> u64,
    ) -> Option<usize> {
        if endpoint.nodes.len() == 1 && filter.is_any() {
            // Every test below falls back to the only node.
            return Some(0);
        }
        let node = |slot: usize| &self.nodes[endpoint.nodes[slot]];
        let accepted = |slot: usize| filter.is_any() || filter.accepts(node(slot));
        let untried = |slot: usize| accepted(slot) && !tried.contains(&slot);
        let healthy = |slot: usize| untried(slot) && !node(slot).health.is_ejected(now_ms);
        let slots = 0..endpoint.nodes.len();
        // The strictest test that leaves someone: healthy and untried, then untried, then any.
        let tests: [&dyn Fn(usize) -> bool; 3] = [&healthy, &untried, &accepted];
        let (test, count) = tests.into_iter().find_map(|test| {
            let count = slots.clone().filter(|&s| test(s)).count();
            (count > 0).then_some((test, count))
        })?;
        let nth = |n: usize| slots.clone().filter(|&s| test(s)).nth(n);
        match strategy {
            Selector::Random => nth(rand::random_range(0..count)),
            Selector::RoundRobin => nth(endpoint.next.fetch_add(1, Ordering::Relaxed) % count),
            Selector::LeastOutstanding => {
                // The least loaded, ties broken by a random starting point.
                let start = rand::random_range(0..count);
                let candidates = slots.clone().filter(|&s| test(s));
                candidates
                    .clone()
                    .skip(start)
                    .chain(candidates.take(start))
                    .min_by_key(|&s| node(s).health.outstanding())
            }
        }
    }
}

/// What a client knows of one node's health: calls outstanding, consecutive failures, whether
/// it is ejected for now, and whether the link to it is known lost.
#[derive(Debug, Default)]
pub(crate) struct NodeHealth {
    outstanding: AtomicUsize,
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
    lost: AtomicBool,
}

/// "node a" or "nodes a, b", as the runtime names nodes in its errors.
pub(crate) fn lost_names(nodes: impl Iterator<Item = NodeId>) -> String {
    let names: Vec<String> = nodes.map(|id| id.to_string()).collect();
    match names.len() {
        1 => format!("node {}", names[0]),
        _ => format!("nodes {}", names.join(", ")),
    }
}

/// When a node is ejected, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive failures that eject a node (default 3).
    pub after_failures: u32,
    /// How long the first ejection lasts (default 1 s); each further one in a row doubles it.
    pub duration: Duration,
    /// The longest ejection (default 30 s).
    pub max_duration: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            after_failures: 3,
            duration: Duration::from_secs(1),
            max_duration: Duration::from_secs(30),
        }
    }
}

impl NodeHealth {
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub(crate) fn begin(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the node is ejected now; `now_ms` is read only for a node ever ejected.
    pub(crate) fn is_ejected(&self, now_ms: impl FnOnce() -> u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the link to the node is known lost (down, and not up again since).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The link to the node went down: it is ejected until it comes back up.
    pub(crate) fn link_down(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.ejected_until_ms.store(u64::MAX, Ordering::Relaxed);
    }

    /// The link to the node is up (again): a fresh start.
    pub(crate) fn link_up(&self) {
        if self.lost.swap(false, Ordering::Relaxed) {
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; ejects the node after enough in a row. True when this ejected it.
    pub(crate) fn failed(&self, policy: &Ejection, now_ms: u64) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.after_failures.max(1) {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let times = self.ejections.fetch_add(1, Ordering::Relaxed);
        let factor = 1u32.checked_shl(times.min(16)).unwrap_or(u32::MAX);
        let duration = policy
            .duration
            .saturating_mul(factor)
            .min(policy.max_duration);
        let until = now_ms + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 2);
        if !self.is_lost() {
            // (A lost node stays ejected until its link is up again.)
            self.ejected_until_ms.store(until, Ordering::Relaxed);
        }
        true
    }
}

/// Milliseconds on the client's clock.
pub(crate) fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(nodes: usize) -> ServiceView {
        let mut versions = Vec::new();
        let mut service = micro_registry::ServiceRecord::new("svc", "1");
        service
            .endpoints
            .push(micro_registry::EndpointRecord::new("Svc.Do", "Req", "Resp"));
        for i in 0..nodes {
            let mut node = micro_registry::NodeRecord::new(format!("{:032x}", i + 1), "");
            node.metadata
                .insert("zone".into(), if i == 0 { "eu" } else { "us" }.into());
            service.nodes.push(node);
        }
        versions.push(service);
        ServiceView::build("svc", 0, &versions, None, &|_| Arc::default())
    }

    #[test]
    fn round_robin_visits_every_node_in_turn() {
        let view = view_of(3);
        let endpoint = &view.endpoints["Svc.Do"];
        let picks: Vec<_> = (0..6)
            .map(|_| view.pick(endpoint, Selector::RoundRobin, &Filter::any(), &[], &|| 0))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn ejected_and_tried_nodes_are_skipped_unless_nothing_else_is_left() {
        let view = view_of(3);
        let endpoint = &view.endpoints["Svc.Do"];
        let policy = Ejection::default();
        let health = |slot: usize| &view.nodes[endpoint.nodes[slot]].health;
        for _ in 0..policy.after_failures {
            health(0).failed(&policy, 1_000);
        }
        assert!(health(0).is_ejected(|| 1_500));
        assert!(
            !health(0).is_ejected(|| 2_001),
            "an ejection lasts a second at first"
        );
        for _ in 0..50 {
            let pick = view.pick(endpoint, Selector::Random, &Filter::any(), &[1], &|| 1_500);
            assert_eq!(pick, Some(2), "0 is ejected and 1 was tried");
        }
        // Everyone tried or ejected: fall back to what the filter allows.
        let pick = view.pick(endpoint, Selector::Random, &Filter::any(), &[1, 2], &|| {
            1_500
        });
        assert_eq!(pick, Some(0));
        // A filter that matches nobody leaves nothing.
        let none = Filter::any().meta("zone", "mars");
        assert_eq!(
            view.pick(endpoint, Selector::Random, &none, &[], &|| 0),
            None
        );
        let eu = Filter::any().meta("zone", "eu");
        assert_eq!(
            view.pick(endpoint, Selector::Random, &eu, &[], &|| 1_500),
            Some(0)
        );
        // A second ejection in a row lasts twice as long.
        for _ in 0..policy.after_failures {
            health(0).failed(&policy, 3_000);
        }
        assert!(health(0).is_ejected(|| 4_500));
        health(0).succeeded();
    }

    #[test]
    fn a_lost_node_stays_ejected_until_its_link_is_up_again() {
        let view = view_of(2);
        let endpoint = &view.endpoints["Svc.Do"];
        let policy = Ejection::default();
        let health = |slot: usize| &view.nodes[endpoint.nodes[slot]].health;
        health(0).link_down();
        // Failures counted meanwhile do not shorten its ejection.
        for _ in 0..policy.after_failures {
            health(0).failed(&policy, 1_000);
        }
        for _ in 0..20 {
            let pick = view.pick(endpoint, Selector::Random, &Filter::any(), &[], &|| 60_000);
            assert_eq!(pick, Some(1), "0 is lost");
        }
        assert_eq!(view.lost_nodes(), None, "1 is not lost");
        health(1).link_down();
        assert_eq!(
            view.lost_nodes().as_deref(),
            Some(format!("nodes {}, {}", view.nodes[0].id, view.nodes[1].id).as_str())
        );
        health(0).link_up();
        assert!(!health(0).is_ejected(|| 60_000));
        assert_eq!(view.lost_nodes(), None);
    }

    #[test]
    fn least_outstanding_prefers_the_idle_node() {
        let view = view_of(3);
        let endpoint = &view.endpoints["Svc.Do"];
        let health = |slot: usize| &view.nodes[endpoint.nodes[slot]].health;
        health(0).begin();
        health(0).begin();
        health(2).begin();
        for _ in 0..20 {
            let pick = view.pick(
                endpoint,
                Selector::LeastOutstanding,
                &Filter::any(),
                &[],
                &|| 0,
            );
            assert_eq!(pick, Some(1));
        }
    }
}
