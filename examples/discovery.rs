//! Two nodes find each other over mDNS and call each other, with no configuration.
//!
//! Each node runs an mDNS registry actor. The "shop" node registers a `prices` service and
//! exposes the actor behind it; the "client" node watches its registry until `prices` shows up,
//! reads where it runs, links to that node over QUIC and asks the actor. Then the shop stops, says
//! goodbye, and the client sees the service go. It exits by itself.
//!
//! mDNS traffic must stay on this machine here, so the example uses loopback only; run it with
//! `../shared/tools/netns-run cargo run --example discovery` (a private network namespace).

use std::net::SocketAddr;
use std::time::Duration;

use micro::prelude::*;
use micro::registry::{Interfaces, MdnsConfig, NodeRecord, Registry, ServiceRecord};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum PriceMsg {
    Quote(String, Reply<u32>),
}

impl RemoteMessage for PriceMsg {
    const TYPE_NAME: &'static str = "example.Prices";
}

struct Prices;

impl Actor for Prices {
    type Msg = PriceMsg;
    async fn handle(
        &mut self,
        _: &mut Context<Self>,
        PriceMsg::Quote(item, reply): PriceMsg,
    ) -> Result<(), ActorError> {
        let _ = reply.send(item.len() as u32 * 100);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro::logging::init();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mdns = MdnsConfig::default()
        .service_type("_microex._udp")?
        .interfaces(Interfaces::Loopback);

    let shop = Node::builder()
        .name("shop")
        .listen(loopback)
        .start()
        .await?;
    let shop_registry = Registry::mdns(&shop, mdns.clone()).await?;
    let client = Node::builder()
        .name("client")
        .listen(loopback)
        .start()
        .await?;
    let client_registry = Registry::mdns(&client, mdns).await?;
    let mut changes = client_registry.watch(Some("prices"))?;

    shop.spawn(ChildSpec::new(|| Prices).named("prices"))
        .await?;
    shop.expose::<PriceMsg>("prices")?;
    let listing = ServiceRecord::new("prices", "1.0").node(NodeRecord::new(
        shop.id().to_string(),
        shop.local_addr().map(|a| a.to_string()).unwrap_or_default(),
    ));
    shop_registry
        .register(&listing, Some(Duration::from_secs(30)))
        .await?;
    println!("shop registered `prices` at {}", listing.nodes[0].address);

    let seen = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await?;
    let found = seen.ok_or("the watch ended")??;
    println!(
        "client saw {:?} of `{}` {}",
        found.kind, found.service.name, found.service.version
    );

    let address: SocketAddr = found.service.nodes[0].address.parse()?;
    let peer = client.connect(address).await?;
    let prices = client.lookup_remote::<PriceMsg>(peer, "prices").await?;
    let quote = prices
        .ask(
            |r| PriceMsg::Quote("coffee".into(), r),
            Duration::from_secs(2),
        )
        .await?;
    println!("client asked the shop: coffee costs {quote}");

    shop.shutdown().await?;
    let gone = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await?;
    let gone = gone.ok_or("the watch ended")??;
    println!(
        "after the shop stopped, the client saw {:?} of `{}`",
        gone.kind, gone.service.name
    );

    client.shutdown().await?;
    Ok(())
}
