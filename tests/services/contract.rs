//! The contract on the wire: a request of another type than the endpoint's is refused with 400
//! naming both types (bincode carries the request type's shape id; JSON is checked by
//! decoding), and a response that does not decode as the caller's type names both types.

use std::any::type_name;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use micro::{CallContext, CallOptions, ContentType, Endpoint, Service, ServiceError};
use serde::{Deserialize, Serialize};

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

/// An inventory whose `Inventory.Reserve` counts the reservations it made.
fn inventory(name: &str, reserved: Arc<AtomicU32>) -> Service {
    Service::new(name).endpoint(Endpoint::unary(
        "Inventory.Reserve",
        move |_: CallContext, request: ReserveRequest| {
            let reserved = reserved.clone();
            async move {
                let total = reserved.fetch_add(request.count, Ordering::SeqCst) + request.count;
                Ok::<_, ServiceError>(Receipt {
                    reserved: u64::from(total) + 200,
                })
            }
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
