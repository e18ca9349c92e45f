//! The contract on the wire: a request of another type than the endpoint's is refused with 400
//! naming both types (bincode carries the request type's shape id; JSON is checked by
//! decoding), and a response that does not decode as the caller's type names both types.

use std::any::type_name;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use micro::{CallContext, CallOptions, ContentType, Endpoint, Service, ServiceError};
use serde::{Deserialize, Serialize};

use micro_testkit::within;

use crate::common::Cluster;

#[derive(Debug, Serialize, Deserialize)]
struct ReserveRequest {
    item: String,
    count: u32,
}

/// Same field types and order as `ReserveRequest`: bincode alone would take it for one.
#[derive(Debug, Serialize, Deserialize)]
struct LookAlike {
    name: String,
    count: u32,
}

mod copy {
    /// `ReserveRequest` as another crate (or module) declares it: same name, same fields.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub(crate) struct ReserveRequest {
        pub(crate) item: String,
        pub(crate) count: u32,
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    reserved: u64,
}

/// What a confused caller expects back instead of a `Receipt`.
#[derive(Debug, Serialize, Deserialize)]
struct Invoice {
    number: String,
    lines: Vec<String>,
}

/// The typed details of a 409.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OutOfStock {
    item: String,
    left: u32,
}

/// A handler's own error type.
#[derive(Debug)]
enum InventoryError {
    Unknown(String),
}

impl From<InventoryError> for ServiceError {
    fn from(err: InventoryError) -> Self {
        match err {
            InventoryError::Unknown(item) => {
                ServiceError::not_found("inventory", format!("no item {item:?}"))
                    .with_details(&item)
            }
        }
    }
}

/// An `async fn` handler with its own error type.
async fn stock(_: CallContext, item: String) -> Result<u32, InventoryError> {
    match item.as_str() {
        "pear" => Ok(2),
        _ => Err(InventoryError::Unknown(item)),
    }
}

/// An inventory whose `Inventory.Reserve` counts the reservations it made; `Inventory.Take`
/// refuses with typed details, `Inventory.Stock` fails with its own error type.
fn inventory(name: &str, reserved: Arc<AtomicU32>) -> Service {
    Service::new(name)
        .endpoint(Endpoint::unary(
            "Inventory.Reserve",
            move |_: CallContext, request: ReserveRequest| {
                let reserved = reserved.clone();
                async move {
                    let total =
                        reserved.fetch_add(request.count, Ordering::SeqCst) + request.count;
                    Ok::<_, ServiceError>(Receipt {
                        reserved: u64::from(total) + 200,
                    })
                }
            },
        ))
        .endpoint(Endpoint::unary(
            "Inventory.Take",
            |_: CallContext, item: String| async move {
                Err::<(), _>(
                    ServiceError::conflict("inventory", "not enough left")
                        .with_details(&OutOfStock { item, left: 2 }),
                )
            },
        ))
        .endpoint(Endpoint::unary_with_error("Inventory.Stock", stock))
        .endpoint(Endpoint::unary_with_error(
            "Inventory.Forget",
            |_: CallContext, item: String| async move {
                Err::<(), _>(InventoryError::Unknown(item))
            },
        ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_request_is_refused_with_both_type_names_remotely_and_locally() {
    // "inventory" on a replica node and "inventory-local" on the client's own node.
    let remote = Arc::new(AtomicU32::new(0));
    let local = Arc::new(AtomicU32::new(0));
    let cluster = Cluster::start(1, |_| inventory("inventory", remote.clone())).await;
    let _local = inventory("inventory-local", local.clone())
        .registry(cluster.registry.clone())
        .start(cluster.client_node())
        .await
        .unwrap();
    let client = cluster.client().build().await.unwrap();

    for (service, reserved) in [("inventory", &remote), ("inventory-local", &local)] {
        let look_alike = LookAlike {
            name: "pear".into(),
            count: 1,
        };
        let err = client
            .call::<_, Receipt>(service, "Inventory.Reserve", &look_alike)
            .await
            .unwrap_err();
        assert_eq!(err.code, 400, "{service}: {err}");
        assert_eq!(
            err.detail,
            format!(
                "Inventory.Reserve expects {}, got {}",
                type_name::<ReserveRequest>(),
                type_name::<LookAlike>()
            ),
            "{service}"
        );
        assert_eq!(
            reserved.load(Ordering::SeqCst),
            0,
            "{service}: nothing reserved"
        );

        // The right type goes through, and so does the same type declared elsewhere (the
        // module path is not part of the contract).
        let ok = ReserveRequest {
            item: "pear".into(),
            count: 1,
        };
        let receipt: Receipt = client
            .call(service, "Inventory.Reserve", &ok)
            .await
            .unwrap();
        assert_eq!(receipt, Receipt { reserved: 201 });
        let copy = copy::ReserveRequest {
            item: "pear".into(),
            count: 2,
        };
        let receipt: Receipt = client
            .call(service, "Inventory.Reserve", &copy)
            .await
            .unwrap();
        assert_eq!(receipt, Receipt { reserved: 203 }, "{service}");

        // With `call_with` too, and `unchecked()` turns the check off: the look-alike is then
        // taken for what bincode makes of it.
        let err = client
            .call_with::<_, Receipt>(
                service,
                "Inventory.Reserve",
                &look_alike,
                CallOptions::new(),
            )
            .await
            .unwrap_err();
        assert!(err.detail.ends_with(type_name::<LookAlike>()), "{err}");
        let receipt = client
            .call_with::<_, Receipt>(
                service,
                "Inventory.Reserve",
                &look_alike,
                CallOptions::new().unchecked(),
            )
            .await
            .unwrap();
        assert_eq!(receipt.message, Receipt { reserved: 204 }, "{service}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_look_alike_is_refused_by_decoding() {
    let reserved = Arc::new(AtomicU32::new(0));
    let cluster = Cluster::start(1, |_| inventory("inventory", reserved.clone())).await;
    let client = cluster.client().build().await.unwrap();

    let json = CallOptions::new().content_type(ContentType::Json);
    let look_alike = LookAlike {
        name: "pear".into(),
        count: 1,
    };
    let err = client
        .call_with::<_, Receipt>("inventory", "Inventory.Reserve", &look_alike, json.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "{err}");
    assert!(
        err.detail.contains("item"),
        "names the missing field: {err}"
    );
    assert_eq!(reserved.load(Ordering::SeqCst), 0);

    let ok = ReserveRequest {
        item: "pear".into(),
        count: 1,
    };
    let receipt = client
        .call_with::<_, Receipt>("inventory", "Inventory.Reserve", &ok, json)
        .await
        .unwrap();
    assert_eq!(receipt.message, Receipt { reserved: 201 });
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_of_another_type_is_the_clients_decode_error_naming_both() {
    let reserved = Arc::new(AtomicU32::new(0));
    let cluster = Cluster::start(1, |_| inventory("inventory", reserved.clone())).await;
    let client = cluster.client().build().await.unwrap();

    let ok = ReserveRequest {
        item: "pear".into(),
        count: 1,
    };
    let err = client
        .call::<_, Invoice>("inventory", "Inventory.Reserve", &ok)
        .await
        .unwrap_err();
    assert_eq!(
        err.id, "micro.client",
        "the client's error, not the server's: {err}"
    );
    assert!(
        err.detail.starts_with(&format!(
            "Inventory.Reserve answers {}, not {}: the response did not decode",
            type_name::<Receipt>(),
            type_name::<Invoice>()
        )),
        "{err}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_with_typed_details_and_handlers_own_errors_travel_locally_and_across_nodes() {
    let cluster = Cluster::start(1, |_| inventory("inventory", Arc::default())).await;
    let _local = inventory("inventory-local", Arc::default())
        .registry(cluster.registry.clone())
        .start(cluster.client_node())
        .await
        .unwrap();
    let client = cluster.client().build().await.unwrap();

    for service in ["inventory", "inventory-local"] {
        for content_type in [ContentType::Bincode, ContentType::Json] {
            let options = CallOptions::new().content_type(content_type);
            let err = client
                .call_with::<_, ()>(service, "Inventory.Take", "pear", options.clone())
                .await
                .unwrap_err();
            assert_eq!(err.code, 409, "{service} {content_type}: {err}");
            assert_eq!(err.detail, "not enough left");
            assert_eq!(
                err.details::<OutOfStock>(),
                Some(OutOfStock {
                    item: "pear".into(),
                    left: 2
                }),
                "{service} {content_type}"
            );

            // A handler's own error type, converted by its `From` impl (details and all).
            let left = client
                .call_with::<_, u32>(service, "Inventory.Stock", "pear", options.clone())
                .await
                .unwrap();
            assert_eq!(left.message, 2);
            for endpoint in ["Inventory.Stock", "Inventory.Forget"] {
                let err = client
                    .call_with::<_, u32>(service, endpoint, "plum", options.clone())
                    .await
                    .unwrap_err();
                assert_eq!(err.code, 404, "{service} {endpoint}: {err}");
                assert_eq!(err.detail, "no item \"plum\"");
                assert_eq!(err.details::<String>().as_deref(), Some("plum"));
            }
        }
    }
    cluster.shutdown().await;
}

/// What a confused caller reads instead of a `Receipt`: the same bytes in bincode (one `u64`),
/// so only the type check tells them apart.
#[derive(Debug, Serialize, Deserialize)]
struct Ticket {
    number: u64,
}

/// The streaming side of the inventory, declared with the macro: `Inventory.Watch` (a server
/// stream of receipts for one request) and `Inventory.Batch` (a client stream of requests),
/// counting the requests their handlers read.
mod streams {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use micro::{CallContext, Incoming, Outgoing, ServiceError};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    pub(crate) struct ReserveRequest {
        pub(crate) item: String,
        pub(crate) count: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub(crate) struct Receipt {
        pub(crate) reserved: u64,
    }

    #[micro::service(name = "inventory-streams")]
    pub(crate) trait Inventory {
        async fn watch(
            &self,
            ctx: CallContext,
            req: ReserveRequest,
            out: Outgoing<Receipt>,
        ) -> Result<(), ServiceError>;

        async fn batch(
            &self,
            ctx: CallContext,
            reqs: Incoming<ReserveRequest>,
        ) -> Result<Receipt, ServiceError>;
    }

    pub(crate) struct Counting(pub(crate) Arc<AtomicU32>);

    impl Inventory for Counting {
        async fn watch(
            &self,
            _: CallContext,
            req: ReserveRequest,
            mut out: Outgoing<Receipt>,
        ) -> Result<(), ServiceError> {
            let total = self.0.fetch_add(req.count, Ordering::SeqCst) + req.count;
            out.send(&Receipt {
                reserved: u64::from(total),
            })
            .await
        }

        async fn batch(
            &self,
            _: CallContext,
            mut reqs: Incoming<ReserveRequest>,
        ) -> Result<Receipt, ServiceError> {
            let mut total = 0;
            while let Some(req) = reqs.recv().await {
                total = self.0.fetch_add(req?.count, Ordering::SeqCst) + 1;
            }
            Ok(Receipt {
                reserved: u64::from(total),
            })
        }
    }

    /// The same service as an older caller declared it: its batch sends look-alikes.
    pub(crate) mod older {
        use micro::{CallContext, Incoming, ServiceError};

        #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
        pub(crate) struct LookAlike {
            pub(crate) name: String,
            pub(crate) count: u32,
        }

        #[micro::service(name = "inventory-streams")]
        pub(crate) trait Inventory {
            async fn batch(
                &self,
                ctx: CallContext,
                reqs: Incoming<LookAlike>,
            ) -> Result<super::Receipt, ServiceError>;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_stream_item_is_refused_and_a_response_of_another_type_names_both() {
    let read = Arc::new(AtomicU32::new(0));
    let cluster = Cluster::start(1, |_| {
        Service::new("inventory-streams").handle(streams::InventoryServer::new(streams::Counting(
            read.clone(),
        )))
    })
    .await;
    let client = cluster.client().build().await.unwrap();
    let service = "inventory-streams";
    let look_alike = LookAlike {
        name: "pear".into(),
        count: 1,
    };

    // A server stream opened with a look-alike request is refused as it opens.
    let err = client
        .server_stream::<_, streams::Receipt>(
            service,
            "Inventory.Watch",
            &look_alike,
            CallOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "{err}");
    assert_eq!(
        err.detail,
        format!(
            "Inventory.Watch expects {}, got {}",
            type_name::<streams::ReserveRequest>(),
            type_name::<LookAlike>()
        )
    );

    // A typed client declared with look-alike items is refused too, before any item is read.
    let older = streams::older::InventoryClient::new(&client);
    let err = older.batch().await.unwrap_err();
    assert_eq!(err.code, 400, "{err}");
    assert_eq!(
        err.detail,
        format!(
            "Inventory.Batch expects {}, got {}",
            type_name::<streams::ReserveRequest>(),
            type_name::<streams::older::LookAlike>()
        )
    );
    assert_eq!(read.load(Ordering::SeqCst), 0, "no handler read a request");

    // Responses of another type that would decode: the client's error, naming both types.
    let request = streams::ReserveRequest {
        item: "pear".into(),
        count: 1,
    };
    let mut tickets = client
        .server_stream::<_, Ticket>(service, "Inventory.Watch", &request, CallOptions::new())
        .await
        .unwrap();
    let err = within("the first response", tickets.recv())
        .await
        .expect("an item")
        .unwrap_err();
    assert_eq!(err.id, "micro.client", "{err}");
    assert_eq!(
        err.detail,
        format!(
            "Inventory.Watch answers {}, not {}",
            type_name::<streams::Receipt>(),
            type_name::<Ticket>()
        )
    );

    // The right types go through, with the typed client and without it.
    let typed = streams::InventoryClient::new(&client);
    let receipts = typed
        .watch(&request)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1);
    let mut batch = typed.batch().await.unwrap();
    batch.send(&request).await.unwrap();
    assert!(batch.finish().await.is_ok());

    // `unchecked()` sends no ids: the look-alike is taken for what bincode makes of it.
    let receipts = client
        .server_stream::<_, Ticket>(
            service,
            "Inventory.Watch",
            &look_alike,
            CallOptions::new().unchecked(),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1);
    cluster.shutdown().await;
}
