//! Client-side load balancing: how calls spread under each strategy, filters by version and
//! metadata.

use std::collections::HashMap;
use std::time::Duration;

use micro::{CallContext, CallOptions, Endpoint, Filter, Selector, Service, ServiceError};

use crate::common::{Cluster, Greeting, Hello, greeter};

async fn spread(
    client: &micro::Client,
    calls: usize,
    options: CallOptions,
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..calls {
        let reply = client
            .call_with::<_, Greeting>(
                "greeter",
                "Greeter.Hello",
                &Hello { name: "x".into() },
                options.clone(),
            )
            .await
            .unwrap();
        *seen.entry(reply.message.node).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact_and_random_reaches_every_node() {
    let cluster = Cluster::start(3, |i| greeter(&format!("replica-{i}"))).await;

    let round_robin = cluster
        .client()
        .strategy(Selector::RoundRobin)
        .build()
        .await
        .unwrap();
    let seen = spread(&round_robin, 300, CallOptions::new()).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.values().all(|&n| n == 100),
        "round robin is exact: {seen:?}"
    );

    let random = cluster
        .client()
        .strategy(Selector::Random)
        .build()
        .await
        .unwrap();
    let seen = spread(&random, 300, CallOptions::new()).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    // Each node expects 100; below 50 would be a 1-in-10^8 event for a fair coin.
    assert!(seen.values().all(|&n| n >= 50), "random spreads: {seen:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_steers_calls_away_from_a_slow_node() {
    // replica-0 takes 30 ms per call, the others answer at once.
    let cluster = Cluster::start(3, |i| {
        let delay = if i == 0 { 30 } else { 0 };
        let me = format!("replica-{i}");
        Service::new("greeter").endpoint(Endpoint::unary(
            "Greeter.Hello",
            move |_: CallContext, _: Hello| {
                let node = me.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    Ok::<_, ServiceError>(Greeting {
                        text: String::new(),
                        node,
                    })
                }
            },
        ))
    })
    .await;
    let client = cluster
        .client()
        .strategy(Selector::LeastOutstanding)
        .build()
        .await
        .unwrap();

    let mut callers = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        callers.push(tokio::spawn(async move {
            spread(&client, 50, CallOptions::new()).await
        }));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for caller in callers {
        for (node, n) in caller.await.unwrap() {
            *seen.entry(node).or_default() += n;
        }
    }
    let slow = seen.get("replica-0").copied().unwrap_or(0);
    // Random would send it a third (100 of 300).
    assert!(slow < 45, "the slow node got {slow} of 300: {seen:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_choose_by_version_and_metadata() {
    let cluster = Cluster::start(3, |i| {
        let version = if i == 2 { "2.0.0" } else { "1.0.0" };
        greeter(&format!("replica-{i}"))
            .version(version)
            .node_meta("zone", if i == 0 { "eu" } else { "us" })
    })
    .await;
    let client = cluster.client().build().await.unwrap();

    let v2 = spread(
        &client,
        20,
        CallOptions::new().filter(Filter::any().version("2.0.0")),
    )
    .await;
    assert_eq!(v2.keys().collect::<Vec<_>>(), ["replica-2"]);
    let eu = spread(
        &client,
        20,
        CallOptions::new().filter(Filter::any().meta("zone", "eu")),
    )
    .await;
    assert_eq!(eu.keys().collect::<Vec<_>>(), ["replica-0"]);
    let us_v1 = spread(
        &client,
        20,
        CallOptions::new().filter(Filter::any().version("1.0.0").meta("zone", "us")),
    )
    .await;
    assert_eq!(us_v1.keys().collect::<Vec<_>>(), ["replica-1"]);

    let none = client
        .call_with::<_, Greeting>(
            "greeter",
            "Greeter.Hello",
            &Hello { name: "x".into() },
            CallOptions::new().filter(Filter::any().version("9")),
        )
        .await
        .unwrap_err();
    assert_eq!(none.code, 503, "{none}");
    cluster.shutdown().await;
}
