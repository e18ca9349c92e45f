//! Remote benchmark: request/reply over loopback (127.0.0.1), stack against stack in one run.
//!
//! Every stack serves the same request/reply shape ([`Req`] `{id, name}` with a 16-byte name,
//! [`Resp`] `{id, len}`), with its server and client in this process as tokio tasks on a
//! multi-thread runtime of [`WORKERS`] worker threads owned by that stack (see below for
//! `MICRO_BENCH_WORKERS`). Stacks:
//! - `quinn_framed`, the floor: raw quinn (rustls with the ring provider, a self-signed
//!   certificate), ONE long-lived bidirectional stream carrying length-prefixed frames (u32 length,
//!   then a bincode body); replies are matched to requests by id, so concurrent callers multiplex
//!   over the stream through a writer task and a reader task;
//! - `tarpc`: tarpc over TCP with its serde transport and `tokio_serde`'s bincode format, one
//!   client shared by all the calling tasks;
//! - `micro`: a remote actor's `ask` over QUIC (two nodes in this process, mutual TLS).
//!
//! Per stack and round: `c1`, [`C1_N`] sequential requests (p50 and p99 latency, requests/s), and
//! `c64`, [`C64_N`] requests spread over [`C64_TASKS`] tasks sharing one client (requests/s).
//! One warm-up round is discarded, then [`ROUNDS`] measured rounds alternate which stack goes
//! first (the order biases results), and the medians are reported, followed by `ratio` lines.
//! Run from the workspace root with `cargo bench --bench remote`.
//!
//! On a small VM the figures are bimodal: with the CPUs otherwise idle, waking a parked thread
//! costs tens of µs, which weighs on stacks with more thread hops per request (quinn's endpoint
//! drivers); with other load keeping the CPUs awake, latencies drop and the ratios move. The load
//! average printed at the start tells which case a run was; compare runs of the same case.
//!
//! Worker count: with two workers a woken task may land on the other, parked worker, and rounds
//! in which the I/O driver moved there are slow; with one there is no such hop. So after the
//! main table the bench prints `c1` per round at each worker count of `MICRO_BENCH_WORKERS`
//! (comma-separated, default `1,2`), every stack on a runtime of that many workers, which makes
//! the bimodality visible instead of hiding it in a median; the main table and the `ratio` lines
//! use [`WORKERS`] (or the one count given, when `MICRO_BENCH_WORKERS` names only one).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, future};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, RecvStream, SendStream};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

type BoxError = Box<dyn StdError + Send + Sync>;
type BenchResult<T> = Result<T, BoxError>;

/// Worker threads of each stack's tokio runtime in the main table (see `MICRO_BENCH_WORKERS`).
const WORKERS: usize = 2;
/// Measured `c1` rounds per worker count in the worker-count section (after one warm-up).
const C1_ROUNDS: usize = 8;
/// Sequential requests per `c1` round.
const C1_N: usize = 5_000;
/// Requests per `c64` round, spread over [`C64_TASKS`] tasks.
const C64_N: usize = 50_000;
/// Concurrent calling tasks sharing one client in a `c64` round.
const C64_TASKS: usize = 64;
/// Measured rounds, after one discarded warm-up round (even, so each order comes up as often).
const ROUNDS: usize = 12;
/// Upper bound on one phase (`c1` or `c64`) of one stack in one round.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Where every server listens and every client binds: loopback, port chosen by the OS.
const LOOPBACK: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
/// The 16-byte name carried by every request.
const NAME: &str = "bench-request-16";
/// Bincode configuration of the `quinn_framed` frames.
const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// Ratio lines, each printed as `ratio <metric> <a>/<b> = value(a)/value(b)` once both stacks
/// ran: above 1 means `a` is faster for `c64_rps` and slower for `c1_p50`.
const RATIOS: &[(Metric, &str, &str)] = &[
    (Metric::C64Rps, "quinn_framed", "tarpc"),
    (Metric::C1P50, "tarpc", "quinn_framed"),
    // Printed once the micro stack is in `main`'s list.
    (Metric::C64Rps, "micro", "tarpc"),
    (Metric::C64Rps, "micro", "quinn_framed"),
    (Metric::C1P50, "micro", "quinn_framed"),
];

// ---- the request/reply shape shared by every stack ----

/// A request: an id to match the reply, and a 16-byte name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Req {
    id: u64,
    name: String,
}

/// A reply: the request's id and the length of its name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resp {
    id: u64,
    len: u32,
}

/// What every server does with a request.
fn serve(req: &Req) -> Resp {
    Resp {
        id: req.id,
        len: u32::try_from(req.name.len()).unwrap_or(u32::MAX),
    }
}

/// Source of request ids, unique across stacks, rounds and tasks.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Reserves `n` consecutive request ids and returns the first.
fn reserve_ids(n: usize) -> u64 {
    NEXT_ID.fetch_add(n as u64, Ordering::Relaxed)
}

/// Checks that `resp` answers the request with id `id`.
fn check(resp: &Resp, id: u64) -> BenchResult<()> {
    if resp.id == id && resp.len as usize == NAME.len() {
        Ok(())
    } else {
        Err(format!("bad reply {resp:?} to request {id}").into())
    }
}

// ---- the harness ----

/// One stack under test: a server and a client connected to it over loopback.
///
/// `setup` and `call` run on the stack's own runtime; `call` is called concurrently from many
/// tasks with one shared client.
trait Stack: 'static {
    /// Name in the table and in the ratio lines.
    const NAME: &'static str;
    /// A connected client, shared by all the calling tasks of a round.
    type Client: Send + Sync + 'static;
    /// Starts a server on 127.0.0.1 and returns a client connected to it.
    async fn setup() -> BenchResult<Self::Client>;
    /// One request/reply round trip.
    fn call(client: &Self::Client, req: Req) -> impl Future<Output = BenchResult<Resp>> + Send;
}

/// Medians (or, per round, values) of the metrics of one stack.
#[derive(Debug, Clone, Copy)]
struct Sample {
    c1_p50_us: f64,
    c1_p99_us: f64,
    c1_rps: f64,
    c64_rps: f64,
}

/// A metric named in the ratio lines.
#[derive(Debug, Clone, Copy)]
enum Metric {
    /// `c64` requests/s (higher is better).
    C64Rps,
    /// `c1` p50 latency (lower is better).
    C1P50,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::C64Rps => "c64_rps",
            Metric::C1P50 => "c1_p50",
        }
    }

    fn of(self, sample: &Sample) -> f64 {
        match self {
            Metric::C64Rps => sample.c64_rps,
            Metric::C1P50 => sample.c1_p50_us,
        }
    }
}

/// A stack that is set up: its runtime and connected client, behind one call per round.
struct Prepared {
    name: &'static str,
    setup_time: Duration,
    /// One round: `c1`, then `c64` when asked (else its figure is NaN).
    round: Box<dyn FnMut(bool) -> BenchResult<Sample>>,
}

/// Builds the stack's runtime of `workers` threads, starts its server and connects its client.
fn prepare<S: Stack>(workers: usize) -> BenchResult<Prepared> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let start = Instant::now();
    let client = Arc::new(rt.block_on(S::setup())?);
    let setup_time = start.elapsed();
    Ok(Prepared {
        name: S::NAME,
        setup_time,
        round: Box::new(move |c64| round::<S>(&rt, &client, c64)),
    })
}

/// One round of one stack: `c1`, then `c64` (if `c64`), each on the runtime's workers.
fn round<S: Stack>(rt: &Runtime, client: &Arc<S::Client>, c64: bool) -> BenchResult<Sample> {
    let c1 = rt.block_on(async {
        let client = Arc::clone(client);
        let task = tokio::spawn(async move { run_c1::<S>(&client).await });
        tokio::time::timeout(PHASE_TIMEOUT, task).await
    });
    let (c1_p50_us, c1_p99_us, c1_rps) =
        c1.map_err(|_| format!("{}: c1 timed out", S::NAME))???;
    if !c64 {
        return Ok(Sample {
            c1_p50_us,
            c1_p99_us,
            c1_rps,
            c64_rps: f64::NAN,
        });
    }
    let c64_rps = rt.block_on(async {
        tokio::time::timeout(PHASE_TIMEOUT, run_c64::<S>(Arc::clone(client))).await
    });
    let c64_rps = c64_rps.map_err(|_| format!("{}: c64 timed out", S::NAME))??;
    Ok(Sample {
        c1_p50_us,
        c1_p99_us,
        c1_rps,
        c64_rps,
    })
}

/// [`C1_N`] sequential requests: (p50 µs, p99 µs, requests/s).
async fn run_c1<S: Stack>(client: &S::Client) -> BenchResult<(f64, f64, f64)> {
    let base = reserve_ids(C1_N);
    let mut latencies = Vec::with_capacity(C1_N);
    let start = Instant::now();
    for id in base..base + C1_N as u64 {
        let sent = Instant::now();
        let resp = S::call(client, request(id)).await?;
        latencies.push(sent.elapsed());
        check(&resp, id)?;
    }
    let rps = C1_N as f64 / start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok((
        percentile_us(&latencies, 0.50),
        percentile_us(&latencies, 0.99),
        rps,
    ))
}

/// [`C64_N`] requests from [`C64_TASKS`] tasks sharing `client`: requests/s.
async fn run_c64<S: Stack>(client: Arc<S::Client>) -> BenchResult<f64> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..C64_TASKS)
        .map(|task| {
            let n = C64_N / C64_TASKS + usize::from(task < C64_N % C64_TASKS);
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let base = reserve_ids(n);
                for id in base..base + n as u64 {
                    let resp = S::call(&client, request(id)).await?;
                    check(&resp, id)?;
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(C64_N as f64 / start.elapsed().as_secs_f64())
}

fn request(id: u64) -> Req {
    Req {
        id,
        name: NAME.to_owned(),
    }
}

/// The `q` quantile of sorted `latencies`, in µs (nearest rank).
fn percentile_us(latencies: &[Duration], q: f64) -> f64 {
    let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
    latencies[rank - 1].as_secs_f64() * 1e6
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

fn medians(samples: &[Sample]) -> Sample {
    let of = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Sample {
        c1_p50_us: of(|s| s.c1_p50_us),
        c1_p99_us: of(|s| s.c1_p99_us),
        c1_rps: of(|s| s.c1_rps),
        c64_rps: of(|s| s.c64_rps),
    }
}

/// Per stack, a figure per round.
type PerStack = Vec<(&'static str, Vec<f64>)>;

fn main() -> BenchResult<()> {
    let wall = Instant::now();
    // The stacks under test, in the order of the first round.
    // `REMOTE_BENCH_ONLY=micro` (a comma-separated list) runs a subset, e.g. under a profiler.
    let only = std::env::var("REMOTE_BENCH_ONLY").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == name))
    };
    // `MICRO_BENCH_WORKERS=1,2`: the worker counts of the c1 section; one count alone also
    // sets the main table's.
    let worker_counts: Vec<usize> = match std::env::var("MICRO_BENCH_WORKERS") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("MICRO_BENCH_WORKERS={list}: {e}"))?,
        Err(_) => vec![1, 2],
    };
    let workers = match worker_counts.as_slice() {
        [] => return Err("MICRO_BENCH_WORKERS names no worker count".into()),
        [only] => *only,
        _ => WORKERS,
    };
    let prepare_all = |workers: usize| -> BenchResult<Vec<Prepared>> {
        let mut stacks = Vec::new();
        if wanted(Micro::NAME) {
            stacks.push(prepare::<Micro>(workers)?);
        }
        if wanted(QuinnFramed::NAME) {
            stacks.push(prepare::<QuinnFramed>(workers)?);
        }
        if wanted(Tarpc::NAME) {
            stacks.push(prepare::<Tarpc>(workers)?);
        }
        Ok(stacks)
    };
    let mut stacks = prepare_all(workers)?;

    println!("remote request/reply over loopback (127.0.0.1)");
    println!(
        "each stack: own tokio multi-thread runtime, {workers} workers; server and client in process"
    );
    println!(
        "c1: {C1_N} sequential requests per round; c64: {C64_N} requests per round from \
         {C64_TASKS} tasks sharing one client"
    );
    println!("rounds: 1 warm-up (discarded) + {ROUNDS} measured, first stack alternating; medians");
    // Other load on the machine moves every figure: say how much there was.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    for stack in &stacks {
        println!(
            "setup {:<14} {:>8.1} ms",
            stack.name,
            stack.setup_time.as_secs_f64() * 1e3
        );
    }
    println!();

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); stacks.len()];
    for round in 0..=ROUNDS {
        let mut order: Vec<usize> = (0..stacks.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let label = if round == 0 {
            "warm-up ".to_owned()
        } else {
            format!("round {round:<2}")
        };
        let mut line = label;
        for &i in &order {
            let sample = (stacks[i].round)(true)?;
            line.push_str(&format!(
                "  | {} c1 p50 {:.1}us c64 {:.0}/s",
                stacks[i].name, sample.c1_p50_us, sample.c64_rps
            ));
            if round > 0 {
                samples[i].push(sample);
            }
        }
        println!("{line}");
    }

    let results: Vec<(&str, Sample)> = stacks
        .iter()
        .zip(&samples)
        .map(|(stack, samples)| (stack.name, medians(samples)))
        .collect();
    let sends = micro_sends(workers)?;
    println!();
    println!(
        "{:<14} {:>13} {:>13} {:>13} {:>13}",
        "stack", "c1 p50 µs", "c1 p99 µs", "c1 req/s", "c64 req/s"
    );
    println!(
        "{:<14} {:>13} {:>13} {:>13} {:>13}",
        "(median)", "lower=better", "lower=better", "higher=better", "higher=better"
    );
    for (name, s) in &results {
        println!(
            "{:<14} {:>13.1} {:>13.1} {:>13.0} {:>13.0}",
            name, s.c1_p50_us, s.c1_p99_us, s.c1_rps, s.c64_rps
        );
    }
    println!();
    println!(
        "micro remote send (one-way, ordered, {SEND_N} per round, median of {SEND_ROUNDS}): {sends:.0} msgs/s"
    );
    println!();
    let find = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
    for &(metric, a, b) in RATIOS {
        if let (Some(sa), Some(sb)) = (find(a), find(b)) {
            println!(
                "ratio {} {a}/{b} = {:.2}",
                metric.name(),
                metric.of(&sa) / metric.of(&sb)
            );
        }
    }
    drop(stacks);

    // c1 per round at each worker count: the spread shows the bimodality a median hides.
    println!();
    println!(
        "c1 p50 µs per round by worker count ({C1_ROUNDS} rounds after a warm-up; the \
         {workers}-worker line reuses the main rounds)"
    );
    let mut by_workers: Vec<(usize, PerStack)> = Vec::new();
    for &count in &worker_counts {
        let per_stack: PerStack = if count == workers {
            results
                .iter()
                .zip(&samples)
                .map(|((name, _), samples)| (*name, samples.iter().map(|s| s.c1_p50_us).collect()))
                .collect()
        } else {
            let mut stacks = prepare_all(count)?;
            let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); stacks.len()];
            for round in 0..=C1_ROUNDS {
                let mut order: Vec<usize> = (0..stacks.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for &i in &order {
                    let sample = (stacks[i].round)(false)?;
                    if round > 0 {
                        rounds[i].push(sample.c1_p50_us);
                    }
                }
            }
            stacks.iter().map(|s| s.name).zip(rounds).collect()
        };
        for (name, values) in &per_stack {
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(0.0, f64::max);
            let each: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
            println!(
                "{count}w {name:<14} median {:>6.1}  min {low:>6.1}  max {high:>6.1}  | {}",
                median(values.clone()),
                each.join(" ")
            );
        }
        by_workers.push((count, per_stack));
    }
    for (count, per_stack) in &by_workers {
        let find = |name: &str| {
            per_stack
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| median(v.clone()))
        };
        if let (Some(a), Some(b)) = (find("micro"), find("quinn_framed")) {
            println!(
                "c1_p50 at {count} workers micro/quinn_framed = {:.2}",
                a / b
            );
        }
    }
    println!(
        "wall time (setup, rounds, teardown): {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---- quinn_framed: raw quinn, one bidirectional stream, length-prefixed bincode frames ----

/// Raw quinn, the floor.
struct QuinnFramed;

/// Largest frame either side accepts.
const MAX_FRAME: usize = 1 << 20;
/// Most requests the client's writer takes from its queue per write.
const MAX_BATCH: usize = 256;
/// Buffered replies at which the server writes even if more requests are already buffered.
const FLUSH_AT: usize = 64 * 1024;

/// Reply ports of the requests in flight on the stream, by request id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Resp>>>>;

/// The client of `quinn_framed`: a queue to the writer task of the one stream.
struct QuinnClient {
    requests: mpsc::Sender<(Req, oneshot::Sender<Resp>)>,
    _connection: quinn::Connection,
    _endpoint: Endpoint,
}

impl Stack for QuinnFramed {
    const NAME: &'static str = "quinn_framed";
    type Client = QuinnClient;

    async fn setup() -> BenchResult<QuinnClient> {
        let (server_config, client_config) = quinn_configs()?;
        let server = Endpoint::server(server_config, LOOPBACK)?;
        let server_addr = server.local_addr()?;
        tokio::spawn(quinn_accept(server));

        let mut endpoint = Endpoint::client(LOOPBACK)?;
        endpoint.set_default_client_config(client_config);
        let connection = endpoint.connect(server_addr, "localhost")?.await?;
        let (send, recv) = connection.open_bi().await?;
        let pending = Pending::default();
        let (requests, queue) = mpsc::channel(1024);
        tokio::spawn(client_writer(send, queue, Arc::clone(&pending)));
        tokio::spawn(client_reader(recv, pending));
        Ok(QuinnClient {
            requests,
            _connection: connection,
            _endpoint: endpoint,
        })
    }

    async fn call(client: &QuinnClient, req: Req) -> BenchResult<Resp> {
        let (port, reply) = oneshot::channel();
        client
            .requests
            .send((req, port))
            .await
            .map_err(|_| "quinn_framed: the writer task is gone")?;
        Ok(reply.await?)
    }
}

/// Server and client configurations: rustls with the ring provider, TLS 1.3, a self-signed
/// certificate for `localhost` that the client trusts.
fn quinn_configs() -> BenchResult<(quinn::ServerConfig, quinn::ClientConfig)> {
    const ALPN: &[u8] = b"micro-bench";
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));

    let mut server_crypto = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server_crypto.alpn_protocols = vec![ALPN.to_vec()];
    let server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_crypto)?));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_crypto.alpn_protocols = vec![ALPN.to_vec()];
    let client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_crypto)?));
    Ok((server, client))
}

/// Accepts connections, and on each the bidirectional streams, each served by its own task.
async fn quinn_accept(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(serve_stream(send, recv));
            }
        });
    }
}

/// Answers the requests of one stream in order, writing replies whenever no complete request is
/// buffered (so replies to a burst of requests go out in one write).
async fn serve_stream(mut send: SendStream, recv: RecvStream) -> BenchResult<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, recv);
    let mut body = Vec::new();
    let mut out = Vec::with_capacity(FLUSH_AT);
    while let Some(req) = read_frame::<Req, _>(&mut reader, &mut body).await? {
        encode_frame(&serve(&req), &mut out)?;
        if !has_full_frame(reader.buffer()) || out.len() >= FLUSH_AT {
            send.write_all(&out).await?;
            out.clear();
        }
    }
    send.write_all(&out).await?;
    send.finish()?;
    Ok(())
}

/// Writes the queued requests, a batch per write, recording their reply ports first.
async fn client_writer(
    mut send: SendStream,
    mut queue: mpsc::Receiver<(Req, oneshot::Sender<Resp>)>,
    pending: Pending,
) -> BenchResult<()> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut out = Vec::with_capacity(64 * 1024);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        out.clear();
        for (req, _) in &batch {
            encode_frame(req, &mut out)?;
        }
        pending
            .lock()
            .unwrap()
            .extend(batch.drain(..).map(|(req, port)| (req.id, port)));
        if let Err(e) = send.write_all(&out).await {
            // Fail the callers now rather than at the phase timeout.
            pending.lock().unwrap().clear();
            return Err(e.into());
        }
    }
    send.finish()?;
    Ok(())
}

/// Reads replies and hands each to the port of its request.
async fn client_reader(recv: RecvStream, pending: Pending) -> BenchResult<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, recv);
    let mut body = Vec::new();
    let result = async {
        while let Some(resp) = read_frame::<Resp, _>(&mut reader, &mut body).await? {
            let port = pending.lock().unwrap().remove(&resp.id);
            let port = port.ok_or_else(|| format!("reply to unknown request {}", resp.id))?;
            let _ = port.send(resp);
        }
        Ok::<_, BoxError>(())
    }
    .await;
    // Fail the callers still waiting now rather than at the phase timeout.
    pending.lock().unwrap().clear();
    result
}

/// Appends `value` as a frame: u32 big-endian body length, then the bincode body.
fn encode_frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> BenchResult<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write(value, &mut *out, BINCODE)?;
    let len = u32::try_from(out.len() - start - 4)?;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream.
async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
) -> BenchResult<Option<T>> {
    let len = match reader.read_u32().await {
        Ok(len) => len as usize,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes").into());
    }
    body.resize(len, 0);
    reader.read_exact(body).await?;
    let (value, _) = bincode::serde::decode_from_slice(body, BINCODE)?;
    Ok(Some(value))
}

/// Whether `buffered` starts with a complete frame.
fn has_full_frame(buffered: &[u8]) -> bool {
    match buffered.first_chunk::<4>() {
        Some(len) => buffered.len() - 4 >= u32::from_be_bytes(*len) as usize,
        None => false,
    }
}

// ---- tarpc: over TCP with its serde transport and bincode ----

/// tarpc over TCP.
struct Tarpc;

/// The tarpc service: one RPC with the shared request/reply shape.
#[tarpc::service]
trait BenchService {
    /// One request/reply round trip.
    async fn call(req: Req) -> Resp;
}

/// The tarpc server.
#[derive(Clone)]
struct TarpcServer;

impl BenchService for TarpcServer {
    async fn call(self, _: tarpc::context::Context, req: Req) -> Resp {
        serve(&req)
    }
}

impl Stack for Tarpc {
    const NAME: &'static str = "tarpc";
    type Client = BenchServiceClient;

    async fn setup() -> BenchResult<BenchServiceClient> {
        use tarpc::server::{BaseChannel, Channel};
        use tarpc::tokio_serde::formats::Bincode;

        let listener = tarpc::serde_transport::tcp::listen(LOOPBACK, Bincode::default).await?;
        let server_addr = listener.local_addr();
        tokio::spawn(
            listener
                .filter_map(|accepted| future::ready(accepted.ok()))
                .map(BaseChannel::with_defaults)
                .map(|channel| {
                    channel
                        .execute(TarpcServer.serve())
                        .for_each(|response| async move {
                            tokio::spawn(response);
                        })
                })
                .buffer_unordered(16)
                .for_each(|()| async {}),
        );

        let transport = tarpc::serde_transport::tcp::connect(server_addr, Bincode::default).await?;
        Ok(BenchServiceClient::new(tarpc::client::Config::default(), transport).spawn())
    }

    async fn call(client: &BenchServiceClient, req: Req) -> BenchResult<Resp> {
        Ok(client.call(tarpc::context::current(), req).await?)
    }
}

// ---- micro: a remote actor's `ask` over QUIC ----

/// micro: an actor exposed on one node, asked from another node over a QUIC link (mutual TLS
/// from a CA made for the bench), through a remote `Addr`.
struct Micro;

#[derive(Serialize, Deserialize)]
enum BenchMsg {
    Req(Req, micro_runtime::Reply<Resp>),
    /// One-way: counted only.
    Cast(Req),
    /// How many casts arrived so far.
    Count(micro_runtime::Reply<u64>),
}

impl micro_runtime::RemoteMessage for BenchMsg {
    const TYPE_NAME: &'static str = "bench.remote.Req";
}

struct MicroServer {
    casts: u64,
}

impl micro_runtime::Actor for MicroServer {
    type Msg = BenchMsg;

    async fn handle(
        &mut self,
        _ctx: &mut micro_runtime::Context<Self>,
        msg: BenchMsg,
    ) -> Result<(), micro_runtime::ActorError> {
        match msg {
            BenchMsg::Req(req, reply) => {
                let _ = reply.send(serve(&req));
            }
            BenchMsg::Cast(req) => self.casts += u64::from(serve(&req).len > 0),
            BenchMsg::Count(reply) => {
                let _ = reply.send(self.casts);
            }
        }
        Ok(())
    }
}

/// The client node's address of the server actor; both nodes live as long as the client.
struct MicroClient {
    addr: micro_runtime::Addr<BenchMsg>,
    _nodes: [micro_runtime::Node; 2],
}

impl Stack for Micro {
    const NAME: &'static str = "micro";
    type Client = MicroClient;

    async fn setup() -> BenchResult<MicroClient> {
        use micro_runtime::{ChildSpec, ClusterCa, Node, NodeId};

        let ca = ClusterCa::generate("bench")?;
        let server = Node::builder()
            .name("bench-server")
            .listen(LOOPBACK)
            .credentials(ca.issue(NodeId::random())?)
            .start()
            .await?;
        server
            .spawn(ChildSpec::new(|| MicroServer { casts: 0 }).named("bench"))
            .await?;
        server.expose::<BenchMsg>("bench")?;
        let client = Node::builder()
            .name("bench-client")
            .listen(LOOPBACK)
            .credentials(ca.issue(NodeId::random())?)
            .start()
            .await?;
        let server_addr = server.local_addr().ok_or("the server does not listen")?;
        let peer = client.connect(server_addr).await?;
        let addr = client.lookup_remote::<BenchMsg>(peer, "bench").await?;
        Ok(MicroClient {
            addr,
            _nodes: [server, client],
        })
    }

    fn call(client: &MicroClient, req: Req) -> impl Future<Output = BenchResult<Resp>> + Send {
        let addr = client.addr.clone();
        async move {
            Ok(addr
                .ask(|reply| BenchMsg::Req(req, reply), PHASE_TIMEOUT)
                .await?)
        }
    }
}

/// One-way sends per round of [`micro_sends`].
const SEND_N: u64 = 100_000;
/// Sends between two asks in [`micro_sends`].
const SEND_WINDOW: u64 = 10_000;
/// Rounds of [`micro_sends`].
const SEND_ROUNDS: usize = 5;

/// micro's remote `send` throughput: one sender, `SEND_N` one-way messages to a remote actor in
/// windows of `SEND_WINDOW`, each followed by an ask that arrives after them (same destination,
/// same order) and checks none was lost; messages/s, median.
fn micro_sends(workers: usize) -> BenchResult<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Micro::setup().await?;
        let mut rates = Vec::with_capacity(SEND_ROUNDS);
        let mut expected = 0;
        for _ in 0..SEND_ROUNDS {
            let start = Instant::now();
            for chunk in 0..SEND_N / SEND_WINDOW {
                for id in 0..SEND_WINDOW {
                    client.addr.send(BenchMsg::Cast(Req {
                        id: chunk * SEND_WINDOW + id,
                        name: NAME.to_owned(),
                    }))?;
                }
                // An ask behind each window: it arrives after the window's sends, and waiting for
                // it keeps the receiver's queue under its inbound bound (past which sends are
                // dropped and counted, by design).
                let count = client.addr.ask(BenchMsg::Count, PHASE_TIMEOUT).await?;
                expected += SEND_WINDOW;
                if count != expected {
                    return Err(format!("{count} sends arrived, expected {expected}").into());
                }
            }
            rates.push(SEND_N as f64 / start.elapsed().as_secs_f64());
        }
        Ok(median(rates))
    })
}
