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
//!   (`ratio call_rps_c64 checked/unchecked`).
//!
//! Per round: `c1`, [`C1_N`] sequential calls (requests/s, p50 latency) and `c64`, [`C64_N`]
//! calls over [`C64_TASKS`] tasks (requests/s). One warm-up round is discarded; [`ROUNDS`]
//! measured rounds rotate which goes first. Each round's c64 figures are printed, then the
//! medians per stack, then each ratio as the median of the rounds' own ratios (the two halves of
//! a round run back to back, so their ratio is not moved by the machine's drift between rounds).
//! Run from the workspace root with `cargo bench --bench service` (it listens on 127.0.0.1
//! only; run it under `../shared/tools/netns-run` on a machine whose network must stay quiet).

#![allow(clippy::unwrap_used)]

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use micro::prelude::*;
use micro::registry::{MemoryRegistry, Registry, RegistryMsg};
use micro::{CallContext, CallOptions, Client, Endpoint, Service, ServiceError};
use serde::{Deserialize, Serialize};

type BenchResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const WORKERS: usize = 2;
const C1_N: usize = 2_000;
const C64_N: usize = 102_400; // a multiple of C64_TASKS
const C64_TASKS: usize = 64;
const ROUNDS: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Req {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

impl Caller {
    fn name(&self) -> &'static str {
        match self {
            Caller::Ask(_) => "remote_ask",
            Caller::Service(_) => "micro_service",
            Caller::Unchecked(_) => "unchecked",
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

async fn round(caller: &Caller) -> BenchResult<Sample> {
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

fn print_round(r: usize, pair: &(Option<Sample>, Option<Sample>), unchecked: Option<&Sample>) {
    let c64 = |s: &Option<Sample>| {
        s.as_ref()
            .map_or(String::from("-"), |s| format!("{:.0}", s.c64_rps))
    };
    let ratio = match pair {
        (Some(a), Some(s)) => format!("{:.2}", s.c64_rps / a.c64_rps),
        _ => String::from("-"),
    };
    println!(
        "round {r:>2}: c64 req/s remote_ask {:>8} micro_service {:>8} ratio {ratio} unchecked {:>8}",
        c64(&pair.0),
        c64(&pair.1),
        unchecked.map_or(String::from("-"), |s| format!("{:.0}", s.c64_rps))
    );
}

/// Medians per stack, then each ratio as the median of the rounds' own ratios: the two calls of
/// a round ran back to back, so a ratio per round cancels the machine's drift between rounds.
fn report(pairs: &[(Option<Sample>, Option<Sample>)], unchecked: &[Option<Sample>]) {
    println!(
        "{:<14} {:>12} {:>12} {:>12}",
        "stack", "c1 req/s", "c1 p50 µs", "c64 req/s"
    );
    let sides: [(&str, Vec<&Sample>); 2] = [
        (
            "remote_ask",
            pairs.iter().filter_map(|p| p.0.as_ref()).collect(),
        ),
        (
            "micro_service",
            pairs.iter().filter_map(|p| p.1.as_ref()).collect(),
        ),
    ];
    let mut medians = Vec::new();
    for (name, samples) in &sides {
        if samples.is_empty() {
            continue;
        }
        let c1 = median(samples.iter().map(|s| s.c1_rps).collect());
        let c64 = median(samples.iter().map(|s| s.c64_rps).collect());
        println!(
            "{:<14} {:>12.0} {:>12.1} {:>12.0}",
            name,
            c1,
            median(samples.iter().map(|s| s.c1_p50_us).collect()),
            c64
        );
        medians.push((c1, c64));
    }
    if let [(ask_c1, ask_c64), (service_c1, service_c64)] = medians[..] {
        println!(
            "for reference, the ratios of the medians: c1 {:.2}, c64 {:.2}",
            service_c1 / ask_c1,
            service_c64 / ask_c64
        );
    }
    // The check's cost: the checked and unchecked calls of each round, back to back.
    let checked: Vec<f64> = pairs
        .iter()
        .zip(unchecked)
        .filter_map(|(p, u)| Some(p.1.as_ref()?.c64_rps / u.as_ref()?.c64_rps))
        .collect();
    if !checked.is_empty() {
        let c64 = median(unchecked.iter().flatten().map(|s| s.c64_rps).collect());
        println!("unchecked c64 req/s (median) {c64:.0}");
        println!(
            "ratio call_rps_c64 checked/unchecked = {:.2}",
            median(checked)
        );
    }
    let both: Vec<(&Sample, &Sample)> = pairs
        .iter()
        .filter_map(|p| Some((p.0.as_ref()?, p.1.as_ref()?)))
        .collect();
    if both.is_empty() {
        return;
    }
    println!(
        "ratio call_rps_c1 micro_service/remote_ask = {:.2}",
        median(both.iter().map(|(a, s)| s.c1_rps / a.c1_rps).collect())
    );
    println!(
        "ratio call_rps_c64 micro_service/remote_ask = {:.2}",
        median(both.iter().map(|(a, s)| s.c64_rps / a.c64_rps).collect())
    );
}

async fn setup() -> BenchResult<(Caller, Caller, Caller, Vec<Node>)> {
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
        Caller::Ask(echo),
        Caller::Service(client.clone()),
        Caller::Unchecked(client),
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
        let (ask, service, unchecked, nodes) = setup().await?;
        // Per measured round: (ask, service) and unchecked; each round's ran back to back.
        let mut pairs: Vec<(Option<Sample>, Option<Sample>)> = Vec::new();
        let mut unchecked_rounds: Vec<Option<Sample>> = Vec::new();
        // SERVICE_BENCH_ONLY=micro_service (or remote_ask) runs one side only, for profiling.
        let only = std::env::var("SERVICE_BENCH_ONLY").ok();
        for r in 0..=ROUNDS {
            let order = match r % 3 {
                0 => [&ask, &service, &unchecked],
                1 => [&service, &unchecked, &ask],
                _ => [&unchecked, &ask, &service],
            };
            let mut pair = (None, None);
            let mut without = None;
            for caller in order {
                if only.as_deref().is_some_and(|o| o != caller.name()) {
                    continue;
                }
                let sample = round(caller).await?;
                match caller {
                    Caller::Ask(_) => pair.0 = Some(sample),
                    Caller::Service(_) => pair.1 = Some(sample),
                    Caller::Unchecked(_) => without = Some(sample),
                }
            }
            if r > 0 {
                print_round(r, &pair, without.as_ref());
                pairs.push(pair);
                unchecked_rounds.push(without);
            }
        }
        report(&pairs, &unchecked_rounds);
        for node in nodes {
            let _ = node.shutdown().await;
        }
        Ok::<_, Box<dyn StdError + Send + Sync>>(())
    })
}
