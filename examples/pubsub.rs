//! Events flowing between two services on three nodes over QUIC.
//!
//! The `orders` service, on the `shop` node, answers `Orders.Place`: it numbers the order,
//! publishes an `OrderPlaced` event through the node's broker and returns the order number. The
//! `billing` service runs on `back-office-1` and `back-office-2` and declares a subscriber in the
//! queue group `billing`, at-least-once: each order is billed by exactly one replica, and a
//! failed attempt (the first try of every fifth order, here) is redelivered, to the other replica
//! when it can. An `audit` subscriber on the shop sees every event. A client on the shop places
//! the orders; everyone finds the services through a memory registry on the shop. No broker
//! server runs anywhere: each node has a broker actor (the billing nodes' start with the
//! service), and the brokers exchange interest and events over the nodes' links.
//!
//! Run it with `cargo run --example pubsub` (it listens on 127.0.0.1 only; a test cluster CA is
//! generated on the spot). It stops the services gracefully and exits by itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micro::broker::{Broker, Event, HandlerError, Redelivery, SubscribeOptions, SubscriberSpec};
use micro::registry::{MemoryRegistry, Registry};
use micro::{CallContext, Client, ClusterCa, Endpoint, Node, NodeId, Service, ServiceError};
use serde::{Deserialize, Serialize};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const TOPIC: &str = "orders.placed";
const ORDERS: u64 = 10;

/// What a client sends to `Orders.Place`.
#[derive(Serialize, Deserialize)]
struct PlaceOrder {
    customer: String,
    cents: u64,
}

/// The event the orders service publishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
    customer: String,
    cents: u64,
}

/// The orders service: numbers orders and announces each on the node's broker.
fn orders(broker: Broker) -> Service {
    let next = Arc::new(AtomicU64::new(0));
    let place = move |_: CallContext, req: PlaceOrder| {
        let (broker, next) = (broker.clone(), next.clone());
        async move {
            let order = next.fetch_add(1, Ordering::SeqCst) + 1;
            let event = OrderPlaced {
                order,
                customer: req.customer,
                cents: req.cents,
            };
            broker.publish(TOPIC, &event).await?;
            Ok::<_, ServiceError>(order)
        }
    };
    Service::new("orders").endpoint(Endpoint::unary("Orders.Place", place))
}

/// What one billing replica did.
#[derive(Default)]
struct Ledger {
    cents: AtomicU64,
    billed: AtomicU64,
    failed: AtomicU64,
}

/// The billing service as replica `me` runs it: a subscriber in the queue group `billing`.
fn billing(me: &'static str, ledger: Arc<Ledger>) -> Service {
    let on_order = move |event: Event<OrderPlaced>| {
        let ledger = ledger.clone();
        async move {
            let (order, attempt) = (event.message.order, event.attempt);
            if order.is_multiple_of(5) && attempt == 1 {
                ledger.failed.fetch_add(1, Ordering::SeqCst);
                println!("billing/{me}: payment provider timed out on order {order}");
                return Err::<(), HandlerError>("payment provider timed out".into());
            }
            let (cents, customer) = (event.message.cents, &event.message.customer);
            ledger.cents.fetch_add(cents, Ordering::SeqCst);
            ledger.billed.fetch_add(1, Ordering::SeqCst);
            println!(
                "billing/{me}: billed order {order} ({cents} cents, {customer}) on attempt {attempt}"
            );
            Ok(())
        }
    };
    let redelivery = Redelivery {
        ack_timeout: Duration::from_secs(2),
        max_attempts: 3,
        dead_letter: None,
    };
    Service::new("billing").subscriber(
        SubscriberSpec::new(TOPIC, on_order).options(
            SubscribeOptions::new()
                .queue("billing")
                .at_least_once(redelivery),
        ),
    )
}

async fn node(name: &str, ca: &ClusterCa) -> Result<Node> {
    Ok(Node::builder()
        .name(name)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .credentials(ca.issue(NodeId::random())?)
        .start()
        .await?)
}

/// Waits up to 10 s for `done`.
async fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<()> {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let timeout = tokio::time::timeout(Duration::from_secs(10), wait).await;
    Ok(timeout.map_err(|_| format!("timed out waiting until {what}"))?)
}

#[tokio::main]
async fn main() -> Result<()> {
    micro::logging::init();
    let ca = ClusterCa::generate("pubsub-example")?;
    let shop = node("shop", &ca).await?;
    let registry = Registry::new(shop.spawn(MemoryRegistry::spec()).await?);
    let shop_broker = Broker::start(&shop).await?;
    let orders = orders(shop_broker.clone())
        .registry(registry.clone())
        .start(&shop)
        .await?;

    // The billing service, replicated: its replicas share the events as one queue group.
    let mut replicas = Vec::new();
    for name in ["back-office-1", "back-office-2"] {
        let office = node(name, &ca).await?;
        let ledger = Arc::new(Ledger::default());
        let service = billing(name, ledger.clone())
            .registry(registry.clone())
            .start(&office)
            .await?;
        // Brokers exchange interest over links: link the replica to the shop, its broker running.
        office
            .connect(shop.local_addr().ok_or("the shop does not listen")?)
            .await?;
        replicas.push((name, office, service, ledger));
    }
    // An audit trail next to the orders service sees every event: a plain subscription.
    let audited = Arc::new(AtomicU64::new(0));
    let audit_count = audited.clone();
    shop_broker
        .subscribe(TOPIC, move |event: Event<OrderPlaced>| {
            let audit_count = audit_count.clone();
            async move {
                audit_count.fetch_add(1, Ordering::SeqCst);
                println!("audit: order {} placed", event.message.order);
                Ok::<(), HandlerError>(())
            }
        })
        .await?;
    // The shop learns of both billing subscriptions within a round trip.
    wait_until("the shop knows every subscriber", || {
        shop_broker.interest(TOPIC).total() == 3
    })
    .await?;

    let client = Client::builder(&shop).registry(registry).build().await?;
    let mut expected = 0;
    let customers = ["ada", "grace", "edsger", "barbara", "ken"];
    for (i, customer) in customers.iter().cycle().take(ORDERS as usize).enumerate() {
        let cents = 1000 + 250 * i as u64;
        expected += cents;
        let request = PlaceOrder {
            customer: customer.to_string(),
            cents,
        };
        let order: u64 = client.call("orders", "Orders.Place", &request).await?;
        println!("orders: placed order {order} for {customer}");
    }

    // Audited, and billed: the shop tracks every billing delivery until its ack comes back.
    wait_until("every order is audited and billed", || {
        audited.load(Ordering::SeqCst) == ORDERS && shop_broker.stats().acked == ORDERS
    })
    .await?;

    println!();
    let mut billed = 0;
    for (name, _, _, ledger) in &replicas {
        billed += ledger.cents.load(Ordering::SeqCst);
        println!(
            "billing on {name}: billed {} orders, {} failed attempts",
            ledger.billed.load(Ordering::SeqCst),
            ledger.failed.load(Ordering::SeqCst)
        );
    }
    let stats = shop_broker.stats();
    println!(
        "shop broker: published {}, frames sent {}, acked {}, redelivered {}",
        stats.published, stats.frames_sent, stats.acked, stats.redelivered
    );
    let audited = audited.load(Ordering::SeqCst);
    println!("billed {billed} of {expected} cents; audit saw {audited} events");

    // Stopping a service unsubscribes its subscribers first, then deregisters and drains.
    for (_, _, service, _) in &replicas {
        service.stop().await?;
    }
    orders.stop().await?;
    wait_until("the billing subscriptions are gone", || {
        shop_broker.interest(TOPIC).total() == 1
    })
    .await?;
    println!("services stopped; the shop now sees only the audit subscriber");
    for (_, office, _, _) in replicas.iter().rev() {
        office.shutdown().await?;
    }
    shop.shutdown().await?;
    Ok(())
}
