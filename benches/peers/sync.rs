//! Locks: uncontended lock + unlock per second, micro's sync primitive against the engine it
//! stands on, raw — etcd's Lock API with one kept-alive session lease
//! (`MICRO_BENCH_ETCD_URL`) and the same SQL micro's PostgreSQL backend issues, on one
//! connection (`MICRO_BENCH_POSTGRES_URL`); each is skipped, saying so, when its variable is
//! unset. Also micro's memory backend alone, and the leader failover time per backend (a
//! leader's node stops without resigning; how long until the other candidate leads).
//!
//! Rounds alternate micro and raw; the figure is the median of the rounds. Ends with
//! `ratio lock_unlock_per_s micro/etcd = X.XX` and `ratio lock_unlock_per_s micro/postgres =
//! X.XX` (above 1: micro faster).
//!
//! Run from the workspace root: `cargo bench --bench sync --features
//! micro-benches/postgres,micro-benches/etcd` (plain `cargo bench --bench sync` runs the memory
//! backend only: the engine halves are features so the test build never needs protoc).

use std::future::Future;
use std::time::{Duration, Instant};

use micro_runtime::Node;
#[cfg(feature = "etcd")]
use micro_sync::{EtcdConfig, EtcdSync};
use micro_sync::{MemorySync, Sync as Locks};
#[cfg(feature = "postgres")]
use micro_sync::{PostgresConfig, PostgresSync, Statements};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_millis(1500);
const TTL: Duration = Duration::from_secs(10);

/// Operations per second of `op` run back to back for `ROUND`.
async fn rate<F, Fut>(mut op: F) -> BenchResult<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BenchResult<()>>,
{
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND {
        op().await?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn micro_op(sync: &Locks) -> BenchResult<()> {
    let guard = sync.lock("bench", TTL, Duration::from_secs(5)).await?;
    guard.unlock().await?;
    Ok(())
}

/// Rounds alternating micro and the raw stack; (micro, raw) medians.
#[cfg(any(feature = "postgres", feature = "etcd"))]
async fn compare<R, RF>(sync: &Locks, mut raw: R) -> BenchResult<(f64, f64)>
where
    R: FnMut() -> RF,
    RF: Future<Output = BenchResult<()>>,
{
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            ours.push(rate(|| micro_op(sync)).await?);
            theirs.push(rate(&mut raw).await?);
        } else {
            theirs.push(rate(&mut raw).await?);
            ours.push(rate(|| micro_op(sync)).await?);
        }
    }
    Ok((median(ours), median(theirs)))
}

/// A leader on `a` (its node `a_node`) with `ttl`; `a_node` stops without resigning; how long
/// until the candidate on `b` leads.
async fn failover(a_node: &Node, a: &Locks, b: &Locks, ttl: Duration) -> BenchResult<Duration> {
    let a = a.clone().with_election_ttl(ttl);
    let b = b.clone().with_election_ttl(ttl);
    let election = format!("bench-{}", std::process::id());
    let leader = a.campaign(&election, "a").await?;
    let waiting = tokio::spawn(async move { b.campaign(&election, "b").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    a_node.shutdown().await?;
    let next = tokio::time::timeout(ttl * 3, waiting).await???;
    let took = stopped.elapsed();
    assert!(next.term() > leader.term());
    std::mem::forget(leader); // its node is gone: no resignation
    Ok(took)
}

async fn memory() -> BenchResult<()> {
    let node = Node::builder().name("bench-memory").start().await?;
    let sync = MemorySync::start(&node).await?;
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        rates.push(rate(|| micro_op(&sync)).await?);
    }
    println!("memory: lock+unlock {:.0}/s (local handle)", median(rates));
    // Failover: the leader on another node linked in-process.
    let other = Node::builder().name("bench-memory-a").start().await?;
    other.connect_in_process(&node);
    let remote = Locks::remote(&other, node.id()).await?;
    let took = failover(&other, &remote, &sync, Duration::from_secs(1)).await?;
    println!("memory: leader failover {took:?} (election TTL 1 s)");
    node.shutdown().await?;
    Ok(())
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str) -> BenchResult<f64> {
    let table = format!("micro_sync_bench_{}", std::process::id());
    let node = Node::builder().name("bench-pg").start().await?;
    let sync = PostgresSync::start(&node, PostgresConfig::new(url).table(&table)).await?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    let sql = Statements::new(&table);
    let (acquire, release) = (
        client.prepare(&sql.acquire).await?,
        client.prepare(&sql.release).await?,
    );
    let ttl_ms: i64 = 10_000;
    let raw = || async {
        let row = client
            .query_one(&acquire, &[&"lock/raw", &"raw", &ttl_ms])
            .await?;
        let token: i64 = row.get(0);
        client.execute(&release, &[&"lock/raw", &token]).await?;
        Ok(())
    };
    let (ours, theirs) = compare(&sync, raw).await?;
    println!("postgres: lock+unlock micro {ours:.0}/s, raw SQL {theirs:.0}/s");
    let other = Node::builder().name("bench-pg-a").start().await?;
    let a = PostgresSync::start(&other, PostgresConfig::new(url).table(&table)).await?;
    let took = failover(&other, &a, &sync, Duration::from_secs(1)).await?;
    println!("postgres: leader failover {took:?} (election TTL 1 s)");
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; DROP SEQUENCE IF EXISTS {table}_token"
        ))
        .await?;
    drop(client);
    let _ = conn.await;
    node.shutdown().await?;
    Ok(ours / theirs)
}

#[cfg(feature = "etcd")]
async fn etcd(url: &str) -> BenchResult<f64> {
    let prefix = format!("micro-sync-bench-{}/", std::process::id());
    let node = Node::builder().name("bench-etcd").start().await?;
    let sync = EtcdSync::start(&node, EtcdConfig::new(url).prefix(&prefix)).await?;
    let mut client = etcd_client::Client::connect([url], None).await?;
    let lease = client.lease_grant(10, None).await?.id();
    let (mut keeper, mut alive) = client.lease_keep_alive(lease).await?;
    let keep = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if keeper.keep_alive().await.is_err() || alive.message().await.is_err() {
                return;
            }
        }
    });
    let raw_name = format!("{prefix}raw");
    let raw = || {
        let mut client = client.clone();
        let name = raw_name.clone();
        async move {
            let resp = client
                .lock(
                    name,
                    Some(etcd_client::LockOptions::new().with_lease(lease)),
                )
                .await?;
            client.unlock(resp.key()).await?;
            Ok(())
        }
    };
    let (ours, theirs) = compare(&sync, raw).await?;
    println!("etcd: lock+unlock micro {ours:.0}/s, raw Lock API {theirs:.0}/s");
    keep.abort();
    let _ = client.lease_revoke(lease).await;
    let other = Node::builder().name("bench-etcd-a").start().await?;
    let a = EtcdSync::start(&other, EtcdConfig::new(url).prefix(&prefix)).await?;
    let took = failover(&other, &a, &sync, Duration::from_secs(2)).await?;
    println!("etcd: leader failover {took:?} (election TTL 2 s, etcd's shortest)");
    client
        .delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    node.shutdown().await?;
    Ok(ours / theirs)
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    memory().await?;
    #[allow(unused_mut)] // only the engine features push to it
    let mut ratios: Vec<(&str, f64)> = Vec::new();
    #[cfg(feature = "etcd")]
    match std::env::var("MICRO_BENCH_ETCD_URL") {
        Ok(url) => ratios.push(("etcd", etcd(&url).await?)),
        Err(_) => println!("etcd skipped: set MICRO_BENCH_ETCD_URL (e.g. http://127.0.0.1:2379)"),
    }
    #[cfg(not(feature = "etcd"))]
    println!("etcd skipped: build with --features micro-benches/etcd (needs protoc)");
    #[cfg(feature = "postgres")]
    match std::env::var("MICRO_BENCH_POSTGRES_URL") {
        Ok(url) => ratios.push(("postgres", postgres(&url).await?)),
        Err(_) => println!(
            "postgres skipped: set MICRO_BENCH_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test)"
        ),
    }
    #[cfg(not(feature = "postgres"))]
    println!("postgres skipped: build with --features micro-benches/postgres");
    for (peer, ratio) in ratios {
        println!("ratio lock_unlock_per_s micro/{peer} = {ratio:.2}");
    }
    Ok(())
}
