//! Services declare subscribers: replicas in a queue group share a topic's events, each event
//! handled once; a stopped replica's subscription goes with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use micro::broker::{Broker, Event, HandlerError, SubscribeOptions, SubscriberSpec};
use micro::{CallContext, Endpoint, Service, ServiceError};
use micro_testkit::eventually;
use serde::{Deserialize, Serialize};

use crate::common::Cluster;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    id: u64,
}

type Seen = Arc<Mutex<HashMap<u64, Vec<String>>>>;

fn billing(node: String, seen: Seen) -> Service {
    let on_order = move |event: Event<OrderPlaced>| {
        let (node, seen) = (node.clone(), seen.clone());
        async move {
            seen.lock()
                .unwrap()
                .entry(event.message.id)
                .or_default()
                .push(node);
            Ok::<(), HandlerError>(())
        }
    };
    Service::new("billing")
        .endpoint(Endpoint::unary(
            "Billing.Ping",
            |_: CallContext, (): ()| async { Ok::<_, ServiceError>(()) },
        ))
        .subscriber(
            SubscriberSpec::new("orders.placed", on_order)
                .options(SubscribeOptions::new().queue("billing")),
        )
}

fn handled(seen: &Seen) -> (usize, usize, HashMap<String, usize>) {
    let seen = seen.lock().unwrap();
    let mut by_node = HashMap::new();
    for nodes in seen.values() {
        for node in nodes {
            *by_node.entry(node.clone()).or_default() += 1;
        }
    }
    let duplicates = seen.values().filter(|nodes| nodes.len() > 1).count();
    (seen.len(), duplicates, by_node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_in_a_queue_group_share_events_and_a_stopped_one_leaves_the_group() {
    let seen: Seen = Arc::default();
    let cluster = Cluster::start(2, |i| billing(format!("replica-{i}"), seen.clone())).await;
    // The publisher's node links to the replicas, and its broker learns their subscriptions.
    let publisher = Broker::start(cluster.client_node()).await.unwrap();
    for replica in &cluster.nodes.nodes()[1..] {
        cluster
            .client_node()
            .connect(replica.local_addr().unwrap())
            .await
            .unwrap();
    }
    eventually("the publisher knows both members", || {
        let members = publisher.interest("orders.placed").total();
        async move { members == 2 }
    })
    .await;

    for id in 0..100 {
        publisher
            .publish("orders.placed", &OrderPlaced { id })
            .await
            .unwrap();
    }
    eventually("every order is handled", || {
        let (handled, _, _) = handled(&seen);
        async move { handled == 100 }
    })
    .await;
    let (_, duplicates, by_node) = handled(&seen);
    assert_eq!(duplicates, 0, "each order once: {by_node:?}");
    assert_eq!(
        by_node.len(),
        2,
        "both replicas share the work: {by_node:?}"
    );
    for service in &cluster.services {
        let stats = service.subscriber_stats().await;
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].0, "orders.placed");
    }
    // The counters move when a handler returns, just after what it recorded.
    eventually("the services' subscriber counters agree", || {
        let services = cluster.services.clone();
        async move {
            let mut handled = 0;
            for service in &services {
                handled += service.subscriber_stats().await[0].1.handled;
            }
            handled == 100
        }
    })
    .await;

    // Stopping a replica's service withdraws its subscription; the other takes everything.
    cluster.services[0].stop().await.unwrap();
    eventually("the publisher forgets the stopped member", || {
        let members = publisher.interest("orders.placed").total();
        async move { members == 1 }
    })
    .await;
    for id in 100..150 {
        publisher
            .publish("orders.placed", &OrderPlaced { id })
            .await
            .unwrap();
    }
    eventually("the rest is handled", || {
        let (handled, _, _) = handled(&seen);
        async move { handled == 150 }
    })
    .await;
    let seen_now = seen.lock().unwrap().clone();
    assert!((100..150).all(|id| seen_now[&id] == ["replica-1"]));
    cluster.shutdown().await;
}
