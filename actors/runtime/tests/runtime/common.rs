//! A probe actor for the tests: it logs its lifecycle to a shared journal and does what its
//! messages tell it (fail, panic, stop, count, answer).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_runtime::{Actor, ActorError, Addr, ChildSpec, Context, Reply};
use tokio::sync::oneshot;

/// Lines like "a:start", "a:stop", in the order they happened, shared by all probes of a test.
#[derive(Clone, Default)]
pub(crate) struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub(crate) fn record(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    pub(crate) fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }
}

pub(crate) enum Cmd {
    Add(u64),
    Get(Reply<u64>),
    Panic,
    Fail,
    Stop,
    /// Drops the reply port without answering.
    Ignore(Reply<u64>),
    /// Says it is busy, then waits until released (tests what happens behind a busy actor).
    Hold(oneshot::Sender<()>, oneshot::Receiver<()>),
    /// Answers after a delay (tests timeouts).
    Slow(Duration, Reply<u64>),
}

pub(crate) struct Probe {
    pub label: &'static str,
    pub journal: Journal,
    pub count: u64,
}

impl Probe {
    pub(crate) fn spec(label: &'static str, journal: &Journal) -> ChildSpec<Probe> {
        let journal = journal.clone();
        ChildSpec::new(move || Probe {
            label,
            journal: journal.clone(),
            count: 0,
        })
        .named(label)
    }
}

impl Actor for Probe {
    type Msg = Cmd;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.journal.record(format!("{}:start", self.label));
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: Cmd) -> Result<(), ActorError> {
        match msg {
            Cmd::Add(n) => self.count += n,
            Cmd::Get(reply) => {
                let _ = reply.send(self.count);
            }
            Cmd::Panic => panic!("{} was told to panic", self.label),
            Cmd::Fail => return Err(format!("{} was told to fail", self.label).into()),
            Cmd::Stop => _ctx.stop(),
            Cmd::Ignore(reply) => drop(reply),
            Cmd::Hold(entered, release) => {
                let _ = entered.send(());
                let _ = release.await;
            }
            Cmd::Slow(delay, reply) => {
                tokio::time::sleep(delay).await;
                let _ = reply.send(self.count);
            }
        }
        Ok(())
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.journal.record(format!("{}:stop", self.label));
    }
}

pub(crate) const ASK: Duration = Duration::from_secs(5);

/// Asks a probe for its count.
pub(crate) async fn count(addr: &Addr<Cmd>) -> Result<u64, micro_runtime::Error> {
    addr.ask(Cmd::Get, ASK).await
}
