//! Addresses: send and ask with their typed errors, named versus id-based addresses across a
//! restart, mailbox bounds, and nodes that do not share names.

use std::time::Duration;

use micro_runtime::{Error, Node};
use micro_testkit::{TestCluster, eventually, within};
use tokio::sync::oneshot;

use crate::common::{ASK, Cmd, Journal, Probe, count};

#[tokio::test]
async fn send_is_ordered_and_ask_gets_the_answer() {
    let node = Node::builder().start().await.unwrap();
    let journal = Journal::default();
    let probe = node.spawn(Probe::spec("p", &journal)).await.unwrap();
    for n in 1..=100 {
        probe.send(Cmd::Add(n)).unwrap();
    }
    assert_eq!(count(&probe).await.unwrap(), 5050);
    assert_eq!(
        probe.id(),
        node.lookup::<Cmd>("p").ok().and_then(|_| probe.id())
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn ask_until_waits_up_to_its_deadline() {
    let node = Node::builder().start().await.unwrap();
    let journal = Journal::default();
    let probe = node.spawn(Probe::spec("p", &journal)).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let quick = probe
        .ask_until(|r| Cmd::Slow(Duration::from_millis(10), r), deadline)
        .await;
    assert!(quick.is_ok(), "{quick:?}");

    let slow = probe
        .ask_until(|r| Cmd::Slow(Duration::from_secs(5), r), deadline)
        .await;
    assert_eq!(slow, Err(Error::DeadlinePassed));
    assert!(tokio::time::Instant::now() >= deadline);

    // A deadline already past: the answer cannot come in time.
    let late = probe
        .ask_until(|r| Cmd::Slow(Duration::from_millis(10), r), deadline)
        .await;
    assert_eq!(late, Err(Error::DeadlinePassed));
    node.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn ask_reports_timeouts_and_dropped_replies() {
    let node = Node::builder().start().await.unwrap();
    let journal = Journal::default();
    let probe = node.spawn(Probe::spec("p", &journal)).await.unwrap();

    let slow = probe
        .ask(
            |r| Cmd::Slow(Duration::from_secs(5), r),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(slow, Err(Error::Timeout(Duration::from_secs(1))));

    let ignored = probe.ask(Cmd::Ignore, ASK).await;
    assert_eq!(ignored, Err(Error::ReplyDropped), "never a silent hang");

    // An actor that dies holding the port also answers "dropped".
    let dying = probe.clone();
    let pending = tokio::spawn(async move {
        dying
            .ask(
                |r| Cmd::Slow(Duration::from_secs(60), r),
                Duration::from_secs(120),
            )
            .await
    });
    tokio::task::yield_now().await;
    node.root()
        .unwrap()
        .stop_child(probe.id().unwrap())
        .await
        .unwrap();
    assert_eq!(pending.await.unwrap(), Err(Error::ReplyDropped));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_id_address_ends_with_its_incarnation_and_a_named_one_follows_the_restart() {
    let node = Node::builder().start().await.unwrap();
    let journal = Journal::default();
    let by_id = node.spawn(Probe::spec("p", &journal)).await.unwrap();
    let by_name = node.lookup::<Cmd>("p").unwrap();
    by_name.send(Cmd::Add(3)).unwrap();
    assert_eq!(count(&by_id).await.unwrap(), 3);

    let restarted = node.next_start("p");
    by_id.send(Cmd::Panic).unwrap();
    within("p restarted", restarted).await.unwrap();

    assert!(matches!(
        by_id.send(Cmd::Add(1)),
        Err(Error::ActorStopped(_))
    ));
    assert!(!by_id.is_alive());
    assert_eq!(
        count(&by_name).await.unwrap(),
        0,
        "the named address reaches the new incarnation"
    );
    let fresh = node.lookup::<Cmd>("p").unwrap();
    assert!(fresh.is_alive());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn lookups_fail_with_typed_errors() {
    let node = Node::builder().start().await.unwrap();
    let journal = Journal::default();
    node.spawn(Probe::spec("p", &journal)).await.unwrap();

    assert_eq!(
        node.lookup::<Cmd>("nobody").unwrap_err(),
        Error::NotFound("nobody".into())
    );
    assert!(matches!(
        node.lookup::<String>("p"),
        Err(Error::WrongMessageType { .. })
    ));
    assert_eq!(
        node.spawn(Probe::spec("p", &journal)).await.unwrap_err(),
        Error::NameTaken("p".into()),
        "names are unique per node"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_mailbox_refuses_instead_of_growing() {
    let node = Node::builder().start().await.unwrap();
    let journal = Journal::default();
    let probe = node
        .spawn(Probe::spec("p", &journal).mailbox(2))
        .await
        .unwrap();

    // Keep the actor busy so the mailbox fills up behind it.
    let (entered, is_busy) = oneshot::channel();
    let (release, released) = oneshot::channel();
    probe.send(Cmd::Hold(entered, released)).unwrap();
    is_busy.await.unwrap();

    probe.send(Cmd::Add(1)).unwrap();
    probe.send(Cmd::Add(1)).unwrap();
    assert_eq!(
        probe.send(Cmd::Add(1)),
        Err(Error::MailboxFull {
            actor: probe.id().unwrap().to_string(),
            capacity: 2
        })
    );
    release.send(()).unwrap();
    // Once drained there is room again, and nothing queued was lost.
    eventually("the mailbox drains", || async {
        count(&probe).await == Ok(2)
    })
    .await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_nodes_in_one_process_keep_their_own_names() {
    let cluster = TestCluster::in_process(2).await;
    let journal = Journal::default();
    for (i, node) in cluster.nodes().iter().enumerate() {
        node.spawn(Probe::spec("cache", &journal)).await.unwrap();
        node.lookup::<Cmd>("cache")
            .unwrap()
            .send(Cmd::Add(10 * (i as u64 + 1)))
            .unwrap();
    }
    assert_eq!(
        count(&cluster.node(0).lookup("cache").unwrap())
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        count(&cluster.node(1).lookup("cache").unwrap())
            .await
            .unwrap(),
        20
    );

    cluster.node(0).shutdown().await.unwrap();
    assert!(cluster.node(0).lookup::<Cmd>("cache").is_err());
    assert_eq!(
        count(&cluster.node(1).lookup("cache").unwrap())
            .await
            .unwrap(),
        20,
        "the other node is unaffected"
    );
    cluster.shutdown().await;
}
