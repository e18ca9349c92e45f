//! Unary calls: headers, errors, codecs, deadlines, panics, overload, built-in endpoints,
//! wrappers, graceful stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use micro::{
    Bytes, CallContext, CallOptions, ContentType, Endpoint, HEALTH_ENDPOINT, Health, Metrics,
    RetryPolicy, STATS_ENDPOINT, Service, ServiceError, ServiceStats, TRACE_ID_HEADER, Tracing,
};
use micro_testkit::{eventually, within};

use crate::common::{Cluster, DropFlag, Greeting, Hello, greeter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_by_name_reaches_a_replica_and_comes_back() {
    let cluster = Cluster::start(3, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster.client().build().await.unwrap();

    let greeting: Greeting = within(
        "the call",
        client.call("greeter", "Greeter.Hello", &Hello { name: "Ada".into() }),
    )
    .await
    .unwrap();
    assert_eq!(greeting.text, "Hello Ada");
    assert!(greeting.node.starts_with("replica-"));

    // The registration describes the endpoints with their types and shapes.
    let registered = &cluster.services[0].registration().endpoints;
    let hello = registered
        .iter()
        .find(|e| e.name == "Greeter.Hello")
        .unwrap();
    assert!(hello.request.ends_with("Hello"));
    assert!(hello.response.ends_with("Greeting"));
    assert_eq!(hello.metadata["idempotent"], "true");
    assert_eq!(hello.metadata["stream"], "unary");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_their_id_code_and_detail_end_to_end() {
    let cluster = Cluster::start(1, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster.client().build().await.unwrap();

    let err = client
        .call::<_, ()>("greeter", "Greeter.Fail", &())
        .await
        .unwrap_err();
    assert_eq!(err, ServiceError::conflict("greeter", "ada already exists"));
    assert_eq!(err.status, "Conflict");

    let unknown = client
        .call::<_, ()>("nobody", "X.Y", &())
        .await
        .unwrap_err();
    assert_eq!(unknown.code, 404, "{unknown}");
    let no_endpoint = client
        .call::<_, ()>("greeter", "Greeter.Nope", &())
        .await
        .unwrap_err();
    assert_eq!(no_endpoint.code, 404, "{no_endpoint}");

    // A request that does not decode is the caller's fault.
    let bad = client
        .call::<_, Greeting>("greeter", "Greeter.Hello", &42u64)
        .await
        .unwrap_err();
    assert_eq!(bad.code, 400, "{bad}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_travel_to_the_handler_and_back_with_one_trace_id() {
    let cluster = Cluster::start(1, |i| {
        greeter(&format!("replica-{i}")).wrap(Tracing::server())
    })
    .await;
    let client = cluster
        .client()
        .wrap(Tracing::client())
        .build()
        .await
        .unwrap();

    let reply = client
        .call_with::<_, ()>(
            "greeter",
            "Greeter.Headers",
            &(),
            CallOptions::new().header("tenant", "acme"),
        )
        .await
        .unwrap();
    assert_eq!(reply.metadata["echo-tenant"], "acme");
    // The client's tracing wrapper made a trace id; the handler saw it, and it came back.
    let seen = &reply.metadata[&format!("echo-{TRACE_ID_HEADER}")];
    assert_eq!(seen.len(), 16);
    assert_eq!(&reply.metadata[TRACE_ID_HEADER], seen);

    // A caller's own trace id is kept.
    let reply = client
        .call_with::<_, ()>(
            "greeter",
            "Greeter.Headers",
            &(),
            CallOptions::new().header(TRACE_ID_HEADER, "feedfacecafebeef"),
        )
        .await
        .unwrap();
    assert_eq!(reply.metadata[TRACE_ID_HEADER], "feedfacecafebeef");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_bincode_callers_share_an_endpoint_and_get_their_own_encoding_back() {
    let cluster = Cluster::start(1, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster.client().build().await.unwrap();

    let json = client
        .call_raw(
            "greeter",
            "Greeter.Hello",
            Bytes::from_static(br#"{"name":"Json"}"#),
            CallOptions::new().content_type(ContentType::Json),
        )
        .await
        .unwrap();
    let text = std::str::from_utf8(&json.body).unwrap();
    assert_eq!(text, r#"{"text":"Hello Json","node":"replica-0"}"#);

    let body = ContentType::Bincode
        .encode(&Hello { name: "Bin".into() })
        .unwrap();
    let bincode = client
        .call_raw(
            "greeter",
            "Greeter.Hello",
            Bytes::from(body),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let greeting: Greeting = ContentType::Bincode.decode(&bincode.body).unwrap();
    assert_eq!(greeting.text, "Hello Bin");

    // The typed API with JSON on the wire.
    let typed = client
        .call_with::<_, Greeting>(
            "greeter",
            "Greeter.Hello",
            &Hello {
                name: "Typed".into(),
            },
            CallOptions::new().content_type(ContentType::Json),
        )
        .await
        .unwrap();
    assert_eq!(typed.message.text, "Hello Typed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_gives_408_and_cancels_the_handler() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let cluster = Cluster::start(1, move |_| {
        let flag = flag.clone();
        Service::new("sleepy").endpoint(Endpoint::unary(
            "Sleepy.Nap",
            move |_: CallContext, (): ()| {
                let guard = DropFlag(flag.clone());
                async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(guard);
                    Ok::<_, ServiceError>(())
                }
            },
        ))
    })
    .await;
    let client = cluster.client().build().await.unwrap();

    let err = within(
        "the call to time out",
        client.call_with::<_, ()>(
            "sleepy",
            "Sleepy.Nap",
            &(),
            CallOptions::new().timeout(Duration::from_millis(200)),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    eventually("the handler is cancelled", || {
        let cancelled = cancelled.clone();
        async move { cancelled.load(Ordering::SeqCst) }
    })
    .await;
    eventually("nothing is left in flight", || {
        let stats = cluster.services[0].stats();
        async move { stats.in_flight == 0 }
    })
    .await;
    cluster.shutdown().await;
}

/// A service whose one endpoint sleeps the milliseconds it is sent, `limit` calls at a time.
fn busy(limit: usize) -> Service {
    Service::new("busy").endpoint(
        Endpoint::unary("Busy.Work", |_: CallContext, millis: u64| async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, ServiceError>(())
        })
        .max_concurrent(limit),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_out_of_time_sends_nothing_more() {
    let cluster = Cluster::start(1, |_| busy(1)).await;
    // Retries back off 1–2 s from the second one on: far past the calls' deadline below.
    let client = cluster
        .client()
        .retry(RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
        })
        .build()
        .await
        .unwrap();

    // A zero timeout is over before anything is sent.
    let err = client
        .call_with::<_, ()>(
            "busy",
            "Busy.Work",
            &0u64,
            CallOptions::new().timeout(Duration::ZERO),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    assert_eq!(cluster.services[0].stats().requests, 0);

    // The endpoint is full: the call is refused (503), retried at once and refused again, then
    // its backoff outlasts its deadline. It ends with 408 then, and no third attempt is sent.
    let holder = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_with::<_, ()>(
                    "busy",
                    "Busy.Work",
                    &1_500u64,
                    CallOptions::new().retries(0),
                )
                .await
        }
    });
    eventually("the endpoint is full", || {
        let stats = cluster.services[0].stats();
        async move { stats.in_flight == 1 }
    })
    .await;
    let err = within(
        "the call to run out of time",
        client.call_with::<_, ()>(
            "busy",
            "Busy.Work",
            &0u64,
            CallOptions::new().timeout(Duration::from_millis(300)),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    assert_eq!(cluster.services[0].stats().rejected, 2);
    holder.await.unwrap().unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_call_and_the_endpoint_keeps_serving() {
    let cluster = Cluster::start(1, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster.client().build().await.unwrap();

    for _ in 0..3 {
        let err = client
            .call::<_, String>("greeter", "Greeter.Panic", &true)
            .await
            .unwrap_err();
        assert_eq!(err.code, 500, "{err}");
        assert!(err.detail.contains("panicked"), "{err}");
        let fine: String = client
            .call("greeter", "Greeter.Panic", &false)
            .await
            .unwrap();
        assert_eq!(fine, "fine");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_503_on_the_server_and_at_the_client_cap() {
    let cluster = Cluster::start(1, |_| busy(2)).await;
    let client = cluster.client().build().await.unwrap();
    let no_retry = || CallOptions::new().retries(0);

    // Two slow calls fill the endpoint; a third is refused at once.
    let first = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_with::<_, ()>("busy", "Busy.Work", &800u64, CallOptions::new().retries(0))
                .await
        }
    });
    let second = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_with::<_, ()>("busy", "Busy.Work", &800u64, CallOptions::new().retries(0))
                .await
        }
    });
    eventually("both calls run", || {
        let stats = cluster.services[0].stats();
        async move { stats.in_flight == 2 }
    })
    .await;
    let refused = client
        .call_with::<_, ()>("busy", "Busy.Work", &0u64, no_retry())
        .await
        .unwrap_err();
    assert_eq!(refused.code, 503, "{refused}");
    assert_eq!(cluster.services[0].stats().rejected, 1);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();

    // The client's own cap.
    let capped = cluster.client().max_in_flight(1).build().await.unwrap();
    let slow = tokio::spawn({
        let capped = capped.clone();
        async move { capped.call::<_, ()>("busy", "Busy.Work", &500u64).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let over = capped
        .call::<_, ()>("busy", "Busy.Work", &0u64)
        .await
        .unwrap_err();
    assert_eq!(
        (over.code, over.id.as_str()),
        (503, "micro.client"),
        "{over}"
    );
    slow.await.unwrap().unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_health_and_stats_and_wrappers_count_calls() {
    let metrics = Metrics::new();
    let counted = metrics.clone();
    let cluster = Cluster::start(1, move |i| {
        greeter(&format!("replica-{i}")).wrap(counted.clone())
    })
    .await;
    let client = cluster.client().build().await.unwrap();

    for _ in 0..5 {
        let _: Greeting = client
            .call("greeter", "Greeter.Hello", &Hello { name: "x".into() })
            .await
            .unwrap();
    }
    let _ = client.call::<_, ()>("greeter", "Greeter.Fail", &()).await;

    let health: Health = client.call("greeter", HEALTH_ENDPOINT, &()).await.unwrap();
    assert_eq!(health.status, "serving");
    assert_eq!(health.version, "1.0.0");
    let stats: ServiceStats = client.call("greeter", STATS_ENDPOINT, &()).await.unwrap();
    let hello = stats
        .endpoints
        .iter()
        .find(|e| e.name == "Greeter.Hello")
        .unwrap();
    assert_eq!((hello.requests, hello.errors), (5, 0));
    let fail = stats
        .endpoints
        .iter()
        .find(|e| e.name == "Greeter.Fail")
        .unwrap();
    assert_eq!((fail.requests, fail.errors), (1, 1));
    // The stats call itself is in flight while it answers.
    assert_eq!(stats.in_flight, 1);

    let seen = metrics.snapshot();
    let hello = seen
        .iter()
        .find(|m| m.name == "greeter/Greeter.Hello")
        .unwrap();
    assert_eq!((hello.requests, hello.errors), (5, 0));
    let fail = seen
        .iter()
        .find(|m| m.name == "greeter/Greeter.Fail")
        .unwrap();
    assert_eq!((fail.requests, fail.errors), (1, 1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_deregisters_then_lets_calls_in_flight_finish() {
    let cluster = Cluster::start(2, |i| greeter(&format!("replica-{i}"))).await;
    let client = cluster.client().build().await.unwrap();

    // A slow call on replica-0 (the only node the filter allows).
    let only_0 = || CallOptions::new().filter(micro::Filter::any().meta("node", "replica-0"));
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_with::<_, u64>("greeter", "Greeter.Slow", &300u64, only_0())
                .await
        }
    });
    eventually("the slow call runs", || {
        let stats = cluster.services[0].stats();
        async move { stats.in_flight == 1 }
    })
    .await;
    within("the stop", cluster.services[0].stop())
        .await
        .unwrap();
    // The stop waited for it.
    assert_eq!(in_flight.await.unwrap().unwrap().message, 300);

    let left = cluster.registry.get_service("greeter").await.unwrap();
    let nodes: Vec<_> = left
        .iter()
        .flat_map(|s| &s.nodes)
        .map(|n| n.metadata["node"].clone())
        .collect();
    assert_eq!(nodes, ["replica-1"]);
    for _ in 0..10 {
        let greeting: Greeting = client
            .call("greeter", "Greeter.Hello", &Hello { name: "x".into() })
            .await
            .unwrap();
        assert_eq!(greeting.node, "replica-1");
    }
    cluster.shutdown().await;
}

/// A service whose handler reports what reached it: a header, the trace id and the time left.
fn probe(name: &str) -> Service {
    Service::new(name).endpoint(Endpoint::unary(
        "Probe.Seen",
        |ctx: CallContext, (): ()| async move {
            let left = ctx.remaining().map(|d| d.as_millis() as u64);
            Ok::<_, ServiceError>((
                ctx.header("tenant").map(str::to_owned),
                ctx.trace_id().map(str::to_owned),
                left,
            ))
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_the_deadline_and_a_trace_id_reach_the_handler_locally_and_across_nodes() {
    // "probe-remote" runs on a replica node; "probe-local" on the client's own node.
    let cluster = Cluster::start(1, |_| probe("probe-remote")).await;
    let _local = probe("probe-local")
        .registry(cluster.registry.clone())
        .start(cluster.client_node())
        .await
        .unwrap();
    let client = cluster.client().build().await.unwrap();

    for service in ["probe-remote", "probe-local"] {
        for content_type in [ContentType::Bincode, ContentType::Json] {
            let options = CallOptions::new()
                .timeout(Duration::from_secs(30))
                .header("tenant", "acme")
                .header(TRACE_ID_HEADER, "0123456789abcdef")
                .content_type(content_type);
            let (tenant, trace, left): (Option<String>, Option<String>, Option<u64>) = client
                .call_with(service, "Probe.Seen", &(), options)
                .await
                .unwrap()
                .message;
            assert_eq!(tenant.as_deref(), Some("acme"), "{service} {content_type}");
            assert_eq!(
                trace.as_deref(),
                Some("0123456789abcdef"),
                "{service} {content_type}"
            );
            assert!(
                left.is_some_and(|ms| ms > 20_000 && ms <= 30_000),
                "{service} {content_type}: {left:?}"
            );
        }
    }
    cluster.shutdown().await;
}
