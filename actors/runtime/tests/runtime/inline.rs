//! Remote messages handled inline: a named, exposed actor that is idle with an empty mailbox
//! takes a message in the task that read it off the link; otherwise (busy, or messages queued)
//! the message goes through the mailbox. Order per sender, supervision and exclusive access to
//! the state stay as they are on the mailbox path.

use std::sync::Arc;
use std::time::Duration;

use micro_runtime::{
    Actor, ActorError, Addr, ChildSpec, Context, ExitReason, Node, RemoteMessage, Reply,
};
use micro_testkit::{TestCluster, eventually, within};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

const ASK: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
enum RecMsg {
    /// Appends a number to the log.
    Push(u32),
    /// The log so far.
    Log(Reply<Vec<u32>>),
    /// Waits for a permit of the test's gate, then appends the number.
    Wait(u32),
    /// Waits for a permit, then answers.
    WaitThen(Reply<u32>),
    /// Panics at once.
    Boom,
    /// Waits for a permit, then panics.
    BoomLater,
}

impl RemoteMessage for RecMsg {
    const TYPE_NAME: &'static str = "test.inline.Rec";
}

struct Rec {
    log: Vec<u32>,
    gate: Arc<Semaphore>,
    /// Set while a handler runs: two at once would be a bug.
    busy: bool,
}

impl Actor for Rec {
    type Msg = RecMsg;

    async fn handle(&mut self, _: &mut Context<Self>, msg: RecMsg) -> Result<(), ActorError> {
        assert!(!self.busy, "two handlers ran at once");
        self.busy = true;
        match msg {
            RecMsg::Push(n) => self.log.push(n),
            RecMsg::Log(reply) => {
                let _ = reply.send(self.log.clone());
            }
            RecMsg::Wait(n) => {
                self.gate.acquire().await?.forget();
                self.log.push(n);
            }
            RecMsg::WaitThen(reply) => {
                self.gate.acquire().await?.forget();
                let _ = reply.send(7);
            }
            RecMsg::Boom => panic!("rec was told to panic"),
            RecMsg::BoomLater => {
                self.gate.acquire().await?.forget();
                panic!("rec was told to panic after waiting");
            }
        }
        self.busy = false;
        Ok(())
    }
}

/// Two linked nodes; node 0 runs `rec`, exposed; returns node 1's remote address for it and
/// the gate that `Wait` messages wait on.
async fn setup() -> (TestCluster, Addr<RecMsg>, Arc<Semaphore>) {
    let cluster = TestCluster::start(2).await;
    let gate = Arc::new(Semaphore::new(0));
    let for_actor = gate.clone();
    cluster
        .node(0)
        .spawn(
            ChildSpec::new(move || Rec {
                log: Vec::new(),
                gate: for_actor.clone(),
                busy: false,
            })
            .named("rec"),
        )
        .await
        .unwrap();
    cluster.node(0).expose::<RecMsg>("rec").unwrap();
    let rec = cluster
        .node(1)
        .lookup_remote::<RecMsg>(cluster.node(0).id(), "rec")
        .await
        .unwrap();
    (cluster, rec, gate)
}

async fn log(rec: &Addr<RecMsg>) -> Vec<u32> {
    rec.ask(RecMsg::Log, ASK).await.unwrap()
}

#[tokio::test]
async fn an_idle_exposed_actor_answers_remote_asks_inline() {
    let (cluster, rec, _gate) = setup().await;
    let owner = cluster.node(0).clone();

    for n in 0..10 {
        rec.send(RecMsg::Push(n)).unwrap();
        assert_eq!(log(&rec).await.last(), Some(&n));
    }
    assert!(
        owner.inline_messages() >= 10,
        "an idle actor takes remote messages inline (took {})",
        owner.inline_messages()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn messages_queued_behind_a_waiting_handler_keep_their_order() {
    let (cluster, rec, gate) = setup().await;
    let owner = cluster.node(0).clone();

    // The first message starts inline and waits (its handler keeps the actor busy); everything
    // after it queues in the mailbox, and must come out in the order it was sent.
    rec.send(RecMsg::Wait(0)).unwrap();
    for n in 1..=300 {
        rec.send(RecMsg::Push(n)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1);
    let expected: Vec<u32> = (0..=300).collect();
    assert_eq!(log(&rec).await, expected);

    // Once the backlog has drained, messages go inline again, still in order.
    let before = owner.inline_messages();
    for n in 301..=400 {
        rec.send(RecMsg::Push(n)).unwrap();
    }
    let expected: Vec<u32> = (0..=400).collect();
    assert_eq!(log(&rec).await, expected);
    eventually("the actor takes messages inline again", || {
        let owner = owner.clone();
        let rec = rec.clone();
        async move {
            let _ = log(&rec).await;
            owner.inline_messages() > before
        }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_waits_finishes_before_the_actor_takes_anything_else() {
    let (cluster, rec, gate) = setup().await;
    let local = cluster.node(0).lookup::<RecMsg>("rec").unwrap();

    // A remote ask whose handler waits: it is answered once the gate opens, and a local ask
    // sent meanwhile sees the state only after it (the handler asserts it is never entered
    // twice at once).
    let waiting = tokio::spawn({
        let rec = rec.clone();
        async move { rec.ask(RecMsg::WaitThen, ASK).await }
    });
    eventually("the waiting handler has started", || {
        let owner = cluster.node(0).clone();
        async move { owner.inline_messages() >= 1 }
    })
    .await;
    local.send(RecMsg::Push(1)).unwrap();
    let local_log = tokio::spawn({
        let local = local.clone();
        async move { local.ask(RecMsg::Log, ASK).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished() && !local_log.is_finished());

    gate.add_permits(1);
    assert_eq!(within("the waiting ask", waiting).await.unwrap(), Ok(7));
    assert_eq!(
        within("the local ask", local_log).await.unwrap(),
        Ok(vec![1])
    );
    cluster.shutdown().await;
}

/// Sends `msg` and waits for `rec` to exit and start again; returns its exit reason.
async fn crash(owner: &Node, rec: &Addr<RecMsg>, msg: RecMsg, gate: &Semaphore) -> ExitReason {
    let mut events = owner.supervision_events();
    let restarted = owner.next_start("rec");
    rec.send(msg).unwrap();
    gate.add_permits(1);
    let reason = within("the actor's exit", async {
        loop {
            let event = events.recv().await.unwrap();
            if event.is_exit_of("rec") {
                return event.reason().cloned();
            }
        }
    })
    .await;
    within("the restart", restarted).await.unwrap();
    reason.unwrap()
}

#[tokio::test]
async fn a_panic_in_a_handler_run_inline_restarts_the_actor() {
    let (cluster, rec, gate) = setup().await;
    let owner = cluster.node(0).clone();
    rec.send(RecMsg::Push(1)).unwrap();
    assert_eq!(log(&rec).await, vec![1]);
    let inline_before = owner.inline_messages();

    // At once, inside the reading task.
    let reason = crash(&owner, &rec, RecMsg::Boom, &gate).await;
    assert!(
        matches!(&reason, ExitReason::Panic(text) if text.contains("told to panic")),
        "{reason:?}"
    );
    assert!(
        owner.inline_messages() > inline_before,
        "the panic was inline"
    );
    assert_eq!(log(&rec).await, Vec::<u32>::new(), "a fresh incarnation");

    // After waiting, in the task the handler went on in.
    rec.send(RecMsg::Push(2)).unwrap();
    let reason = crash(&owner, &rec, RecMsg::BoomLater, &gate).await;
    assert!(
        matches!(&reason, ExitReason::Panic(text) if text.contains("after waiting")),
        "{reason:?}"
    );
    assert_eq!(log(&rec).await, Vec::<u32>::new(), "a fresh incarnation");
    rec.send(RecMsg::Push(3)).unwrap();
    assert_eq!(log(&rec).await, vec![3]);
    cluster.shutdown().await;
}
