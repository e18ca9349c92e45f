//! [`Client`]: calls services by name — resolve in the registry cache, select a node, call its
//! endpoint actor — with deadlines, headers, retries on other nodes, ejection of failing nodes,
//! an in-flight cap, wrappers, and streaming calls.

mod attempts;
mod retry;
mod select;

use std::any::type_name;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use micro_registry::{Registry, RegistryCache};
use micro_runtime::{Addr, ContentType, Node, NodeId, stream_channel};
use rustc_hash::FxBuildHasher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use retry::{RetryBudget, RetryPolicy};
pub use select::{Ejection, Filter, Selector};

use self::attempts::{Attempts, Settled};
use self::select::{EndpointView, NodeHealth, ServiceView};
use crate::body::Body;
use crate::error::{CLIENT_ID, SERVER_ID};
use crate::service::default_registry;
use crate::shape::{mismatch_tail, request_id_of, shape_id};
use crate::wire::{Answer, EndpointMsg, Head, Headers, StreamItem, call_data, put_response_type};
use crate::wrapper::Next;
use crate::{BoxFuture, Incoming, Metadata, Outgoing, Request, Response, ServiceError, Wrapper};

/// Per-call options: deadline, retries, headers, content type, node filter.
///
/// ```
/// use micro_runtime::ContentType;
/// use micro_service::{CallOptions, Filter};
/// use std::time::Duration;
///
/// let options = CallOptions::new()
///     .timeout(Duration::from_millis(500))
///     .header("lang", "fr")
///     .content_type(ContentType::Json)
///     .filter(Filter::any().version("1.0.0"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    retries: Option<u32>,
    metadata: Metadata,
    content_type: ContentType,
    filter: Filter,
    strategy: Option<Selector>,
    idempotent: Option<bool>,
    wait_for_replica: bool,
    unchecked: bool,
}

impl CallOptions {
    /// The client's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole call's deadline, retries included; the time left travels with each attempt and
    /// the handler is cancelled when it passes. Default: the client's (5 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retries after the first attempt (default: the client's policy).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// A header for the handler.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// All the headers at once.
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// How the request is encoded, and so the response (default bincode).
    #[must_use]
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// Which nodes may serve the call.
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Another selection strategy for this call.
    #[must_use]
    pub fn strategy(mut self, strategy: Selector) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Overrides whether the endpoint counts as idempotent (by default, as it registered).
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Waits, within the deadline, for a replica to register when the service has none that
    /// can be reached — every node it had is known lost (its link went down), or the registry
    /// lists none — instead of failing at once. Default: fail at once (503 naming the lost
    /// nodes, or a 404 for a service this client saw before), except that a service this client
    /// has never seen is waited for a little ([`ClientBuilder::wait_for_unknown`]).
    #[must_use]
    pub fn wait_for_replica(mut self) -> Self {
        self.wait_for_replica = true;
        self
    }

    /// Skips the type check of [`Client::call`] and [`Client::call_with`]: in a binary codec
    /// the request's shape id ([`shape_id`](crate::shape_id)) is not sent, so the endpoint
    /// decodes whatever comes. For types whose `Serialize` and `Deserialize` differ in shape
    /// (`from`/`into`, names that differ between the two). Default: checked.
    #[must_use]
    pub fn unchecked(mut self) -> Self {
        self.unchecked = true;
        self
    }
}

/// The type check of one typed call: the request's shape id to send, in a binary codec (JSON
/// is checked by decoding).
#[derive(Clone, Copy, Default)]
struct Check {
    request: Option<u64>,
}

impl Check {
    fn new<Req: Serialize + ?Sized>(request: &Req, options: &CallOptions) -> Check {
        if options.unchecked || options.content_type == ContentType::Json {
            return Check::default();
        }
        Check {
            request: request_id_of(request),
        }
    }

    /// An endpoint's 400 for a request of another type names the type it expects and the id it
    /// got; this puts the caller's type name in place of the id.
    fn name_request<Req: ?Sized>(&self, mut err: ServiceError) -> ServiceError {
        if let Some(id) = self.request
            && err.code == 400
        {
            let tail = mismatch_tail(id);
            if let Some(head) = err.detail.strip_suffix(&tail) {
                err.detail = format!("{head}got {}", type_name::<Req>());
            }
        }
        err
    }
}

/// The type check of a stream: the shape ids of its request and response types, sent when it
/// opens (binary codecs; JSON is checked by decoding).
#[derive(Clone, Copy, Default)]
struct StreamTypes {
    request: Option<u64>,
    response: Option<u64>,
}

/// A response with the headers that came back with it.
#[derive(Debug, Clone, PartialEq)]
pub struct WithHeaders<T> {
    /// The response.
    pub message: T,
    /// Headers set by the handler and its wrappers.
    pub metadata: Metadata,
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    node: Node,
    registry: Option<Registry>,
    strategy: Selector,
    retry: RetryPolicy,
    budget: RetryBudget,
    ejection: Ejection,
    timeout: Duration,
    max_in_flight: usize,
    wrappers: Vec<Arc<dyn Wrapper>>,
    wait_for_unknown: Duration,
}

impl ClientBuilder {
    /// The registry to resolve services in (default: the node's `"registry"` actor, or the
    /// default registry started under that name: mDNS on a node that listens, memory otherwise —
    /// see [`Service::registry`](crate::Service::registry)).
    #[must_use]
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// How to pick nodes (default random).
    #[must_use]
    pub fn strategy(mut self, strategy: Selector) -> Self {
        self.strategy = strategy;
        self
    }

    /// How to retry (default 3 retries).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The retry budget (default 20 % of calls plus 10 a second).
    #[must_use]
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// When failing nodes are ejected.
    #[must_use]
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// The default deadline of a call (5 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// At most this many calls at once from this client (default 10,000); past it a call fails
    /// at once with 503.
    #[must_use]
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls.max(1);
        self
    }

    /// How long a call waits for a service this client has never seen (default 2 s), within
    /// the call's deadline: discovery may still be settling when a program starts, so such a
    /// miss waits for the service to register (the call goes ahead the moment it does) before
    /// failing with 404. A service this client saw before fails at once when it is gone (503
    /// naming its lost nodes, or 404). `Duration::ZERO` fails every miss at once. See also
    /// [`Client::wait_for`].
    #[must_use]
    pub fn wait_for_unknown(mut self, wait: Duration) -> Self {
        self.wait_for_unknown = wait;
        self
    }

    /// Adds a wrapper around every unary call; the first added runs outermost.
    #[must_use]
    pub fn wrap(mut self, wrapper: impl Wrapper) -> Self {
        self.wrappers.push(Arc::new(wrapper));
        self
    }

    /// Starts the client: its registry cache loads the services known now and follows changes.
    pub async fn build(self) -> Result<Client, ServiceError> {
        let registry = match self.registry {
            Some(registry) => registry,
            None => default_registry(&self.node).await?,
        };
        let cache = RegistryCache::start(registry.clone()).await?;
        // Nodes that do not listen have no links, so no peer events.
        let peer_events = self.node.peer_events().ok();
        Ok(Client {
            inner: Arc::new_cyclic(|me| Inner {
                _follower: peer_events.map(|events| {
                    micro_runtime::AbortOnDrop::spawn(follow_links(me.clone(), events))
                }),
                node: self.node,
                registry,
                wait_for_unknown: self.wait_for_unknown,
                cache,
                views: DashMap::default(),
                health: DashMap::new(),
                strategy: self.strategy,
                retry: self.retry,
                budget: self.budget,
                ejection: self.ejection,
                timeout: self.timeout,
                in_flight: AtomicUsize::new(0),
                max_in_flight: self.max_in_flight,
                wrappers: self.wrappers.into(),
                epoch: Instant::now(),
            }),
        })
    }
}

/// Calls services by name. Cheap to clone; clones share the cache and the node state.
///
/// A call to a service whose every node is known lost (its link went down and is not up again)
/// fails at once with 503 naming them, also once the registry dropped them, rather than at its
/// deadline — unless it asked to [wait for a replica](CallOptions::wait_for_replica).
///
/// ```no_run
/// use micro_runtime::Node;
/// use micro_service::{Client, ServiceError};
///
/// # #[tokio::main] async fn main() -> Result<(), ServiceError> {
/// let node = Node::builder().listen("127.0.0.1:0".parse().unwrap()).start().await?;
/// let client = Client::builder(&node).build().await?;
/// let greeting: String = client.call("greeter", "Greeter.Hello", &"Ada".to_owned()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    /// The registry the cache follows, named in a 404.
    registry: Registry,
    /// How long a miss on a service never seen waits ([`ClientBuilder::wait_for_unknown`]).
    wait_for_unknown: Duration,
    cache: RegistryCache,
    /// Keyed by service name; FxHash, as the lookup runs on every call.
    views: DashMap<String, Arc<ServiceView>, FxBuildHasher>,
    health: DashMap<NodeId, Arc<NodeHealth>>,
    strategy: Selector,
    retry: RetryPolicy,
    budget: RetryBudget,
    ejection: Ejection,
    timeout: Duration,
    /// Calls in flight now (a counter, not a semaphore: nobody waits for a slot, and releasing
    /// a semaphore permit takes a lock that two threads contend for on every call).
    in_flight: AtomicUsize,
    max_in_flight: usize,
    wrappers: Arc<[Arc<dyn Wrapper>]>,
    epoch: Instant,
    /// Follows the node's peer events: which nodes' links are known lost. Ends with the client.
    _follower: Option<micro_runtime::AbortOnDrop>,
}

/// Marks the nodes whose link went down as lost (ejected, and the views that list them rebuilt
/// before their next use, which is where a service with every node lost is told apart), and
/// back when their link is up again. Off the call's path: a call only reads what it wrote.
async fn follow_links(
    client: std::sync::Weak<Inner>,
    mut events: tokio::sync::broadcast::Receiver<micro_runtime::PeerEvent>,
) {
    use micro_runtime::PeerEvent;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = events.recv().await;
        let Some(inner) = client.upgrade() else {
            return;
        };
        let (node, up) = match event {
            Ok(PeerEvent::Down { node, .. }) => (node, false),
            Ok(PeerEvent::Up { node, .. }) => (node, true),
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => {
                // Events were missed: the links up now are not lost.
                for peer in inner.node.peers() {
                    if peer.connected
                        && let Some(health) = inner.health.get(&peer.node)
                    {
                        health.link_up();
                    }
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(health) = inner.health.get(&node).map(|h| h.clone()) else {
            // A node this client never saw in a service.
            continue;
        };
        if up {
            health.link_up();
        } else {
            tracing::debug!(%node, "the link to a node of a service is lost");
            health.link_down();
            for view in inner.views.iter() {
                if view.has_node(node) {
                    view.generation.store(select::STALE, Ordering::Relaxed);
                }
            }
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.node.id())
            .field("strategy", &self.strategy)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// A call's place under the client's in-flight cap, given back on drop.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn take(count: &'a AtomicUsize, cap: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= cap {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(count))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A unary call's parts, as every attempt sends them.
struct Outbound<'a> {
    content_type: ContentType,
    /// The request type's shape id, for the endpoint to check.
    type_id: Option<u64>,
    metadata: &'a Metadata,
    body: &'a Body,
    deadline: Instant,
}

/// How an attempt failed, for the retry decision.
enum Failure {
    /// The request never reached a handler: retry anywhere.
    NotSent(ServiceError),
    /// The link broke after sending: retry only idempotent endpoints.
    Unknown(ServiceError),
    /// As `Unknown`, and the link to the node is lost.
    Lost(ServiceError),
    /// The handler (or the deadline) answered: final.
    Final(ServiceError),
}

impl Client {
    /// A client on `node`, to configure.
    pub fn builder(node: &Node) -> ClientBuilder {
        ClientBuilder {
            node: node.clone(),
            registry: None,
            strategy: Selector::default(),
            retry: RetryPolicy::default(),
            budget: RetryBudget::default(),
            ejection: Ejection::default(),
            timeout: Duration::from_secs(5),
            max_in_flight: 10_000,
            wrappers: Vec::new(),
            wait_for_unknown: DEFAULT_WAIT_FOR_UNKNOWN,
        }
    }

    /// A client on `node` with the defaults.
    pub async fn new(node: &Node) -> Result<Client, ServiceError> {
        Self::builder(node).build().await
    }

    /// Waits until `service` has a node this client can call, for at most `timeout`: for
    /// programs that must not start before a service they need is there. `Ok` at once when it
    /// is; else it watches the registry cache (no polling of the registry) and fails with 408
    /// when `timeout` passes, saying what the registry answered last.
    ///
    /// ```no_run
    /// # use micro_service::{Client, ServiceError};
    /// # use std::time::Duration;
    /// # async fn run(client: Client) -> Result<(), ServiceError> {
    /// client.wait_for("inventory", Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(&self, service: &str, timeout: Duration) -> Result<(), ServiceError> {
        self.view(service, Instant::now() + timeout, true)
            .await
            .map(|_| ())
    }

    /// Calls `endpoint` of `service` with `request`, with the default options.
    ///
    /// In a binary codec the request type's [shape id](crate::shape_id) travels with it and the
    /// endpoint refuses a request of another type (400: `Inventory.Reserve expects
    /// shop::ReserveRequest, got shop::LookAlike`); JSON is checked by decoding. A response that
    /// does not decode as `Resp` is the client's error naming the type the endpoint registered
    /// and `Resp`. [`CallOptions::unchecked`] turns the check off.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        request: &Req,
    ) -> Result<Resp, ServiceError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let options = CallOptions::default();
        let content_type = options.content_type;
        let check = Check::new(request, &options);
        let answer = self
            .unary(
                service,
                endpoint,
                encode(content_type, request)?,
                options,
                check,
            )
            .await
            .map_err(|e| check.name_request::<Req>(e))?;
        decode(content_type, &answer.body)
            .map_err(|e| self.name_response::<Resp>(e, service, endpoint))
    }

    /// Calls `endpoint` of `service` with `request` and `options`; the response comes with its
    /// headers.
    pub async fn call_with<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<WithHeaders<Resp>, ServiceError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let content_type = options.content_type;
        let check = Check::new(request, &options);
        let answer = self
            .unary(
                service,
                endpoint,
                encode(content_type, request)?,
                options,
                check,
            )
            .await
            .map_err(|e| check.name_request::<Req>(e))?;
        Ok(WithHeaders {
            message: decode(content_type, &answer.body)
                .map_err(|e| self.name_response::<Resp>(e, service, endpoint))?,
            metadata: answer.metadata.into_metadata(),
        })
    }

    /// A response that did not decode as `Resp`: names the type the endpoint registered too.
    fn name_response<Resp>(
        &self,
        mut err: ServiceError,
        service: &str,
        endpoint: &str,
    ) -> ServiceError {
        let registered = self.inner.views.get(service).and_then(|view| {
            endpoint_of(&view, endpoint)
                .ok()
                .map(|endpoint| endpoint.response.clone())
        });
        if let Some(registered) = registered {
            err.detail = format!(
                "{endpoint} answers {registered}, not {}: {}",
                type_name::<Resp>(),
                err.detail
            );
        }
        err
    }

    /// Calls with a body already encoded in `options`' content type; the response body is in
    /// the same content type.
    pub async fn call_raw(
        &self,
        service: &str,
        endpoint: &str,
        body: Bytes,
        options: CallOptions,
    ) -> Result<Response, ServiceError> {
        let answer = self
            .unary(
                service,
                endpoint,
                Body::from(body),
                options,
                Check::default(),
            )
            .await?;
        Ok(Response {
            metadata: answer.metadata.into_metadata(),
            body: answer.body.into_bytes(),
        })
    }

    /// A unary call: through the wrappers if there are any (they see the body as `Bytes`),
    /// else straight to [`send_with_retries`](Self::send_with_retries).
    async fn unary(
        &self,
        service: &str,
        endpoint: &str,
        body: Body,
        options: CallOptions,
        check: Check,
    ) -> Result<Answer, ServiceError> {
        let inner = &self.inner;
        let _slot = InFlight::take(&inner.in_flight, inner.max_in_flight).ok_or_else(|| {
            ServiceError::unavailable(
                CLIENT_ID,
                format!(
                    "the client's in-flight cap of {} calls is reached",
                    inner.max_in_flight
                ),
            )
        })?;
        // The deadline is the one clock reading on the way out of a call that goes well (the
        // slow steps — a registry resolve, a lookup, a retry's pause — look again). A zero
        // timeout is over before anything runs, wrappers included.
        let timeout = options.timeout.unwrap_or(inner.timeout);
        if timeout.is_zero() {
            return Err(timeout_error(service, endpoint));
        }
        let deadline = Instant::now() + timeout;
        let view = self
            .view(service, deadline, options.wait_for_replica)
            .await?;
        let endpoint = endpoint_of(&view, endpoint)?;
        if inner.wrappers.is_empty() {
            let call = Outbound {
                content_type: options.content_type,
                type_id: check.request,
                metadata: &options.metadata,
                body: &body,
                deadline,
            };
            return self
                .send_with_retries(&view, endpoint, &call, &options)
                .await;
        }
        let request = Request {
            service: view.name.clone(),
            endpoint: endpoint.name.clone(),
            content_type: options.content_type,
            metadata: options.metadata.clone(),
            body: body.into_bytes(),
            deadline: Some(deadline),
        };
        let (view, options) = (&view, &options);
        let send = |request: Request| -> BoxFuture<'_, Result<Response, ServiceError>> {
            Box::pin(async move {
                // A wrapper may have changed the endpoint, the headers or the body.
                let endpoint = endpoint_of(view, &request.endpoint)?;
                let body = Body::from(request.body);
                let now = Instant::now();
                let deadline = request.deadline.unwrap_or(now + inner.timeout);
                if deadline <= now {
                    return Err(timeout_error(&view.name, &endpoint.name));
                }
                // A wrapper may have changed the body's encoding: then it is not checked.
                let type_id = check
                    .request
                    .filter(|_| request.content_type == options.content_type);
                let call = Outbound {
                    content_type: request.content_type,
                    type_id,
                    metadata: &request.metadata,
                    body: &body,
                    deadline,
                };
                let answer = self
                    .send_with_retries(view, endpoint, &call, options)
                    .await?;
                Ok(Response {
                    metadata: answer.metadata.into_metadata(),
                    body: answer.body.into_bytes(),
                })
            })
        };
        let response = Next::new(&inner.wrappers, &send).run(request).await?;
        Ok(Answer {
            metadata: Headers::from(response.metadata),
            body: Body::from(response.body),
        })
    }

    /// Sends one unary call, retrying on other nodes as the policy allows.
    async fn send_with_retries(
        &self,
        view: &ServiceView,
        endpoint: &EndpointView,
        call: &Outbound<'_>,
        options: &CallOptions,
    ) -> Result<Answer, ServiceError> {
        if endpoint.stream {
            return Err(ServiceError::bad_request(
                CLIENT_ID,
                format!(
                    "{} is a streaming endpoint: use Client::stream",
                    endpoint.name
                ),
            ));
        }
        let idempotent = options.idempotent.unwrap_or(endpoint.idempotent);
        let mut attempts = Attempts::new(
            &self.inner,
            view,
            endpoint,
            options,
            call.deadline,
            idempotent,
        );
        // One flat loop, the ask awaited in it: nested futures would be built and moved on
        // every call.
        loop {
            let slot = attempts.pick()?;
            let outcome = match self
                .endpoint_addr(view, endpoint, slot, call.deadline)
                .await
            {
                Ok(addr) => self.send_once(addr, view, endpoint, call).await,
                Err(failure) => Err(failure),
            };
            match attempts.settle(slot, outcome) {
                Settled::Done(outcome) => return outcome,
                Settled::Retry(pause) => attempts.pause(pause).await?,
            }
        }
    }

    /// Sends a unary call to one endpoint actor and waits for its answer.
    async fn send_once(
        &self,
        addr: &Addr<EndpointMsg>,
        view: &ServiceView,
        endpoint: &EndpointView,
        call: &Outbound<'_>,
    ) -> Result<Answer, Failure> {
        let head = Head::new(call.content_type);
        // The reply port carries the deadline.
        let mut data = call_data(call.metadata, None);
        data.type_id = call.type_id;
        // In place or shared: the clone allocates nothing.
        let body = call.body.clone();
        let answer = addr
            .ask_until(
                |reply| EndpointMsg::Call {
                    head,
                    body,
                    reply,
                    call: data,
                },
                call.deadline,
            )
            .await;
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            // The server refused before running it (overload, draining): try elsewhere.
            Ok(Err(error)) if error.code == 503 && error.id == SERVER_ID => {
                Err(Failure::NotSent(error))
            }
            Ok(Err(error)) => Err(Failure::Final(error)),
            Err(error) => Err(classify(error, &view.name, &endpoint.name)),
        }
    }

    /// The endpoint actor on the node in `slot`: looked up once, then kept. The cell lets one
    /// caller look it up while others wait on that cell only, so a node that does not answer
    /// holds up no lookup of another. A lookup may take a while (a connect): past `deadline` by
    /// then, the call is over (408) and nothing is sent.
    async fn endpoint_addr<'v>(
        &self,
        view: &ServiceView,
        endpoint: &'v EndpointView,
        slot: usize,
        deadline: Instant,
    ) -> Result<&'v Addr<EndpointMsg>, Failure> {
        let cell = &endpoint.addrs[slot];
        if let Some(addr) = cell.get() {
            return Ok(addr);
        }
        let node = &view.nodes[endpoint.nodes[slot]];
        // Boxed: the lookup (a connect, perhaps) runs once per node, and its future would
        // otherwise make every call's future larger.
        let addr = cell
            .get_or_try_init(|| Box::pin(self.lookup(node.id, node.address, &endpoint.actor)))
            .await?;
        if Instant::now() >= deadline {
            return Err(Failure::Final(timeout_error(&view.name, &endpoint.name)));
        }
        Ok(addr)
    }

    async fn lookup(
        &self,
        id: NodeId,
        address: Option<std::net::SocketAddr>,
        actor: &str,
    ) -> Result<Addr<EndpointMsg>, Failure> {
        let node = &self.inner.node;
        let not_sent =
            |detail: String| Failure::NotSent(ServiceError::unavailable(CLIENT_ID, detail));
        if id == node.id() {
            return node
                .lookup::<EndpointMsg>(actor)
                .map_err(|e| not_sent(format!("{actor} on this node: {e}")));
        }
        if !node.peers().iter().any(|p| p.node == id && p.connected) {
            let address = address.ok_or_else(|| not_sent(format!("node {id} has no address")))?;
            let reached = node
                .connect(address)
                .await
                .map_err(|e| not_sent(format!("node {id} at {address}: {e}")))?;
            if reached != id {
                return Err(not_sent(format!(
                    "{address} is now node {reached}, not {id}: the registration is stale"
                )));
            }
        }
        node.lookup_remote::<EndpointMsg>(id, actor)
            .await
            .map_err(|e| not_sent(format!("{actor} on node {id}: {e}")))
    }

    /// The client's view of `service`, rebuilt when the registry cache changed (or one of its
    /// nodes was lost). A rebuild may wait on the registry: past `deadline` by then, the call is
    /// over (408).
    async fn view(
        &self,
        service: &str,
        deadline: Instant,
        wait: bool,
    ) -> Result<Arc<ServiceView>, ServiceError> {
        let inner = &self.inner;
        let generation = inner.cache.generation();
        let previous = match inner.views.get(service).map(|v| v.clone()) {
            Some(view) if view.generation.load(Ordering::Relaxed) == generation => {
                return Ok(view);
            }
            previous => previous,
        };
        // Boxed: the rebuild (and a wait for a replica) is rare, and would otherwise make every
        // call's future larger.
        Box::pin(self.rebuild(service, generation, previous, deadline, wait)).await
    }

    /// Rebuilds the view of `service`. When every node it lists is known lost — or the registry
    /// dropped them and the view before listed only lost nodes — the call fails at once with
    /// 503 naming them, or with `wait`, looks again until a replica is there or the deadline
    /// passes. A service this client never saw (no view before) that the registry does not
    /// list is waited for up to [`ClientBuilder::wait_for_unknown`] within the deadline, then
    /// fails with a 404 naming the registry asked and the services it knows.
    async fn rebuild(
        &self,
        service: &str,
        mut generation: u64,
        mut previous: Option<Arc<ServiceView>>,
        deadline: Instant,
        wait: bool,
    ) -> Result<Arc<ServiceView>, ServiceError> {
        let inner = &self.inner;
        let never_seen = previous.is_none();
        // Until when a miss on a service never seen waits (set at the first miss).
        let mut miss_until: Option<Instant> = None;
        loop {
            let resolved = inner.cache.resolve(service).await.map_err(|e| {
                let mut e = ServiceError::from(e);
                e.id = CLIENT_ID.to_owned();
                e
            });
            let generation_now = generation.max(inner.cache.generation());
            let error = match resolved {
                Ok(versions) => {
                    let health = |id: NodeId| inner.health.entry(id).or_default().clone();
                    let view = Arc::new(ServiceView::build(
                        service,
                        generation_now,
                        &versions,
                        previous.as_deref(),
                        &health,
                    ));
                    match view.lost_nodes() {
                        _ if view.nodes.is_empty() => ServiceError::not_found(
                            CLIENT_ID,
                            format!("service {service:?} has no nodes"),
                        ),
                        None => {
                            inner.views.insert(service.to_owned(), view.clone());
                            if Instant::now() >= deadline {
                                return Err(ServiceError::timeout(
                                    CLIENT_ID,
                                    format!("{service}: the deadline passed while resolving it"),
                                ));
                            }
                            return Ok(view);
                        }
                        Some(nodes) => {
                            // Kept, to be looked at again by the next call.
                            view.generation.store(select::STALE, Ordering::Relaxed);
                            inner.views.insert(service.to_owned(), view.clone());
                            previous = Some(view);
                            lost_error(service, &nodes)
                        }
                    }
                }
                Err(error) => error,
            };
            // Not there (any more): a service whose nodes this client saw lost says so.
            let error = match previous.as_deref().and_then(ServiceView::lost_nodes) {
                Some(nodes) if error.code == 404 => lost_error(service, &nodes),
                _ => error,
            };
            let until = if wait {
                deadline
            } else if never_seen && error.code == 404 && previous.is_none() {
                *miss_until
                    .get_or_insert_with(|| (Instant::now() + inner.wait_for_unknown).min(deadline))
            } else {
                return Err(error);
            };
            loop {
                if Instant::now() >= until && !wait {
                    return Err(self.describe_miss(error).await);
                }
                if Instant::now() >= until {
                    return Err(ServiceError::timeout(
                        CLIENT_ID,
                        format!(
                            "{service}: the deadline passed waiting for a replica ({})",
                            error.detail
                        ),
                    ));
                }
                tokio::time::sleep_until((Instant::now() + REPLICA_POLL).min(until)).await;
                let relinked = previous
                    .as_deref()
                    .is_some_and(|p| p.nodes.iter().any(|n| !n.health.is_lost()));
                if relinked || inner.cache.generation() != generation {
                    break;
                }
            }
            generation = inner.cache.generation();
        }
    }

    /// A 404 for a service not found, told which registry was asked (its kind, asked once here:
    /// only the mDNS backend answers its counters) and which services it knows (the first few).
    async fn describe_miss(&self, mut error: ServiceError) -> ServiceError {
        let inner = &self.inner;
        let registry = inner
            .registry
            .clone()
            .with_timeout(Duration::from_millis(200));
        let kind = match registry.mdns_stats().await {
            Ok(_) => "mDNS",
            Err(_) => "memory",
        };
        let addr = inner.registry.addr();
        let place = if addr.is_remote() {
            format!("on node {}", addr.node_id())
        } else {
            format!("on this node ({})", inner.node.name())
        };
        let mut known: Vec<String> = inner
            .cache
            .names()
            .into_iter()
            .filter(|name| inner.cache.cached(name).is_some_and(|v| !v.is_empty()))
            .collect();
        known.sort_unstable();
        let shown = known
            .iter()
            .take(KNOWN_SHOWN)
            .map(|name| format!("{name:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let knows = match known.len() {
            0 => "no services".to_owned(),
            n if n <= KNOWN_SHOWN => format!("{n} service(s): {shown}"),
            n => format!("{n} services: {shown}, …"),
        };
        error.detail = format!(
            "{}; asked the {kind} registry {place}, which knows {knows}",
            error.detail
        );
        error
    }

    /// Opens a bidirectional stream with `endpoint` of `service`: requests go out on the
    /// [`Outgoing`], responses come back on the [`Incoming`]. Opening is retried on another node
    /// when it did not reach one; what happens after is the stream's.
    ///
    /// In a binary codec the response type's [shape id](crate::shape_id) travels with the
    /// opening: a handler whose first response is of another type ends the stream, and the
    /// [`Incoming`] yields the client's error naming both types. The request type is checked
    /// when its id is known as the stream opens: by [`server_stream`](Self::server_stream)
    /// (from its request) and by the clients `#[micro::service]` generates (their types are
    /// `Deserialize` too); then a handler of another request type refuses the stream with 400
    /// naming both, as a unary endpoint does. [`CallOptions::unchecked`] turns both off.
    pub async fn stream<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        options: CallOptions,
    ) -> Result<(Outgoing<Req>, Incoming<Resp>), ServiceError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.open_stream(service, endpoint, options, None).await
    }

    /// [`stream`](Self::stream), sending `request_id` (the request type's shape id, if known)
    /// and the response type's.
    pub(crate) async fn open_stream<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        options: CallOptions,
        request_id: Option<u64>,
    ) -> Result<(Outgoing<Req>, Incoming<Resp>), ServiceError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let checked = !options.unchecked && options.content_type != ContentType::Json;
        let types = StreamTypes {
            request: request_id.filter(|_| checked),
            response: shape_id::<Resp>().filter(|_| checked),
        };
        let check = Check {
            request: types.request,
        };
        self.open_typed(service, endpoint, options, types)
            .await
            .map_err(|e| check.name_request::<Req>(e))
    }

    async fn open_typed<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        options: CallOptions,
        types: StreamTypes,
    ) -> Result<(Outgoing<Req>, Incoming<Resp>), ServiceError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let inner = &self.inner;
        let timeout = options.timeout.unwrap_or(inner.timeout);
        if timeout.is_zero() {
            return Err(timeout_error(service, endpoint));
        }
        let now = Instant::now();
        let deadline = options.timeout.map(|t| now + t);
        let open_by = now + timeout;
        let view = self
            .view(service, open_by, options.wait_for_replica)
            .await?;
        let endpoint = endpoint_of(&view, endpoint)?;
        let options = &options;
        // Opening a stream is not idempotent: a lost answer is not retried.
        let mut attempts = Attempts::new(inner, &view, endpoint, options, open_by, false);
        // The call data every attempt sends: headers, deadline and the types' ids.
        let mut call = call_data(&options.metadata, deadline);
        call.type_id = types.request;
        if let Some(id) = types.response {
            put_response_type(&mut call, id);
        }
        let (requests, responses) = loop {
            let slot = attempts.pick()?;
            let outcome = self
                .open(&view, endpoint, slot, options.content_type, &call, open_by)
                .await;
            match attempts.settle(slot, outcome) {
                Settled::Done(outcome) => break outcome?,
                Settled::Retry(pause) => attempts.pause(pause).await?,
            }
        };
        let id: Arc<str> = view.name.clone();
        let outgoing = Outgoing::new(
            Arc::new(Mutex::new(Some(requests))),
            options.content_type,
            id.clone(),
        );
        let incoming =
            Incoming::new(responses, options.content_type, deadline, id).reading_as(types.response);
        Ok((outgoing, incoming))
    }

    async fn open(
        &self,
        view: &ServiceView,
        endpoint: &EndpointView,
        slot: usize,
        content_type: ContentType,
        call: &micro_runtime::CallData,
        open_by: Instant,
    ) -> Result<
        (
            micro_runtime::StreamSender<StreamItem>,
            micro_runtime::StreamReceiver<StreamItem>,
        ),
        Failure,
    > {
        // Past `open_by`, the lookup or the pause before this attempt already said 408.
        let addr = self.endpoint_addr(view, endpoint, slot, open_by).await?;
        let (responses_tx, responses) = stream_channel(crate::service::STREAM_BUFFER);
        let head = Head::new(content_type);
        let call = call.clone();
        let answer = addr
            .ask_until(
                |reply| EndpointMsg::Open {
                    head,
                    responses: responses_tx,
                    reply,
                    call,
                },
                open_by,
            )
            .await;
        match answer {
            Ok(Ok(requests)) => Ok((requests, responses)),
            Ok(Err(error)) if error.code == 503 && error.id == SERVER_ID => {
                Err(Failure::NotSent(error))
            }
            Ok(Err(error)) => Err(Failure::Final(error)),
            Err(error) => Err(classify(error, &view.name, &endpoint.name)),
        }
    }

    /// Calls a server-streaming endpoint: one request, a stream of responses.
    pub async fn server_stream<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Incoming<Resp>, ServiceError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let (mut requests, responses) = self
            .open_stream::<Req, Resp>(service, endpoint, options, request_id_of(request))
            .await?;
        requests.send(request).await?;
        requests.finish().await?;
        Ok(responses)
    }

    /// Calls a client-streaming endpoint: send requests on the returned [`ClientStreaming`],
    /// then [`finish`](ClientStreaming::finish) it for the one response.
    pub async fn client_stream<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        options: CallOptions,
    ) -> Result<ClientStreaming<Req, Resp>, ServiceError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.client_stream_typed(service, endpoint, options, None)
            .await
    }

    /// [`client_stream`](Self::client_stream), sending `request_id` (the request type's shape
    /// id, if known) as [`stream`](Self::stream) says.
    pub(crate) async fn client_stream_typed<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        options: CallOptions,
        request_id: Option<u64>,
    ) -> Result<ClientStreaming<Req, Resp>, ServiceError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let (requests, responses) = self
            .open_stream(service, endpoint, options, request_id)
            .await?;
        Ok(ClientStreaming {
            requests,
            responses,
        })
    }

    /// The node this client calls from.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }
}

/// A client-streaming call in progress.
#[derive(Debug)]
pub struct ClientStreaming<Req, Resp> {
    requests: Outgoing<Req>,
    responses: Incoming<Resp>,
}

impl<Req: Serialize, Resp: DeserializeOwned> ClientStreaming<Req, Resp> {
    /// Sends one request (waiting while the server is behind).
    pub async fn send(&mut self, request: &Req) -> Result<(), ServiceError> {
        match self.requests.send(request).await {
            Ok(()) => Ok(()),
            // The server ended the call early: its answer (or error) says why.
            Err(err) if err.code == 499 => match self.responses.recv().await {
                Some(Err(answer)) => Err(answer),
                _ => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    /// Ends the requests and waits for the response.
    pub async fn finish(mut self) -> Result<Resp, ServiceError> {
        self.requests.finish().await?;
        match self.responses.recv().await {
            Some(answer) => answer,
            None => Err(ServiceError::internal(
                CLIENT_ID,
                "the stream ended without a response",
            )),
        }
    }

    /// Abandons the call: the handler's requests end with an error.
    pub async fn cancel(self, reason: &str) {
        self.requests.cancel(reason).await;
    }
}

/// A request body, encoded in the call's content type.
fn encode<Req: Serialize + ?Sized>(
    content_type: ContentType,
    request: &Req,
) -> Result<Body, ServiceError> {
    Body::encode(content_type, request)
        .map_err(|e| ServiceError::bad_request(CLIENT_ID, e.to_string()))
}

/// A response body, decoded from the call's content type.
fn decode<Resp: DeserializeOwned>(
    content_type: ContentType,
    body: &[u8],
) -> Result<Resp, ServiceError> {
    content_type.decode(body).map_err(|e| {
        ServiceError::internal(
            CLIENT_ID,
            format!(
                "the response did not decode as {}: {e}",
                type_name::<Resp>()
            ),
        )
    })
}

fn endpoint_of<'v>(
    view: &'v ServiceView,
    endpoint: &str,
) -> Result<&'v EndpointView, ServiceError> {
    view.endpoints.get(endpoint).ok_or_else(|| {
        ServiceError::not_found(
            CLIENT_ID,
            format!("service {} has no endpoint {endpoint:?}", view.name),
        )
    })
}

/// How long a miss on a service this client never saw waits for it by default.
const DEFAULT_WAIT_FOR_UNKNOWN: Duration = Duration::from_secs(2);

/// How many service names a 404 shows.
const KNOWN_SHOWN: usize = 5;

/// How often a call waiting for a replica looks at the registry cache again.
const REPLICA_POLL: Duration = Duration::from_millis(25);

/// A service whose every node this client knows lost.
fn lost_error(service: &str, nodes: &str) -> ServiceError {
    ServiceError::unavailable(
        CLIENT_ID,
        format!("{service}: lost the link to {nodes}, and no other replica can be reached"),
    )
}

fn timeout_error(service: &str, endpoint: &str) -> ServiceError {
    ServiceError::timeout(
        CLIENT_ID,
        format!("{service} {endpoint}: the deadline passed"),
    )
}

/// Sorts a runtime failure of an attempt: never sent, outcome unknown, or final.
fn classify(error: micro_runtime::Error, service: &str, endpoint: &str) -> Failure {
    use micro_runtime::Error as E;
    let detail = format!("{service} {endpoint}: {error}");
    match error {
        E::Timeout(_) | E::DeadlinePassed => {
            Failure::Final(ServiceError::timeout(CLIENT_ID, detail))
        }
        E::NoRoute(_)
        | E::NotFound(_)
        | E::NotExposed(_)
        | E::Unavailable(_)
        | E::MailboxFull { .. }
        | E::ActorStopped(_)
        | E::NodeStopped(_)
        | E::Untrusted { .. } => Failure::NotSent(ServiceError::unavailable(CLIENT_ID, detail)),
        E::NodeLost(_) => Failure::Lost(ServiceError::unavailable(CLIENT_ID, detail)),
        E::ReplyDropped => Failure::Unknown(ServiceError::unavailable(CLIENT_ID, detail)),
        E::Codec { .. } | E::UnknownContentType(_) => {
            Failure::Final(ServiceError::bad_request(CLIENT_ID, detail))
        }
        _ => Failure::Final(ServiceError::internal(CLIENT_ID, detail)),
    }
}
