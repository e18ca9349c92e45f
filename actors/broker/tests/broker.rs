//! The broker across three nodes in one process, linked over real QUIC on 127.0.0.1: fan-out,
//! queue groups, at-least-once redelivery and dead letters, ordering, interest withdrawal,
//! backpressure, codecs.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_broker::{
    Backpressure, Broker, BrokerConfig, BrokerError, Event, HandlerError, PublishOptions,
    Redelivery, SubscribeOptions, SubscriberSpec,
};
use micro_runtime::{ContentType, Node};
use micro_testkit::{TestCluster, eventually, within};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// `n` nodes of a `TestCluster` (its own CA), each with a broker, then linked pairwise over QUIC; returns
/// once every broker has said hello to every other.
async fn cluster(n: usize) -> Vec<(Node, Broker)> {
    cluster_with(n, BrokerConfig::default()).await
}

async fn cluster_with(n: usize, config: BrokerConfig) -> Vec<(Node, Broker)> {
    let nodes = TestCluster::builder(n).link(false).start().await;
    let mut members: Vec<(Node, Broker)> = Vec::new();
    for node in nodes.nodes() {
        let broker = Broker::start_with(node, config.clone()).await.unwrap();
        members.push((node.clone(), broker));
    }
    nodes.connect_all().await;
    eventually("every broker knows every other", || async {
        members.iter().all(|(_, b)| b.peers().len() == n - 1)
    })
    .await;
    members
}

async fn shutdown(members: Vec<(Node, Broker)>) {
    for (node, _) in members.iter().rev() {
        let _ = node.shutdown().await;
    }
}

/// Waits until every broker of `members` sees `total` subscriptions of `topic`.
async fn interest(members: &[(Node, Broker)], topic: &str, total: usize) {
    eventually(
        &format!("{total} subscriptions of {topic} known everywhere"),
        || async {
            members
                .iter()
                .all(|(_, b)| b.interest(topic).total() == total)
        },
    )
    .await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tick {
    publisher: String,
    seq: u64,
    padding: String,
}

fn tick(publisher: &str, seq: u64) -> Tick {
    Tick {
        publisher: publisher.to_owned(),
        seq,
        padding: "x".repeat(16),
    }
}

/// A handler that records what it gets.
type Seen = Arc<Mutex<Vec<Event<Tick>>>>;

fn recorder() -> (
    Seen,
    impl Fn(Event<Tick>) -> std::future::Ready<Result<(), HandlerError>>,
) {
    let seen: Seen = Arc::default();
    let into = seen.clone();
    let handler = move |event: Event<Tick>| {
        into.lock().unwrap().push(event);
        std::future::ready(Ok(()))
    };
    (seen, handler)
}

fn count(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_subscribers_on_every_node_get_every_message() {
    let members = cluster(3).await;
    let mut seen = Vec::new();
    for (_, broker) in &members {
        let (recorded, handler) = recorder();
        broker.subscribe("fanout", handler).await.unwrap();
        seen.push(recorded);
    }
    // A second subscriber on node 1: its node gets one frame per message, fanned out locally.
    let (second, handler) = recorder();
    members[1].1.subscribe("fanout", handler).await.unwrap();
    seen.push(second);
    interest(&members, "fanout", 4).await;

    let before = members[0].1.stats();
    for seq in 0..100 {
        members[0]
            .1
            .publish("fanout", &tick("a", seq))
            .await
            .unwrap();
    }
    for recorded in &seen {
        eventually("every subscriber got all 100", || async {
            count(recorded) == 100
        })
        .await;
    }
    // Sent once per message per remote node (nodes 1 and 2), not per subscriber; frames carry
    // batches, so there are at most as many.
    let after = members[0].1.stats();
    assert_eq!(after.remote_deliveries - before.remote_deliveries, 200);
    assert!(after.frames_sent - before.frames_sent <= 200);
    let on_node_1 = seen[1].lock().unwrap()[7].clone();
    assert_eq!(on_node_1.message, tick("a", 7));
    assert_eq!(on_node_1.publisher, members[0].0.id());
    assert_eq!(on_node_1.attempt, 1);
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_spreads_messages_and_delivers_each_once() {
    let members = cluster(3).await;
    let mut seen = Vec::new();
    for (_, broker) in &members {
        let (recorded, handler) = recorder();
        broker
            .subscribe_with("work", SubscribeOptions::new().queue("workers"), handler)
            .await
            .unwrap();
        seen.push(recorded);
    }
    interest(&members, "work", 3).await;

    // Publishers on two nodes.
    for seq in 0..300 {
        let (publisher, name) = if seq % 2 == 0 { (0, "p0") } else { (2, "p2") };
        members[publisher]
            .1
            .publish("work", &tick(name, seq))
            .await
            .unwrap();
    }
    eventually("300 deliveries in all", || async {
        seen.iter().map(count).sum::<usize>() == 300
    })
    .await;
    // Nothing more trickles in: exactly one delivery per message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut per_message: HashMap<u64, usize> = HashMap::new();
    for recorded in &seen {
        for event in recorded.lock().unwrap().iter() {
            *per_message.entry(event.message.seq).or_default() += 1;
        }
    }
    assert_eq!(per_message.len(), 300, "every message delivered");
    assert!(per_message.values().all(|&n| n == 1), "no duplicates");
    // Round robin per publisher: each member gets about a third; generously, at least 50.
    for (i, recorded) in seen.iter().enumerate() {
        let n = count(recorded);
        assert!(n >= 50, "member on node {i} got only {n} of 300");
    }
    shutdown(members).await;
}

/// Acks are due within 2 s: long enough that a loaded machine causes no redelivery the tests do
/// not expect (they count deliveries exactly), short enough for the crash test, which waits it.
fn redelivery(attempts: u32) -> Redelivery {
    Redelivery {
        ack_timeout: Duration::from_secs(2),
        max_attempts: attempts,
        dead_letter: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_redelivers_after_a_handler_error() {
    let members = cluster(3).await;
    let attempts: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let into = attempts.clone();
    let subscription = members[1]
        .1
        .subscribe_with(
            "payments",
            SubscribeOptions::new().at_least_once(redelivery(5)),
            move |event: Event<Tick>| {
                into.lock()
                    .unwrap()
                    .push((event.message.seq, event.attempt));
                // The first delivery of each message fails: a nack.
                std::future::ready(if event.attempt == 1 {
                    Err::<(), HandlerError>("not yet".into())
                } else {
                    Ok(())
                })
            },
        )
        .await
        .unwrap();
    interest(&members, "payments", 1).await;

    for seq in 0..10 {
        members[0]
            .1
            .publish("payments", &tick("a", seq))
            .await
            .unwrap();
    }
    eventually("every message handled on its second attempt", || async {
        subscription.stats().handled == 10
    })
    .await;
    let stats = subscription.stats();
    assert_eq!(stats.failed, 10);
    let seen = attempts.lock().unwrap().clone();
    for seq in 0..10 {
        let tries: Vec<u32> = seen
            .iter()
            .filter(|(s, _)| *s == seq)
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(tries, [1, 2], "message {seq}");
    }
    eventually("the publisher holds nothing unacknowledged", || async {
        members[0].1.stats().pending == 0
    })
    .await;
    let publisher = members[0].1.stats();
    assert_eq!(publisher.acked, 10);
    assert_eq!(publisher.redelivered, 10);
    assert_eq!(publisher.dead_lettered, 0);
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_redelivers_after_a_handler_crash() {
    let members = cluster(3).await;
    let attempts: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let into = attempts.clone();
    let subscription = members[2]
        .1
        .subscribe_with(
            "crashy",
            SubscribeOptions::new().at_least_once(redelivery(5)),
            move |event: Event<Tick>| {
                into.lock()
                    .unwrap()
                    .push((event.message.seq, event.attempt));
                if event.message.seq == 3 && event.attempt == 1 {
                    panic!("handler crashed on message 3");
                }
                std::future::ready(Ok::<(), HandlerError>(()))
            },
        )
        .await
        .unwrap();
    interest(&members, "crashy", 1).await;

    for seq in 0..6 {
        members[0]
            .1
            .publish("crashy", &tick("a", seq))
            .await
            .unwrap();
    }
    eventually("all six handled, message 3 after the restart", || async {
        subscription.stats().handled == 6
    })
    .await;
    let stats = subscription.stats();
    assert_eq!(stats.crashed, 1, "{stats:?}");
    let seen = attempts.lock().unwrap().clone();
    let third: Vec<u32> = seen
        .iter()
        .filter(|(s, _)| *s == 3)
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(third, [1, 2], "message 3 redelivered once");
    // The others went through once each (at-least-once allows more, but nothing here delays them).
    assert_eq!(seen.len(), 7);
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_to_the_dead_letter_topic_after_the_retry_limit() {
    let members = cluster(3).await;
    let tries = Arc::new(AtomicU64::new(0));
    let counted = tries.clone();
    members[1]
        .1
        .subscribe_with(
            "fragile",
            SubscribeOptions::new().at_least_once(redelivery(3)),
            move |_: Event<Tick>| {
                counted.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Err::<(), HandlerError>("always fails".into()))
            },
        )
        .await
        .unwrap();
    let (dead, handler) = recorder();
    members[2]
        .1
        .subscribe("fragile.dead-letter", handler)
        .await
        .unwrap();
    interest(&members, "fragile", 1).await;
    interest(&members, "fragile.dead-letter", 1).await;

    members[0]
        .1
        .publish_with(
            "fragile",
            &tick("a", 42),
            PublishOptions::new().header("trace", "t-1"),
        )
        .await
        .unwrap();
    eventually("the message reaches the dead-letter topic", || async {
        count(&dead) == 1
    })
    .await;
    assert_eq!(tries.load(Ordering::SeqCst), 3, "three attempts, then dead");
    let letter = dead.lock().unwrap()[0].clone();
    assert_eq!(letter.message, tick("a", 42));
    assert_eq!(letter.headers["trace"], "t-1");
    assert_eq!(letter.headers["x-dead-letter-topic"], "fragile");
    assert_eq!(letter.headers["x-dead-letter-attempts"], "3");
    assert_eq!(letter.headers["x-dead-letter-reason"], "always fails");
    assert_eq!(members[0].1.stats().dead_lettered, 1);
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_sees_each_publishers_messages_in_order() {
    let members = cluster(3).await;
    let (remote, handler) = recorder();
    members[2].1.subscribe("ordered", handler).await.unwrap();
    let (local, handler) = recorder();
    members[0].1.subscribe("ordered", handler).await.unwrap();
    interest(&members, "ordered", 2).await;

    let publish = |i: usize, name: &'static str| {
        let broker = members[i].1.clone();
        tokio::spawn(async move {
            for seq in 0..2000 {
                broker.publish("ordered", &tick(name, seq)).await.unwrap();
            }
        })
    };
    let (p0, p1) = (publish(0, "p0"), publish(1, "p1"));
    p0.await.unwrap();
    p1.await.unwrap();
    for recorded in [&remote, &local] {
        eventually("4000 messages", || async { count(recorded) == 4000 }).await;
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for event in recorded.lock().unwrap().iter() {
            let m = &event.message;
            if let Some(prev) = last.get(&m.publisher) {
                assert!(
                    m.seq > *prev,
                    "{} sent {} after {}",
                    m.publisher,
                    m.seq,
                    prev
                );
            }
            last.insert(m.publisher.clone(), m.seq);
        }
    }
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_withdraws_interest_everywhere() {
    let members = cluster(3).await;
    let (seen, handler) = recorder();
    let subscription = members[1].1.subscribe("news", handler).await.unwrap();
    interest(&members, "news", 1).await;
    members[0].1.publish("news", &tick("a", 1)).await.unwrap();
    eventually("the first message arrives", || async { count(&seen) == 1 }).await;

    let stats = subscription.unsubscribe().await.unwrap();
    assert_eq!(stats.handled, 1);
    interest(&members, "news", 0).await;
    let before = members[0].1.stats();
    members[0].1.publish("news", &tick("a", 2)).await.unwrap();
    let after = members[0].1.stats();
    assert_eq!(after.unrouted, before.unrouted + 1, "nobody wants it now");
    assert_eq!(
        after.remote_deliveries, before.remote_deliveries,
        "nothing sent"
    );
    assert_eq!(members[1].1.stats().subscriptions, 0);
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_takes_its_interest_with_it() {
    let mut members = cluster(3).await;
    let mut seen = Vec::new();
    for (_, broker) in &members {
        let (recorded, handler) = recorder();
        broker
            .subscribe_with("jobs", SubscribeOptions::new().queue("g"), handler)
            .await
            .unwrap();
        seen.push(recorded);
    }
    interest(&members, "jobs", 3).await;

    let (lost, _) = members.pop().unwrap();
    let lost_id = lost.id();
    lost.shutdown().await.unwrap();
    eventually("the survivors drop the lost node's interest", || async {
        members.iter().all(|(_, b)| {
            let known = b.interest("jobs");
            known.total() == 2 && !known.groups["g"].contains_key(&lost_id)
        })
    })
    .await;
    for seq in 0..100 {
        members[0].1.publish("jobs", &tick("a", seq)).await.unwrap();
    }
    eventually("all 100 handled by the two survivors", || async {
        count(&seen[0]) + count(&seen[1]) == 100
    })
    .await;
    assert!(count(&seen[0]) > 0 && count(&seen[1]) > 0);
    assert_eq!(members[0].1.stats().undeliverable, 0);
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drop_oldest_subscriber_does_not_stall_the_others() {
    let members = cluster(3).await;
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let slow = members[1]
        .1
        .subscribe_with(
            "feed",
            SubscribeOptions::new().backpressure(Backpressure::DropOldest { capacity: 10 }),
            move |_: Event<Tick>| {
                let held = held.clone();
                async move {
                    held.acquire().await?.forget();
                    Ok::<(), HandlerError>(())
                }
            },
        )
        .await
        .unwrap();
    let (fast, handler) = recorder();
    members[1].1.subscribe("feed", handler).await.unwrap();
    let (elsewhere, handler) = recorder();
    members[2].1.subscribe("feed", handler).await.unwrap();
    interest(&members, "feed", 3).await;

    for seq in 0..1000 {
        members[0].1.publish("feed", &tick("a", seq)).await.unwrap();
    }
    eventually("the fast subscribers got everything", || async {
        count(&fast) == 1000 && count(&elsewhere) == 1000
    })
    .await;
    let stats = slow.stats();
    // One message in the stuck handler, ten queued, the rest pushed out — and counted.
    assert_eq!(stats.received, 1000, "{stats:?}");
    assert_eq!(stats.queued, 10, "{stats:?}");
    assert_eq!(stats.dropped, 989, "{stats:?}");
    gate.add_permits(100);
    eventually("the slow one catches up with what it kept", || async {
        slow.stats().handled == 11
    })
    .await;
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_subscriber_makes_publishers_wait_then_fail() {
    let members = cluster(2).await;
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let policy = Backpressure::Block {
        capacity: 1,
        timeout: Duration::from_secs(1),
    };
    let slow = members[1]
        .1
        .subscribe_with(
            "orders",
            SubscribeOptions::new().backpressure(policy),
            move |_: Event<Tick>| {
                let held = held.clone();
                async move {
                    held.acquire().await?.forget();
                    Ok::<(), HandlerError>(())
                }
            },
        )
        .await
        .unwrap();
    interest(&members, "orders", 1).await;

    for (node, who) in [(0, "remote"), (1, "local")] {
        let broker = &members[node].1;
        // One in the handler and one queued, for each round of this loop.
        broker.publish("orders", &tick(who, 0)).await.unwrap();
        eventually("the handler holds one", || async {
            slow.stats().queued == 0
        })
        .await;
        broker.publish("orders", &tick(who, 1)).await.unwrap();
        let refused = within(
            "the publish gives up",
            broker.publish("orders", &tick(who, 2)),
        )
        .await;
        assert!(
            matches!(refused, Err(BrokerError::Full { .. })),
            "{who}: {refused:?}"
        );
        // Room appears while a publisher waits: it goes through.
        let waiting = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.publish("orders", &tick(who, 3)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(1);
        waiting.await.unwrap().unwrap();
        gate.add_permits(2);
        eventually("drained", || async {
            slow.stats().queued == 0 && gate.available_permits() == 0
        })
        .await;
    }
    let stats = slow.stats();
    assert_eq!(stats.rejected, 2, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    gate.add_permits(10);
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_travel_in_any_codec_and_bad_ones_are_counted() {
    let members = cluster(2).await;
    let (seen, handler) = recorder();
    let subscription = members[1].1.subscribe("codec", handler).await.unwrap();
    let dead_tries = Arc::new(AtomicU64::new(0));
    let counted = dead_tries.clone();
    let strict = members[1]
        .1
        .subscribe_with(
            "numbers",
            SubscribeOptions::new().at_least_once(redelivery(5)),
            move |_: Event<u64>| {
                counted.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok::<(), HandlerError>(()))
            },
        )
        .await
        .unwrap();
    let (dead, handler) = recorder();
    members[0]
        .1
        .subscribe("numbers.dead-letter", handler)
        .await
        .unwrap();
    interest(&members, "codec", 1).await;
    interest(&members, "numbers", 1).await;

    let json = PublishOptions::new().content_type(ContentType::Json);
    members[0]
        .1
        .publish_with("codec", &tick("json", 1), json.clone())
        .await
        .unwrap();
    members[0]
        .1
        .publish("codec", &tick("bincode", 2))
        .await
        .unwrap();
    // Not a Tick: counted, never handed to the handler.
    members[0]
        .1
        .publish("codec", &"just a string")
        .await
        .unwrap();
    eventually("two decoded, one refused", || async {
        count(&seen) == 2 && subscription.stats().undecodable == 1
    })
    .await;
    assert_eq!(seen.lock().unwrap()[0].message, tick("json", 1));

    // An at-least-once subscriber dead-letters what it cannot decode, without retrying.
    members[0]
        .1
        .publish_with("numbers", &tick("not a number", 3), json)
        .await
        .unwrap();
    eventually("dead-lettered at once", || async { count(&dead) == 1 }).await;
    assert_eq!(strict.stats().undecodable, 1);
    assert_eq!(dead_tries.load(Ordering::SeqCst), 0);
    assert_eq!(
        dead.lock().unwrap()[0].headers["x-dead-letter-attempts"],
        "1"
    );
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_subscriber_starts_from_its_spec_and_survives_crashes() {
    let node = Node::builder().start().await.unwrap();
    let broker = Broker::start(&node).await.unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let counted = handled.clone();
    let spec = SubscriberSpec::new("local", move |event: Event<u64>| {
        if event.message == 0 {
            panic!("zero is poison");
        }
        counted.fetch_add(event.message, Ordering::SeqCst);
        std::future::ready(Ok::<(), HandlerError>(()))
    });
    let subscription = broker.subscribe_spec(&spec).await.unwrap();
    for n in [1u64, 0, 2, 0, 3] {
        broker.publish("local", &n).await.unwrap();
    }
    eventually("the survivors handled", || async {
        handled.load(Ordering::SeqCst) == 6
    })
    .await;
    let stats = subscription.stats();
    assert_eq!((stats.handled, stats.crashed), (3, 2), "{stats:?}");
    // A handle found later works on the same broker.
    let again = Broker::lookup(&node).await.unwrap();
    again.publish("local", &4u64).await.unwrap();
    eventually("seen through the looked-up handle", || async {
        handled.load(Ordering::SeqCst) == 10
    })
    .await;
    assert!(matches!(
        broker.publish("", &1u64).await,
        Err(BrokerError::InvalidTopic(_))
    ));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_group_messages_move_to_a_survivor_when_their_node_is_lost() {
    let mut members = cluster(3).await;
    // Acks are due in a minute: within the test's bounds only the node loss can move them.
    let patient = SubscribeOptions::new()
        .queue("g")
        .at_least_once(Redelivery {
            ack_timeout: Duration::from_secs(60),
            ..Redelivery::default()
        });
    let (survivor, handler) = recorder();
    members[1]
        .1
        .subscribe_with("tasks", patient.clone(), handler)
        .await
        .unwrap();
    let stuck = Arc::new(Semaphore::new(0));
    let held = stuck.clone();
    members[2]
        .1
        .subscribe_with("tasks", patient, move |_: Event<Tick>| {
            let held = held.clone();
            async move {
                held.acquire().await?.forget();
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    interest(&members, "tasks", 2).await;

    for seq in 0..10 {
        members[0]
            .1
            .publish("tasks", &tick("a", seq))
            .await
            .unwrap();
    }
    eventually("the survivor handled its share", || async {
        count(&survivor) > 0 && members[0].1.stats().acked == count(&survivor) as u64
    })
    .await;
    let before = count(&survivor);
    assert!(before < 10, "the stuck member got some");

    let (lost, _) = members.pop().unwrap();
    lost.shutdown().await.unwrap();
    eventually("every message handled by the survivor", || async {
        let seqs: std::collections::BTreeSet<u64> = survivor
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.message.seq)
            .collect();
        seqs.len() == 10
    })
    .await;
    let moved: Vec<u32> = survivor.lock().unwrap()[before..]
        .iter()
        .map(|e| e.attempt)
        .collect();
    assert!(
        moved.iter().all(|&a| a == 2),
        "moved as second attempts: {moved:?}"
    );
    eventually("nothing left unacknowledged", || async {
        members[0].1.stats().pending == 0
    })
    .await;
    shutdown(members).await;
}
