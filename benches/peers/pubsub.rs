//! Pubsub benchmark: micro's broker against NATS (through async-nats), same workloads, one run.
//!
//! Workloads, each message a 64-byte payload:
//! - `local1`: publish [`N`] messages to 1 subscriber on the publisher's node (NATS: publisher and
//!   subscriber share one client connection);
//! - `remote1`: publish [`N`] messages to 1 subscriber on another node (NATS: another client);
//! - `fanout10`: publish [`FANOUT_N`] messages to 10 subscribers across 3 nodes, 3 on the
//!   publisher's node and 4 and 3 on the others (NATS: 3 subscriber clients, 3/4/3
//!   subscriptions); messages/s counts published messages, each delivered 10 times;
//! - `latency`: [`LAT_N`] sequential publishes to 1 remote subscriber, each timed from just
//!   before `publish` until the subscriber's handler has it (p50 and p99).
//!
//! Throughput is messages published per second until every subscriber has handled every
//! message (no loss: micro's queues are sized so nothing is dropped, and the run checks it).
//! Micro runs three nodes in this process linked over QUIC on 127.0.0.1; NATS runs against the
//! server at `MICRO_BENCH_NATS_URL` (skipped, saying so, when unset). Each stack has its own tokio
//! multi-thread runtime of [`WORKERS`] workers. One warm-up round is discarded, then [`ROUNDS`]
//! measured rounds alternate which stack goes first; medians are reported, then one
//! `ratio msgs_per_s micro/nats = X.XX` line per throughput workload (above 1: micro faster).
//!
//! `PUBSUB_BENCH_ONLY=micro` (or `nats`) runs one stack; `PUBSUB_BENCH_ROUNDS=n` changes the
//! number of measured rounds. Run from the workspace root with `cargo bench --bench pubsub`.

#![allow(clippy::unwrap_used)]

use std::error::Error as StdError;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use micro_broker::{Backpressure, Broker, Event, HandlerError, SubscribeOptions};
use micro_runtime::{ClusterCa, Node, NodeId};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

type BoxError = Box<dyn StdError + Send + Sync>;
type BenchResult<T> = Result<T, BoxError>;

/// Worker threads of each stack's tokio runtime.
const WORKERS: usize = 2;
/// Messages per round of `local1` and `remote1`.
const N: u64 = 100_000;
/// Messages per round of `fanout10` (each delivered 10 times).
const FANOUT_N: u64 = 20_000;
/// Sequential publishes per `latency` round.
const LAT_N: usize = 2_000;
/// Measured rounds, after one discarded warm-up round.
const ROUNDS: usize = 6;
/// The payload size.
const PAYLOAD: usize = 64;
/// Upper bound on one workload of one stack in one round.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on waiting for deliveries (inside a phase).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const LOOPBACK: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

fn payload(seq: u64) -> Vec<u8> {
    let mut bytes = vec![0xAB; PAYLOAD];
    bytes[..8].copy_from_slice(&seq.to_be_bytes());
    bytes
}

/// micro's message: the 64 bytes as one byte string (what `serde_bytes` does), as NATS carries
/// them; a plain `Vec<u8>` would encode and decode byte by byte.
struct Blob(Vec<u8>);

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

/// One round's figures of one stack.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    local1: f64,
    remote1: f64,
    fanout10: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Picks one figure out of a sample.
type Metric = fn(&Sample) -> f64;

/// A stack under test: its runtime and one function per round.
struct Prepared {
    name: &'static str,
    round: Box<dyn FnMut() -> BenchResult<Sample>>,
}

// ---- micro ----

/// Three nodes with brokers, linked over QUIC.
struct MicroCluster {
    nodes: Vec<Node>,
    brokers: Vec<Broker>,
    topic: u64,
}

/// Counts deliveries; the latency workload's subscriber also reports each one.
#[derive(Clone)]
struct Counter {
    count: Arc<AtomicU64>,
    notify: Option<mpsc::UnboundedSender<()>>,
}

impl Counter {
    fn new() -> Self {
        Counter {
            count: Arc::default(),
            notify: None,
        }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// Big enough that nothing is dropped in a round (checked after each).
fn bench_queue() -> SubscribeOptions {
    SubscribeOptions::new().backpressure(Backpressure::DropOldest { capacity: 1 << 18 })
}

impl MicroCluster {
    async fn start() -> BenchResult<Self> {
        let ca = ClusterCa::generate("pubsub-bench")?;
        let mut nodes: Vec<Node> = Vec::new();
        let mut brokers = Vec::new();
        for i in 0..3 {
            let node = Node::builder()
                .name(format!("bench-{i}"))
                .listen(LOOPBACK)
                .credentials(ca.issue(NodeId::random())?)
                .start()
                .await?;
            brokers.push(Broker::start(&node).await?);
            for other in &nodes {
                node.connect(other.local_addr().ok_or("no address")?)
                    .await?;
            }
            nodes.push(node);
        }
        wait_until("brokers linked", || {
            brokers.iter().all(|b| b.peers().len() == 2)
        })
        .await?;
        Ok(MicroCluster {
            nodes,
            brokers,
            topic: 0,
        })
    }

    fn topic(&mut self) -> String {
        self.topic += 1;
        format!("bench.{}", self.topic)
    }

    /// Subscribes a counter on node `i`.
    async fn subscribe(
        &self,
        i: usize,
        topic: &str,
        counter: &Counter,
    ) -> BenchResult<micro_broker::Subscription> {
        let counter = counter.clone();
        let sub = self.brokers[i]
            .subscribe_with(topic, bench_queue(), move |event: Event<Blob>| {
                let ok = event.message.0.len() == PAYLOAD;
                counter.count.fetch_add(u64::from(ok), Ordering::AcqRel);
                if let Some(notify) = &counter.notify {
                    let _ = notify.send(());
                }
                std::future::ready(Ok::<(), HandlerError>(()))
            })
            .await?;
        Ok(sub)
    }

    async fn wait_interest(&self, topic: &str, total: usize) -> BenchResult<()> {
        wait_until("interest known", || {
            self.brokers
                .iter()
                .all(|b| b.interest(topic).total() == total)
        })
        .await
    }

    /// Publishes `n` messages from node 0 to subscribers on `placement` nodes: messages/s.
    async fn throughput(&mut self, placement: &[usize], n: u64) -> BenchResult<f64> {
        let topic = self.topic();
        let counter = Counter::new();
        let mut subs = Vec::new();
        for &i in placement {
            subs.push(self.subscribe(i, &topic, &counter).await?);
        }
        self.wait_interest(&topic, placement.len()).await?;
        let expected = n * placement.len() as u64;
        let broker = self.brokers[0].clone();
        let start = Instant::now();
        for seq in 0..n {
            broker.publish(&topic, &Blob(payload(seq))).await?;
        }
        wait_until("every delivery handled", || counter.get() >= expected).await?;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        for sub in subs {
            let stats = sub.unsubscribe().await?;
            if stats.dropped > 0 || stats.undecodable > 0 {
                return Err(format!("micro lost messages: {stats:?}").into());
            }
        }
        Ok(rate)
    }

    async fn latency(&mut self) -> BenchResult<(f64, f64)> {
        let topic = self.topic();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let counter = Counter {
            count: Arc::default(),
            notify: Some(tx),
        };
        let sub = self.subscribe(1, &topic, &counter).await?;
        self.wait_interest(&topic, 1).await?;
        let broker = self.brokers[0].clone();
        let mut latencies = Vec::with_capacity(LAT_N);
        for seq in 0..LAT_N as u64 {
            let sent = Instant::now();
            broker.publish(&topic, &Blob(payload(seq))).await?;
            rx.recv().await.ok_or("subscriber gone")?;
            latencies.push(sent.elapsed());
        }
        sub.unsubscribe().await?;
        Ok(percentiles(latencies))
    }

    async fn round(&mut self) -> BenchResult<Sample> {
        let local1 = phase("micro local1", self.throughput(&[0], N)).await?;
        let remote1 = phase("micro remote1", self.throughput(&[1], N)).await?;
        let fanout10 = phase(
            "micro fanout10",
            self.throughput(&[0, 0, 0, 1, 1, 1, 1, 2, 2, 2], FANOUT_N),
        )
        .await?;
        let (p50_us, p99_us) = phase("micro latency", self.latency()).await?;
        Ok(Sample {
            local1,
            remote1,
            fanout10,
            p50_us,
            p99_us,
        })
    }
}

fn prepare_micro() -> BenchResult<Prepared> {
    let rt = runtime()?;
    let mut cluster = rt.block_on(MicroCluster::start())?;
    Ok(Prepared {
        name: "micro",
        round: Box::new(move || {
            let result = rt.block_on(cluster.round());
            if result.is_err() {
                for node in &cluster.nodes {
                    eprintln!("{}: refused {}", node.name(), node.refused_messages());
                }
            }
            result
        }),
    })
}

// ---- NATS ----

/// A publisher client and three subscriber clients ("nodes").
struct NatsStack {
    publisher: async_nats::Client,
    others: Vec<async_nats::Client>,
    subject: u64,
}

impl NatsStack {
    async fn connect(url: &str) -> BenchResult<Self> {
        // Subscriptions buffer as much as micro's bench queues hold, so neither drops.
        let connect = || {
            async_nats::ConnectOptions::new()
                .subscription_capacity(1 << 18)
                .connect(url)
        };
        let publisher = connect().await?;
        let mut others = Vec::new();
        for _ in 0..2 {
            others.push(connect().await?);
        }
        Ok(NatsStack {
            publisher,
            others,
            subject: 0,
        })
    }

    /// Client `i`: 0 is the publisher's own ("local"), 1 and 2 the others.
    fn client(&self, i: usize) -> &async_nats::Client {
        if i == 0 {
            &self.publisher
        } else {
            &self.others[i - 1]
        }
    }

    fn subject(&mut self) -> String {
        self.subject += 1;
        format!("bench.{}.{}", std::process::id(), self.subject)
    }

    /// Waits until the server routes `subject` to every subscription: publishes probes (short
    /// payloads, not counted) until each subscription has seen one. A flush only writes the SUB
    /// to the socket; without this, the first messages can beat it to the server.
    async fn until_subscribed(&self, subject: &str, probed: &[Arc<AtomicBool>]) -> BenchResult<()> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while !probed.iter().all(|p| p.load(Ordering::Acquire)) {
            if Instant::now() > deadline {
                return Err("NATS subscriptions never became active".into());
            }
            self.publisher
                .publish(subject.to_owned(), vec![0u8].into())
                .await?;
            self.publisher.flush().await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    async fn throughput(&mut self, placement: &[usize], n: u64) -> BenchResult<f64> {
        let subject = self.subject();
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let mut probed = Vec::new();
        for &i in placement {
            let mut sub = self.client(i).subscribe(subject.clone()).await?;
            let count = count.clone();
            let seen_probe = Arc::new(AtomicBool::new(false));
            probed.push(seen_probe.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    if msg.payload.len() == PAYLOAD {
                        count.fetch_add(1, Ordering::AcqRel);
                    } else {
                        seen_probe.store(true, Ordering::Release);
                    }
                }
            }));
        }
        for &i in placement {
            self.client(i).flush().await?;
        }
        self.until_subscribed(&subject, &probed).await?;
        let expected = n * placement.len() as u64;
        let start = Instant::now();
        for seq in 0..n {
            self.publisher
                .publish(subject.clone(), payload(seq).into())
                .await?;
        }
        self.publisher.flush().await?;
        let counted = count.clone();
        wait_until("every NATS delivery handled", || {
            counted.load(Ordering::Acquire) >= expected
        })
        .await
        .map_err(|e| format!("{e}: {} of {expected}", count.load(Ordering::Acquire)))?;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        for task in tasks {
            task.abort();
        }
        Ok(rate)
    }

    async fn latency(&mut self) -> BenchResult<(f64, f64)> {
        let subject = self.subject();
        let mut sub = self.client(1).subscribe(subject.clone()).await?;
        self.client(1).flush().await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let seen_probe = Arc::new(AtomicBool::new(false));
        let probed = seen_probe.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if msg.payload.len() == PAYLOAD {
                    let _ = tx.send(());
                } else {
                    probed.store(true, Ordering::Release);
                }
            }
        });
        self.until_subscribed(&subject, &[seen_probe]).await?;
        // Probes still in flight are not counted; let them pass.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut latencies = Vec::with_capacity(LAT_N);
        for seq in 0..LAT_N as u64 {
            let sent = Instant::now();
            self.publisher
                .publish(subject.clone(), payload(seq).into())
                .await?;
            rx.recv().await.ok_or("subscriber gone")?;
            latencies.push(sent.elapsed());
        }
        task.abort();
        Ok(percentiles(latencies))
    }

    async fn round(&mut self) -> BenchResult<Sample> {
        let local1 = phase("nats local1", self.throughput(&[0], N)).await?;
        let remote1 = phase("nats remote1", self.throughput(&[1], N)).await?;
        let fanout10 = phase(
            "nats fanout10",
            self.throughput(&[0, 0, 0, 1, 1, 1, 1, 2, 2, 2], FANOUT_N),
        )
        .await?;
        let (p50_us, p99_us) = phase("nats latency", self.latency()).await?;
        Ok(Sample {
            local1,
            remote1,
            fanout10,
            p50_us,
            p99_us,
        })
    }
}

fn prepare_nats(url: &str) -> BenchResult<Prepared> {
    let rt = runtime()?;
    let mut stack = rt.block_on(NatsStack::connect(url))?;
    Ok(Prepared {
        name: "nats",
        round: Box::new(move || rt.block_on(stack.round())),
    })
}

// ---- the harness ----

fn runtime() -> BenchResult<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?)
}

async fn phase<T>(what: &str, work: impl Future<Output = BenchResult<T>>) -> BenchResult<T> {
    tokio::time::timeout(PHASE_TIMEOUT, work)
        .await
        .map_err(|_| format!("{what} timed out"))?
}

/// Polls `done` until it holds (for at most [`DELIVERY_TIMEOUT`]).
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> BenchResult<()> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out: {what}").into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// (p50, p99) in µs, nearest rank.
fn percentiles(mut latencies: Vec<Duration>) -> (f64, f64) {
    latencies.sort_unstable();
    let at = |q: f64| {
        let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
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
        local1: of(|s| s.local1),
        remote1: of(|s| s.remote1),
        fanout10: of(|s| s.fanout10),
        p50_us: of(|s| s.p50_us),
        p99_us: of(|s| s.p99_us),
    }
}

fn main() -> BenchResult<()> {
    let wall = Instant::now();
    let only = std::env::var("PUBSUB_BENCH_ONLY").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == name))
    };
    let rounds: usize = std::env::var("PUBSUB_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    let nats_url = std::env::var("MICRO_BENCH_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty());

    println!("pubsub over loopback (127.0.0.1), {PAYLOAD}-byte payloads");
    println!(
        "each stack: own tokio multi-thread runtime, {WORKERS} workers; micro: 3 nodes in this \
         process over QUIC"
    );
    println!(
        "local1 / remote1: {N} messages per round; fanout10: {FANOUT_N} messages x 10 \
         subscribers (3/4/3 over 3 nodes); latency: {LAT_N} sequential publishes, remote subscriber"
    );
    println!("rounds: 1 warm-up (discarded) + {rounds} measured, first stack alternating; medians");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }

    let mut stacks = Vec::new();
    if wanted("micro") {
        stacks.push(prepare_micro()?);
    }
    match &nats_url {
        Some(url) if wanted("nats") => stacks.push(prepare_nats(url)?),
        Some(_) => {}
        None => println!("NATS skipped: set MICRO_BENCH_NATS_URL (e.g. nats://127.0.0.1:4222)"),
    }
    println!();

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); stacks.len()];
    for round in 0..=rounds {
        let mut order: Vec<usize> = (0..stacks.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut line = if round == 0 {
            "warm-up ".to_owned()
        } else {
            format!("round {round:<2}")
        };
        for &i in &order {
            let s = (stacks[i].round)()?;
            line.push_str(&format!(
                "  | {} local1 {:.0}/s remote1 {:.0}/s fanout10 {:.0}/s p50 {:.0}us",
                stacks[i].name, s.local1, s.remote1, s.fanout10, s.p50_us
            ));
            if round > 0 {
                samples[i].push(s);
            }
        }
        println!("{line}");
    }

    let results: Vec<(&str, Sample)> = stacks
        .iter()
        .zip(&samples)
        .map(|(stack, samples)| (stack.name, medians(samples)))
        .collect();
    println!();
    println!(
        "{:<8} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "stack", "local1 msg/s", "remote1 msg/s", "fanout10 msg/s", "p50 µs", "p99 µs"
    );
    for (name, s) in &results {
        println!(
            "{:<8} {:>14.0} {:>14.0} {:>14.0} {:>12.1} {:>12.1}",
            name, s.local1, s.remote1, s.fanout10, s.p50_us, s.p99_us
        );
    }
    drop(stacks);
    println!(
        "wall time (setup, rounds, teardown): {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    let find = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
    if let (Some(micro), Some(nats)) = (find("micro"), find("nats")) {
        println!();
        println!(
            "ratio p50_us micro/nats = {:.2}  # latency, 1 remote subscriber (lower is better)",
            micro.p50_us / nats.p50_us
        );
        let workloads: [(&str, Metric); 3] = [
            ("1 local subscriber", |s| s.local1),
            ("1 remote subscriber", |s| s.remote1),
            ("10 subscribers on 3 nodes", |s| s.fanout10),
        ];
        for (label, of) in workloads {
            println!(
                "ratio msgs_per_s micro/nats = {:.2}  # {label}",
                of(&micro) / of(&nats)
            );
        }
    }
    Ok(())
}
