//! Store benchmark: micro's store against the engines it runs on, same workloads, one run.
//!
//! - **redb**: micro's `FileStore` through a local handle (reads go straight to redb in a read
//!   transaction; writes through the store actor, one durable commit each) and from another
//!   node over QUIC (lines labelled `remote`), against raw redb: one read transaction per read,
//!   one write transaction per write, at the same durability (`Immediate`: fsync per commit) and
//!   value size ([`VALUE`] bytes), raw workers on threads of their own.
//! - **postgres** (with `--features micro-benches/postgres` and `MICRO_BENCH_POSTGRES_URL`):
//!   micro's `PostgresStore` through a local handle against raw tokio-postgres with the same
//!   pool (deadpool, 16 connections) and prepared statements: a `SELECT` per read, an upsert per
//!   write (micro's write also bumps the revision, logs the change and notifies watchers, in one
//!   transaction).
//!
//! Reads and writes of random keys among [`KEYS`], at concurrency 1 and 16, each measured for
//! [`SLICE`]; [`ROUNDS`] rounds alternate which stack goes first; medians are reported, then
//! `ratio <op>_per_s micro/redb = X.XX` and `ratio <op>_per_s micro/postgres = X.XX` lines
//! (above 1: micro faster). Run from the workspace root: `cargo bench --bench store`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_runtime::{ClusterCa, Node, NodeId};
use micro_store::{FileConfig, FileStore, Record, Store};
use redb::{ReadableDatabase, TableDefinition};

type BoxError = Box<dyn StdError + Send + Sync>;
type BenchResult<T> = Result<T, BoxError>;

/// Keys written first, then read and overwritten at random.
const KEYS: u64 = 1_000;
/// Bytes per value.
const VALUE: usize = 256;
/// How long each measurement runs.
const SLICE: Duration = Duration::from_millis(700);
/// Measured rounds (after a warm-up).
const ROUNDS: usize = 3;
const LOOPBACK: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
const RAW: TableDefinition<&str, &[u8]> = TableDefinition::new("bench");

fn key(i: u64) -> String {
    format!("key{i:06}")
}

fn value(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; VALUE]
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// One stack under test.
#[derive(Clone)]
enum Target {
    Micro(Store),
    Redb(Arc<redb::Database>),
    #[cfg(feature = "postgres")]
    Postgres(deadpool_postgres::Pool),
}

impl Target {
    /// Operations per second of `op` with `workers` concurrent callers for [`SLICE`].
    async fn measure(&self, op: Op, workers: usize) -> BenchResult<f64> {
        let start = Instant::now();
        let deadline = start + SLICE;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let target = self.clone();
            let seed = w as u64 * 7919;
            tasks.push(match target {
                Target::Redb(db) => tokio::task::spawn_blocking(move || -> BenchResult<u64> {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let i = (seed + n * 31) % KEYS;
                        match op {
                            Op::Read => {
                                let txn = db.begin_read()?;
                                let table = txn.open_table(RAW)?;
                                let got = table.get(key(i).as_str())?.ok_or("missing")?;
                                assert_eq!(got.value().len(), VALUE);
                            }
                            Op::Write => {
                                let mut txn = db.begin_write()?;
                                txn.set_durability(redb::Durability::Immediate)?;
                                {
                                    let mut table = txn.open_table(RAW)?;
                                    table.insert(key(i).as_str(), value(n).as_slice())?;
                                }
                                txn.commit()?;
                            }
                        }
                        n += 1;
                    }
                    Ok(n)
                }),
                Target::Micro(store) => tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let i = (seed + n * 31) % KEYS;
                        match op {
                            Op::Read => {
                                let got = store.read(&key(i)).await?.ok_or("missing")?;
                                assert_eq!(got.value.len(), VALUE);
                            }
                            Op::Write => {
                                store.write(Record::new(key(i), value(n))).await?;
                            }
                        }
                        n += 1;
                    }
                    Ok(n)
                }),
                #[cfg(feature = "postgres")]
                Target::Postgres(pool) => tokio::spawn(async move {
                    let mut n = 0u64;
                    let client = pool.get().await?;
                    let read = client
                        .prepare_cached("SELECT value FROM micro_bench_raw.kv WHERE key = $1")
                        .await?;
                    let write = client
                        .prepare_cached(
                            "INSERT INTO micro_bench_raw.kv (key, value) VALUES ($1, $2) \
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        )
                        .await?;
                    while Instant::now() < deadline {
                        let i = (seed + n * 31) % KEYS;
                        match op {
                            Op::Read => {
                                let row = client.query_one(&read, &[&key(i)]).await?;
                                assert_eq!(row.get::<_, &[u8]>(0).len(), VALUE);
                            }
                            Op::Write => {
                                client.execute(&write, &[&key(i), &value(n)]).await?;
                            }
                        }
                        n += 1;
                    }
                    Ok(n)
                }),
            });
        }
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        Ok(total as f64 / start.elapsed().as_secs_f64())
    }
}

/// Writes every key once through `store`, 16 at a time.
async fn fill(store: &Store) -> BenchResult<()> {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < KEYS {
                store.write(Record::new(key(i), value(i))).await?;
                i += 16;
            }
            Ok::<(), micro_store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Runs the stacks of one engine round by round (alternating who goes first) and returns the
/// median ops/s per (stack, op, concurrency).
async fn run(stacks: &[(&str, Target)]) -> BenchResult<BTreeMap<(String, Op, usize), f64>> {
    let mut samples: BTreeMap<(String, Op, usize), Vec<f64>> = BTreeMap::new();
    for round in 0..=ROUNDS {
        let mut order: Vec<&(&str, Target)> = stacks.iter().collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for op in [Op::Read, Op::Write] {
            for workers in [1, 16] {
                for (name, target) in &order {
                    let per_s = target.measure(op, workers).await?;
                    if round > 0 {
                        samples
                            .entry((name.to_string(), op, workers))
                            .or_default()
                            .push(per_s);
                    }
                }
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.total_cmp(b));
            (k, v[v.len() / 2])
        })
        .collect())
}

fn report(engine: &str, medians: &BTreeMap<(String, Op, usize), f64>, ratios: &mut Vec<String>) {
    let get = |stack: &str, op: Op, w: usize| medians.get(&(stack.to_owned(), op, w)).copied();
    for op in [Op::Read, Op::Write] {
        for workers in [1, 16] {
            let mut line = format!("{engine:8} {:5} c{workers:<3}", op.name());
            for stack in ["micro", "remote", engine] {
                if let Some(v) = get(stack, op, workers) {
                    line.push_str(&format!("  {stack} {v:>10.0}/s"));
                }
            }
            println!("{line}");
            let metric = format!("{}_c{workers}_per_s", op.name());
            if let (Some(ours), Some(theirs)) =
                (get("micro", op, workers), get(engine, op, workers))
            {
                ratios.push(format!(
                    "ratio {metric} micro/{engine} = {:.2}",
                    ours / theirs
                ));
            }
            if let (Some(ours), Some(theirs)) =
                (get("remote", op, workers), get(engine, op, workers))
            {
                ratios.push(format!(
                    "ratio remote_{metric} micro/{engine} = {:.2}  # remote",
                    ours / theirs
                ));
            }
        }
    }
}

async fn redb_half(ratios: &mut Vec<String>) -> BenchResult<()> {
    let dir = std::env::temp_dir().join(format!("micro-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        // micro: a file store on node A, used locally and from node B over QUIC.
        let ca = ClusterCa::generate("store-bench")?;
        let a = Node::builder()
            .name("store-a")
            .listen(LOOPBACK)
            .credentials(ca.issue(NodeId::random())?)
            .start()
            .await?;
        let b = Node::builder()
            .name("store-b")
            .listen(LOOPBACK)
            .credentials(ca.issue(NodeId::random())?)
            .start()
            .await?;
        let local = FileStore::start(&a, FileConfig::new(dir.join("micro"))).await?;
        b.connect(a.local_addr().ok_or("no address")?).await?;
        let remote = Store::remote(&b, a.id()).await?;
        let filled = Instant::now();
        fill(&local).await?;
        println!(
            "filled {KEYS} keys through micro in {:.2}s (durable commits)",
            filled.elapsed().as_secs_f64()
        );

        // raw redb, same durability and value size.
        let raw = Arc::new(redb::Database::create(dir.join("raw.redb"))?);
        {
            let txn = raw.begin_write()?;
            {
                let mut table = txn.open_table(RAW)?;
                for i in 0..KEYS {
                    table.insert(key(i).as_str(), value(i).as_slice())?;
                }
            }
            txn.commit()?;
        }
        let medians = run(&[
            ("micro", Target::Micro(local)),
            ("remote", Target::Micro(remote)),
            ("redb", Target::Redb(raw)),
        ])
        .await?;
        report("redb", &medians, ratios);
        b.shutdown().await?;
        a.shutdown().await?;
        Ok::<(), BoxError>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(feature = "postgres")]
async fn postgres_half(url: &str, ratios: &mut Vec<String>) -> BenchResult<()> {
    use micro_store::{PostgresConfig, PostgresStore};
    let node = Node::builder().name("store-pg").start().await?;
    let mut config = PostgresConfig::new(url);
    config.pool_size = 16;
    let micro = PostgresStore::start(&node, config)
        .await?
        .database("micro_bench");
    fill(&micro).await?;

    let pg: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .build()?;
    {
        let client = pool.get().await?;
        client
            .batch_execute(
                "DROP SCHEMA IF EXISTS micro_bench_raw CASCADE; CREATE SCHEMA micro_bench_raw; \
                 CREATE TABLE micro_bench_raw.kv (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL);",
            )
            .await?;
        let insert = client
            .prepare("INSERT INTO micro_bench_raw.kv (key, value) VALUES ($1, $2)")
            .await?;
        for i in 0..KEYS {
            client.execute(&insert, &[&key(i), &value(i)]).await?;
        }
    }
    let medians = run(&[
        ("micro", Target::Micro(micro)),
        ("postgres", Target::Postgres(pool.clone())),
    ])
    .await?;
    report("postgres", &medians, ratios);
    let client = pool.get().await?;
    client
        .batch_execute(
            "DROP SCHEMA IF EXISTS micro_bench_raw CASCADE; DROP SCHEMA IF EXISTS micro_bench CASCADE;",
        )
        .await?;
    node.shutdown().await?;
    Ok(())
}

fn main() -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut ratios = Vec::new();
    rt.block_on(redb_half(&mut ratios))?;
    let url = std::env::var("MICRO_BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    match url {
        #[cfg(feature = "postgres")]
        Some(url) => rt.block_on(postgres_half(&url, &mut ratios))?,
        #[cfg(not(feature = "postgres"))]
        Some(_) => println!(
            "postgres: skipped (build with `--features micro-benches/postgres` to compare with raw tokio-postgres)"
        ),
        None => println!("postgres: skipped (MICRO_BENCH_POSTGRES_URL is not set)"),
    }
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    for line in ratios {
        println!("{line}");
    }
    Ok(())
}
