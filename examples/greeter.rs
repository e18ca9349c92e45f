//! A Greeter service and its client: a typed service declared once with `#[micro::service]`,
//! discovery, load balancing, headers, tracing, typed errors, health and a graceful stop.
//!
//! It runs three ways (on 127.0.0.1 only):
//!
//! - `cargo run --example greeter`: one process. A client node hosts a memory registry; two
//!   server nodes run the `greeter` service registered in it. The client calls `Greeter.Hello`
//!   round-robin across both, with a header and a trace id, meets a typed 404, asks the built-in
//!   `Debug.Health`, then stops one server gracefully and keeps calling the other. It exits by
//!   itself.
//! - `cargo run --example greeter -- server`: a server node that registers the greeter in the
//!   default registry (mDNS, as the node listens: nothing to configure) and serves until Ctrl-C
//!   or SIGTERM (then deregisters, drains and stops).
//! - `cargo run --example greeter -- client`: a client node in another process that finds the
//!   server by mDNS (no address given), calls `Greeter.Hello` a few times and exits.
//!   (`MICRO_MDNS_INTERFACES=loopback` keeps the multicast on this machine; `RUST_LOG=debug`
//!   shows the discovery.)
//! - `cargo run --example greeter -- client ADDR`: the same, using the registry of the server at
//!   `ADDR` instead of mDNS.

use std::net::SocketAddr;

use micro::registry::{MemoryRegistry, Registry, RegistryMsg};
use micro::{
    CallContext, CallOptions, Client, HEALTH_ENDPOINT, Health, Node, Selector, Service,
    ServiceError, TRACE_ID_HEADER, Tracing,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

#[derive(Serialize, Deserialize, JsonSchema)]
struct HelloRequest {
    name: String,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct HelloReply {
    message: String,
}

/// The greeter, declared once for the server and the client: endpoints `Greeter.Hello` and
/// `Greeter.Whois`, a `GreeterServer` to register and a typed `GreeterClient`.
#[micro::service]
trait Greeter {
    /// Greets by name, in the language of the `lang` header. Idempotent, so the client may
    /// retry it on another node.
    #[idempotent]
    async fn hello(&self, ctx: CallContext, req: HelloRequest) -> Result<HelloReply, ServiceError>;

    /// Who someone is: a typed 404 for anyone it does not know.
    async fn whois(&self, ctx: CallContext, name: String) -> Result<String, ServiceError>;
}

/// The greeter as served by the node named `me`.
struct Greeting {
    me: String,
}

impl Greeter for Greeting {
    async fn hello(&self, ctx: CallContext, req: HelloRequest) -> Result<HelloReply, ServiceError> {
        let hello = match ctx.header("lang") {
            Some("fr") => "Bonjour",
            _ => "Hello",
        };
        ctx.set_header("served-by", self.me.clone());
        Ok(HelloReply {
            message: format!("{hello} {} (from {})", req.name, self.me),
        })
    }

    async fn whois(&self, _: CallContext, name: String) -> Result<String, ServiceError> {
        match name.as_str() {
            "Ada" => Ok("Ada Lovelace, first programmer".to_owned()),
            _ => Err(ServiceError::not_found(
                "greeter",
                format!("no one named {name:?}"),
            )),
        }
    }
}

/// The greeter service as served by node `me`.
fn greeter(me: &str) -> Service {
    Service::new(GreeterClient::SERVICE)
        .version("1.0.0")
        .wrap(Tracing::server())
        .handle(GreeterServer::new(Greeting { me: me.to_owned() }))
}

async fn node(name: &str) -> Result<Node> {
    Ok(Node::builder().name(name).listen(LOOPBACK).start().await?)
}

async fn hello(client: &Client, name: &str) -> Result<String> {
    let request = HelloRequest { name: name.into() };
    let reply = GreeterClient::new(client).hello(&request).await?;
    Ok(reply.message)
}

#[tokio::main]
async fn main() -> Result<()> {
    micro::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => all_in_one().await,
        ["server"] => server().await,
        ["client"] => client(None).await,
        ["client", addr] => client(Some(addr.parse()?)).await,
        _ => Err("usage: greeter [server | client [ADDR]]".into()),
    }
}

/// Everything in one process: a client node with the registry, two server nodes.
async fn all_in_one() -> Result<()> {
    let client_node = node("client").await?;
    let registry = Registry::new(client_node.spawn(MemoryRegistry::spec()).await?);

    let mut servers = Vec::new();
    for name in ["server-1", "server-2"] {
        let server = node(name).await?;
        let service = greeter(name)
            .registry(registry.clone())
            .start(&server)
            .await?;
        let address = server.local_addr().ok_or("the node does not listen")?;
        println!("{name} serves greeter on {address}");
        servers.push((server, service));
    }

    let client = Client::builder(&client_node)
        .registry(registry)
        .strategy(Selector::RoundRobin)
        .wrap(Tracing::client())
        .build()
        .await?;

    println!("\nround-robin across both nodes:");
    for name in ["Ada", "Grace", "Barbara", "Edsger"] {
        println!("  {}", hello(&client, name).await?);
    }

    println!("\na header in, headers and the trace id back:");
    let options = CallOptions::new().header("lang", "fr");
    let request = HelloRequest { name: "Ada".into() };
    let greeter = GreeterClient::new(&client);
    let reply = greeter.hello_with(&request, options).await?;
    println!("  {}", reply.message.message);
    println!("  served-by: {}", reply.metadata["served-by"]);
    println!("  {TRACE_ID_HEADER}: {}", reply.metadata[TRACE_ID_HEADER]);

    println!("\ntyped errors:");
    let who = greeter.whois(&"Ada".to_owned()).await?;
    println!("  Whois Ada: {who}");
    match greeter.whois(&"Zed".to_owned()).await {
        Ok(who) => println!("  Whois Zed: {who}?"),
        Err(err) => println!("  Whois Zed: code {} from {:?}: {err}", err.code, err.id),
    }

    let health: Health = client.call("greeter", HEALTH_ENDPOINT, &()).await?;
    println!(
        "\n{HEALTH_ENDPOINT}: {} (version {}, up {} ms)",
        health.status, health.version, health.uptime_ms
    );

    println!("\nstopping server-1 gracefully (deregister, drain, stop):");
    servers[0].1.stop().await?;
    for name in ["Alan", "Margaret", "Donald"] {
        println!("  {}", hello(&client, name).await?);
    }

    for (server, _) in servers.iter().rev() {
        server.shutdown().await?;
    }
    client_node.shutdown().await?;
    println!("\nall nodes stopped");
    Ok(())
}

/// A server node: the greeter in the default registry, which other processes find by mDNS.
async fn server() -> Result<()> {
    let node = node("greeter-server").await?;
    // No registry given: the node's default one (mDNS, as it listens).
    let service = greeter(node.name()).start(&node).await?;
    // For `client ADDR`: the mDNS registry exposes itself; a memory one (MICRO_REGISTRY=memory)
    // is exposed here (exposing twice is refused, which is fine).
    let _ = node.expose::<RegistryMsg>("registry");
    let address = node.local_addr().ok_or("the node does not listen")?;
    println!("greeter server listening on {address}");
    println!("try: cargo run --example greeter -- client");
    service.stop_on_signal().await?;
    node.shutdown().await?;
    println!("stopped");
    Ok(())
}

/// A client node: finds the greeter by mDNS, or uses the registry of the server at `addr`.
async fn client(addr: Option<SocketAddr>) -> Result<()> {
    let node = node("greeter-client").await?;
    let client = match addr {
        Some(addr) => {
            let peer = node.connect(addr).await?;
            let registry =
                Registry::new(node.lookup_remote::<RegistryMsg>(peer, "registry").await?);
            Client::builder(&node).registry(registry).build().await?
        }
        // No registry given: the default one (mDNS), like the server's.
        None => Client::new(&node).await?,
    };
    // Discovery takes a moment: wait for the greeter rather than fail on a first miss.
    client
        .wait_for("greeter", std::time::Duration::from_secs(10))
        .await?;
    for name in ["Ada", "Grace", "Barbara"] {
        println!("{}", hello(&client, name).await?);
    }
    node.shutdown().await?;
    Ok(())
}
