//! Streaming RPC of each shape, with backpressure and an early close.
//!
//! A server node runs a `streams` service with three streaming endpoints: `Ticker.Count` (server
//! streaming: one request, N responses), `Stats.Sum` (client streaming: N requests, one response)
//! and `Chat.Upper` (bidirectional: each line comes back uppercased). A client node, which also
//! hosts the memory registry, calls each one; then it starts a count that would never end, reads
//! a few numbers and drops the stream: the handler's next send fails and it stops. It exits by
//! itself.
//!
//! Run it with `cargo run --example streaming` (it listens on 127.0.0.1 only).

use std::net::SocketAddr;
use std::time::Duration;

use micro::registry::{MemoryRegistry, Registry};
use micro::{CallContext, CallOptions, Client, Endpoint, Incoming, Node, Outgoing, Service};
use serde::{Deserialize, Serialize};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    count: u64,
    sum: u64,
}

fn streams() -> Service {
    Service::new("streams")
        .endpoint(Endpoint::server_stream(
            "Ticker.Count",
            |_: CallContext, up_to: u64, mut out: Outgoing<u64>| async move {
                for i in 1..=up_to {
                    // Waits while the client is behind; fails once it has gone.
                    if let Err(err) = out.send(&i).await {
                        println!(
                            "  [server] Ticker.Count stops after {} numbers: {err}",
                            i - 1
                        );
                        return Err(err);
                    }
                }
                Ok(())
            },
        ))
        .endpoint(Endpoint::client_stream(
            "Stats.Sum",
            |_: CallContext, mut numbers: Incoming<u64>| async move {
                let mut summary = Summary { count: 0, sum: 0 };
                while let Some(n) = numbers.recv().await {
                    summary.count += 1;
                    summary.sum += n?;
                }
                Ok(summary)
            },
        ))
        .endpoint(Endpoint::bidi_stream(
            "Chat.Upper",
            |_: CallContext, mut lines: Incoming<String>, mut out: Outgoing<String>| async move {
                while let Some(line) = lines.recv().await {
                    out.send(&line?.to_uppercase()).await?;
                }
                Ok(())
            },
        ))
}

#[tokio::main]
async fn main() -> Result<()> {
    micro::logging::init();
    let client_node = Node::builder()
        .name("client")
        .listen(LOOPBACK)
        .start()
        .await?;
    let registry = Registry::new(client_node.spawn(MemoryRegistry::spec()).await?);
    let server_node = Node::builder()
        .name("server")
        .listen(LOOPBACK)
        .start()
        .await?;
    let service = streams()
        .registry(registry.clone())
        .start(&server_node)
        .await?;
    let client = Client::builder(&client_node)
        .registry(registry)
        .build()
        .await?;

    // Server streaming: one request, a stream of responses.
    let mut ticks = client
        .server_stream::<u64, u64>("streams", "Ticker.Count", &5, CallOptions::new())
        .await?;
    print!("Ticker.Count 5:");
    while let Some(n) = ticks.recv().await {
        print!(" {}", n?);
    }
    println!(" (end)");

    // Client streaming: a stream of requests, then one response.
    let mut sum = client
        .client_stream::<u64, Summary>("streams", "Stats.Sum", CallOptions::new())
        .await?;
    for n in 1..=100 {
        sum.send(&n).await?;
    }
    println!("Stats.Sum 1..=100: {:?}", sum.finish().await?);

    // Bidirectional: send a line, read its echo; finishing ends the handler's requests.
    let (mut lines, mut echoes) = client
        .stream::<String, String>("streams", "Chat.Upper", CallOptions::new())
        .await?;
    for line in ["hello", "streaming", "world"] {
        lines.send(&line.to_owned()).await?;
        if let Some(echo) = echoes.recv().await {
            println!("Chat.Upper: {line} -> {}", echo?);
        }
    }
    lines.finish().await?;
    match echoes.recv().await {
        None => println!("Chat.Upper: finished, and the echoes end too"),
        Some(more) => println!("Chat.Upper: unexpected {more:?}"),
    }

    // An early close: a count to u64::MAX, dropped after three numbers. The handler runs ahead
    // of the reader only as far as the stream's buffer, then waits; the drop ends it.
    let mut endless = client
        .server_stream::<u64, u64>("streams", "Ticker.Count", &u64::MAX, CallOptions::new())
        .await?;
    for _ in 0..3 {
        if let Some(n) = endless.recv().await {
            println!("endless count: {}", n?);
        }
    }
    println!("dropping the endless count");
    drop(endless);
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while service.stats().in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    println!(
        "calls in flight on the server: {} ({})",
        service.stats().in_flight,
        if waited.is_ok() {
            "the handler stopped"
        } else {
            "still running?"
        }
    );

    service.stop().await?;
    server_node.shutdown().await?;
    client_node.shutdown().await?;
    println!("both nodes stopped");
    Ok(())
}
