//! Service benchmark: an end-to-end service call (resolve in the registry cache, select a node,
//! call its endpoint actor, a handler in its own task) against a raw remote `ask` to an exposed
//! actor, over the same QUIC link between two nodes of this process, in one run.
//!
//! Both serve the same shape: [`Req`] `{id, name}` (a 16-byte name) → [`Resp`] `{id, len}`.
//! - `remote_ask`: `Addr::ask` to an actor on the server node that answers in its handler;
//! - `micro_service`: `Client::call("bench", "Bench.Echo", &req)` with the default options
//!   (random selection, retries on, a 5 s deadline), served by an endpoint of a `Service`;
//! - `unchecked`: the same call without the type check (`call_with` and
//!   `CallOptions::new().unchecked()`: no shape id sent or compared), for the check's cost
//!   (`ratio call_rps_c64 checked/unchecked`);
//! - `macro`: the same endpoint declared as a typed service (`#[micro::service] trait Bench`,
//!   registered with `handle`) and called through its generated `BenchClient::echo`, for the
//!   macro's cost against the closure endpoint (`ratio call_rps_c64 macro/closure`, the closure
//!   being `micro_service`).
//!
//! Per round: `c1`, [`C1_N`] sequential calls (requests/s, p50 latency) and `c64`, [`C64_N`]
//! calls over [`C64_TASKS`] tasks (requests/s). One warm-up round is discarded; [`ROUNDS`]
//! measured rounds rotate which goes first (and every other four run the order backwards, so
//! no caller always runs before another). Each round's c64 figures are printed, then the
//! medians per stack, then each ratio as the median of the rounds' own ratios (a round's calls
//! run back to back, so their ratio is not moved by the machine's drift between rounds).
//! Run from the workspace root with `cargo bench --bench service` (it listens on 127.0.0.1
//! only; run it under `../shared/tools/netns-run` on a machine whose network must stay quiet).

#![allow(clippy::unwrap_used)]

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use micro::prelude::*;
use micro::registry::{MemoryRegistry, Registry, RegistryMsg};
use micro::{CallContext, CallOptions, Client, Endpoint, Service, ServiceError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

type BenchResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const WORKERS: usize = 2;
const C1_N: usize = 2_000;
const C64_N: usize = 102_400; // a multiple of C64_TASKS
const C64_TASKS: usize = 64;
const ROUNDS: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Req {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Resp {
    id: u64,
    len: u64,
}

fn serve(req: &Req) -> Resp {
    Resp {
        id: req.id,
        len: req.name.len() as u64,
    }
}

/// The same endpoint as a typed service: `Bench.Echo` of the service `bench_macro`.
#[micro::service(name = "bench_macro")]
trait Bench {
    async fn echo(&self, ctx: CallContext, req: Req) -> Result<Resp, ServiceError>;
}

struct Echoing;

impl Bench for Echoing {
    async fn echo(&self, _: CallContext, req: Req) -> Result<Resp, ServiceError> {
        Ok(serve(&req))
    }
}

#[derive(Serialize, Deserialize)]
enum EchoMsg {
    Ask(Req, Reply<Resp>),
}

impl RemoteMessage for EchoMsg {
    const TYPE_NAME: &'static str = "bench.Echo";
}

struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: EchoMsg) -> Result<(), ActorError> {
        let EchoMsg::Ask(req, reply) = msg;
        let _ = reply.send(serve(&req));
        Ok(())
    }
}

/// What a round calls: the raw actor or the service.
#[derive(Clone)]
enum Caller {
    Ask(Addr<EchoMsg>),
    Service(Client),
    Unchecked(Client),
    Macro(BenchClient),
}

impl Caller {
    fn name(&self) -> &'static str {
        match self {
            Caller::Ask(_) => "remote_ask",
            Caller::Service(_) => "micro_service",
            Caller::Unchecked(_) => "unchecked",
            Caller::Macro(_) => "macro",
        }
    }

    async fn call(&self, req: Req) -> BenchResult<Resp> {
        let id = req.id;
        let resp = match self {
            Caller::Ask(addr) => {
                addr.ask(|r| EchoMsg::Ask(req, r), Duration::from_secs(5))
                    .await?
            }
            Caller::Service(client) => client.call("bench", "Bench.Echo", &req).await?,
            Caller::Unchecked(client) => {
                let options = CallOptions::new().unchecked();
                client
                    .call_with("bench", "Bench.Echo", &req, options)
                    .await?
                    .message
            }
            Caller::Macro(client) => client.echo(&req).await?,
        };
        if resp.id != id {
            return Err("a reply to another request".into());
        }
        Ok(resp)
    }
}

struct Sample {
    c1_rps: f64,
    c1_p50_us: f64,
    c64_rps: f64,
}

fn request(id: u64) -> Req {
    Req {
        id,
        name: "sixteen-byte-nam".to_owned(),
    }
}

async fn round_of(caller: &Caller) -> BenchResult<Sample> {
    let mut latencies = Vec::with_capacity(C1_N);
    let started = Instant::now();
    for i in 0..C1_N {
        let t = Instant::now();
        caller.call(request(i as u64)).await?;
        latencies.push(t.elapsed());
    }
    let c1_rps = C1_N as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let c1_p50_us = latencies[latencies.len() / 2].as_secs_f64() * 1e6;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..C64_TASKS {
        let caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..C64_N / C64_TASKS {
                caller.call(request((t * C64_N + i) as u64)).await?;
            }
            Ok::<_, Box<dyn StdError + Send + Sync>>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let c64_rps = C64_N as f64 / started.elapsed().as_secs_f64();
    Ok(Sample {
        c1_rps,
        c1_p50_us,
        c64_rps,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// One measured round: a sample per caller (in the order of [`NAMES`]), run back to back.
type Round = [Option<Sample>; 4];

const NAMES: [&str; 4] = ["remote_ask", "micro_service", "unchecked", "macro"];

fn print_round(r: usize, round: &Round) {
    let c64 = |i: usize| {
        round[i]
            .as_ref()
            .map_or(String::from("-"), |s| format!("{:.0}", s.c64_rps))
    };
    let ratio = match (&round[0], &round[1]) {
        (Some(a), Some(s)) => format!("{:.2}", s.c64_rps / a.c64_rps),
        _ => String::from("-"),
    };
    println!(
        "round {r:>2}: c64 req/s remote_ask {:>8} micro_service {:>8} ratio {ratio} unchecked {:>8} macro {:>8}",
        c64(0),
        c64(1),
        c64(2),
        c64(3)
    );
}

/// The median over the rounds of `metric(top) / metric(bottom)`, each round's two calls having
/// run back to back (so a ratio per round cancels the machine's drift between rounds).
fn round_ratio(
    rounds: &[Round],
    top: usize,
    bottom: usize,
    metric: fn(&Sample) -> f64,
) -> Option<f64> {
    let ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|r| Some(metric(r[top].as_ref()?) / metric(r[bottom].as_ref()?)))
        .collect();
    (!ratios.is_empty()).then(|| median(ratios))
}

/// Medians per stack, then each ratio as the median of the rounds' own ratios.
fn report(rounds: &[Round]) {
    println!(
        "{:<14} {:>12} {:>12} {:>12}",
        "stack", "c1 req/s", "c1 p50 µs", "c64 req/s"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let samples: Vec<&Sample> = rounds.iter().filter_map(|r| r[i].as_ref()).collect();
        if samples.is_empty() {
            continue;
        }
        println!(
            "{:<14} {:>12.0} {:>12.1} {:>12.0}",
            name,
            median(samples.iter().map(|s| s.c1_rps).collect()),
            median(samples.iter().map(|s| s.c1_p50_us).collect()),
            median(samples.iter().map(|s| s.c64_rps).collect())
        );
    }
    let c1 = |s: &Sample| s.c1_rps;
    let c64 = |s: &Sample| s.c64_rps;
    // The check's cost: the checked and unchecked calls of each round.
    if let Some(ratio) = round_ratio(rounds, 1, 2, c64) {
        println!("ratio call_rps_c64 checked/unchecked = {ratio:.2}");
    }
    // The macro's cost: the typed service and client against the closure endpoint.
    if let Some(ratio) = round_ratio(rounds, 3, 1, c64) {
        println!("ratio call_rps_c64 macro/closure = {ratio:.2}");
    }
    if let Some(ratio) = round_ratio(rounds, 1, 0, c1) {
        println!("ratio call_rps_c1 micro_service/remote_ask = {ratio:.2}");
    }
    if let Some(ratio) = round_ratio(rounds, 1, 0, c64) {
        println!("ratio call_rps_c64 micro_service/remote_ask = {ratio:.2}");
    }
}

async fn setup() -> BenchResult<([Caller; 4], Vec<Node>)> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = Node::builder()
        .name("server")
        .listen(loopback)
        .start()
        .await?;
    let client_node = Node::builder()
        .name("client")
        .listen(loopback)
        .start()
        .await?;

    // The raw actor.
    server.spawn(ChildSpec::new(|| Echo).named("echo")).await?;
    server.expose::<EchoMsg>("echo")?;
    let peer = client_node
        .connect(server.local_addr().ok_or("no address")?)
        .await?;
    let echo = client_node.lookup_remote::<EchoMsg>(peer, "echo").await?;

    // The service, registered in a registry on the server node that the client reaches remotely.
    let registry = server.spawn(MemoryRegistry::spec()).await?;
    server.expose::<RegistryMsg>("registry")?;
    Service::new("bench")
        .endpoint(Endpoint::unary(
            "Bench.Echo",
            |_: CallContext, req: Req| async move { Ok::<_, ServiceError>(serve(&req)) },
        ))
        .registry(Registry::new(registry.clone()))
        .start(&server)
        .await?;
    // The same endpoint declared with the macro, in the same registry.
    Service::new(BenchClient::SERVICE)
        .handle(BenchServer::new(Echoing))
        .registry(Registry::new(registry))
        .start(&server)
        .await?;
    let remote_registry = client_node
        .lookup_remote::<RegistryMsg>(peer, "registry")
        .await?;
    let client = Client::builder(&client_node)
        .registry(Registry::new(remote_registry))
        .build()
        .await?;
    Ok((
        [
            Caller::Ask(echo),
            Caller::Service(client.clone()),
            Caller::Unchecked(client.clone()),
            Caller::Macro(BenchClient::new(&client)),
        ],
        vec![client_node, server],
    ))
}

fn main() -> BenchResult<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "service bench: {WORKERS} workers, c1 {C1_N} calls, c64 {C64_N} calls over {C64_TASKS} tasks, {ROUNDS} rounds after a warm-up; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (callers, nodes) = setup().await?;
        let mut rounds: Vec<Round> = Vec::new();
        // SERVICE_BENCH_ONLY=micro_service (or remote_ask, unchecked, macro) runs one side
        // only, for profiling.
        let only = std::env::var("SERVICE_BENCH_ONLY").ok();
        for r in 0..=ROUNDS {
            // Each round starts with another caller, and every other four rounds run the
            // order backwards: no caller always runs before another.
            let mut round: Round = Default::default();
            let n = callers.len();
            for k in 0..n {
                let k = if (r / n) % 2 == 1 { n - 1 - k } else { k };
                let i = (r + k) % n;
                let caller = &callers[i];
                if only.as_deref().is_some_and(|o| o != caller.name()) {
                    continue;
                }
                round[i] = Some(round_of(caller).await?);
            }
            if r > 0 {
                print_round(r, &round);
                rounds.push(round);
            }
        }
        report(&rounds);
        for node in nodes {
            let _ = node.shutdown().await;
        }
        Ok::<_, Box<dyn StdError + Send + Sync>>(())
    })
}
