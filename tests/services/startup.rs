//! Startup races: a client that calls a service before discovery has settled waits for it (a
//! little, within the call's deadline) instead of failing at once; `Client::wait_for` waits on
//! purpose; a service this client saw before fails at once when it is gone; and a 404 says which
//! registry was asked and what it knows.

use std::time::Duration;

use micro::{CallContext, CallOptions, Endpoint, Service, ServiceError};
use micro_testkit::{eventually, within};

use crate::common::{Cluster, Greeting, Hello, greeter};

/// A service registered only once the client is already calling it.
fn late() -> Service {
    Service::new("late").endpoint(Endpoint::unary(
        "Late.Hello",
        |_: CallContext, hello: Hello| async move {
            Ok::<_, ServiceError>(Greeting {
                text: format!("Hello {}", hello.name),
                node: "late".into(),
            })
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_service_not_registered_yet_waits_for_it() {
    let cluster = Cluster::start(1, |i| greeter(&format!("replica-{i}"))).await;
    // Generous bounds: the call waits for as long as it takes the service to come.
    let client = cluster
        .client()
        .wait_for_unknown(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_with::<_, Greeting>(
                    "late",
                    "Late.Hello",
                    &Hello { name: "Ada".into() },
                    CallOptions::new().timeout(Duration::from_secs(60)),
                )
                .await
        }
    });
    // The call is under way and the registry does not list "late" yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished(), "a miss on a service never seen waits");
    let _late = late()
        .registry(cluster.registry.clone())
        .start(cluster.replica(0))
        .await
        .unwrap();
    let greeting = within("the waiting call", call).await.unwrap().unwrap();
    assert_eq!(greeting.message.text, "Hello Ada");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_ends_in_a_404_naming_the_registry_and_the_services_it_knows() {
    let cluster = Cluster::start(1, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster
        .client()
        .wait_for_unknown(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let err = within(
        "the miss",
        client.call::<_, ()>("inventory", "Inventory.Reserve", &()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 404, "{err}");
    assert!(err.detail.contains("\"inventory\""), "{err}");
    assert!(err.detail.contains("memory registry"), "{err}");
    assert!(
        err.detail.contains("\"greeter\""),
        "it lists what it knows: {err}"
    );

    // The call's own deadline bounds the wait too: a short call does not wait 100 ms more.
    let client = cluster
        .client()
        .wait_for_unknown(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let err = within(
        "the bounded miss",
        client.call_with::<_, ()>(
            "inventory",
            "Inventory.Reserve",
            &(),
            CallOptions::new().timeout(Duration::from_millis(300)),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 404, "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_seen_before_fails_at_once_when_it_is_gone() {
    let cluster = Cluster::start(1, |i| greeter(&format!("replica-{i}"))).await;
    // Were the miss waited for, the call would take a minute: `within` would fail first.
    let client = cluster
        .client()
        .wait_for_unknown(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let hello = Hello { name: "Ada".into() };
    let _: Greeting = within("the call", client.call("greeter", "Greeter.Hello", &hello))
        .await
        .unwrap();
    cluster.services[0].stop().await.unwrap();
    eventually("the registry no longer lists the greeter", || {
        let registry = cluster.registry.clone();
        async move { registry.get_service("greeter").await.is_err() }
    })
    .await;
    let err = within(
        "the call to a service gone",
        client.call_with::<_, Greeting>(
            "greeter",
            "Greeter.Hello",
            &hello,
            CallOptions::new().timeout(Duration::from_secs(60)),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err.code, 404 | 503), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_returns_once_the_service_is_there_or_fails_at_its_timeout() {
    let cluster = Cluster::start(1, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster.client().build().await.unwrap();
    // There already.
    within(
        "waiting for a registered service",
        client.wait_for("greeter", Duration::from_secs(5)),
    )
    .await
    .unwrap();
    // Not there: 408 at the timeout, saying what the registry answered.
    let err = within(
        "waiting in vain",
        client.wait_for("nobody", Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    assert!(err.detail.contains("nobody"), "{err}");
    // Registered while waited for.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.wait_for("late", Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    let _late = late()
        .registry(cluster.registry.clone())
        .start(cluster.replica(0))
        .await
        .unwrap();
    within("wait_for", waiting).await.unwrap().unwrap();
    let greeting: Greeting = within(
        "the call after wait_for",
        client.call("late", "Late.Hello", &Hello { name: "Bo".into() }),
    )
    .await
    .unwrap();
    assert_eq!(greeting.text, "Hello Bo");
    cluster.shutdown().await;
}
