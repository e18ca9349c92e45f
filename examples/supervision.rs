//! A supervision tree that survives crashes.
//!
//! A small "payments" tree runs on one node: a ledger and a notifier under a rest-for-one
//! supervisor, and a flaky worker that panics now and then under a one-for-one supervisor with
//! backoff. The example makes them crash, prints every supervision event as it happens, shows the
//! restarted actors answering with fresh state, and shuts the tree down in reverse start order.
//! It exits by itself.
//!
//! Run it with `cargo run --example supervision`.

use std::time::Duration;

use micro::prelude::*;

/// Counts what it is told; panics on request.
struct Worker {
    label: &'static str,
    handled: u64,
}

enum WorkerMsg {
    Work,
    Crash,
    Handled(Reply<u64>),
}

impl Actor for Worker {
    type Msg = WorkerMsg;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        println!("  [{}] started", self.label);
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: WorkerMsg) -> Result<(), ActorError> {
        match msg {
            WorkerMsg::Work => self.handled += 1,
            WorkerMsg::Crash => panic!("{} hit a bug", self.label),
            WorkerMsg::Handled(reply) => {
                let _ = reply.send(self.handled);
            }
        }
        Ok(())
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        println!("  [{}] stopped gracefully", self.label);
    }
}

fn worker(label: &'static str) -> ChildSpec<Worker> {
    ChildSpec::new(move || Worker { label, handled: 0 }).named(label)
}

async fn handled(node: &Node, name: &str) -> Result<u64, Error> {
    node.lookup::<WorkerMsg>(name)?
        .ask(WorkerMsg::Handled, Duration::from_secs(1))
        .await
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    micro::logging::init();
    // One line per panic instead of the default report: the crashes here are on purpose.
    std::panic::set_hook(Box::new(|info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("?");
        println!("  panic: {text}");
    }));

    let node = Node::builder().name("payments-node").start().await?;

    // Print every supervision event as it happens.
    let mut log = node.supervision_events();
    tokio::spawn(async move {
        while let Ok(event) = log.recv().await {
            println!("  event: {event:?}");
        }
    });

    println!("starting the tree");
    node.spawn_supervisor(
        SupervisorSpec::new(Strategy::RestForOne)
            .named("payments")
            .child(worker("ledger"))
            .child(worker("notifier")),
    )
    .await?;
    node.spawn_supervisor(
        SupervisorSpec::new(Strategy::OneForOne)
            .named("jobs")
            .backoff(Backoff::exponential(
                Duration::from_millis(50),
                Duration::from_secs(1),
            ))
            .intensity(Intensity::new(3, Duration::from_secs(10)))
            .child(worker("flaky")),
    )
    .await?;

    let ledger = node.lookup::<WorkerMsg>("ledger")?;
    for _ in 0..3 {
        ledger.send(WorkerMsg::Work)?;
    }
    println!(
        "ledger handled {} messages",
        handled(&node, "ledger").await?
    );

    println!("\nthe ledger crashes: rest-for-one restarts it and the notifier started after it");
    // `next_start` listens from the moment it is called, so the restart cannot slip past it.
    let notifier_back = node.next_start("notifier");
    ledger.send(WorkerMsg::Crash)?;
    notifier_back.await?;
    println!(
        "ledger is back with fresh state: handled {} messages",
        handled(&node, "ledger").await?
    );

    println!("\nthe flaky worker crashes twice: one-for-one restarts it after a growing backoff");
    let flaky = node.lookup::<WorkerMsg>("flaky")?;
    for _ in 0..2 {
        let crashed = tokio::time::Instant::now();
        let back = node.next_start("flaky");
        flaky.send(WorkerMsg::Crash)?;
        back.await?;
        println!("flaky restarted after {:?}", crashed.elapsed());
    }

    println!("\nshutting down: children stop in reverse start order");
    node.shutdown().await?;
    println!("node stopped cleanly");
    Ok(())
}
