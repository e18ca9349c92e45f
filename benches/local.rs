//! Local benchmark: micro's [`Addr`] against a raw ractor [`ActorRef`], side by side in one run.
//!
//! Measures, on a two-worker multi-thread tokio runtime:
//! 1. `send`/`cast` throughput: one sender task sends `CAST_N` `Add(u64)` messages, then one
//!    ask/call waits for the actor to have processed them all;
//! 2. `ask`/`call` round trips: `ASK_N` sequential `Get(reply)` requests (p50, p99, asks/s);
//! 3. spawn time and idle memory (growth of RSS) for `SPAWN_N` actors: micro actors under one
//!    supervisor against unlinked raw ractor actors. Each of those runs in a fresh child process
//!    (this same binary, re-run with `MICRO_BENCH_SPAWN` set) so that neither stack reuses memory
//!    the other freed.
//!
//! Rounds are interleaved (micro, ractor, micro, ractor, ...) after a discarded warm-up round, and
//! medians are reported. Run with `cargo bench --bench local`.

use std::error::Error as StdError;
use std::process::Command;
use std::time::{Duration, Instant};

use micro_runtime::{
    Actor, ActorError, Addr, ChildSpec, Context, Node, Reply, Strategy, SupervisorSpec,
};
use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

type BoxError = Box<dyn StdError + Send + Sync>;
type BenchResult<T> = Result<T, BoxError>;

/// Messages per cast round.
const CAST_N: u64 = 200_000;
/// Sequential asks per ask round.
const ASK_N: usize = 20_000;
/// Measured rounds (after one discarded warm-up round).
const ROUNDS: usize = 9;
/// Actors per spawn/memory run.
const SPAWN_N: usize = 10_000;
/// Child processes per stack for the spawn/memory figures.
const SPAWN_RUNS: usize = 3;
/// Timeout for every ask/call.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Environment variable that turns this binary into a spawn/memory child.
const SPAWN_ENV: &str = "MICRO_BENCH_SPAWN";

// ---- micro counter ----

enum MicroMsg {
    Add(u64),
    Get(Reply<u64>),
}

struct MicroCounter {
    count: u64,
}

impl Actor for MicroCounter {
    type Msg = MicroMsg;

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: MicroMsg) -> Result<(), ActorError> {
        match msg {
            MicroMsg::Add(n) => self.count += n,
            MicroMsg::Get(reply) => {
                let _ = reply.send(self.count);
            }
        }
        Ok(())
    }
}

fn micro_counter() -> MicroCounter {
    MicroCounter { count: 0 }
}

// ---- raw ractor counter ----

enum RactorMsg {
    Add(u64),
    Get(RpcReplyPort<u64>),
}

struct RactorCounter;

impl ractor::Actor for RactorCounter {
    type Msg = RactorMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<RactorMsg>,
        _args: (),
    ) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RactorMsg>,
        msg: RactorMsg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RactorMsg::Add(n) => *count += n,
            RactorMsg::Get(reply) => {
                let _ = reply.send(*count);
            }
        }
        Ok(())
    }
}

// ---- the two stacks behind one interface ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stack {
    Micro,
    Ractor,
}

impl Stack {
    fn label(self) -> &'static str {
        match self {
            Stack::Micro => "micro",
            Stack::Ractor => "ractor",
        }
    }
}

#[derive(Clone)]
enum Target {
    Micro(Addr<MicroMsg>),
    Ractor(ActorRef<RactorMsg>),
}

impl Target {
    fn add(&self, n: u64) -> BenchResult<()> {
        match self {
            Target::Micro(addr) => addr.send(MicroMsg::Add(n))?,
            Target::Ractor(actor) => actor
                .cast(RactorMsg::Add(n))
                .map_err(|_| "ractor cast failed")?,
        }
        Ok(())
    }

    async fn get(&self) -> BenchResult<u64> {
        match self {
            Target::Micro(addr) => Ok(addr.ask(MicroMsg::Get, ASK_TIMEOUT).await?),
            Target::Ractor(actor) => {
                match actor
                    .call(RactorMsg::Get, Some(ASK_TIMEOUT))
                    .await
                    .map_err(|_| "ractor call: send failed")?
                {
                    ractor::rpc::CallResult::Success(count) => Ok(count),
                    ractor::rpc::CallResult::Timeout => Err("ractor call timed out".into()),
                    ractor::rpc::CallResult::SenderError => Err("ractor reply dropped".into()),
                }
            }
        }
    }
}

/// What one round measured for one stack.
struct Round {
    cast_msgs_per_s: f64,
    ask_per_s: f64,
    ask_p50_us: f64,
    ask_p99_us: f64,
}

/// Runs one cast round and one ask round against `target`, from a spawned sender task.
/// `expected` is the count the actor holds before the round; it is updated.
async fn round(target: &Target, expected: &mut u64) -> BenchResult<Round> {
    let before = *expected;
    let t = target.clone();
    let (cast_elapsed, count) = tokio::spawn(async move {
        let start = Instant::now();
        for _ in 0..CAST_N {
            t.add(1)?;
        }
        let count = t.get().await?;
        BenchResult::Ok((start.elapsed(), count))
    })
    .await??;
    *expected = before + CAST_N;
    if count != *expected {
        return Err(format!("count {count}, expected {}", *expected).into());
    }

    let t = target.clone();
    let want = *expected;
    let (ask_elapsed, mut latencies) = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(ASK_N);
        let start = Instant::now();
        for _ in 0..ASK_N {
            let sent = Instant::now();
            let count = t.get().await?;
            latencies.push(sent.elapsed());
            if count != want {
                return Err(format!("ask answered {count}, expected {want}").into());
            }
        }
        BenchResult::Ok((start.elapsed(), latencies))
    })
    .await??;
    latencies.sort_unstable();

    Ok(Round {
        cast_msgs_per_s: CAST_N as f64 / cast_elapsed.as_secs_f64(),
        ask_per_s: ASK_N as f64 / ask_elapsed.as_secs_f64(),
        ask_p50_us: percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        ask_p99_us: percentile(&latencies, 0.99).as_secs_f64() * 1e6,
    })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> BenchResult<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("short /proc/self/statm")?
        .parse()?;
    Ok(resident * 4096)
}

fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

// ---- spawn / memory child process ----

/// What one spawn child measured.
struct SpawnFigures {
    spawn: Duration,
    stop: Duration,
    rss_growth: i64,
}

async fn spawn_micro() -> BenchResult<SpawnFigures> {
    let node = Node::builder().name("bench-spawn").start().await?;
    let sup = node
        .spawn_supervisor(SupervisorSpec::new(Strategy::OneForOne))
        .await?;
    let mut addrs = Vec::with_capacity(SPAWN_N);
    let rss_before = rss_bytes()?;
    let start = Instant::now();
    for _ in 0..SPAWN_N {
        addrs.push(sup.start_child(ChildSpec::new(micro_counter)).await?);
    }
    let spawn = start.elapsed();
    let rss_after = rss_bytes()?;
    // Every actor is up and answering.
    let last = addrs.last().ok_or("no actor spawned")?;
    last.ask(MicroMsg::Get, ASK_TIMEOUT).await?;

    let start = Instant::now();
    // The node stops its whole tree: the supervisor and its 10k children.
    node.shutdown().await?;
    let stop = start.elapsed();
    Ok(SpawnFigures {
        spawn,
        stop,
        rss_growth: rss_after as i64 - rss_before as i64,
    })
}

async fn spawn_ractor() -> BenchResult<SpawnFigures> {
    let mut actors = Vec::with_capacity(SPAWN_N);
    let rss_before = rss_bytes()?;
    let start = Instant::now();
    for _ in 0..SPAWN_N {
        let (actor, join) = ractor::Actor::spawn(None, RactorCounter, ()).await?;
        actors.push((actor, join));
    }
    let spawn = start.elapsed();
    let rss_after = rss_bytes()?;
    let (last, _) = actors.last().ok_or("no actor spawned")?;
    Target::Ractor(last.clone()).get().await?;

    let start = Instant::now();
    for (actor, _) in &actors {
        actor.stop(None);
    }
    for (_, join) in actors {
        join.await?;
    }
    let stop = start.elapsed();
    Ok(SpawnFigures {
        spawn,
        stop,
        rss_growth: rss_after as i64 - rss_before as i64,
    })
}

/// Child mode: measure one stack's spawn time and memory, print one parseable line.
fn spawn_child(stack: &str) -> BenchResult<()> {
    let rt = runtime()?;
    let figures = match stack {
        "micro" => rt.block_on(async { tokio::spawn(spawn_micro()).await? })?,
        "ractor" => rt.block_on(async { tokio::spawn(spawn_ractor()).await? })?,
        other => return Err(format!("unknown stack {other:?}").into()),
    };
    println!(
        "SPAWN spawn_ns={} stop_ns={} rss_growth={}",
        figures.spawn.as_nanos(),
        figures.stop.as_nanos(),
        figures.rss_growth
    );
    Ok(())
}

/// Runs this binary as a spawn child for `stack` and parses its figures.
fn run_spawn_child(stack: Stack) -> BenchResult<SpawnFigures> {
    let output = Command::new(std::env::current_exe()?)
        .env(SPAWN_ENV, stack.label())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} spawn child failed ({}): {}{}",
            stack.label(),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SPAWN "))
        .ok_or("spawn child printed no figures")?;
    let field = |key: &str| -> BenchResult<i128> {
        let value = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("no {key} in {line:?}"))?;
        Ok(value.parse()?)
    };
    Ok(SpawnFigures {
        spawn: Duration::from_nanos(u64::try_from(field("spawn_ns")?)?),
        stop: Duration::from_nanos(u64::try_from(field("stop_ns")?)?),
        rss_growth: i64::try_from(field("rss_growth")?)?,
    })
}

// ---- the main run ----

async fn throughput_rounds() -> BenchResult<(Vec<Round>, Vec<Round>)> {
    let node = Node::builder().name("bench").start().await?;
    let micro = Target::Micro(node.spawn(ChildSpec::new(micro_counter)).await?);
    let (ractor_ref, ractor_join) = ractor::Actor::spawn(None, RactorCounter, ()).await?;
    let ractor = Target::Ractor(ractor_ref.clone());

    let mut micro_expected = 0;
    let mut ractor_expected = 0;
    let mut micro_rounds = Vec::with_capacity(ROUNDS);
    let mut ractor_rounds = Vec::with_capacity(ROUNDS);

    println!(
        "{:<8} {:<7} {:>14} {:>12} {:>10} {:>10}",
        "round", "stack", "cast msgs/s", "asks/s", "ask p50", "ask p99"
    );
    for i in 0..=ROUNDS {
        // Alternate which stack goes first (ABBA…): the second of a pair runs on a warmer
        // machine, and that alone moved the ratio by 5–8% when micro always went first.
        let mut pair = [
            (Stack::Micro, &micro, &mut micro_expected),
            (Stack::Ractor, &ractor, &mut ractor_expected),
        ];
        if i % 2 == 1 {
            pair.reverse();
        }
        for (stack, target, expected) in pair {
            let r = round(target, expected).await?;
            let label = if i == 0 {
                "warm-up".to_owned()
            } else {
                i.to_string()
            };
            println!(
                "{:<8} {:<7} {:>14.0} {:>12.0} {:>8.2}µs {:>8.2}µs",
                label,
                stack.label(),
                r.cast_msgs_per_s,
                r.ask_per_s,
                r.ask_p50_us,
                r.ask_p99_us
            );
            if i > 0 {
                match stack {
                    Stack::Micro => micro_rounds.push(r),
                    Stack::Ractor => ractor_rounds.push(r),
                }
            }
        }
    }

    ractor_ref.stop(None);
    ractor_join.await?;
    node.shutdown().await?;
    Ok((micro_rounds, ractor_rounds))
}

fn print_metric(name: &str, unit: &str, micro: &[f64], ractor: &[f64]) {
    for (stack, values) in [("micro", micro), ("ractor", ractor)] {
        let (lo, hi) = min_max(values);
        println!(
            "{:<20} {:<7} {:>14.2} {:>14.2} {:>14.2}  {}",
            name,
            stack,
            median(values),
            lo,
            hi,
            unit
        );
    }
}

fn main() -> BenchResult<()> {
    if let Ok(stack) = std::env::var(SPAWN_ENV) {
        return spawn_child(&stack);
    }
    let wall = Instant::now();
    println!(
        "micro Addr vs raw ractor ActorRef: tokio multi-thread runtime, 2 workers; \
         {CAST_N} casts and {ASK_N} asks per round, 1 warm-up + {ROUNDS} measured rounds\n"
    );

    let rt = runtime()?;
    let (micro, ractor) = rt.block_on(throughput_rounds())?;
    drop(rt);

    println!(
        "\nspawn/memory: {SPAWN_N} idle actors per run, {SPAWN_RUNS} runs per stack, \
         each in a fresh process (micro: start_child under one OneForOne supervisor; \
         ractor: Actor::spawn(None, ..), unlinked; stop: micro node.shutdown(), which stops the \
         children one by one, ractor stop() all then join all)"
    );
    let mut spawns = (Vec::new(), Vec::new());
    for run in 1..=SPAWN_RUNS {
        for stack in [Stack::Micro, Stack::Ractor] {
            let f = run_spawn_child(stack)?;
            println!(
                "run {run} {:<7} spawn {:>8.1} ms ({:>6.2} µs/actor)  stop {:>8.1} ms  \
                 RSS +{:>7.2} MiB ({:>6} B/actor)",
                stack.label(),
                f.spawn.as_secs_f64() * 1e3,
                f.spawn.as_secs_f64() * 1e6 / SPAWN_N as f64,
                f.stop.as_secs_f64() * 1e3,
                f.rss_growth as f64 / (1024.0 * 1024.0),
                f.rss_growth / SPAWN_N as i64
            );
            match stack {
                Stack::Micro => spawns.0.push(f),
                Stack::Ractor => spawns.1.push(f),
            }
        }
    }

    let pick = |rounds: &[Round], f: fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let spawn_ms = |runs: &[SpawnFigures]| {
        runs.iter()
            .map(|f| f.spawn.as_secs_f64() * 1e3)
            .collect::<Vec<_>>()
    };
    let stop_ms = |runs: &[SpawnFigures]| {
        runs.iter()
            .map(|f| f.stop.as_secs_f64() * 1e3)
            .collect::<Vec<_>>()
    };
    let bytes_per_actor = |runs: &[SpawnFigures]| {
        runs.iter()
            .map(|f| f.rss_growth as f64 / SPAWN_N as f64)
            .collect::<Vec<_>>()
    };

    println!(
        "\n{:<20} {:<7} {:>14} {:>14} {:>14}",
        "metric", "stack", "median", "min", "max"
    );
    let micro_cast = pick(&micro, |r| r.cast_msgs_per_s);
    let ractor_cast = pick(&ractor, |r| r.cast_msgs_per_s);
    let micro_ask = pick(&micro, |r| r.ask_per_s);
    let ractor_ask = pick(&ractor, |r| r.ask_per_s);
    print_metric("cast throughput", "msgs/s", &micro_cast, &ractor_cast);
    print_metric("ask throughput", "asks/s", &micro_ask, &ractor_ask);
    print_metric(
        "ask p50 latency",
        "µs",
        &pick(&micro, |r| r.ask_p50_us),
        &pick(&ractor, |r| r.ask_p50_us),
    );
    print_metric(
        "ask p99 latency",
        "µs",
        &pick(&micro, |r| r.ask_p99_us),
        &pick(&ractor, |r| r.ask_p99_us),
    );
    print_metric(
        "spawn 10k actors",
        "ms",
        &spawn_ms(&spawns.0),
        &spawn_ms(&spawns.1),
    );
    print_metric(
        "stop 10k actors",
        "ms",
        &stop_ms(&spawns.0),
        &stop_ms(&spawns.1),
    );
    print_metric(
        "idle memory",
        "bytes/actor (RSS growth)",
        &bytes_per_actor(&spawns.0),
        &bytes_per_actor(&spawns.1),
    );

    println!("\nwall time {:.1} s\n", wall.elapsed().as_secs_f64());
    println!(
        "ratio cast_msgs_per_s micro/ractor = {:.2}",
        median(&micro_cast) / median(&ractor_cast)
    );
    println!(
        "ratio ask_per_s micro/ractor = {:.2}",
        median(&micro_ask) / median(&ractor_ask)
    );
    Ok(())
}
