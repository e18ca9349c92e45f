//! Events flowing between two services on two nodes over QUIC.
//!
//! The `orders` service (an actor on the first node) takes orders and publishes an `OrderPlaced`
//! event for each. The `billing` service runs on the second node as two subscribers in the queue
//! group `billing`, at-least-once: each order is billed by exactly one of them, and a billing
//! attempt that fails (the first try of every fifth order, here) is redelivered. An `audit`
//! subscriber on the first node sees every event. No broker server runs anywhere: each node has
//! a broker actor, and the brokers exchange interest and events over the nodes' link.
//!
//! Run it with `cargo run --example pubsub` (it listens on 127.0.0.1 only; a test cluster CA is
//! generated on the spot). It exits by itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micro::broker::{Broker, Event, HandlerError, Redelivery, SubscribeOptions, SubscriberSpec};
use micro::prelude::*;
use micro::{ClusterCa, NodeId};
use serde::{Deserialize, Serialize};

/// The event the orders service publishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
    customer: String,
    cents: u64,
}

/// The orders service's protocol.
enum OrdersMsg {
    Place {
        customer: String,
        cents: u64,
        reply: Reply<Result<u64, String>>,
    },
}

/// The orders service: numbers orders and announces them.
struct Orders {
    broker: Broker,
    next: u64,
}

impl Actor for Orders {
    type Msg = OrdersMsg;

    async fn handle(&mut self, _: &mut Context<Self>, msg: OrdersMsg) -> Result<(), ActorError> {
        let OrdersMsg::Place {
            customer,
            cents,
            reply,
        } = msg;
        self.next += 1;
        let event = OrderPlaced {
            order: self.next,
            customer,
            cents,
        };
        let published = self.broker.publish("orders.placed", &event).await;
        let _ = reply.send(published.map(|()| event.order).map_err(|e| e.to_string()));
        Ok(())
    }
}

/// The billing service's subscriber, as a service definition would declare it.
fn billing(instance: &'static str, billed: Arc<AtomicU64>) -> SubscriberSpec {
    let handler = move |event: Event<OrderPlaced>| {
        let billed = billed.clone();
        async move {
            let order = &event.message;
            if order.order.is_multiple_of(5) && event.attempt == 1 {
                println!(
                    "billing/{instance}: payment provider timed out on order {}",
                    order.order
                );
                return Err::<(), HandlerError>("payment provider timed out".into());
            }
            billed.fetch_add(order.cents, Ordering::SeqCst);
            println!(
                "billing/{instance}: billed order {} ({} cents, {}) on attempt {}",
                order.order, order.cents, order.customer, event.attempt
            );
            Ok(())
        }
    };
    SubscriberSpec::new("orders.placed", handler).options(
        SubscribeOptions::new()
            .queue("billing")
            .at_least_once(Redelivery {
                ack_timeout: Duration::from_secs(2),
                max_attempts: 3,
                dead_letter: None,
            }),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let ca = ClusterCa::generate("pubsub-example")?;
    let shop = Node::builder()
        .name("shop")
        .listen(loopback)
        .credentials(ca.issue(NodeId::random())?)
        .start()
        .await?;
    let back_office = Node::builder()
        .name("back-office")
        .listen(loopback)
        .credentials(ca.issue(NodeId::random())?)
        .start()
        .await?;
    let shop_broker = Broker::start(&shop).await?;
    let office_broker = Broker::start(&back_office).await?;
    back_office
        .connect(shop.local_addr().ok_or("the shop does not listen")?)
        .await?;

    // The billing service: two instances sharing the work.
    let billed = Arc::new(AtomicU64::new(0));
    let mut instances = Vec::new();
    for instance in ["billing-1", "billing-2"] {
        instances.push(
            office_broker
                .subscribe_spec(&billing(instance, billed.clone()))
                .await?,
        );
    }
    // An audit trail next to the orders service sees every event.
    let audited = Arc::new(AtomicU64::new(0));
    let audit_count = audited.clone();
    shop_broker
        .subscribe("orders.placed", move |event: Event<OrderPlaced>| {
            let audit_count = audit_count.clone();
            async move {
                audit_count.fetch_add(1, Ordering::SeqCst);
                println!("audit: order {} placed", event.message.order);
                Ok::<(), HandlerError>(())
            }
        })
        .await?;

    // The shop learns of the billing subscribers within a round trip.
    while shop_broker.interest("orders.placed").total() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let orders = shop
        .spawn(
            ChildSpec::new({
                let broker = shop_broker.clone();
                move || Orders {
                    broker: broker.clone(),
                    next: 0,
                }
            })
            .named("orders"),
        )
        .await?;
    let mut expected = 0;
    for (i, customer) in ["ada", "grace", "edsger", "barbara", "ken"]
        .iter()
        .cycle()
        .take(10)
        .enumerate()
    {
        let cents = 1000 + 250 * i as u64;
        expected += cents;
        let order = orders
            .ask(
                |reply| OrdersMsg::Place {
                    customer: customer.to_string(),
                    cents,
                    reply,
                },
                Duration::from_secs(5),
            )
            .await??;
        println!("orders: placed order {order} for {customer}");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (billed.load(Ordering::SeqCst) < expected || audited.load(Ordering::SeqCst) < 10)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!();
    for sub in &instances {
        let stats = sub.stats();
        println!(
            "billing subscription {}: handled {}, failed attempts {}",
            sub.id(),
            stats.handled,
            stats.failed
        );
    }
    let stats = shop_broker.stats();
    println!(
        "shop broker: published {}, frames sent {}, acked {}, redelivered {}",
        stats.published, stats.frames_sent, stats.acked, stats.redelivered
    );
    println!(
        "billed {} of {} cents; audit saw {} events",
        billed.load(Ordering::SeqCst),
        expected,
        audited.load(Ordering::SeqCst)
    );
    let complete =
        billed.load(Ordering::SeqCst) == expected && audited.load(Ordering::SeqCst) == 10;

    back_office.shutdown().await?;
    shop.shutdown().await?;
    if complete {
        Ok(())
    } else {
        Err("not every order was billed and audited in time".into())
    }
}
