//! Two nodes talking over QUIC, with no configuration.
//!
//! Both nodes join this machine user's development cluster (a CA created once under
//! `~/.local/share/micro/dev-ca`), so they trust each other with mutual TLS. One node exposes a
//! key-value actor; the other connects, looks it up by name, and uses it exactly like a local
//! actor: `send`, `ask`, a reply port that travels, and a death watch. It exits by itself.
//!
//! Run it with `cargo run --example remote` (it listens on 127.0.0.1 only).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use micro::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum KvMsg {
    Put(String, String),
    Get(String, Reply<Option<String>>),
    Stop,
}

impl RemoteMessage for KvMsg {
    const TYPE_NAME: &'static str = "example.Kv";
}

#[derive(Default)]
struct Kv(HashMap<String, String>);

impl Actor for Kv {
    type Msg = KvMsg;

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: KvMsg) -> Result<(), ActorError> {
        match msg {
            KvMsg::Put(key, value) => {
                self.0.insert(key, value);
            }
            KvMsg::Get(key, reply) => {
                let _ = reply.send(self.0.get(&key).cloned());
            }
            KvMsg::Stop => ctx.stop(),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    micro::logging::init();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    let server = Node::builder()
        .name("server")
        .listen(loopback)
        .start()
        .await?;
    server
        .spawn(
            ChildSpec::new(Kv::default)
                .named("kv")
                .restart(Restart::Transient),
        )
        .await?;
    server.expose::<KvMsg>("kv")?;
    let address = server
        .local_addr()
        .ok_or(Error::NodeStopped("server".into()))?;
    println!("server {} listens on {address}", server.id());

    let client = Node::builder()
        .name("client")
        .listen(loopback)
        .start()
        .await?;
    let peer = client.connect(address).await?;
    println!(
        "client {} linked to {peer} (mutual TLS, dev cluster)",
        client.id()
    );

    let kv = client.lookup_remote::<KvMsg>(peer, "kv").await?;
    kv.send(KvMsg::Put("greeting".into(), "hello over QUIC".into()))?;
    let value = kv
        .ask(
            |reply| KvMsg::Get("greeting".into(), reply),
            Duration::from_secs(2),
        )
        .await?;
    println!("remote get: {value:?}");

    let unknown = client.lookup_remote::<KvMsg>(peer, "secrets").await;
    println!("looking up an actor that is not there: {unknown:?}");

    let watch = kv.watch();
    kv.send(KvMsg::Stop)?;
    println!("the remote actor stopped: {:?}", watch.await);

    client.shutdown().await?;
    server.shutdown().await?;
    println!("both nodes stopped");
    Ok(())
}
