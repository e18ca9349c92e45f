//! Typed services with `#[micro::service]`: a trait becomes a handler trait, its registration in
//! one call and a typed client, over a real cluster. Every shape, a stream cancelled by the
//! client, a typed handler's error reaching the typed client, and what the registry is told
//! (idempotent marks, type names, JSON Schemas).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use micro::{
    CallContext, CallOptions, Incoming, Outgoing, REQUEST_SCHEMA_KEY, RESPONSE_SCHEMA_KEY, Service,
    ServiceError,
};
use micro_testkit::{eventually, within};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Cluster, DropFlag};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct ReserveRequest {
    item: String,
    count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct ReserveReply {
    reservation: u64,
    left: u32,
}

/// An application error of the handler, turned into a `ServiceError` on its way out.
#[derive(Debug)]
pub(crate) enum StockError {
    OutOfStock { item: String, left: u32 },
}

impl From<StockError> for ServiceError {
    fn from(err: StockError) -> Self {
        match err {
            StockError::OutOfStock { item, left } => {
                ServiceError::conflict("inventory", format!("{item}: only {left} left"))
            }
        }
    }
}

/// The inventory service, declared once for both sides.
#[micro::service]
pub(crate) trait Inventory {
    /// Reserves `count` of an item.
    async fn reserve(
        &self,
        ctx: CallContext,
        req: ReserveRequest,
    ) -> Result<ReserveReply, StockError>;

    /// How many of an item are left (safe to retry).
    #[idempotent]
    async fn stock(&self, ctx: CallContext, item: String) -> Result<u32, ServiceError>;

    /// Counts from 0 up to `up_to` (server stream).
    async fn count(
        &self,
        ctx: CallContext,
        up_to: u64,
        out: Outgoing<u64>,
    ) -> Result<(), ServiceError>;

    /// Sums the numbers sent (client stream).
    async fn sum(&self, ctx: CallContext, numbers: Incoming<u64>) -> Result<u64, ServiceError>;

    /// Echoes every text upper-cased (bidirectional stream).
    async fn shout(
        &self,
        ctx: CallContext,
        texts: Incoming<String>,
        out: Outgoing<String>,
    ) -> Result<(), ServiceError>;
}

/// The handler's state: a stock of 10 widgets, and what the streams saw.
#[derive(Default)]
struct Warehouse {
    widgets: AtomicU64,
    reservations: AtomicU64,
    count_dropped: Arc<AtomicBool>,
}

impl Inventory for Warehouse {
    async fn reserve(
        &self,
        _ctx: CallContext,
        req: ReserveRequest,
    ) -> Result<ReserveReply, StockError> {
        let left = self.widgets.load(Ordering::SeqCst);
        if u64::from(req.count) > left {
            return Err(StockError::OutOfStock {
                item: req.item,
                left: left as u32,
            });
        }
        self.widgets
            .fetch_sub(u64::from(req.count), Ordering::SeqCst);
        Ok(ReserveReply {
            reservation: self.reservations.fetch_add(1, Ordering::SeqCst) + 1,
            left: (left - u64::from(req.count)) as u32,
        })
    }

    async fn stock(&self, _ctx: CallContext, _item: String) -> Result<u32, ServiceError> {
        Ok(self.widgets.load(Ordering::SeqCst) as u32)
    }

    async fn count(
        &self,
        _ctx: CallContext,
        up_to: u64,
        mut out: Outgoing<u64>,
    ) -> Result<(), ServiceError> {
        // Tells the test when this future is dropped (the stream was cancelled).
        let _flag = DropFlag(self.count_dropped.clone());
        for i in 0..up_to {
            out.send(&i).await?;
        }
        Ok(())
    }

    async fn sum(
        &self,
        _ctx: CallContext,
        mut numbers: Incoming<u64>,
    ) -> Result<u64, ServiceError> {
        let mut sum = 0;
        while let Some(n) = numbers.recv().await {
            sum += n?;
        }
        Ok(sum)
    }

    async fn shout(
        &self,
        _ctx: CallContext,
        mut texts: Incoming<String>,
        mut out: Outgoing<String>,
    ) -> Result<(), ServiceError> {
        while let Some(text) = texts.recv().await {
            out.send(&text?.to_uppercase()).await?;
        }
        Ok(())
    }
}

fn warehouse() -> (Arc<Warehouse>, Service) {
    let state = Arc::new(Warehouse {
        widgets: AtomicU64::new(10),
        ..Warehouse::default()
    });
    let service =
        Service::new(InventoryClient::SERVICE).handle(InventoryServer::from_arc(state.clone()));
    (state, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_unary_call_and_its_typed_error_reach_the_typed_client() {
    let (_state, service) = warehouse();
    let cluster = Cluster::start(1, move |_| service.clone()).await;
    let client = cluster.client().build().await.unwrap();
    let inventory = InventoryClient::new(&client);
    assert_eq!(InventoryClient::SERVICE, "inventory");

    // Reserve 4 of 10: the reply is typed.
    let reply = within(
        "the reservation",
        inventory.reserve(&ReserveRequest {
            item: "widget".into(),
            count: 4,
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        reply,
        ReserveReply {
            reservation: 1,
            left: 6
        }
    );
    assert_eq!(inventory.stock(&"widget".to_owned()).await.unwrap(), 6);

    // Reserving 7 of the 6 left: the handler's StockError arrives as the ServiceError it
    // converts to, code and detail intact.
    let err = inventory
        .reserve(&ReserveRequest {
            item: "widget".into(),
            count: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, 409, "{err}");
    assert_eq!(err.detail, "widget: only 6 left");
    assert_eq!(
        err,
        ServiceError::conflict("inventory", "widget: only 6 left")
    );

    // The `_with` twin takes per-call options and returns the headers too.
    let answer = inventory
        .stock_with(&"widget".to_owned(), CallOptions::new().retries(0))
        .await
        .unwrap();
    assert_eq!(answer.message, 6);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_shape_works_through_the_typed_client() {
    let (_state, service) = warehouse();
    let cluster = Cluster::start(1, move |_| service.clone()).await;
    let client = cluster.client().build().await.unwrap();
    let inventory = InventoryClient::new(&client);

    // Server stream: one request, 100 responses.
    let counted = within("the count", async {
        inventory.count(&100).await.unwrap().collect().await
    })
    .await
    .unwrap();
    assert_eq!(counted, (0..100).collect::<Vec<u64>>());

    // Client stream: 100 requests, one response.
    let mut sum = inventory.sum().await.unwrap();
    for n in 1..=100u64 {
        sum.send(&n).await.unwrap();
    }
    assert_eq!(within("the sum", sum.finish()).await.unwrap(), 5050);

    // Bidirectional: each text comes back upper-cased, in order.
    let (mut texts, mut shouts) = inventory.shout().await.unwrap();
    for text in ["a", "b", "c"] {
        texts.send(&text.to_owned()).await.unwrap();
        let back = within("the echo", shouts.recv()).await.unwrap().unwrap();
        assert_eq!(back, text.to_uppercase());
    }
    texts.finish().await.unwrap();
    assert!(within("the end of the echo", shouts.recv()).await.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_stream_dropped_by_the_client_stops_the_handler() {
    let (state, service) = warehouse();
    let cluster = Cluster::start(1, move |_| service.clone()).await;
    let client = cluster.client().build().await.unwrap();
    let inventory = InventoryClient::new(&client);

    // An endless count: read a few, then drop the stream.
    let mut counting = inventory
        .count_with(&u64::MAX, CallOptions::new())
        .await
        .unwrap();
    for expected in 0..5u64 {
        let n = within("a count", counting.recv()).await.unwrap().unwrap();
        assert_eq!(n, expected);
    }
    drop(counting);

    eventually("the handler of the dropped stream ended", || {
        let dropped = state.count_dropped.clone();
        async move { dropped.load(Ordering::SeqCst) }
    })
    .await;
    eventually("no call is left running on the server", || {
        let stats = cluster.services[0].stats();
        async move { stats.in_flight == 0 }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_shows_names_shapes_idempotent_marks_and_schemas() {
    let (_state, service) = warehouse();
    let cluster = Cluster::start(1, move |_| service.clone()).await;

    let records = cluster.registry.get_service("inventory").await.unwrap();
    let endpoints = &records[0].endpoints;
    let find = |name: &str| {
        endpoints
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} is registered"))
    };

    // Names as Go Micro's: the trait, then the method in UpperCamelCase.
    let mut names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    for name in [
        "Inventory.Count",
        "Inventory.Reserve",
        "Inventory.Shout",
        "Inventory.Stock",
        "Inventory.Sum",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    // Shapes and idempotent marks.
    assert_eq!(find("Inventory.Reserve").metadata["stream"], "unary");
    assert_eq!(find("Inventory.Reserve").metadata["idempotent"], "false");
    assert_eq!(find("Inventory.Stock").metadata["idempotent"], "true");
    assert_eq!(find("Inventory.Count").metadata["stream"], "server");
    assert_eq!(find("Inventory.Sum").metadata["stream"], "client");
    assert_eq!(find("Inventory.Shout").metadata["stream"], "bidi");

    // Type names and JSON Schemas of request and response.
    let reserve = find("Inventory.Reserve");
    assert!(
        reserve.request.ends_with("ReserveRequest"),
        "{}",
        reserve.request
    );
    assert!(
        reserve.response.ends_with("ReserveReply"),
        "{}",
        reserve.response
    );
    let request: serde_json::Value =
        serde_json::from_str(&reserve.metadata[REQUEST_SCHEMA_KEY]).unwrap();
    assert_eq!(request["title"], "ReserveRequest");
    assert_eq!(request["properties"]["count"]["type"], "integer");
    assert_eq!(request["properties"]["item"]["type"], "string");
    let response: serde_json::Value =
        serde_json::from_str(&reserve.metadata[RESPONSE_SCHEMA_KEY]).unwrap();
    assert_eq!(response["title"], "ReserveReply");
    let sum: serde_json::Value =
        serde_json::from_str(&find("Inventory.Sum").metadata[REQUEST_SCHEMA_KEY]).unwrap();
    assert_eq!(
        sum["type"], "integer",
        "the schema of one item of the stream"
    );
    cluster.shutdown().await;
}
