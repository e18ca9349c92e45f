//! The context's helpers put ticks and a stream's items into an actor's own mailbox, and end with
//! the incarnation that asked for them: after a graceful stop, a panic or a kill, and a restarted
//! actor gets only what its new incarnation asks for. `AbortOnDrop` is the guard behind them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_runtime::{
    AbortOnDrop, Actor, ActorError, ChildSpec, Context, Node, Reply, Restart, SupervisionEvent,
};
use micro_testkit::eventually;
use tokio::sync::{broadcast, mpsc, watch};

const ASK: Duration = Duration::from_secs(5);

enum Msg {
    Tick,
    Item(u64),
    /// A broadcast receiver missed this many values.
    Lagged(u64),
    Seen(Reply<Vec<u64>>),
    Ticks(Reply<u64>),
    Panic,
    /// Handles slowly, so a bounded mailbox fills up behind it.
    Slowly(Duration),
    Hang,
}

/// What a `Recorder` incarnation forwards when it starts.
#[derive(Clone)]
enum Source {
    Nothing,
    Ticks(Duration, Arc<AtomicUsize>),
    Iter(Vec<u64>),
    Channel(Arc<std::sync::Mutex<Option<mpsc::Receiver<u64>>>>),
    Watch(watch::Receiver<u64>),
    Broadcast(broadcast::Sender<u64>),
}

/// Records the items and ticks it is sent.
struct Recorder {
    source: Source,
    seen: Vec<u64>,
    ticks: u64,
    delay: Duration,
}

impl Recorder {
    fn new(source: Source) -> Self {
        Recorder {
            source,
            seen: Vec::new(),
            ticks: 0,
            delay: Duration::ZERO,
        }
    }
}

impl Actor for Recorder {
    type Msg = Msg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        match self.source.clone() {
            Source::Nothing => {}
            Source::Ticks(period, calls) => ctx.tick(period, move || {
                calls.fetch_add(1, Ordering::SeqCst);
                Msg::Tick
            }),
            Source::Iter(items) => ctx.forward(futures::stream::iter(items), Msg::Item),
            Source::Channel(rx) => {
                if let Some(rx) = rx.lock().unwrap().take() {
                    ctx.forward_channel(rx, Msg::Item);
                }
            }
            Source::Watch(rx) => ctx.forward_watch(rx, Msg::Item),
            Source::Broadcast(tx) => ctx.forward_broadcast(tx.subscribe(), |got| match got {
                Ok(n) => Msg::Item(n),
                Err(broadcast::error::RecvError::Lagged(missed)) => Msg::Lagged(missed),
                Err(broadcast::error::RecvError::Closed) => unreachable!("a close ends forwarding"),
            }),
        }
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Tick => self.ticks += 1,
            Msg::Item(n) => {
                tokio::time::sleep(self.delay).await;
                self.seen.push(n);
            }
            Msg::Lagged(missed) => self.seen.push(1000 + missed),
            Msg::Seen(reply) => {
                let _ = reply.send(self.seen.clone());
            }
            Msg::Ticks(reply) => {
                let _ = reply.send(self.ticks);
            }
            Msg::Panic => panic!("recorder told to panic"),
            Msg::Slowly(delay) => self.delay = delay,
            Msg::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        }
        Ok(())
    }
}

fn spec(name: &'static str, source: Source) -> ChildSpec<Recorder> {
    ChildSpec::new(move || Recorder::new(source.clone())).named(name)
}

/// What the named recorder has seen (asking again while its bounded mailbox is full).
async fn seen(node: &Node, name: &str) -> Vec<u64> {
    let addr = node.lookup::<Msg>(name).unwrap();
    loop {
        match addr.ask(Msg::Seen, ASK).await {
            Ok(seen) => return seen,
            Err(micro_runtime::Error::MailboxFull { .. }) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(err) => panic!("asking {name}: {err}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn ticks_arrive_in_the_mailbox_until_the_actor_stops() {
    let node = Node::builder().start().await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let period = Duration::from_secs(1);
    let ticker = node
        .spawn(spec("ticker", Source::Ticks(period, calls.clone())).restart(Restart::Temporary))
        .await
        .unwrap();

    // No tick before the first period has passed.
    assert_eq!(ticker.ask(Msg::Ticks, ASK).await.unwrap(), 0);
    tokio::time::sleep(period * 3 + period / 2).await;
    assert_eq!(
        ticker.ask(Msg::Ticks, ASK).await.unwrap(),
        3,
        "one tick a period"
    );

    // Stopped, the ticker is aborted (its closure dropped) and ticks no more.
    node.root()
        .unwrap()
        .stop_child(ticker.id().unwrap())
        .await
        .unwrap();
    eventually("the ticker was dropped", || async {
        Arc::strong_count(&calls) == 1
    })
    .await;
    let before = calls.load(Ordering::SeqCst);
    tokio::time::sleep(period * 10).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "no tick after the stop"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn forwarded_items_arrive_in_order_and_an_ended_stream_stops_quietly() {
    let node = Node::builder().start().await.unwrap();
    let mut events = node.supervision_events();

    // Any stream: every item, in order; then the stream ends and the actor goes on.
    let items: Vec<u64> = (0..200).collect();
    node.spawn(spec("iter", Source::Iter(items.clone())))
        .await
        .unwrap();
    eventually("every item arrived", || async {
        seen(&node, "iter").await.len() == items.len()
    })
    .await;
    assert_eq!(seen(&node, "iter").await, items);

    // A channel: items while it is open; when the senders are gone, the forwarding ends.
    let (tx, rx) = mpsc::channel(8);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    node.spawn(spec("channel", Source::Channel(rx)))
        .await
        .unwrap();
    for n in 1..=50 {
        tx.send(n).await.unwrap();
    }
    drop(tx);
    eventually("every value arrived", || async {
        seen(&node, "channel").await.len() == 50
    })
    .await;
    assert_eq!(seen(&node, "channel").await, (1..=50).collect::<Vec<_>>());

    tokio::time::sleep(Duration::from_millis(50)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, SupervisionEvent::ChildExited { .. }),
            "nothing exits when its stream ends: {event:?}"
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watch_forwards_its_current_value_then_its_changes() {
    let node = Node::builder().start().await.unwrap();
    let (tx, rx) = watch::channel(7);
    node.spawn(spec("watch", Source::Watch(rx))).await.unwrap();
    eventually("the current value arrived", || async {
        seen(&node, "watch").await == [7]
    })
    .await;
    tx.send(8).unwrap();
    eventually("the change arrived", || async {
        seen(&node, "watch").await == [7, 8]
    })
    .await;
    // The sender gone, the forwarder ends and drops its receiver; the actor goes on.
    drop(tx);
    assert_eq!(seen(&node, "watch").await, [7, 8]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broadcast_forwards_its_lags_too() {
    let node = Node::builder().start().await.unwrap();
    let (tx, _keep) = broadcast::channel(4);
    let recorder = node
        .spawn(spec("broadcast", Source::Broadcast(tx.clone())).mailbox(1))
        .await
        .unwrap();
    // The handler is slow and the mailbox holds one message, so the forwarder waits for room
    // and the channel (of four) overflows behind it.
    recorder
        .send(Msg::Slowly(Duration::from_millis(20)))
        .unwrap();
    tx.send(1).unwrap();
    eventually("the first value arrived", || async {
        seen(&node, "broadcast").await == [1]
    })
    .await;
    for n in 2..=20 {
        tx.send(n).unwrap();
    }
    eventually("the last value arrived", || async {
        seen(&node, "broadcast").await.last() == Some(&20)
    })
    .await;
    let got = seen(&node, "broadcast").await;
    let lags: Vec<u64> = got.iter().copied().filter(|n| *n > 1000).collect();
    let values: Vec<u64> = got.iter().copied().filter(|n| *n < 1000).collect();
    assert!(!lags.is_empty(), "a lag was forwarded: {got:?}");
    assert!(values.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_mailbox_holds_the_stream_back_and_loses_nothing() {
    let node = Node::builder().start().await.unwrap();
    let (tx, rx) = mpsc::channel(64);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let recorder = node
        .spawn(spec("bounded", Source::Channel(rx)).mailbox(2))
        .await
        .unwrap();
    recorder
        .send(Msg::Slowly(Duration::from_millis(2)))
        .unwrap();
    for n in 0..60 {
        tx.send(n).await.unwrap();
    }
    eventually("every value arrived", || async {
        seen(&node, "bounded").await.len() == 60
    })
    .await;
    assert_eq!(seen(&node, "bounded").await, (0..60).collect::<Vec<_>>());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_forwarder_ends_with_its_incarnation_and_a_restart_does_not_inherit_it() {
    let node = Node::builder().start().await.unwrap();
    let (tx, _keep) = broadcast::channel(16);
    // The first incarnation forwards the channel; the ones after it do not ask to.
    let started = Arc::new(AtomicUsize::new(0));
    let spec = {
        let (tx, started) = (tx.clone(), started.clone());
        ChildSpec::new(move || {
            let source = if started.fetch_add(1, Ordering::SeqCst) == 0 {
                Source::Broadcast(tx.clone())
            } else {
                Source::Nothing
            };
            Recorder::new(source)
        })
        .named("follower")
    };
    node.spawn(spec).await.unwrap();
    eventually("the first incarnation subscribed", || async {
        tx.receiver_count() == 2
    })
    .await;
    tx.send(1).unwrap();
    eventually("the first incarnation got the value", || async {
        seen(&node, "follower").await == [1]
    })
    .await;

    // It panics and is restarted: the old forwarder is aborted (its receiver dropped).
    let follower = node.lookup::<Msg>("follower").unwrap();
    follower.send(Msg::Panic).unwrap();
    eventually("the follower was restarted", || async {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    eventually("the old forwarder was aborted", || async {
        tx.receiver_count() == 1
    })
    .await;
    tx.send(2).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        seen(&node, "follower").await,
        Vec::<u64>::new(),
        "the new incarnation gets nothing it did not forward"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_killed_actor_s_forwarder_is_aborted() {
    let node = Node::builder().start().await.unwrap();
    let (tx, rx) = watch::channel(0);
    let recorder = node
        .spawn(
            spec("killed", Source::Watch(rx))
                .restart(Restart::Temporary)
                .shutdown(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    eventually("the current value arrived", || async {
        seen(&node, "killed").await == [0]
    })
    .await;
    // It hangs in a handler, so stopping it times out and it is killed.
    recorder.send(Msg::Hang).unwrap();
    node.root()
        .unwrap()
        .stop_child(recorder.id().unwrap())
        .await
        .unwrap();
    eventually("the forwarder dropped its receiver", || async {
        tx.is_closed()
    })
    .await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn abort_on_drop_aborts_its_task() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let guard = AbortOnDrop::spawn(async move {
        // Holds the sender until aborted.
        let _tx = tx;
        std::future::pending::<()>().await;
    });
    assert!(!guard.is_finished());
    assert!(format!("{guard:?}").contains("AbortOnDrop"));
    drop(guard);
    assert!(
        rx.await.is_err(),
        "the task was aborted, dropping the sender"
    );

    // A task that already ended is finished; dropping its guard is harmless.
    let done = AbortOnDrop::spawn(async { 42 });
    eventually("the task ended", || async { done.is_finished() }).await;
}
